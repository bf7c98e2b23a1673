//! Virtual-time flows for the edge's defences in the engine: a scanner banned by the
//! per-source rate (drop and reply), rate pipes, per-profile call rates, a rule's `drop`,
//! the transaction cap, and overload control (new INVITEs refused, retransmissions, ACK and
//! BYE still handled).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use std::sync::Arc;

use flows::*;
use sipedge::config::Config;
use sipedge::policy::{Policy, RulePolicy};
use sipedge::stats::Counter;

const DIRECT: &str = "sip:bob@10.0.0.2:5060";
const SCANNER: &str = "203.0.113.5:5060";

fn counter(net: &Net, c: Counter) -> u64 {
    net.shared
        .worker_stats
        .iter()
        .map(|w| w.snapshot().get(c))
        .sum()
}

/// A net whose engine runs with this config's `[flood]`, `[limits]`, `[overload]` and rules.
fn net_with(toml: &str) -> Net {
    let text = format!("[profiles]\nno_value = [\"calls\"]\nwith_value = [\"caller\"]\n{toml}");
    let config = Config::from_toml_str(&text).unwrap();
    let net = Net::new();
    let from = sipedge::engine::Settings::from_config(&config);
    net.settings(|s| {
        s.flood = from.flood.clone();
        s.max_transactions = from.max_transactions;
        s.max_request_memory = from.max_request_memory;
        s.overload = from.overload;
    });
    if !config.rule.is_empty() {
        let policy: Arc<dyn Policy> = Arc::new(RulePolicy::new(&config.rule));
        net.shared.policy.store(Arc::new(Some(policy)));
    }
    net
}

fn options(i: usize) -> String {
    raw_request("OPTIONS", DIRECT, &format!("scan{i}"), "")
}

#[test]
fn a_scanner_is_banned_and_then_dropped_before_parsing() {
    let mut net =
        net_with("[flood]\nper_source_rps = 10\nburst = 20\nban_seconds = 60\ntrusted = []\n");
    let mut forwarded = 0;
    for i in 0..100 {
        forwarded += net.send(SCANNER, &options(i)).len();
    }
    assert_eq!(
        forwarded, 20,
        "the burst passes, the rest is dropped silently"
    );
    assert_eq!(counter(&net, Counter::FloodBans), 1, "banned once");
    assert_eq!(counter(&net, Counter::RefusedSourceRate), 1);
    assert_eq!(counter(&net, Counter::RefusedBanned), 79);
    let bans = net.shared.flood.bans(net.now);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].0.to_string(), "203.0.113.5");
    // Its bucket refills, but the ban holds for 60 s; garbage from it is not even parsed.
    net.advance(30_000);
    assert!(net.send(SCANNER, &options(100)).is_empty());
    let parse_errors_before: u64 = net.shared.worker_stats[0]
        .snapshot()
        .parse_errors
        .iter()
        .map(|p| p.1)
        .sum();
    assert!(net.send(SCANNER, "INVITE garbage\r\n\r\n").is_empty());
    let parse_errors_after: u64 = net.shared.worker_stats[0]
        .snapshot()
        .parse_errors
        .iter()
        .map(|p| p.1)
        .sum();
    assert_eq!(parse_errors_before, parse_errors_after);
    // The caller (another source) is untouched meanwhile.
    let out = net.send(UAC, &invite("legit", "ft", "b-legit", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")), "{out:?}");
    // Responses from a banned address still go through (a banned PBX's calls can end).
    net.advance(31_000);
    assert_eq!(net.send(SCANNER, &options(101)).len(), 1, "the ban expired");
    assert!(net.shared.flood.bans(net.now).is_empty());
}

#[test]
fn action_reply_answers_503_with_retry_after() {
    let mut net = net_with(
        "[flood]\nper_source_rps = 1\nburst = 1\nban_seconds = 120\naction = \"reply\"\ntrusted = []\n",
    );
    assert!(
        net.send(SCANNER, &options(0))
            .iter()
            .all(|s| s.code() != 503)
    );
    for i in 1..4 {
        let out = net.send(SCANNER, &options(i));
        let r = one(&out, "503", |s| s.code() == 503);
        assert_eq!(r.hdr("Retry-After"), "120");
    }
    assert_eq!(counter(&net, Counter::FloodBans), 1);
    assert!(
        net.shared
            .flood
            .unban("203.0.113.5".parse().unwrap(), net.now)
    );
    net.advance(1_000);
    assert!(
        net.send(SCANNER, &options(9))
            .iter()
            .all(|s| s.code() != 503)
    );
}

#[test]
fn an_invite_pipe_counts_trusted_sources_too_and_spares_other_methods() {
    let mut net = net_with("[flood]\n[[flood.pipe]]\nmethod = \"INVITE\"\nrps = 2\nburst = 2\n");
    for i in 0..2 {
        let out = net.send(
            UAC,
            &invite(&format!("p{i}"), "ft", &format!("bp{i}"), DIRECT),
        );
        assert!(out.iter().any(|s| s.is("INVITE")));
    }
    assert!(net.send(UAC, &invite("p2", "ft", "bp2", DIRECT)).is_empty());
    assert_eq!(counter(&net, Counter::RefusedPipe), 1);
    assert_eq!(
        net.send(UAC, &options(7)).len(),
        1,
        "OPTIONS is not in the INVITE pipe"
    );
    net.advance(500);
    let out = net.send(UAC, &invite("p3", "ft", "bp3", DIRECT));
    assert!(
        out.iter().any(|s| s.is("INVITE")),
        "one more after 500 ms at 2/s"
    );
}

#[test]
fn a_profile_call_rate_refuses_the_excess_with_the_limit_reply() {
    let mut net = net_with(
        r#"
[[rule]]
name = "cps"
actions = [{ limit = { profile = "calls", rate = 2, burst = 2, code = 486 } }]
[rule.match]
method = ["INVITE"]
initial = true
"#,
    );
    for i in 0..2 {
        let out = net.send(
            UAC,
            &invite(&format!("r{i}"), "ft", &format!("br{i}"), DIRECT),
        );
        assert!(out.iter().any(|s| s.is("INVITE")));
    }
    let out = net.send(UAC, &invite("r2", "ft", "br2", DIRECT));
    one(&out, "486", |s| s.code() == 486);
    assert_eq!(counter(&net, Counter::RefusedProfileRate), 1);
    net.advance(1_000);
    let out = net.send(UAC, &invite("r3", "ft", "br3", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")));
}

#[test]
fn a_drop_rule_is_silent_and_counted() {
    let mut net = net_with(
        r#"
[[rule]]
name = "scanners"
actions = [{ drop = true }]
[rule.match]
header = [{ name = "User-Agent", value = { prefix = "friendly-scanner" } }]
"#,
    );
    let inv = invite_ex(
        "s1",
        "ft",
        "bs1",
        DIRECT,
        "User-Agent: friendly-scanner\r\n",
    );
    assert!(net.send(UAC, &inv).is_empty());
    let opt = raw_request(
        "OPTIONS",
        DIRECT,
        "s2",
        "User-Agent: friendly-scanner 1.0\r\n",
    );
    assert!(net.send(UAC, &opt).is_empty());
    assert_eq!(counter(&net, Counter::RefusedPolicyDrop), 2);
    assert_eq!(net.dialogs(), 0, "no state for a dropped INVITE");
    let out = net.send(UAC, &invite("s3", "ft", "bs3", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")));
}

#[test]
fn the_transaction_cap_refuses_new_invites_only() {
    let mut net = net_with("[limits]\nmax_transactions = 1\n");
    let first = invite("c1", "ft", "bc1", DIRECT);
    let out = net.send(UAC, &first);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAC, &invite("c2", "ft", "bc2", DIRECT));
    let r = one(&out, "503", |s| s.code() == 503);
    assert_eq!(r.hdr("Retry-After"), "1");
    assert_eq!(counter(&net, Counter::RefusedTxnCap), 1);
    // The first call goes on: its retransmission is absorbed, its answer relayed.
    let out = net.send(UAC, &first);
    assert!(out.iter().all(|s| s.code() != 503), "{out:?}");
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("tt1"), UAS1));
    one(&out, "200", |s| s.code() == 200);
    let live = counter(&net, Counter::TxnsOpened) - counter(&net, Counter::TxnsClosed);
    assert_eq!(live, 1);
    assert!(counter(&net, Counter::TxnBytesHeld) > first.len() as u64);
    // Once it is gone (linger), a new call is accepted and the bytes are released.
    net.advance(40_000);
    assert_eq!(
        counter(&net, Counter::TxnsOpened),
        counter(&net, Counter::TxnsClosed)
    );
    assert_eq!(
        counter(&net, Counter::TxnBytesHeld),
        counter(&net, Counter::TxnBytesReleased)
    );
    let out = net.send(UAC, &invite("c3", "ft", "bc3", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")));
}

#[test]
fn overload_refuses_new_invites_but_not_calls_in_progress() {
    let mut net = net_with("[overload]\nmax_delay_ms = 100\nretry_after = 7\n");
    // A call set up before the overload.
    let first = invite("o1", "ft", "bo1", DIRECT);
    let out = net.send(UAC, &first);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("tt1"), UAS1));
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    // One late batch is a stall, not overload; a delay that persists for the bound is.
    let now = net.now;
    net.engines[0].note_queue_delay(now, 150_000);
    assert!(!net.engines[0].is_overloaded());
    net.engines[0].note_queue_delay(now + 50, 40_000);
    net.engines[0].note_queue_delay(now + 60, 150_000);
    net.engines[0].note_queue_delay(now + 150, 150_000);
    assert!(
        !net.engines[0].is_overloaded(),
        "above the bound for 90 ms only"
    );
    net.engines[0].note_queue_delay(now + 160, 150_000);
    assert!(net.engines[0].is_overloaded());
    let out = net.send(UAC, &invite("o2", "ft", "bo2", DIRECT));
    let r = one(&out, "503", |s| s.code() == 503);
    assert_eq!(r.hdr("Retry-After"), "7");
    assert_eq!(counter(&net, Counter::RefusedOverload), 1);
    // ACK, a retransmitted INVITE and BYE of the call that is up pass.
    net.send(UAC, &caller_req(&ok, "ACK", 1, "ack-o1"));
    assert!(net.send(UAC, &first).iter().all(|s| s.code() != 503));
    let out = net.send(UAC, &caller_req(&ok, "BYE", 2, "bye-o1"));
    assert!(out.iter().any(|s| s.is("BYE")), "{out:?}");
    // Hysteresis: still overloaded above half the bound, clear below it.
    net.engines[0].note_queue_delay(now + 200, 60_000);
    assert!(net.engines[0].is_overloaded());
    net.engines[0].note_queue_delay(now + 210, 40_000);
    assert!(!net.engines[0].is_overloaded());
    let out = net.send(UAC, &invite("o3", "ft", "bo3", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")));
}

#[test]
fn overload_can_drop_and_can_be_disabled() {
    let mut net = net_with("[overload]\naction = \"drop\"\n");
    net.engines[0].note_queue_delay(0, 1_000_000);
    net.engines[0].note_queue_delay(100, 1_000_000);
    assert!(net.send(UAC, &invite("d1", "ft", "bd1", DIRECT)).is_empty());
    assert_eq!(counter(&net, Counter::RefusedOverload), 1);
    let mut net = net_with("[overload]\nenabled = false\n");
    net.engines[0].note_queue_delay(0, 10_000_000);
    net.engines[0].note_queue_delay(10_000, 10_000_000);
    assert!(!net.engines[0].is_overloaded());
    let out = net.send(UAC, &invite("d2", "ft", "bd2", DIRECT));
    assert!(out.iter().any(|s| s.is("INVITE")));
}
