//! Per-message cost of loadgen's SIP scanning and response building, against a naive
//! baseline (String lines, lowercased header names in a HashMap, format! to build) measured
//! in the same run.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loadgen::sipmsg::{self, Msg, ResponseOpts};

const INVITE: &[u8] = b"INVITE sip:service@127.0.0.1:5090 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK0000000100000001i1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:loadgen@127.0.0.1:40000>;tag=0000000100000001\r\n\
To: <sip:service@127.0.0.1:5090>\r\n\
Call-ID: 0000000100000001-12345678@loadgen\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:loadgen@127.0.0.1:40000>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

/// The naive way: own every line, lowercase every name, map them.
fn naive_parse(b: &[u8]) -> (String, HashMap<String, String>) {
    let text = String::from_utf8_lossy(b).to_string();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut h = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            h.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    (first, h)
}

fn naive_response(h: &HashMap<String, String>) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=abc\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        h["via"], h["from"], h["to"], h["call-id"], h["cseq"]
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sipmsg");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse/loadgen", |b| {
        b.iter(|| Msg::parse(black_box(INVITE)).unwrap().cseq)
    });
    g.bench_function("parse/naive", |b| {
        b.iter(|| naive_parse(black_box(INVITE)).1.len())
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("parse+respond/loadgen", |b| {
        b.iter(|| {
            out.clear();
            let m = Msg::parse(black_box(INVITE)).unwrap();
            let o = ResponseOpts {
                code: 200,
                to_tag: b"abc",
                contact: b"",
                record_route: false,
                sdp: false,
            };
            sipmsg::build_response(&mut out, &m, &o);
            out.len()
        })
    });
    g.bench_function("parse+respond/naive", |b| {
        b.iter(|| naive_response(&naive_parse(black_box(INVITE)).1).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
