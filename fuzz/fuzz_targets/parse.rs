//! Fuzz target `parse`: arbitrary bytes through datagram parsing, stream framing, stream
//! parsing, validation and every accessor. Invariant: nothing panics, and every span a
//! parsed message exposes lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipedge::wire::{
    Frame, HeaderName, Message, frame_stream, parse, parse_stream_message, parse_uri,
    validate_request, validate_response,
};

fn touch(m: &Message) {
    let buf = m.buf();
    assert!(m.len() <= buf.len());
    assert!(m.body_span().end_usize() <= buf.len());
    for h in m.headers() {
        assert!(h.line.end_usize() <= m.len());
        assert!(h.value.start <= h.value.end);
    }
    let _ = (validate_request(m), validate_response(m));
    let _ = (m.method(), m.method_bytes(), m.code(), m.reason(), m.body());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length());
    if let Some(u) = m.request_uri() {
        if let Ok(u) = parse_uri(u) {
            let _ = (u.has_lr(), u.transport(), u.maddr(), u.host_ip());
        }
    }
    for na in [m.from(), m.to()].into_iter().flatten() {
        let _ = (na.tag(), na.parsed_uri());
    }
    for v in m.vias() {
        let _ = (
            v.branch(),
            v.received(),
            v.rport(),
            v.maddr(),
            v.ttl(),
            v.host_ip(),
        );
    }
    for na in m.routes().chain(m.record_routes()).chain(m.contacts()) {
        let _ = (na.tag(), na.is_star(), na.parsed_uri().map(|u| u.has_lr()));
    }
    let _ = m.option_tags(HeaderName::ProxyRequire).count();
    let _ = m.option_tags(HeaderName::Supported).count();
    let _ = m.find_header(b"X-Anything");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        touch(&m);
    }
    let mut rest = data;
    // Walk the buffer as a stream, as the TCP reader does.
    for _ in 0..64 {
        match frame_stream(rest) {
            Ok(Frame::KeepAlive(n)) => rest = &rest[n..],
            Ok(Frame::Complete(n)) => {
                assert!(n <= rest.len());
                if let Ok(m) = parse_stream_message(rest, n) {
                    assert_eq!(m.len(), n);
                    touch(&m);
                }
                rest = &rest[n..];
            }
            Ok(Frame::Partial) | Err(_) => break,
        }
    }
});
