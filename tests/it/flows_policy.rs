//! Virtual-time flows with policy rules installed in the engine: per-caller limits (and their
//! release on every end path), replies to non-INVITE requests, rules on sequential requests
//! (terminate), and shutdown ending every dialog exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use std::sync::Arc;

use flows::*;
use sipedge::config::Config;
use sipedge::dialog::DlgState;
use sipedge::engine::Output;
use sipedge::policy::{Policy, RulePolicy};

const DIRECT: &str = "sip:bob@10.0.0.2:5060";

/// A net whose engine runs the rules of `toml` (profiles `calls` and `caller` exist).
fn with_rules(toml: &str) -> Net {
    let text = format!("[profiles]\nno_value = [\"calls\"]\nwith_value = [\"caller\"]\n{toml}");
    let config = Config::from_toml_str(&text).unwrap();
    let net = Net::new();
    let policy: Arc<dyn Policy> = Arc::new(RulePolicy::new(&config.rule));
    net.shared.policy.store(Arc::new(Some(policy)));
    net
}

fn caller_size(net: &Net, value: &str) -> u64 {
    let p = net.shared.profiles.load();
    p.size(p.index("caller").unwrap(), Some(value.as_bytes()))
}

/// Set up a call to UAS1 up to the 200 relayed (not yet ACKed); returns the forwarded INVITE and
/// the 200 the caller got, or the reply the proxy answered with.
fn attempt(net: &mut Net, call: &str) -> Result<(Sent, Sent), Sent> {
    let inv = invite(call, &format!("ft-{call}"), &format!("b-{call}"), DIRECT);
    let out = net.send(UAC, &inv);
    if let Some(r) = out.iter().find(|s| s.code() >= 300) {
        return Err(r.clone());
    }
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(
        UAS1,
        &reply(&fwd, 200, "OK", Some(&format!("tt-{call}")), UAS1),
    );
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    net.send(UAC, &caller_req(&ok, "ACK", 1, &format!("ack-{call}")));
    Ok((fwd, ok))
}

const LIMIT_2: &str = r#"
[[rule]]
name = "limit"
actions = [{ limit = { profile = "caller", value = "$fU", max = 2, code = 486, reason = "Too Many Calls" } }]
[rule.match]
method = ["INVITE"]
initial = true
"#;

#[test]
fn limit_rejects_the_third_call_and_every_end_releases() {
    let mut net = with_rules(LIMIT_2);
    let (_, ok1) = attempt(&mut net, "c1").unwrap();
    let (_, ok2) = attempt(&mut net, "c2").unwrap();
    assert_eq!(caller_size(&net, "alice"), 2);
    let rejected = attempt(&mut net, "c3").unwrap_err();
    assert_eq!(rejected.code(), 486);
    assert!(
        rejected.first().contains("Too Many Calls"),
        "{}",
        rejected.first()
    );
    assert_eq!(
        caller_size(&net, "alice"),
        2,
        "a rejected call takes no slot"
    );
    assert_eq!(
        net.stats().processed_dialogs,
        2,
        "no dialog for the rejected call"
    );
    // BYE on one call frees a slot at once; a new call then passes.
    net.send(UAC, &caller_req(&ok1, "BYE", 2, "bye-c1"));
    assert_eq!(caller_size(&net, "alice"), 1);
    attempt(&mut net, "c4").unwrap();
    assert_eq!(caller_size(&net, "alice"), 2);
    // Expiry and termination release too, exactly once.
    net.send(UAC, &caller_req(&ok2, "BYE", 2, "bye-c2"));
    net.advance(43_200_000 + 60_000);
    assert_eq!(caller_size(&net, "alice"), 0);
    assert_eq!(net.stats().active_dialogs, 0);
}

#[test]
fn a_failed_call_releases_its_profile() {
    let mut net = with_rules(LIMIT_2);
    let inv = invite("f1", "ft-f1", "b-f1", DIRECT);
    let out = net.send(UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    assert_eq!(caller_size(&net, "alice"), 1);
    let out = net.send(UAS1, &reply(&fwd, 486, "Busy Here", Some("x"), UAS1));
    assert_eq!(one(&out, "486 upstream", |s| s.code() == 486).dst, sa(UAC));
    assert_eq!(caller_size(&net, "alice"), 0);
    assert_eq!(net.stats().failed_dialogs, 1);
}

#[test]
fn rules_answer_non_invite_requests() {
    let mut net = with_rules(
        r#"
[[rule]]
name = "no-register"
actions = [{ reply = { code = 403, reason = "Registrations Closed" } }]
[rule.match]
method = ["REGISTER"]
"#,
    );
    let out = net.send(
        UAC,
        &raw_request("REGISTER", DIRECT, "r1", "Max-Forwards: 70\r\n"),
    );
    let r = one(&out, "403", |s| s.code() == 403);
    assert_eq!(r.dst, sa(UAC));
    assert!(
        out.iter().all(|s| !s.is("REGISTER")),
        "must not be forwarded"
    );
    // Other methods still go through.
    let out = net.send(
        UAC,
        &raw_request("MESSAGE", DIRECT, "m1", "Max-Forwards: 70\r\n"),
    );
    assert_eq!(one(&out, "MESSAGE", |s| s.is("MESSAGE")).dst, sa(UAS1));
}

#[test]
fn a_sequential_rule_can_terminate_the_dialog() {
    let mut net = with_rules(
        r#"
[[rule]]
name = "kill-on-info"
actions = [{ terminate = { reason = "SIP;cause=403;text=\"policy\"" } }]
[rule.match]
method = ["INFO"]
initial = false
"#,
    );
    let (_, ok) = attempt(&mut net, "t1").unwrap();
    assert_eq!(net.state_of("t1"), Some(DlgState::Confirmed));
    let out = net.send(UAC, &caller_req(&ok, "INFO", 2, "info-t1"));
    let byes: Vec<_> = out.iter().filter(|s| s.is("BYE")).collect();
    assert_eq!(byes.len(), 2, "BYE to both sides: {out:?}");
    assert!(byes.iter().all(|b| b.hdr("Reason").contains("policy")));
    assert_eq!(net.state_of("t1"), Some(DlgState::Deleted));
    assert_eq!(net.stats().active_dialogs, 0);
}

#[test]
fn shutdown_ends_every_dialog_once_and_releases_profiles() {
    let mut net = with_rules(
        r#"
[[rule]]
name = "count"
actions = [{ set_profile = { name = "caller", value = "$fU" } }, { set_profile = { name = "calls" } }]
[rule.match]
method = ["INVITE"]
initial = true
"#,
    );
    attempt(&mut net, "s1").unwrap();
    attempt(&mut net, "s2").unwrap();
    assert_eq!(caller_size(&net, "alice"), 2);
    assert_eq!(net.stats().active_dialogs, 2);
    let mut out = Output::default();
    let now = net.now;
    net.engines[0].shutdown(now, &mut out);
    assert_eq!(caller_size(&net, "alice"), 0);
    let p = net.shared.profiles.load();
    assert_eq!(p.size(p.index("calls").unwrap(), None), 0);
    assert_eq!(net.stats().active_dialogs, 0);
    assert_eq!(net.dialogs(), 0, "table empty after shutdown");
    assert_eq!(net.rec.count(sipedge::dialog::DlgEvent::Terminated), 2);
    // A second shutdown changes nothing.
    net.engines[0].shutdown(now, &mut out);
    assert_eq!(net.rec.count(sipedge::dialog::DlgEvent::Terminated), 2);
}
