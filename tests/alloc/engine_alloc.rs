//! Heap allocations per packet through the engine, counted by the binary's global allocator,
//! which only counts on threads that switched it on (so the test harness's own threads do not
//! interfere).
//!
//! Asserts zero allocations in the steady state (in-dialog ACK, BYE, re-INVITE and their
//! responses, 2xx retransmissions, provisional relays) and reports what an initial INVITE
//! costs (`cargo test --test alloc engine_alloc -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use sipedge::engine::{Output, Settings};

/// Allocations made by `f` on this thread (the binary's counting allocator, `crate::count`).
fn count(f: impl FnOnce()) -> u64 {
    crate::count(f).1
}

/// Feed one packet straight to worker 0 with a warm `Output`; returns allocations and the
/// messages sent.
fn packet(net: &mut Net, out: &mut Output, src: &str, bytes: &[u8]) -> (u64, Vec<Sent>) {
    let inb = net.inbound(sa(src), bytes);
    let e = &mut net.engines[0];
    let n = count(|| {
        out.clear();
        e.handle_datagram(inb, out);
    });
    let sent = out
        .tx
        .iter()
        .map(|t| Sent {
            dst: t.dst,
            text: String::from_utf8_lossy(out.bytes(t)).into_owned(),
        })
        .collect();
    (n, sent)
}

#[test]
fn steady_state_packets_do_not_allocate() {
    let _serial = crate::serial();
    let mut net = Net::build(Settings::default(), 1, false);
    let mut out = Output::with_capacity(1 << 16, 64);
    let ruri = "sip:bob@10.0.0.2:5060";

    // Warm-up call (first-use growth of wheel, slabs and scratch buffers is not per packet).
    for round in 0..3 {
        let call = format!("warm{round}");
        let inv = invite(&call, "ft", &format!("w{round}"), ruri);
        let (_, s) = packet(&mut net, &mut out, UAC, inv.as_bytes());
        let fwd = one(&s, "INVITE", |m| m.is("INVITE")).clone();
        let r180 = reply(&fwd, 180, "Ringing", Some("t"), UAS1);
        packet(&mut net, &mut out, UAS1, r180.as_bytes());
        let ok = reply(&fwd, 200, "OK", Some("t"), UAS1);
        let (_, s) = packet(&mut net, &mut out, UAS1, ok.as_bytes());
        let ok_up = one(&s, "200", |m| m.code() == 200).clone();
        let ack = caller_req(&ok_up, "ACK", 1, &format!("a{round}"));
        packet(&mut net, &mut out, UAC, ack.as_bytes());
        let re = caller_req(&ok_up, "INVITE", 2, &format!("re{round}"));
        let (_, s) = packet(&mut net, &mut out, UAC, re.as_bytes());
        let re_fwd = one(&s, "re-INVITE", |m| m.is("INVITE")).clone();
        packet(
            &mut net,
            &mut out,
            UAS1,
            reply(&re_fwd, 200, "OK", None, UAS1).as_bytes(),
        );
        let bye = caller_req(&ok_up, "BYE", 3, &format!("bye{round}"));
        let (_, s) = packet(&mut net, &mut out, UAC, bye.as_bytes());
        let bye_fwd = one(&s, "BYE", |m| m.is("BYE")).clone();
        packet(
            &mut net,
            &mut out,
            UAS1,
            reply(&bye_fwd, 200, "OK", None, "").as_bytes(),
        );
    }

    // Measured call.
    let inv = invite("m1", "ft", "m1", ruri);
    let (invite_allocs, s) = packet(&mut net, &mut out, UAC, inv.as_bytes());
    println!("initial INVITE (dialog + transaction + fork): {invite_allocs} allocations");
    let fwd = one(&s, "INVITE", |m| m.is("INVITE")).clone();
    let r180 = reply(&fwd, 180, "Ringing", Some("t"), UAS1);
    let (first_180, _) = packet(&mut net, &mut out, UAS1, r180.as_bytes());
    println!("first 180 with a new To-tag (early leg): {first_180} allocations");

    let mut steady = Vec::new();
    let (n, s) = packet(&mut net, &mut out, UAS1, r180.as_bytes());
    assert_eq!(one(&s, "180", |m| m.code() == 180).dst, sa(UAC));
    steady.push(("180 relay (same leg)", n));
    let r183 = reply(&fwd, 183, "Session Progress", Some("t"), UAS1);
    let (n, _) = packet(&mut net, &mut out, UAS1, r183.as_bytes());
    steady.push(("183 relay", n));
    let (n, _) = packet(&mut net, &mut out, UAC, inv.as_bytes());
    steady.push(("INVITE retransmission absorbed", n));

    let ok = reply(&fwd, 200, "OK", Some("t"), UAS1);
    let (first_ok, s) = packet(&mut net, &mut out, UAS1, ok.as_bytes());
    println!("first 200 (confirm, callee leg stored): {first_ok} allocations");
    let ok_up = one(&s, "200", |m| m.code() == 200).clone();
    let (n, s) = packet(&mut net, &mut out, UAS1, ok.as_bytes());
    assert_eq!(s.len(), 1);
    steady.push(("2xx retransmission relay", n));

    let ack = caller_req(&ok_up, "ACK", 1, "am");
    let (n, s) = packet(&mut net, &mut out, UAC, ack.as_bytes());
    assert_eq!(one(&s, "ACK", |m| m.is("ACK")).dst, sa(UAS1));
    steady.push(("ACK (confirm)", n));
    let (n, _) = packet(&mut net, &mut out, UAC, ack.as_bytes());
    steady.push(("ACK retransmission", n));

    let re = caller_req(&ok_up, "INVITE", 2, "rem");
    let (n, s) = packet(&mut net, &mut out, UAC, re.as_bytes());
    let re_fwd = one(&s, "re-INVITE", |m| m.is("INVITE")).clone();
    steady.push(("re-INVITE", n));
    let (n, s) = packet(
        &mut net,
        &mut out,
        UAS1,
        reply(&re_fwd, 200, "OK", None, UAS1).as_bytes(),
    );
    let re_ok = one(&s, "200", |m| m.code() == 200).clone();
    steady.push(("re-INVITE 200", n));
    let re_ack = caller_req(&ok_up, "ACK", 2, "reack");
    assert_eq!(re_ok.dst, sa(UAC));
    let (n, _) = packet(&mut net, &mut out, UAC, re_ack.as_bytes());
    steady.push(("re-INVITE ACK", n));

    let bye = caller_req(&ok_up, "BYE", 3, "byem");
    let (n, s) = packet(&mut net, &mut out, UAC, bye.as_bytes());
    let bye_fwd = one(&s, "BYE", |m| m.is("BYE")).clone();
    steady.push(("BYE", n));
    let (n, s) = packet(
        &mut net,
        &mut out,
        UAS1,
        reply(&bye_fwd, 200, "OK", None, "").as_bytes(),
    );
    assert_eq!(s.len(), 1);
    steady.push(("BYE 200", n));

    for (what, n) in &steady {
        println!("{what}: {n} allocations");
    }
    let bad: Vec<_> = steady.iter().filter(|(_, n)| *n != 0).collect();
    assert!(bad.is_empty(), "steady-state packets allocated: {bad:?}");
}
