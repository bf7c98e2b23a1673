//! Parse and proxy-edit cost per SIP message, ours against `rsip` as the naive baseline.
//!
//! Messages: one call as SIPp sends it through a record-routing proxy (INVITE with SDP, 180,
//! 200 with SDP, ACK, BYE), read from `tests/corpus/valid-flow-*.sip`.
//!
//! - `parse/<msg>/sipedge`: `wire::parse` alone (framing + header spans), like rsip's parse.
//! - `parse/<msg>/sipedge_validated`: `wire::parse` + validation + the accessors the proxy
//!   reads (Call-ID, CSeq, tags, top Via branch, Max-Forwards, top Route).
//! - `parse/<msg>/rsip`: `rsip::SipMessage::try_from(&[u8])` (tree of owned headers).
//! - `parse_edit/<msg>/sipedge`: the above plus the proxy edit (requests: insert Via,
//!   received/rport, Record-Route, remove top Route, decrement Max-Forwards; responses: remove
//!   top Via) written into a reused `Vec`.
//! - `parse_edit/<msg>/rsip`: rsip parse, push a Via and a Record-Route, serialize to bytes
//!   (the "rebuild from a tree" approach).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use sipedge::wire::{Edits, Message, parse, validate_request, validate_response};

const MESSAGES: [(&str, &[u8]); 5] = [
    (
        "invite",
        include_bytes!("../tests/corpus/valid-flow-1-invite-sdp.sip"),
    ),
    (
        "180",
        include_bytes!("../tests/corpus/valid-flow-2-180-ringing.sip"),
    ),
    (
        "200",
        include_bytes!("../tests/corpus/valid-flow-3-200-ok-sdp.sip"),
    ),
    (
        "ack",
        include_bytes!("../tests/corpus/valid-flow-4-ack.sip"),
    ),
    (
        "bye",
        include_bytes!("../tests/corpus/valid-flow-5-bye.sip"),
    ),
];

/// Parse, validate and read what the proxy reads; returns a value so nothing is optimised out.
fn ours_parse(b: &[u8]) -> Option<Message<'_>> {
    let m = parse(b).ok()?;
    if m.is_request() {
        validate_request(&m).ok()?;
    } else {
        validate_response(&m).ok()?;
    }
    black_box((
        m.call_id(),
        m.cseq(),
        m.from().and_then(|f| f.tag()),
        m.to().and_then(|t| t.tag()),
        m.top_via().and_then(|v| v.branch()),
        m.max_forwards(),
        m.routes().next(),
    ));
    Some(m)
}

fn ours_edit(m: &Message, out: &mut Vec<u8>) -> Option<()> {
    let mut e = Edits::new(m);
    if m.is_request() {
        e.insert_via(b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKd4a1.6b1c2e34000000000000000000000000.0")
            .ok()?;
        e.set_received_rport(Some(b"10.0.0.10"), Some(5061)).ok()?;
        e.insert_record_route(b"<sip:10.0.0.1;lr;did=7a3.2f1>")
            .ok()?;
        if m.routes().next().is_some() {
            e.remove_top_route().ok()?;
        }
        e.decrement_max_forwards().ok()?;
    } else {
        e.remove_top_via().ok()?;
    }
    out.clear();
    e.write(out).ok()
}

fn rsip_edit(b: &[u8]) -> Option<Vec<u8>> {
    let mut m = rsip::SipMessage::try_from(b).ok()?;
    m.headers_mut()
        .push(rsip::Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKd4a1.6b1c2e34000000000000000000000000.0",
        )));
    m.headers_mut()
        .push(rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(
            "<sip:10.0.0.1;lr;did=7a3.2f1>",
        )));
    Some(Vec::<u8>::from(m))
}

fn bench(c: &mut Criterion) {
    for (name, b) in MESSAGES {
        // Both parsers must accept every message, or the comparison is meaningless.
        assert!(ours_parse(b).is_some(), "{name}: sipedge rejects it");
        assert!(
            rsip::SipMessage::try_from(b).is_ok(),
            "{name}: rsip rejects it"
        );
    }
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, b) in MESSAGES {
        g.bench_with_input(BenchmarkId::new(name, "sipedge"), b, |bn, b| {
            bn.iter(|| parse(black_box(b)).map(|m| m.len()))
        });
        g.bench_with_input(BenchmarkId::new(name, "sipedge_validated"), b, |bn, b| {
            bn.iter(|| ours_parse(black_box(b)).map(|m| m.len()))
        });
        g.bench_with_input(BenchmarkId::new(name, "rsip"), b, |bn, b| {
            bn.iter(|| rsip::SipMessage::try_from(black_box(b)).is_ok())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_edit");
    g.throughput(Throughput::Elements(1));
    for (name, b) in MESSAGES {
        let mut out = Vec::with_capacity(2048);
        g.bench_with_input(BenchmarkId::new(name, "sipedge"), b, |bn, b| {
            bn.iter(|| {
                let m = ours_parse(black_box(b))?;
                ours_edit(&m, &mut out)?;
                Some(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new(name, "rsip"), b, |bn, b| {
            bn.iter(|| rsip_edit(black_box(b)).map(|v| v.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
