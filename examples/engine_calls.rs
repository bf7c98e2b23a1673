//! Engine cost per call, sans-IO: CPU time and (under callgrind) instructions spent inside
//! `Engine::handle_datagram` for one whole call, with no sockets and no clock.
//!
//! Drives `N` calls (INVITE → 100 + forwarded INVITE, 180, 200, ACK, BYE, 200: six datagrams
//! in, seven out; with `INV_100_DELAY_MS=100` in the environment our 100 Trying is held back
//! and the 180 makes it unneeded, six out) through one engine built by the test harness in
//! `tests/flows`, advancing virtual time 1 ms every 10 calls (10k cps of virtual time) so
//! transactions linger out as in a live proxy. Only the `handle_datagram` calls are timed;
//! building the messages and reading the engine's output (to learn the forwarded branch, tags
//! and routes, as a real UA would) happen outside the timed spans.
//!
//! Invariants: the run fails (exit 1) unless every call produced exactly the expected
//! messages (the forwarded INVITE, the 100 at once or never as configured, the relayed 180
//! and 200, the forwarded ACK and BYE, the relayed BYE 200) and the dialog table is empty at
//! the end (every dialog ended).
//!
//! Usage:
//! - `cargo run --release --example engine_calls -- 20000 [rounds]`: ns of engine time per
//!   call, the median of `rounds` (default 5) rounds of N calls.
//! - Instructions (repeatable, immune to the noisy VM):
//!   `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/examples/engine_calls 2000 1`
//!   then `callgrind_annotate --inclusive=yes /tmp/cg.out | grep engine_step` and divide by
//!   the number of calls (printed); without `--inclusive` the same file lists where inside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// A measuring tool outside the sans-IO core: it reads the clock around each engine call.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/flows/mod.rs"]
mod flows;

use std::time::{Duration, Instant};

use flows::*;
use sipedge::engine::{Engine, Inbound, Output, Settings};

/// The measured span: one datagram through the engine. Never inlined, so callgrind's inclusive
/// count for `engine_step` is the engine's cost alone.
#[inline(never)]
fn engine_step(engine: &mut Engine, inb: Inbound<'_>, out: &mut Output) {
    engine.handle_datagram(inb, out);
}

/// Delivers `bytes` from `src` to worker 0, following hand-offs; returns what the engine sent
/// and the time spent inside `handle_datagram`.
fn deliver(net: &mut Net, src: &str, text: &str) -> (Vec<Sent>, Duration) {
    net.out.clear();
    let inb = net.inbound(sa(src), text.as_bytes());
    let t0 = Instant::now();
    engine_step(&mut net.engines[0], inb, &mut net.out);
    let took = t0.elapsed();
    let sent = net
        .out
        .tx
        .iter()
        .map(|t| Sent {
            dst: t.dst,
            text: String::from_utf8_lossy(net.out.bytes(t)).into_owned(),
        })
        .collect();
    (sent, took)
}

/// One whole call; returns the engine time it took, or what went wrong.
fn call(net: &mut Net, i: u64, trying_at_once: bool) -> Result<Duration, String> {
    let mut spent = Duration::ZERO;
    let mut step = |net: &mut Net, src: &str, text: &str, want: usize| {
        let (s, d) = deliver(net, src, text);
        spent += d;
        if s.len() == want {
            Ok(s)
        } else {
            Err(format!(
                "call {i}: expected {want} messages, got {}:\n{s:?}",
                s.len()
            ))
        }
    };
    let id = format!("ec-{i}");
    let s = step(
        net,
        UAC,
        &invite(
            &id,
            &format!("f{i}"),
            &format!("b{i}"),
            "sip:bob@10.0.0.2:5060",
        ),
        if trying_at_once { 2 } else { 1 },
    )?;
    let fwd = s
        .iter()
        .find(|m| m.is("INVITE"))
        .ok_or("no forwarded INVITE")?
        .clone();
    if s.iter().any(|m| m.code() == 100) != trying_at_once {
        return Err(format!("call {i}: 100 Trying expected: {trying_at_once}"));
    }
    let tag = format!("t{i}");
    step(net, UAS1, &reply(&fwd, 180, "Ringing", Some(&tag), UAS1), 1)?;
    let s = step(net, UAS1, &reply(&fwd, 200, "OK", Some(&tag), UAS1), 1)?;
    let ok = s[0].clone();
    step(net, UAC, &caller_req(&ok, "ACK", 1, &format!("a{i}")), 1)?;
    let s = step(net, UAC, &caller_req(&ok, "BYE", 2, &format!("y{i}")), 1)?;
    let bye = s[0].clone();
    if !bye.is("BYE") {
        return Err(format!("call {i}: BYE not forwarded: {}", bye.first()));
    }
    step(net, UAS1, &reply(&bye, 200, "OK", None, UAS1), 1)?;
    Ok(spent)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut settings = Settings::default();
    if let Some(ms) = std::env::var("INV_100_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.inv_100_delay_ms = ms;
    }
    let trying_at_once = settings.inv_100_delay_ms == 0;
    let mut net = Net::build(settings, 1, false);
    let mut per_call = Vec::with_capacity(rounds);
    let mut next = 0u64;
    for _ in 0..rounds {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            match call(&mut net, next, trying_at_once) {
                Ok(d) => total += d,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
            next += 1;
            if next.is_multiple_of(10) {
                net.advance(1);
            }
        }
        per_call.push(total.as_nanos() as f64 / n.max(1) as f64);
    }
    // Past the transaction linger: nothing may be left.
    net.advance(40_000);
    if net.dialogs() != 0 {
        eprintln!("{} dialogs left in the table", net.dialogs());
        std::process::exit(1);
    }
    let mut sorted = per_call.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "calls: {} ({} rounds of {n}); engine ns/call per round: {}; median {median:.0} ns/call ({:.0} ns/datagram in)",
        next,
        rounds,
        per_call
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" "),
        median / 6.0
    );
}
