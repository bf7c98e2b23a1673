//! Property tests for the SIP wire layer.
//!
//! (a) Arbitrary and SIP-flavoured random bytes through `parse`, `frame_stream`,
//!     `parse_stream_message`, validation and every accessor: no panic, spans stay in bounds.
//! (b) Mutations of the golden corpus (bit flips, insertions, deletions, truncation, duplicated
//!     lines): parse and parse+edit+write never panic, and when the mutant still validates the
//!     edited output re-parses and validates.
//! (c) Generated well-formed requests (random header order, compact or long names, spacing,
//!     folding) parse to the values they were built from.
//! (d) Hostile variants of those requests: a NUL or bare CR anywhere in the head is 400 and
//!     still answered (without reflecting the byte), anywhere in the body is accepted; any
//!     number of extra header lines parses the same with a reused spill up to `MAX_HEADERS`
//!     and is answered 513 past it. Every rejected input goes through `parse_for_reply`.
//!
//! Each property runs at least 256 cases; the whole file stays well under 20 s.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use sipedge::wire::{
    Edits, Frame, HeaderName, HeaderSpill, MAX_HEAD_BYTES, MAX_HEADERS, Message, ParseError,
    answers, build, frame_stream, parse, parse_for_reply, parse_stream_message, parse_uri,
    parse_with, validate_request, validate_response,
};

// ------------------------------------------------------------------------------- helpers

fn corpus() -> &'static [Vec<u8>] {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sip"))
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    })
}

/// Calls every accessor and checks the span invariants of the module docs.
fn touch_all(m: &Message) {
    let buf = m.buf();
    assert!(m.len() <= buf.len());
    assert!(m.body_span().end_usize() <= m.len());
    assert!(m.headers_end() as usize <= m.len());
    let sl = m.start_line_span();
    assert!(sl.start <= sl.end && sl.end_usize() <= m.len());
    for h in m.headers() {
        for s in [h.line, h.value, h.name_span] {
            assert!(s.start <= s.end && s.end_usize() <= m.len(), "{s:?}");
        }
    }
    let _ = (validate_request(m), validate_response(m));
    let _ = (m.method(), m.method_bytes(), m.code(), m.reason(), m.body());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length());
    if let Some(Ok(u)) = m.request_uri().map(parse_uri) {
        let _ = (
            u.has_lr(),
            u.transport(),
            u.maddr(),
            u.host_ip(),
            u.param(b"did"),
        );
    }
    for na in [m.from(), m.to()].into_iter().flatten() {
        let _ = (na.tag(), na.parsed_uri(), na.param(b"x"));
    }
    for v in m.vias() {
        assert!(v.span.end_usize() <= m.len());
        let _ = (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl());
        let _ = v.host_ip();
    }
    for na in m.routes().chain(m.record_routes()).chain(m.contacts()) {
        assert!(na.span.end_usize() <= m.len());
        let _ = (na.tag(), na.is_star(), na.parsed_uri().map(|u| u.has_lr()));
    }
    let _ = m.option_tags(HeaderName::ProxyRequire).count();
    let _ = m.option_tags(HeaderName::Require).count();
    let _ = m.find_header(b"X-Anything");
    let _ = m.find_header(b"i");
}

/// Stream-walks `data` the way the TCP reader does.
fn walk_stream(data: &[u8]) {
    let mut rest = data;
    for _ in 0..64 {
        match frame_stream(rest) {
            Ok(Frame::KeepAlive(n)) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Ok(Frame::Complete(n)) => {
                assert!(n > 0 && n <= rest.len());
                if let Ok(m) = parse_stream_message(rest, n) {
                    assert_eq!(m.len(), n);
                    touch_all(&m);
                }
                rest = &rest[n..];
            }
            Ok(Frame::Partial) | Err(_) => return,
        }
    }
}

fn validates(m: &Message) -> bool {
    if m.is_request() {
        validate_request(m).is_ok()
    } else {
        validate_response(m).is_ok()
    }
}

/// The proxy edit set; returns whether every edit was accepted.
fn proxy_edit(m: &Message, out: &mut Vec<u8>) -> bool {
    let mut e = Edits::new(m);
    let mut ok = true;
    if m.is_request() {
        ok &= e
            .insert_via(b"SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKprop")
            .is_ok();
        ok &= e
            .set_received_rport(Some(b"198.51.100.7"), Some(5062))
            .is_ok();
        ok &= e
            .insert_record_route(b"<sip:203.0.113.1;lr;did=p1>")
            .is_ok();
        if m.routes().next().is_some() {
            ok &= e.remove_top_route().is_ok();
        }
        ok &= e.decrement_max_forwards().is_ok();
    } else if m.vias().nth(1).is_some() {
        ok &= e.remove_top_via().is_ok();
    }
    out.clear();
    ok &= e.write(out).is_ok();
    if ok {
        assert_eq!(out.len(), e.output_len());
    }
    ok
}

/// A rejected request's reply view: only for answered errors, never for an ACK or a
/// response, and the reply built from it parses and holds no NUL.
fn check_reply_view(data: &[u8], e: ParseError) -> Result<(), TestCaseError> {
    let Some(v) = parse_for_reply(data, e) else {
        return Ok(());
    };
    prop_assert!(answers(e));
    prop_assert!(v.is_request() && v.method() != Some(sipedge::wire::Method::Ack));
    prop_assert!(v.top_via().is_some());
    for h in v.headers() {
        prop_assert!(h.line.end_usize() <= data.len());
    }
    let mut out = Vec::new();
    build::response(&v, e.status(), e.reason().as_bytes(), None, &[], &mut out);
    prop_assert!(parse(&out).is_ok(), "{}", String::from_utf8_lossy(&out));
    prop_assert!(!out.contains(&0));
    Ok(())
}

fn check_parse_edit(data: &[u8]) -> Result<(), TestCaseError> {
    walk_stream(data);
    let m = match parse(data) {
        Ok(m) => m,
        Err(e) => return check_reply_view(data, e),
    };
    touch_all(&m);
    let valid = validates(&m);
    let mut out = Vec::new();
    let ok = proxy_edit(&m, &mut out);
    if valid && ok {
        // Up to 3 added lines may push a message at the capacity limits over them (513).
        let near_limit = m.headers().len() + 3 > MAX_HEADERS || m.len() + 512 > MAX_HEAD_BYTES;
        let f = match parse(&out) {
            Ok(f) => f,
            Err(ParseError::TooManyHeaders | ParseError::HeadersTooLarge) if near_limit => {
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("edited output: {e:?}"))),
        };
        // A response's validation reads its top two Vias; stripping ours brings up the third,
        // which the input's validation never looked at.
        let third_ok = m.vias().nth(2).is_none_or(|v| v.params_well_formed());
        if f.is_request() || (m.vias().nth(1).is_some() && third_ok) {
            prop_assert!(
                validates(&f),
                "edited output does not validate: {:?}\n{:?}\n--- from ---\n{:?}",
                validate_response(&f).err(),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(data)
            );
        }
        prop_assert_eq!(f.call_id(), m.call_id());
        prop_assert_eq!(f.body(), m.body());
    }
    Ok(())
}

// ------------------------------------------------------------------ (a) arbitrary bytes

/// SIP-flavoured fragments, so random input reaches deep into the parser.
const FRAGMENTS: &[&str] = &[
    "INVITE sip:bob@b.example.com SIP/2.0\r\n",
    "SIP/2.0 200 OK\r\n",
    "SIP/2.0 ",
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n",
    "v: SIP/2.0/TCP [::1];received=1.2.3.4,",
    "From: \"A, b\" <sip:a@x;lr>;tag=1\r\n",
    "t: <sip:b@y>\r\n",
    "Call-ID: c1\r\n",
    "i:",
    "CSeq: 1 INVITE\r\n",
    "Max-Forwards: 70\r\n",
    "Route: <sip:p;lr>, <sip:q>\r\n",
    "Record-Route: <sip:[2001:db8::1];lr>\r\n",
    "Contact: *\r\n",
    "Content-Length: ",
    "l: 4\r\n",
    "\r\n",
    "\r\n\r\n",
    "\n",
    " ",
    "\t",
    ";",
    ",",
    ":",
    "<",
    ">",
    "\"",
    "\\",
    "=",
    "0",
    "4294967296",
    "%",
    "[",
    "]",
    "\r\n ",
    "\u{00ff}",
];

fn sipish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_parse_edit(&data)?;
    }

    #[test]
    fn sipish_bytes_never_panic(data in sipish()) {
        check_parse_edit(&data)?;
    }
}

// ------------------------------------------------------------------ (b) corpus mutations

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    DupLine { line: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (
            any::<usize>(),
            prop_oneof![any::<u8>(), prop::sample::select(&b"\r\n ,;:<>\"\\"[..])]
        )
            .prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|line| Mutation::DupLine { line }),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let n = data.len().max(1);
    match *m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = data.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Insert { at, byte } => data.insert(at % (data.len() + 1), byte),
        Mutation::Delete { at, len } => {
            let a = at % n;
            let b = (a + len).min(data.len());
            if a < b {
                data.drain(a..b);
            }
        }
        Mutation::Truncate { at } => data.truncate(at % n),
        Mutation::DupLine { .. } if data.is_empty() => {}
        Mutation::DupLine { line } => {
            let starts: Vec<usize> = std::iter::once(0)
                .chain(
                    data.iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .filter(|&i| i < data.len())
                .collect();
            let a = starts[line % starts.len()];
            let b = data[a..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(data.len(), |p| a + p + 1);
            let copy = data[a..b].to_vec();
            data.splice(b..b, copy);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn corpus_mutations_never_panic(
        pick in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus();
        prop_assume!(!c.is_empty());
        let mut data = pick.get(c).clone();
        if data.is_empty() {
            data.push(b'\r');
        }
        for m in &muts {
            apply(&mut data, m);
        }
        check_parse_edit(&data)?;
    }
}

// -------------------------------------------------------- (c) generated well-formed requests

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    call_id: String,
    cseq: u32,
    from_tag: String,
    to_tag: Option<String>,
    branch: String,
    max_forwards: u8,
    compact: [bool; 6],
    order: Vec<usize>,
    before_colon: &'static str,
    after_colon: &'static str,
    fold: [bool; 6],
    body: Vec<u8>,
}

const METHODS: &[&str] = &[
    "INVITE", "BYE", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "FOO",
];
const TOKEN: &str = "[A-Za-z0-9.!%*_+`'~-]{1,24}";

fn req() -> impl Strategy<Value = Req> {
    let ids = (
        prop::sample::select(METHODS),
        prop::string::string_regex(&format!("{TOKEN}(@[a-z0-9.]{{1,16}})?")).unwrap(),
        any::<u32>(),
        TOKEN,
        prop::option::of(TOKEN),
        TOKEN,
        any::<u8>(),
    );
    let shape = (
        any::<[bool; 6]>(),
        Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
        prop::sample::select(&["", " ", "\t", "  "][..]),
        prop::sample::select(&["", " ", "\t", "   "][..]),
        any::<[bool; 6]>(),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    (ids, shape).prop_map(
        |(
            (method, call_id, cseq, from_tag, to_tag, b, max_forwards),
            (compact, order, before_colon, after_colon, fold, body),
        )| Req {
            method,
            call_id,
            cseq,
            from_tag,
            to_tag,
            branch: format!("z9hG4bK{b}"),
            max_forwards,
            compact,
            order,
            before_colon,
            after_colon,
            fold,
            body,
        },
    )
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let names = [
            ("Via", "v"),
            ("Max-Forwards", "Max-Forwards"),
            ("From", "f"),
            ("To", "t"),
            ("Call-ID", "i"),
            ("CSeq", "CSeq"),
        ];
        let to_tag = self
            .to_tag
            .as_ref()
            .map_or(String::new(), |t| format!(";tag={t}"));
        let fold = |i: usize| if self.fold[i] { "\r\n " } else { "" };
        let values = [
            format!(
                "SIP/2.0/UDP 192.0.2.1:5060;{}branch={};rport",
                fold(0),
                self.branch
            ),
            format!("{}", self.max_forwards),
            format!(
                "\"Alice\" <sip:alice@a.example.com>;{}tag={}",
                fold(2),
                self.from_tag
            ),
            format!("<sip:bob@b.example.com>{to_tag}"),
            self.call_id.clone(),
            format!("{}{} {}", fold(5), self.cseq, self.method),
        ];
        let mut out = format!("{} sip:bob@b.example.com SIP/2.0\r\n", self.method).into_bytes();
        for &i in &self.order {
            let name = if self.compact[i] {
                names[i].1
            } else {
                names[i].0
            };
            let lead = if self.fold[i] && i != 0 && i != 2 && i != 5 {
                "\r\n\t"
            } else {
                ""
            };
            out.extend_from_slice(
                format!(
                    "{name}{}:{}{lead}{}\r\n",
                    self.before_colon, self.after_colon, values[i]
                )
                .as_bytes(),
            );
        }
        let cl = if self.compact[1] {
            "l"
        } else {
            "Content-Length"
        };
        out.extend_from_slice(format!("{cl}: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn generated_requests_parse_to_their_values(r in req()) {
        let data = r.bytes();
        let m = parse(&data);
        prop_assert!(m.is_ok(), "{:?}\n{}", m.err(), String::from_utf8_lossy(&data));
        let m = m.unwrap();
        prop_assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
        prop_assert_eq!(m.method_bytes(), r.method.as_bytes());
        prop_assert_eq!(m.call_id(), Some(r.call_id.as_bytes()));
        let cseq = m.cseq().unwrap();
        prop_assert_eq!(cseq.num, r.cseq);
        prop_assert_eq!(cseq.method_bytes, r.method.as_bytes());
        prop_assert_eq!(m.from().unwrap().tag(), Some(r.from_tag.as_bytes()));
        prop_assert_eq!(m.to().unwrap().tag(), r.to_tag.as_deref().map(str::as_bytes));
        let via = m.top_via().unwrap();
        prop_assert_eq!(via.branch(), Some(r.branch.as_bytes()));
        prop_assert_eq!(via.rport(), Some(None));
        prop_assert_eq!(via.port, Some(5060));
        prop_assert_eq!(m.max_forwards(), Some(u32::from(r.max_forwards)));
        prop_assert_eq!(m.body(), &r.body[..]);

        // Stream framing sees the same message.
        prop_assert_eq!(frame_stream(&data), Ok(Frame::Complete(data.len())));

        // And the proxy edit keeps every value.
        let mut out = Vec::new();
        if r.max_forwards > 0 {
            prop_assert!(proxy_edit(&m, &mut out));
            let f = parse(&out).unwrap();
            prop_assert_eq!(validate_request(&f).map(|_| ()), Ok(()));
            prop_assert_eq!(f.max_forwards(), Some(u32::from(r.max_forwards) - 1));
            prop_assert_eq!(f.vias().nth(1).unwrap().branch(), Some(r.branch.as_bytes()));
            prop_assert_eq!(f.vias().nth(1).unwrap().rport(), Some(Some(5062)));
            prop_assert_eq!(f.call_id(), Some(r.call_id.as_bytes()));
            prop_assert_eq!(f.from().unwrap().tag(), Some(r.from_tag.as_bytes()));
        }
    }
}

// ---------------------------------------------------- (d) smuggling bytes and header floods

/// Where the head of `data` ends (the offset of the empty line).
fn head_len(data: &[u8]) -> usize {
    data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn nul_or_bare_cr_in_the_head_is_400_and_answered(
        r in req(),
        at in any::<prop::sample::Index>(),
        cr in any::<bool>(),
    ) {
        let mut data = r.bytes();
        let head = head_len(&data);
        // Any offset in the start line or headers, the final CRLF of the head included (a CR
        // in front of the start line would be an ignored leading CR, RFC 3261 §7.5).
        let at = 1 + at.index(head);
        data.insert(at, if cr { b'\r' } else { 0 });
        let e = parse(&data).unwrap_err();
        prop_assert_eq!(e, ParseError::IllegalByte, "{}", String::from_utf8_lossy(&data));
        prop_assert_eq!(parse_stream_message(&data, data.len()).unwrap_err(), e);
        check_reply_view(&data, e)?;
        // The lines holding the byte are left out of the view (no Via left: no answer). A
        // byte at the start of a fold's continuation cuts the fold there, which can leave an
        // empty Call-ID, never a wrong one.
        if let Some(c) = parse_for_reply(&data, e).and_then(|v| v.call_id()) {
            prop_assert!(c.is_empty() || c == r.call_id.as_bytes());
        }
    }

    #[test]
    fn nul_or_bare_cr_in_the_body_is_accepted(
        r in req(),
        at in any::<prop::sample::Index>(),
        cr in any::<bool>(),
    ) {
        let mut data = r.bytes();
        let head = head_len(&data) + 2;
        let at = head + at.index(data.len() - head + 1);
        data.insert(at, if cr { b'\r' } else { 0 });
        let m = parse(&data);
        prop_assert!(m.is_ok(), "{:?}", m.err());
        let m = m.unwrap();
        prop_assert_eq!(m.call_id(), Some(r.call_id.as_bytes()));
        prop_assert_eq!(m.body().len(), r.body.len());
    }

    #[test]
    fn header_floods_spill_then_get_513(
        r in req(),
        extra in 0usize..320,
        at in any::<prop::sample::Index>(),
    ) {
        let data = r.bytes();
        // Insert `extra` filler lines at one line boundary of the head.
        let head = head_len(&data);
        let bounds: Vec<usize> = data[..head]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| data.get(i) != Some(&b' ') && data.get(i) != Some(&b'\t'))
            .collect();
        let cut = bounds[at.index(bounds.len())];
        let mut big = data[..cut].to_vec();
        for i in 0..extra {
            big.extend_from_slice(format!("X-Flood-{i}: {i}\r\n").as_bytes());
        }
        big.extend_from_slice(&data[cut..]);
        let lines = parse(&data).unwrap().headers().len() + extra;
        let mut spill = HeaderSpill::new();
        match (parse(&big), parse_with(&big, &mut spill)) {
            (Ok(a), Ok(b)) => {
                prop_assert!(lines <= MAX_HEADERS);
                prop_assert_eq!(a.headers().len(), lines);
                prop_assert_eq!(b.headers().len(), lines);
                prop_assert_eq!(validate_request(&b).map(|_| ()), Ok(()));
                prop_assert_eq!(b.call_id(), Some(r.call_id.as_bytes()));
                prop_assert_eq!(b.cseq().unwrap().num, r.cseq);
                prop_assert_eq!(b.top_via().unwrap().branch(), Some(r.branch.as_bytes()));
                prop_assert_eq!(b.body(), &r.body[..]);
            }
            (Err(a), Err(b)) => {
                prop_assert!(lines > MAX_HEADERS);
                prop_assert_eq!(a, ParseError::TooManyHeaders);
                prop_assert_eq!(b, a);
                let v = parse_for_reply(&big, a);
                prop_assert!(v.is_some());
                let v = v.unwrap();
                prop_assert_eq!(v.call_id(), Some(r.call_id.as_bytes()));
                prop_assert_eq!(v.top_via().unwrap().branch(), Some(r.branch.as_bytes()));
                check_reply_view(&big, a)?;
            }
            (a, b) => prop_assert!(false, "parse {:?} vs parse_with {:?}", a.err(), b.err()),
        }
    }
}
