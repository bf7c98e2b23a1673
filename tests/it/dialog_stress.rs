//! Multi-thread stress: several engines (one per thread) share one dialog table, and the
//! in-dialog requests of the same dialogs arrive on different workers at the same time (ACK
//! retransmissions on every worker race for the one `ConfirmedNa → Confirmed` transition; INFO
//! on every worker; BYE on a worker that does not own the dialog). Afterwards statistics must
//! be exact and the table empty.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use std::sync::{Arc, Barrier};

use flows::*;
use sipedge::dialog::DlgEvent;
use sipedge::engine::{Inbound, Output, Settings};
use sipedge::wire::Transport;

fn feed(e: &mut sipedge::engine::Engine, out: &mut Output, src: &str, text: &str) -> Vec<Sent> {
    out.clear();
    e.handle_datagram(
        Inbound {
            now_ms: 1000,
            now_us: 1_000_000,
            src: sa(src),
            local: 0,
            transport: Transport::Udp,
            conn: None,
            bytes: text.as_bytes(),
        },
        out,
    );
    assert!(
        out.handoff.is_none(),
        "in-dialog UDP traffic is never handed off"
    );
    out.tx
        .iter()
        .map(|t| Sent {
            dst: t.dst,
            text: String::from_utf8_lossy(out.bytes(t)).into_owned(),
        })
        .collect()
}

fn run(workers: usize, calls: usize) {
    let mut net = Net::with(Settings::default(), workers);
    let receivers = net.shared.make_queues(|_| Box::new(|| {})).unwrap();
    let mut oks = Vec::with_capacity(calls);
    for i in 0..calls {
        let w = i % workers;
        let call = format!("s{i}");
        let out = net.send_to(w, UAC, &invite(&call, "ft", &call, "sip:bob@10.0.0.2:5060"));
        let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
        let out = net.send_to(w, UAS1, &reply(&fwd, 200, "OK", Some("tt"), UAS1));
        oks.push(one(&out, "200", |s| s.code() == 200).clone());
    }
    let st = net.stats();
    assert_eq!(st.active_dialogs, calls as i64);
    let oks = Arc::new(oks);
    let barrier = Arc::new(Barrier::new(workers));
    let engines = std::mem::take(&mut net.engines);
    let handles: Vec<_> = engines
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(w, (mut e, rx))| {
            let oks = oks.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut out = Output::with_capacity(1 << 16, 16);
                barrier.wait();
                for (i, ok) in oks.iter().enumerate() {
                    let ack = caller_req(ok, "ACK", 1, &format!("a{i}w{w}"));
                    let s = feed(&mut e, &mut out, UAC, &ack);
                    assert_eq!(one(&s, "ACK", |m| m.is("ACK")).dst, sa(UAS1));
                    let info = caller_req(ok, "INFO", 10 + w as u32, &format!("i{i}w{w}"));
                    let s = feed(&mut e, &mut out, UAC, &info);
                    let f = one(&s, "INFO", |m| m.is("INFO")).clone();
                    let s = feed(&mut e, &mut out, UAS1, &reply(&f, 200, "OK", None, ""));
                    assert_eq!(one(&s, "200", |m| m.code() == 200).dst, sa(UAC));
                }
                barrier.wait();
                for (i, ok) in oks.iter().enumerate() {
                    // BYE lands on the worker after the owner.
                    if (i + 1) % workers != w {
                        continue;
                    }
                    let bye = caller_req(ok, "BYE", 100, &format!("b{i}"));
                    let s = feed(&mut e, &mut out, UAC, &bye);
                    let f = one(&s, "BYE", |m| m.is("BYE")).clone();
                    feed(&mut e, &mut out, UAS1, &reply(&f, 200, "OK", None, ""));
                }
                while let Ok(cmd) = rx.try_recv() {
                    out.clear();
                    e.handle_command(1000, 1_000_000, cmd, &mut out);
                }
                e
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = net.stats();
    assert_eq!(st.active_dialogs, 0);
    assert_eq!(st.early_dialogs, 0);
    assert_eq!(st.processed_dialogs, calls as u64);
    assert_eq!(st.failed_dialogs + st.expired_dialogs, 0);
    assert_eq!(net.dialogs(), 0, "no dialog left in the table");
    assert_eq!(
        net.rec.count(DlgEvent::Confirmed),
        calls,
        "one CONFIRMED per dialog"
    );
    assert_eq!(net.rec.count(DlgEvent::Terminated), calls);
    assert_eq!(net.rec.count(DlgEvent::Destroy), calls);
    assert_eq!(net.rec.count(DlgEvent::ReqWithin), calls * workers);
}

#[test]
fn two_workers() {
    run(2, 300);
}

#[test]
fn four_workers() {
    run(4, 300);
}
