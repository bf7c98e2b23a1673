//! Allocation test: the forwarding path of the wire layer makes zero heap allocations.
//!
//! The counting `#[global_allocator]` of this binary (`crate::count`) counts allocations
//! (alloc, alloc_zeroed, realloc) made by the current thread while a thread-local flag is set,
//! so the test harness's other threads do not disturb the count. For each message of one SIPp
//! call (INVITE with SDP, 180, 200, ACK, BYE) the test warms the output `Vec`, then asserts
//! that parse + validate + every accessor the proxy uses + the full proxy edit + write (and
//! the stream framing path) make no allocation at all.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::hint::black_box;

use sipedge::wire::{
    Edits, Frame, HeaderName, check_hops, frame_stream, parse, parse_stream_message, parse_uri,
    validate_request, validate_response,
};

use crate::count;

const MESSAGES: [(&str, &[u8]); 5] = [
    (
        "invite",
        include_bytes!("../corpus/valid-flow-1-invite-sdp.sip"),
    ),
    (
        "180",
        include_bytes!("../corpus/valid-flow-2-180-ringing.sip"),
    ),
    (
        "200",
        include_bytes!("../corpus/valid-flow-3-200-ok-sdp.sip"),
    ),
    ("ack", include_bytes!("../corpus/valid-flow-4-ack.sip")),
    ("bye", include_bytes!("../corpus/valid-flow-5-bye.sip")),
];

/// Everything the proxy does with one datagram in the wire layer. Returns the output length.
fn forward(b: &[u8], out: &mut Vec<u8>) -> usize {
    let m = parse(b).unwrap();
    if m.is_request() {
        validate_request(&m).unwrap();
        check_hops(&m).unwrap();
        let ruri = parse_uri(m.request_uri().unwrap()).unwrap();
        black_box((
            ruri.host,
            ruri.port,
            ruri.transport(),
            ruri.has_lr(),
            ruri.host_ip(),
        ));
        black_box(m.option_tags(HeaderName::ProxyRequire).count());
    } else {
        validate_response(&m).unwrap();
        black_box((m.code(), m.reason()));
    }
    let from = m.from().unwrap();
    let to = m.to().unwrap();
    black_box((
        m.call_id(),
        m.cseq(),
        from.tag(),
        to.tag(),
        from.parsed_uri().is_ok(),
    ));
    let via = m.top_via().unwrap();
    black_box((via.branch(), via.received(), via.rport(), via.host_ip()));
    black_box(m.vias().count());
    for r in m.routes().chain(m.record_routes()) {
        let u = r.parsed_uri().unwrap();
        black_box((u.has_lr(), u.param(b"did"), u.host_ip()));
    }
    black_box((m.contacts().next(), m.max_forwards(), m.body().len()));
    black_box(m.find_header(b"Subject"));

    let mut e = Edits::new(&m);
    if m.is_request() {
        e.insert_via(b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKd4a1.6b1c2e340.0")
            .unwrap();
        e.set_received_rport(Some(b"10.0.0.10"), Some(5061))
            .unwrap();
        e.insert_record_route(b"<sip:10.0.0.1;lr;did=7a3.2f1>")
            .unwrap();
        if m.routes().next().is_some() {
            e.remove_top_route().unwrap();
        }
        e.decrement_max_forwards().unwrap();
    } else {
        e.remove_top_via().unwrap();
    }
    out.clear();
    e.write(out).unwrap();
    out.len()
}

fn stream(b: &[u8]) -> usize {
    let Ok(Frame::Complete(n)) = frame_stream(b) else {
        panic!("not framed")
    };
    let m = parse_stream_message(b, n).unwrap();
    black_box(m.call_id());
    n
}

#[test]
fn counter_sees_allocations() {
    let _serial = crate::serial();
    // The harness must be able to fail: one Vec allocation is counted, other threads' are not.
    let (v, n) = count(|| black_box(Vec::<u8>::with_capacity(32)));
    assert_eq!(n, 1);
    drop(v);
    // Another thread allocating busily while we count is not seen.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let busy = std::thread::spawn(move || {
        let mut k = 0usize;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            k += black_box(vec![1u8; 64]).len();
        }
        k
    });
    let (_, n) = count(|| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(busy.join().unwrap() > 0);
    assert_eq!(n, 0, "another thread's allocations leaked into the count");
    let (_, n) = count(|| {
        let mut out = Vec::new();
        forward(MESSAGES[0].1, &mut out)
    });
    assert!(n >= 1, "writing into an empty Vec must allocate");
}

#[test]
fn forwarding_path_makes_zero_allocations() {
    let _serial = crate::serial();
    let mut out = Vec::with_capacity(4096);
    for (name, b) in MESSAGES {
        let warm = forward(b, &mut out);
        assert!(warm > 0);
        let (len, n) = count(|| forward(b, &mut out));
        assert_eq!(len, warm, "{name}");
        assert_eq!(n, 0, "{name}: {n} heap allocations on the forwarding path");
        let (framed, n) = count(|| stream(b));
        assert_eq!(framed, b.len(), "{name}");
        assert_eq!(n, 0, "{name}: {n} heap allocations on the stream path");
    }
}
