//! End-to-end acceptance of policy features with the real `sipedge` binary and SIPp on
//! 127.0.0.1: per-caller limits, config reload (SIGHUP and `core.reload`, a bad file keeps
//! the old policy), and dialog timeouts set by a rule that end calls with BYE both ways.
//!
//! Each test writes its own config into its scratch dir, starts its own proxy and SIPps on
//! fresh ports, bounds every wait, and checks outcomes both at the SIP level (SIPp's counters
//! and the status lines it received) and through the management API.
//!
//! Needs `sipp` (`apt-get install sip-tester`); `SIPEDGE_SKIP_SIPP=1` skips when missing.
use crate::common;

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::agent::{UacOutcome, UacRun, Uas};
use common::mgmt::{DialogCounters, lookup};
use common::proxy::Proxy;
use common::sipp::sipp_available;
use common::{TempDir, now};
use serde_json::Value;

/// Writes `text` to `path`, panicking with the path on failure.
fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}

/// Starts a proxy with `config` (a file path).
fn proxy_with(config: &Path) -> Proxy {
    let path = config.to_string_lossy().into_owned();
    Proxy::start(&["--log", "warn", "--config", &path])
}

/// Polls until `cond` holds (every 50 ms, at most `max`); returns whether it did.
fn wait_until(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now() + max;
    loop {
        if cond() {
            return true;
        }
        if now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `stats.fetch` until no dialog is active (at most 5 s); returns the last counters.
fn settled(proxy: &Proxy) -> DialogCounters {
    let mut last = proxy.dialog_counters();
    wait_until(Duration::from_secs(5), || {
        last = proxy.dialog_counters();
        last.active == 0
    });
    last
}

/// A `stats.fetch` counter by name (e.g. `dialog.expired_dialogs`); panics if absent.
fn stat(proxy: &Proxy, name: &str) -> u64 {
    let all = proxy.rpc("stats.fetch", Value::Null);
    match lookup(&all, &[name]) {
        Some(n) => n,
        None => panic!("stats.fetch has no {name}: {all}"),
    }
}

/// Runs one refused call and returns its outcome after checking it completed (final error
/// response and ACK) and that every error status line it received is `want`.
fn refused_call(dir: &TempDir, run: &UacRun, uas: &Uas, proxy: &Proxy, want: &str) -> UacOutcome {
    let out = run.start(dir, uas, proxy.sip_addr()).wait();
    out.assert_all_ok(1);
    let lines = out.error_status_lines();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l == want),
        "{}: expected only `{want}`, received {lines:?}",
        out.role
    );
    out
}

const LIMIT_CONFIG: &str = r#"
[profiles]
with_value = ["caller"]

[[rule]]
name = "two-calls-per-caller"
actions = [
  { limit = { profile = "caller", value = "$fU", max = 2, code = 486, reason = "Too Many Calls" } },
]
[rule.match]
method = ["INVITE"]
initial = true
"#;

/// Two calls from alice are up; her third is refused 486 by the limit, while bob's call at
/// the same moment passes. When all calls have ended, alice's profile count and the active
/// dialog count are back to 0.
#[test]
fn per_caller_limit_of_two() {
    if !sipp_available() {
        return;
    }
    let dir = TempDir::new("e2e_limit");
    let config = dir.join("limit.toml");
    write(&config, LIMIT_CONFIG);
    let proxy = proxy_with(&config);
    let uas = Uas::start(&dir, "uas", "uas.xml");

    let mut alice = UacRun::new("alice", "uac_caller.xml", 2)
        .caller("alice")
        // Long enough that a slow CI box finishes the refused and bob's calls inside it.
        .hold_ms(12_000)
        .start(&dir, &uas, proxy.sip_addr());
    let both_up = wait_until(Duration::from_secs(5), || {
        proxy.profile_size("caller", Some("alice")) == 2 && proxy.active_dialogs().ongoing == 2
    });
    assert!(
        both_up,
        "alice's two calls not up: profile={} active={:?}",
        proxy.profile_size("caller", Some("alice")),
        proxy.active_dialogs()
    );

    let third = UacRun::new("alice3", "uac_reject.xml", 1).caller("alice");
    refused_call(&dir, &third, &uas, &proxy, "SIP/2.0 486 Too Many Calls");
    assert_eq!(
        proxy.profile_size("caller", Some("alice")),
        2,
        "a refused call must not count"
    );

    let bob = UacRun::new("bob", "uac_caller.xml", 1)
        .caller("bob")
        .start(&dir, &uas, proxy.sip_addr())
        .wait();
    bob.assert_all_ok(1);
    assert!(
        alice.running(),
        "alice's held calls ended before bob's call: the calls were not concurrent"
    );
    alice.wait().assert_all_ok(2);

    let c = settled(&proxy);
    assert_eq!(c.active, 0, "dialogs left active: {c:?}");
    assert_eq!(proxy.profile_size("caller", Some("alice")), 0);
    assert_eq!(proxy.profile_size("caller", Some("bob")), 0);
    let uas_errors = uas.errors();
    let uas_ok = uas.finish().map_or(0, |s| s.successful);
    assert_eq!(
        uas_ok, 3,
        "UAS must see alice's 2 and bob's 1 call, never the refused one\n{uas_errors}"
    );
}

/// The blocking rule with a given reply; `initial` INVITEs to user `blocked` only.
fn block_config(code: u16, reason: &str) -> String {
    format!(
        r#"[[rule]]
name = "block"
actions = [{{ reply = {{ code = {code}, reason = "{reason}" }} }}]
[rule.match]
method = ["INVITE"]
initial = true
ruri_user = "blocked"
"#
    )
}

/// A call up under the old config survives reloads; new calls follow the new file; an invalid
/// file is refused by `core.reload` with `FILE:LINE:COL:` and the previous rules stay.
#[test]
fn reload_applies_to_new_calls_and_bad_file_keeps_old() {
    if !sipp_available() {
        return;
    }
    let dir = TempDir::new("e2e_reload");
    let config = dir.join("reload.toml");
    write(&config, &block_config(403, "Blocked"));
    let mut proxy = proxy_with(&config);
    let uas = Uas::start(&dir, "uas", "uas.xml");
    let blocked = |role: &str| UacRun::new(role, "uac_reject.xml", 1).service("blocked");

    let mut long = UacRun::new("long", "uac.xml", 1)
        // Outlasts four SIPp runs and two reloads even on a loaded 2-core CI box (4 s did
        // not, once).
        .hold_ms(20_000)
        .start(&dir, &uas, proxy.sip_addr());
    let up = wait_until(Duration::from_secs(5), || {
        proxy.active_dialogs().ongoing == 1
    });
    assert!(up, "long call not confirmed: {:?}", proxy.active_dialogs());
    refused_call(&dir, &blocked("old"), &uas, &proxy, "SIP/2.0 403 Blocked");

    // New file, SIGHUP: the same request now gets the new reply.
    write(&config, &block_config(404, "Not Here"));
    proxy.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(500));
    assert!(
        proxy.running(),
        "SIGHUP killed the proxy\n{}",
        proxy.log_tail()
    );
    refused_call(&dir, &blocked("new"), &uas, &proxy, "SIP/2.0 404 Not Here");
    let other = UacRun::new("other", "uac.xml", 1).start(&dir, &uas, proxy.sip_addr());
    other.wait().assert_all_ok(1);

    // A broken file: core.reload names FILE:LINE:COL, and the 404 rule stays.
    let mut bad = block_config(404, "Not Here");
    bad.push_str("bogus_key = 1\n");
    write(&config, &bad);
    let err = match proxy.mgmt().try_rpc("core.reload", Value::Null) {
        Ok(v) => panic!("core.reload accepted an invalid file: {v}"),
        Err(e) => e,
    };
    let where_ = format!("{}:8:1:", config.display());
    assert!(
        err.contains(&where_) && err.contains("bogus_key"),
        "reload error should name {where_} and the key: {err}"
    );
    // SIGHUP with the same broken file logs an error and keeps running.
    proxy.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.running(),
        "a bad reload killed the proxy\n{}",
        proxy.log_tail()
    );
    refused_call(&dir, &blocked("kept"), &uas, &proxy, "SIP/2.0 404 Not Here");

    // A fixed file through core.reload (not SIGHUP) is live as soon as the RPC returns.
    write(&config, &block_config(503, "Gone Fishing"));
    let ok = proxy.rpc("core.reload", Value::Null);
    assert!(ok.is_string() || ok.is_object(), "core.reload result: {ok}");
    refused_call(
        &dir,
        &blocked("rpc"),
        &uas,
        &proxy,
        "SIP/2.0 503 Gone Fishing",
    );

    // The call placed under the first config was never disturbed: its BYE got its 200.
    assert!(
        long.running(),
        "long call ended before the reloads were done"
    );
    long.wait().assert_all_ok(1);
    let c = settled(&proxy);
    assert_eq!(c.active, 0, "dialogs left active: {c:?}");
    let uas_ok = uas.finish().map_or(0, |s| s.successful);
    assert_eq!(
        uas_ok, 2,
        "UAS completes the long call and the unblocked one"
    );
}

const TIMEOUT_CONFIG: &str = r#"
[[rule]]
name = "two-second-calls"
actions = [{ timeout = { seconds = 2 } }]
[rule.match]
method = ["INVITE"]
initial = true
"#;

/// A rule's 2 s timeout ends each call: the proxy sends BYE to both SIPps (which answer 200)
/// about 2 s after the ACK, long before the 10 s the scenarios would wait, and counts the
/// calls as expired.
#[test]
fn timeout_from_policy_expires_with_bye() {
    if !sipp_available() {
        return;
    }
    let calls = 3u32;
    let dir = TempDir::new("e2e_timeout");
    let config = dir.join("timeout.toml");
    write(&config, TIMEOUT_CONFIG);
    let proxy = proxy_with(&config);
    let uas = Uas::start(&dir, "uas", "uas_expire.xml");
    let t0 = now();
    let run = UacRun::new("uac", "uac_expire.xml", calls).rate(10);
    let out = run.start(&dir, &uas, proxy.sip_addr()).wait();
    let took = t0.elapsed();
    out.assert_all_ok(u64::from(calls));
    // Last call starts at ~0.2 s, its BYE comes at ~2.2 s; SIPp's timewait adds 0.6 s.
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_millis(4500),
        "calls ended after {took:?}, expected ~2-3 s (timeout 2 s)"
    );
    let c = settled(&proxy);
    assert_eq!(c.active, 0, "expired dialogs left active: {c:?}");
    let expired = stat(&proxy, "dialog.expired_dialogs");
    assert!(
        expired >= u64::from(calls),
        "dialog.expired_dialogs {expired} < {calls}"
    );
    let uas_errors = uas.errors();
    let uas_ok = uas.finish().map_or(0, |s| s.successful);
    assert_eq!(
        uas_ok,
        u64::from(calls),
        "every UAS call must get the proxy's BYE\n{uas_errors}"
    );
}

/// The ACK of a final reply the proxy generated itself (policy `reply` or `limit`) ends at
/// the proxy, like Kamailio's `sl` module filters the ACKs of its own replies: nothing is
/// forwarded. Known engine bug: `on_plain_ack` (src/engine/request.rs) finds no transaction
/// for such an ACK and forwards it statelessly to the R-URI. Run with `--ignored`.
#[test]
fn ack_of_policy_reply_is_absorbed() {
    if !sipp_available() {
        return;
    }
    let dir = TempDir::new("e2e_sl_ack");
    let config = dir.join("block.toml");
    write(&config, &block_config(403, "Blocked"));
    let proxy = proxy_with(&config);
    let uas = Uas::start(&dir, "uas", "uas.xml");
    let run = UacRun::new("blocked", "uac_reject.xml", 1).service("blocked");
    refused_call(&dir, &run, &uas, &proxy, "SIP/2.0 403 Blocked");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stat(&proxy, "core.forwarded"),
        0,
        "the ACK of our own 403 went downstream"
    );
}
