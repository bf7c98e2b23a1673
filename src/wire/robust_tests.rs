//! Robustness smoke test: mutated messages through every entry point must never panic, and
//! the structural invariants (spans inside the buffer, identity serialization) must hold.
//! A deterministic xorshift generator keeps it reproducible; deeper fuzzing lives elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::wire::*;

const SEEDS: &[&[u8]] = &[
    b"INVITE sip:bob@biloxi.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP h:1;received=1.2.3.4\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1;lr>, \"a,b\" <sip:p2;lr>\r\n\
Record-Route: <sip:rr;lr;did=1>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: \"Al\\\"ice\" <sip:alice@atlanta.com>;tag=1928\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33:5060>;expires=60\r\n\
Supported: 100rel, timer\r\n\
Subject: folded\r\n line\r\n\
Content-Length: 3\r\n\
\r\n\
abcJUNK",
    b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP a;branch=z9hG4bK2\r\nt: <sip:b@x>;tag=9\r\n\
f: sip:a@x;tag=1\r\ni: c\r\nCSeq: 1 INVITE\r\nm: *\r\nl: 0\r\n\r\n",
    b"BYE tel:+123;phone-context=x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: x\r\n\r\n",
];

/// A small xorshift generator for the mutation tests of `wire` (also `valid_tests`).
pub(in crate::wire) struct Rng(pub(in crate::wire) u64);

impl Rng {
    pub(in crate::wire) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(in crate::wire) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = b"\r\n \t:;,\"<>[]\\=@?0123456789*/\0";

fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        let byte = if rng.below(4) == 0 {
            rng.next() as u8
        } else {
            INTERESTING[rng.below(INTERESTING.len())]
        };
        match rng.below(4) {
            0 if at < b.len() => b[at] = byte,
            1 => b.insert(at, byte),
            2 if at < b.len() => {
                b.remove(at);
            }
            _ => b.truncate(at),
        }
    }
}

fn exercise(m: &Message) {
    let buf = m.buf();
    assert!(m.len() <= buf.len());
    for h in m.headers() {
        for s in [h.line, h.name_span, h.value] {
            assert!(s.start <= s.end && s.end as usize <= m.len());
        }
    }
    let _ = (m.method(), m.code(), m.request_uri(), m.body(), m.call_id());
    let _ = (m.cseq(), m.max_forwards(), m.content_length());
    if let Some(u) = m.request_uri() {
        let _ = parse_uri(u).map(|u| (u.has_lr(), u.host_ip(), u.transport()));
    }
    for v in m.vias() {
        let _ = (
            v.branch(),
            v.received(),
            v.rport(),
            v.maddr(),
            v.host_ip(),
            v.ttl(),
        );
        assert!(v.span.end as usize <= m.len());
    }
    for n in m.routes().chain(m.record_routes()).chain(m.contacts()) {
        let _ = (n.tag(), n.is_star(), n.parsed_uri().map(|u| u.maddr()));
    }
    for n in [m.from(), m.to()].into_iter().flatten() {
        let _ = n.tag();
    }
    let _ = m.option_tags(HeaderName::Supported).count();
    let _ = (validate_request(m), validate_response(m), check_hops(m));

    let mut out = Vec::new();
    Edits::new(m).write(&mut out).unwrap();
    assert_eq!(out, m.bytes());

    type Op = fn(&mut Edits) -> Result<(), EditError>;
    let ops: [Op; 9] = [
        |e| e.insert_via(b"SIP/2.0/UDP x;branch=z9hG4bKx"),
        |e| e.set_received_rport(Some(b"1.1.1.1"), Some(1)),
        |e| e.remove_top_via(),
        |e| e.insert_record_route(b"<sip:x;lr>"),
        |e| e.remove_top_route(),
        |e| e.strict_route_fixup(),
        |e| e.route_to_strict_router().map(|_| ()),
        |e| e.decrement_max_forwards(),
        |e| e.replace_request_uri(b"sip:y"),
    ];
    let mut e = Edits::new(m);
    for op in ops {
        let _ = op(&mut e);
    }
    out.clear();
    e.write(&mut out).unwrap();
    assert_eq!(out.len(), e.output_len());

    out.clear();
    response(m, 500, b"Oops", Some(b"t"), &[], &mut out);
    let _ = cancel(m, &mut out);
    let _ = ack_for_non2xx(m, m, &mut out);
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    let mut replied = 0;
    let mut spill = HeaderSpill::new();
    for i in 0..30_000 {
        let mut b = SEEDS[i % SEEDS.len()].to_vec();
        mutate(&mut rng, &mut b);
        match parse(&b) {
            Ok(m) => {
                parsed += 1;
                exercise(&m);
            }
            Err(e) => {
                if let Some(v) = parse_for_reply(&b, e) {
                    replied += 1;
                    assert!(answers(e) && v.is_request() && v.method() != Some(Method::Ack));
                    let mut out = Vec::new();
                    response(&v, e.status(), e.reason().as_bytes(), None, &[], &mut out);
                    let r = parse(&out).unwrap();
                    assert!(!out.contains(&0), "{:?}", String::from_utf8_lossy(&out));
                    assert_eq!(r.vias().count(), v.vias().count());
                }
            }
        }
        // The reused spill agrees with the allocating parse.
        assert_eq!(
            parse_with(&b, &mut spill).map(|m| m.headers().len()),
            parse(&b).map(|m| m.headers().len())
        );
        match frame_stream(&b) {
            Ok(Frame::Complete(n)) => {
                assert!(n <= b.len());
                if let Ok(m) = parse_stream_message(&b, n) {
                    exercise(&m);
                }
            }
            Ok(Frame::KeepAlive(n)) => assert!(n > 0 && n <= b.len()),
            _ => {}
        }
    }
    // The mutator must leave a good share parseable, or the test exercises nothing.
    assert!(parsed > 3_000, "only {parsed} parsed");
    assert!(replied > 100, "only {replied} answered");
}

#[test]
fn seeds_parse_and_validate() {
    let m = parse(SEEDS[0]).unwrap();
    assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
    assert_eq!(m.body(), b"abc");
    let m = parse(SEEDS[1]).unwrap();
    assert_eq!(validate_response(&m).map(|_| ()), Ok(()));
    assert!(m.contacts().next().unwrap().is_star());
}
