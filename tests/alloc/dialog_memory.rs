//! Heap held per confirmed dialog, and that ended dialogs give it all back.
//!
//! The binary's counting global allocator tracks live heap bytes (process-wide,
//! `crate::live_bytes`; every test of the binary holds `crate::serial()`, so nothing else
//! allocates meanwhile). One engine sets up N calls in virtual time, lets the INVITE
//! transactions linger out, and checks the bytes per dialog against a budget; then it ends
//! every call with BYE/200, lets everything linger out and checks that what stays is only the
//! table's grown capacity, not per-call leftovers. The full-size measurement (1M dialogs) is
//! `cargo run --release --example dialog_memory -- 1000000`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use sipedge::engine::Settings;

use crate::live_bytes;

/// INVITE → 180 → 200 → ACK; returns the 200 as the caller got it.
fn setup(net: &mut Net, i: usize) -> Sent {
    let call = format!("m{i}");
    let inv = invite(
        &call,
        &format!("f{i}"),
        &format!("b{i}"),
        "sip:bob@10.0.0.2:5060",
    );
    let s = net.send(UAC, &inv);
    let fwd = one(&s, "INVITE", |m| m.is("INVITE")).clone();
    let tag = format!("t{i}");
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some(&tag), UAS1));
    let s = net.send(UAS1, &reply(&fwd, 200, "OK", Some(&tag), UAS1));
    let ok = one(&s, "200", |m| m.code() == 200).clone();
    net.send(UAC, &caller_req(&ok, "ACK", 1, &format!("a{i}")));
    net.log.clear();
    ok
}

/// Sets up calls `from..from + n`, checks the heap per confirmed dialog against `budget`,
/// ends them all with BYE/200 and lets them linger out. Returns the bytes per dialog.
fn round(net: &mut Net, from: usize, n: usize, budget: i64) -> i64 {
    let base_dialogs = net.dialogs();
    let heap0 = live_bytes();
    let mut oks = Vec::with_capacity(n);
    for i in from..from + n {
        oks.push(setup(net, i));
        if i % 10 == 9 {
            net.advance(1);
        }
    }
    net.advance(40_000);
    assert_eq!(net.dialogs(), base_dialogs + n);
    // `oks` is test-side memory: subtract what it holds.
    let oks_bytes: i64 = oks
        .iter()
        .map(|s| (s.text.capacity() + size_of::<Sent>()) as i64)
        .sum();
    let per_dialog = (live_bytes() - heap0 - oks_bytes) / n as i64;
    println!("live heap per confirmed dialog: {per_dialog} B");
    assert!(
        per_dialog > 200,
        "a dialog must cost something: {per_dialog} B"
    );
    assert!(
        per_dialog <= budget,
        "{per_dialog} B per dialog, budget {budget}"
    );

    for (i, ok) in oks.iter().enumerate() {
        let s = net.send(UAC, &caller_req(ok, "BYE", 2, &format!("bye{from}-{i}")));
        let bye = one(&s, "BYE", |m| m.is("BYE")).clone();
        net.send(UAS1, &reply(&bye, 200, "OK", None, ""));
        net.log.clear();
    }
    drop(oks);
    net.advance(400_000);
    assert_eq!(
        net.dialogs(),
        base_dialogs,
        "every ended dialog left the table"
    );
    per_dialog
}

#[test]
fn confirmed_dialog_heap_is_bounded_and_returned() {
    const N: usize = 4000;
    // Regression budget: the goal is 1 KiB; 1M dialogs measure ~1.1 KiB, small tables pay
    // more for their power-of-two capacity.
    const BUDGET: i64 = 2560;
    let _serial = crate::serial();
    let mut net = Net::build(Settings::default(), 1, false);
    for i in 0..50 {
        setup(&mut net, 1_000_000 + i);
    }
    net.advance(40_000);
    let heap0 = live_bytes();

    // Round 1 grows the table, wheel and slabs to N; what stays after is capacity.
    round(&mut net, 0, N, BUDGET);
    let heap1 = live_bytes();
    println!(
        "kept after round 1 (capacity): {} B per call",
        (heap1 - heap0) / N as i64
    );
    // Round 2 must reuse that capacity: ended calls leave nothing behind.
    let per_dialog = round(&mut net, N, N, BUDGET);
    let leaked = (live_bytes() - heap1) / N as i64;
    println!("kept after round 2: {leaked} B per call");
    assert!(
        leaked < 16,
        "ended calls keep {leaked} B each (a dialog holds {per_dialog} B)"
    );
}
