//! Golden corpus test for the SIP wire layer: every file in `tests/corpus/` is parsed and
//! checked against the expectation its name encodes (see `tests/corpus/README.md`).
//!
//! Invariants checked:
//! - `valid-*`: parse + validate succeed; `Edits::new(&m).write()` reproduces `m.bytes()`
//!   byte for byte (and `m.bytes()` is the whole file unless the name says `trailing`);
//!   requests survive the full proxy edit set and re-parse/validate with the expected header
//!   counts and values; responses with 2+ Via values survive removal of the top Via; stream
//!   framing agrees with datagram parsing.
//! - `invalid-<status>-<kind>-*`: the first error of parse-then-validate has that status and
//!   metric label. A request rejected by `parse` itself with an error that is answered
//!   (`wire::answers`: too many headers, NUL or bare CR, ...) still yields a reply through
//!   `parse_for_reply`, with the status, Via, Call-ID and CSeq it needs and none of the
//!   offending bytes.
//! - `keepalive-*`: `parse` says `Empty`, `frame_stream` says `KeepAlive(len)`.
//! - The folder holds at least 40 `.sip` files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::PathBuf;

use sipedge::wire::{
    Edits, Frame, HeaderName, HeaderSpill, Message, ParseError, answers, build, frame_stream,
    parse, parse_for_reply, parse_stream_message, parse_with, validate_request, validate_response,
};

const OUR_VIA: &[u8] = b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKsipedge.0001";
const OUR_RR: &[u8] = b"<sip:203.0.113.1:5060;lr;did=c0ffee.1>";
const SRC_IP: &[u8] = b"198.51.100.7";
const SRC_PORT: u16 = 5062;

/// What a file name promises.
#[derive(Debug, PartialEq)]
enum Expect {
    Valid,
    Invalid { status: u16, kind: String },
    KeepAlive,
}

fn expect_of(name: &str) -> Expect {
    let stem = name.strip_suffix(".sip").expect("a .sip file");
    if stem.starts_with("valid-") {
        return Expect::Valid;
    }
    if stem.starts_with("keepalive-") {
        return Expect::KeepAlive;
    }
    let mut parts = stem.split('-');
    assert_eq!(parts.next(), Some("invalid"), "bad corpus name {name}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {name}"));
    let kind = parts
        .next()
        .unwrap_or_else(|| panic!("no kind in {name}"))
        .to_string();
    Expect::Invalid { status, kind }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable corpus file"))
        })
        .collect();
    files.sort();
    files
}

fn of_kind(want: fn(&Expect) -> bool) -> Vec<(String, Vec<u8>)> {
    corpus()
        .into_iter()
        .filter(|(n, _)| want(&expect_of(n)))
        .collect()
}

fn validate(m: &Message) -> Result<(), ParseError> {
    if m.is_request() {
        validate_request(m).map(|_| ())
    } else {
        validate_response(m).map(|_| ())
    }
}

#[test]
fn corpus_is_big_enough_and_well_named() {
    let files = corpus();
    assert!(
        files.len() >= 40,
        "corpus has {} files, need >= 40",
        files.len()
    );
    let valid = files
        .iter()
        .filter(|(n, _)| expect_of(n) == Expect::Valid)
        .count();
    let invalid = files
        .iter()
        .filter(|(n, _)| matches!(expect_of(n), Expect::Invalid { .. }))
        .count();
    assert!(
        valid >= 20 && invalid >= 20,
        "valid {valid}, invalid {invalid}"
    );
    for (name, data) in &files {
        if let Expect::Invalid { kind, .. } = expect_of(name) {
            assert!(
                sipedge::wire::KINDS.contains(&kind.as_str()),
                "{name}: unknown kind {kind}"
            );
        }
        if expect_of(name) == Expect::Valid && !name.contains("lf-only") {
            // Generated with real CRLF: every LF in the head is preceded by CR.
            let m = parse(data).unwrap();
            let head = &data[..m.headers_end() as usize];
            for (i, &b) in head.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(head[i - 1], b'\r', "{name}: bare LF at {i}");
                }
            }
        }
    }
}

#[test]
fn valid_messages_parse_validate_and_round_trip() {
    for (name, data) in of_kind(|e| *e == Expect::Valid) {
        let m = parse(&data).unwrap_or_else(|e| panic!("{name}: parse failed: {e:?}"));
        validate(&m).unwrap_or_else(|e| panic!("{name}: validation failed: {e:?}"));
        let mut out = Vec::new();
        Edits::new(&m).write(&mut out).unwrap();
        assert_eq!(out, m.bytes(), "{name}: no-edit write is not identity");
        if name.contains("trailing") {
            assert!(m.len() < data.len(), "{name}: trailing bytes not excluded");
            assert!(data.starts_with(&out));
        } else {
            assert_eq!(out, data, "{name}: message is not the whole file");
        }
        // Content-Length, when present, is exactly the body we kept.
        if let Some(cl) = m.content_length() {
            assert_eq!(cl as usize, m.body().len(), "{name}");
        }
    }
}

/// The packet path parses into a reused `HeaderSpill`: it must see exactly what `parse` sees,
/// for every file, in any order, with the spill growing once at most.
#[test]
fn reused_spill_agrees_with_parse() {
    let files = corpus();
    let mut spill = HeaderSpill::new();
    for round in 0..2 {
        for (name, data) in &files {
            let want = parse(data);
            let got = parse_with(data, &mut spill);
            match (&want, &got) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.headers().len(), b.headers().len(), "{name}");
                    for (x, y) in a.headers().iter().zip(b.headers()) {
                        assert_eq!((x.name, x.line, x.value), (y.name, y.line, y.value));
                    }
                    assert_eq!((a.call_id(), a.cseq()), (b.call_id(), b.cseq()), "{name}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{name}"),
                _ => panic!("{name}: parse {want:?} but parse_with {got:?}"),
            }
        }
        if round == 0 {
            assert!(spill.capacity() >= sipedge::wire::MAX_HEADERS);
        }
    }
}

#[test]
fn requests_survive_the_proxy_edit_set() {
    let mut out = Vec::with_capacity(16 * 1024);
    let mut n = 0;
    for (name, data) in of_kind(|e| *e == Expect::Valid) {
        let m = parse(&data).unwrap();
        if !m.is_request() {
            continue;
        }
        n += 1;
        let vias = m.vias().count();
        let rrs = m.record_routes().count();
        let routes = m.routes().count();
        let top = m.top_via().unwrap();
        let mf = m.max_forwards();

        let mut e = Edits::new(&m);
        e.insert_via(OUR_VIA).unwrap();
        e.set_received_rport(Some(SRC_IP), Some(SRC_PORT)).unwrap();
        e.insert_record_route(OUR_RR).unwrap();
        if routes > 0 {
            e.remove_top_route().unwrap();
        }
        e.decrement_max_forwards().unwrap();
        out.clear();
        e.write(&mut out).unwrap();
        assert_eq!(out.len(), e.output_len(), "{name}");

        let f = parse(&out).unwrap_or_else(|err| panic!("{name}: re-parse: {err:?}"));
        validate_request(&f).unwrap_or_else(|err| panic!("{name}: re-validate: {err:?}"));
        assert_eq!(f.vias().count(), vias + 1, "{name}: Via count");
        assert_eq!(f.record_routes().count(), rrs + 1, "{name}: RR count");
        assert_eq!(
            f.routes().count(),
            routes.saturating_sub(1),
            "{name}: Route"
        );
        assert_eq!(f.count_named(HeaderName::MaxForwards), 1, "{name}");
        assert_eq!(f.max_forwards(), Some(mf.map_or(70, |v| v - 1)), "{name}");
        let fv = f.top_via().unwrap();
        assert_eq!(fv.branch(), Some(&b"z9hG4bKsipedge.0001"[..]), "{name}");
        let old = f.vias().nth(1).unwrap();
        assert_eq!(old.branch(), top.branch(), "{name}: original branch");
        assert_eq!(old.host, top.host, "{name}: original host");
        assert_eq!(old.received(), Some(SRC_IP), "{name}: received");
        let want_rport = top.rport().map(|_| Some(SRC_PORT));
        assert_eq!(old.rport(), want_rport, "{name}: rport");
        assert_eq!(
            f.record_routes().next().unwrap().uri,
            &OUR_RR[1..OUR_RR.len() - 1]
        );
        assert_eq!(f.call_id(), m.call_id(), "{name}");
        assert_eq!(f.cseq(), m.cseq(), "{name}");
        assert_eq!(f.from().unwrap().tag(), m.from().unwrap().tag(), "{name}");
        assert_eq!(f.request_uri(), m.request_uri(), "{name}");
        assert_eq!(f.body(), m.body(), "{name}: body changed");
        if routes > 1 {
            let second = m.routes().nth(1).unwrap().uri;
            assert_eq!(f.routes().next().unwrap().uri, second, "{name}");
        }
    }
    assert!(n >= 20, "only {n} valid requests");
}

#[test]
fn responses_survive_top_via_removal() {
    let mut out = Vec::new();
    let mut n = 0;
    for (name, data) in of_kind(|e| *e == Expect::Valid) {
        let m = parse(&data).unwrap();
        let vias: Vec<_> = m.vias().map(|v| v.branch()).collect();
        if m.is_request() || vias.len() < 2 {
            continue;
        }
        n += 1;
        let mut e = Edits::new(&m);
        e.remove_top_via().unwrap();
        out.clear();
        e.write(&mut out).unwrap();
        let f = parse(&out).unwrap();
        validate_response(&f).unwrap_or_else(|err| panic!("{name}: {err:?}"));
        let left: Vec<_> = f.vias().map(|v| v.branch()).collect();
        assert_eq!(left, vias[1..], "{name}");
        assert_eq!(f.record_routes().count(), m.record_routes().count());
        assert_eq!(f.code(), m.code());
        assert_eq!(f.body(), m.body());
    }
    assert!(n >= 3, "only {n} multi-Via responses");
}

#[test]
fn stream_framing_agrees_with_datagram_parsing() {
    for (name, data) in of_kind(|e| *e == Expect::Valid) {
        let m = parse(&data).unwrap();
        let skip = match frame_stream(&data) {
            Ok(Frame::KeepAlive(k)) => k,
            _ => 0,
        };
        let rest = &data[skip..];
        match (m.content_length(), frame_stream(rest)) {
            (Some(_), Ok(Frame::Complete(n))) => {
                assert_eq!(skip + n, m.len(), "{name}: framed length");
                let s = parse_stream_message(rest, n).unwrap();
                assert_eq!(s.call_id(), m.call_id(), "{name}");
                assert_eq!(s.body(), m.body(), "{name}");
            }
            (None, Err(ParseError::MissingContentLength)) => {}
            (cl, other) => panic!("{name}: content-length {cl:?} framed as {other:?}"),
        }
    }
}

#[test]
fn invalid_messages_yield_the_status_in_their_name() {
    let files = of_kind(|e| matches!(e, Expect::Invalid { .. }));
    for (name, data) in files {
        let Expect::Invalid { status, kind } = expect_of(&name) else {
            unreachable!()
        };
        let err = match parse(&data) {
            Err(e) => e,
            Ok(m) => validate(&m)
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted")),
        };
        assert_eq!(err.status(), status, "{name}: {err:?}");
        assert_eq!(err.kind(), kind, "{name}: {err:?}");
        let from_parse = parse(&data).is_err();
        let must_answer =
            ["too_many_headers", "headers_too_large", "illegal_byte"].contains(&kind.as_str());
        assert!(!must_answer || (from_parse && answers(err)), "{name}");
        if from_parse && answers(err) && !data.starts_with(b"SIP/") {
            check_reply(&name, &data, err);
        }
    }
}

/// A request that `parse` rejects with an answered error gets a reply built from
/// `parse_for_reply`: right status, the request's Vias, Call-ID and CSeq, and no NUL or bare
/// CR copied from it.
fn check_reply(name: &str, data: &[u8], err: ParseError) {
    let view = parse_for_reply(data, err).unwrap_or_else(|| panic!("{name}: not answered"));
    let mut out = Vec::new();
    build::response(
        &view,
        err.status(),
        err.reason().as_bytes(),
        None,
        &[],
        &mut out,
    );
    let r = parse(&out).unwrap_or_else(|e| panic!("{name}: reply does not parse: {e:?}"));
    validate_response(&r).unwrap_or_else(|e| panic!("{name}: reply invalid: {e:?}"));
    assert_eq!(r.code(), Some(err.status()), "{name}");
    let text = String::from_utf8_lossy(data);
    for want in [r.call_id().unwrap(), r.top_via().unwrap().branch().unwrap()] {
        assert!(text.contains(std::str::from_utf8(want).unwrap()), "{name}");
    }
    assert!(
        text.contains(&format!("CSeq: {}", r.cseq().unwrap().num)),
        "{name}"
    );
    assert!(!out.contains(&0), "{name}: NUL reflected");
    assert!(
        !out.windows(8).any(|w| w == b"smuggled"),
        "{name}: smuggled line"
    );
    assert!(out.len() < 1024, "{name}: {} byte reply", out.len());
}

#[test]
fn keepalives_are_empty_datagrams_and_stream_pings() {
    let files = of_kind(|e| *e == Expect::KeepAlive);
    assert!(files.len() >= 2);
    for (name, data) in files {
        assert_eq!(parse(&data).err(), Some(ParseError::Empty), "{name}");
        assert_eq!(
            frame_stream(&data),
            Ok(Frame::KeepAlive(data.len())),
            "{name}"
        );
    }
}

fn load(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    std::fs::read(p).unwrap()
}

#[test]
fn golden_values_of_selected_messages() {
    let d = load("valid-compact-forms.sip");
    let m = parse(&d).unwrap();
    assert_eq!(m.call_id(), Some(&b"compact-1@atlanta.example.com"[..]));
    assert_eq!(m.from().unwrap().tag(), Some(&b"c1"[..]));
    assert_eq!(m.top_via().unwrap().branch(), Some(&b"z9hG4bKcompact"[..]));
    assert_eq!(m.contacts().count(), 1);
    let tags: Vec<_> = m.option_tags(HeaderName::Supported).collect();
    assert_eq!(tags, [&b"timer"[..], b"100rel"]);
    assert_eq!(m.content_length(), Some(m.body().len() as u32));

    let d = load("valid-ipv6-via.sip");
    let m = parse(&d).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.host, b"[2001:db8::10]");
    assert_eq!(v.port, Some(5060));
    assert!(v.host_ip().unwrap().is_ipv6());

    let d = load("valid-ipv6-record-route.sip");
    let m = parse(&d).unwrap();
    let rr: Vec<_> = m.record_routes().map(|r| r.parsed_uri().unwrap()).collect();
    assert_eq!(rr.len(), 2);
    assert_eq!(rr[0].host, b"[2001:db8::1]");
    assert_eq!(rr[0].param(b"did"), Some(Some(&b"ab12"[..])));
    assert_eq!(rr[1].port, Some(5080));

    let d = load("valid-escaped-user.sip");
    let m = parse(&d).unwrap();
    let u = sipedge::wire::parse_uri(m.request_uri().unwrap()).unwrap();
    assert_eq!(u.user, Some(&b"%61lice%20smith;phone-context=%2B1"[..]));

    let d = load("valid-quoted-commas-contact.sip");
    let m = parse(&d).unwrap();
    let c: Vec<_> = m.contacts().collect();
    assert_eq!(c.len(), 3, "quoted commas and <...> must not split");
    assert_eq!(c[0].display, Some(&b"Desk, left"[..]));
    assert_eq!(c[0].param(b"q"), Some(Some(&b"0.7"[..])));
    assert_eq!(c[1].uri, b"sip:alice@198.51.100.3?Subject=a,b");
    assert_eq!(m.from().unwrap().display, Some(&b"Smith, Alice"[..]));

    let d = load("valid-folded-via-multi.sip");
    let m = parse(&d).unwrap();
    let b: Vec<_> = m.vias().map(|v| v.branch().unwrap()).collect();
    assert_eq!(b, [&b"z9hG4bKa1"[..], b"z9hG4bKb2", b"z9hG4bKc3"]);

    let d = load("valid-folded-subject.sip");
    let m = parse(&d).unwrap();
    let s = m.header_value(HeaderName::Subject).unwrap();
    assert!(s.starts_with(b"I know you're there,") && s.ends_with(b"talk to me!"));

    let d = load("valid-huge-header-8k.sip");
    let m = parse(&d).unwrap();
    assert_eq!(m.find_header(b"x-huge").unwrap().len(), 8192);
    assert_eq!(
        m.header_value(HeaderName::Subject),
        Some(&b"after the huge one"[..])
    );

    let d = load("valid-binary-body.sip");
    let m = parse(&d).unwrap();
    assert_eq!(m.body().len(), 256 + 7 + 256);
    assert!(std::str::from_utf8(m.body()).is_err());

    let d = load("valid-odd-spacing.sip");
    let m = parse(&d).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.branch(), Some(&b"z9hG4bKsp1"[..]));
    assert_eq!(m.from().unwrap().tag(), Some(&b"sp1"[..]));
    assert_eq!(m.call_id(), Some(&b"spacing-1@atlanta.example.com"[..]));
    assert_eq!(m.cseq().unwrap().num, 3);
    assert_eq!(m.max_forwards(), Some(70));

    let d = load("valid-trailing-junk-after-body.sip");
    let m = parse(&d).unwrap();
    assert!(!m.bytes().windows(4).any(|w| w == b"JUNK"));
    assert!(m.buf().windows(4).any(|w| w == b"JUNK"));

    let d = load("valid-register-star-contact.sip");
    let m = parse(&d).unwrap();
    assert!(m.contacts().next().unwrap().is_star());

    let d = load("valid-empty-reason-phrase.sip");
    let m = parse(&d).unwrap();
    assert_eq!((m.code(), m.reason()), (Some(487), Some(&b""[..])));

    // Past the 64 inline header spans: every accessor still finds what comes after them.
    for (file, lines) in [
        ("valid-many-headers-65-invite.sip", 65),
        ("valid-many-headers-200-invite.sip", 200),
        ("valid-many-headers-254-invite.sip", 254),
    ] {
        let d = load(file);
        let mut spill = HeaderSpill::new();
        let m = parse_with(&d, &mut spill).unwrap();
        assert_eq!(m.headers().len(), lines, "{file}");
        assert!(
            m.header_index(HeaderName::CSeq).unwrap() >= lines - 5,
            "{file}"
        );
        assert_eq!(m.cseq().unwrap().num, 1);
        assert!(m.call_id().unwrap().starts_with(b"many-"));
        assert_eq!(m.from().unwrap().tag(), Some(&b"9fxced76sl"[..]));
        assert_eq!(
            m.header_value(HeaderName::ContentType),
            Some(&b"application/sdp"[..])
        );
        assert_eq!(
            m.find_header(b"x-trace-0"),
            Some(&b"hop-0.example.net;n=0"[..])
        );
        assert_eq!(m.content_length(), Some(m.body().len() as u32));
    }
    let d = load("invalid-513-too_many_headers-invite-300.sip");
    assert_eq!(parse(&d).err(), Some(ParseError::TooManyHeaders));
    let view = parse_for_reply(&d, ParseError::TooManyHeaders).unwrap();
    assert_eq!(view.call_id(), Some(&b"many-300@atlanta.example.com"[..]));
    let d = load("invalid-400-illegal_byte-bare-cr-smuggles-call-id.sip");
    let view = parse_for_reply(&d, parse(&d).unwrap_err()).unwrap();
    assert_eq!(view.count_named(HeaderName::CallId), 1);
    assert_eq!(
        view.call_id(),
        Some(&b"3848276298220188511@atlanta.example.com"[..])
    );
}

/// Pins a known capacity edge found by the `parse_edit` fuzzer: a valid request with exactly
/// `MAX_HEADERS` (256) header lines is accepted and edited, but the forwarded message (Via and
/// Record-Route added) has more lines than `parse` accepts, so the next sipedge hop answers 513.
/// If the wire layer starts refusing such edits (or raises the limit), update this test.
#[test]
fn edits_can_push_a_full_message_past_max_headers() {
    use sipedge::wire::MAX_HEADERS;
    let mut s = String::from(
        "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
         Call-ID: full\r\nCSeq: 1 OPTIONS\r\n",
    );
    for i in 6..MAX_HEADERS {
        s.push_str(&format!("X-N{i}: {i}\r\n"));
    }
    s.push_str("\r\n");
    let m = parse(s.as_bytes()).unwrap();
    assert_eq!(m.headers().len(), MAX_HEADERS);
    validate_request(&m).unwrap();
    let mut e = Edits::new(&m);
    e.insert_via(OUR_VIA).unwrap();
    e.insert_record_route(OUR_RR).unwrap();
    e.decrement_max_forwards().unwrap();
    let mut out = Vec::new();
    e.write(&mut out).unwrap();
    assert_eq!(parse(&out).err(), Some(ParseError::TooManyHeaders));
    assert_eq!(ParseError::TooManyHeaders.status(), 513);
}
