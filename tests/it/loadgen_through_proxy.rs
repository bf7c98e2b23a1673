//! Every loadgen scenario through the real proxy (UDP, and basic over TCP): loadgen's UAC and
//! UAS in one process, sipedge in between, 0 failed calls, and the proxy's dialog counters
//! back at 0 afterwards. Uses the `loadgen` binary that `cargo test --workspace` builds next
//! to `sipedge`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::process::{Command, Stdio};

use common::proxy::Proxy;
use common::{TempDir, free_udp_port, loadgen_bin, now};
use serde_json::Value;

/// Run loadgen `both` through the proxy; returns its JSON summary.
fn run_loadgen(proxy: &Proxy, name: &str, extra: &[&str]) -> Value {
    run_loadgen_at(proxy, name, free_udp_port(), extra)
}

/// [`run_loadgen`] with the UAS on `uas`.
fn run_loadgen_at(proxy: &Proxy, name: &str, uas: u16, extra: &[&str]) -> Value {
    let dir = TempDir::new(name);
    let json = dir.join("summary.json");
    let out = Command::new(loadgen_bin())
        .arg("both")
        .args(["--target", &format!("127.0.0.1:{}", proxy.sip_port)])
        .args(["--uas", &format!("127.0.0.1:{uas}")])
        .args(["--json", json.to_str().unwrap()])
        .args(["--invite-timeout", "10s", "--quiet"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}); loadgen stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).expect("loadgen JSON")
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p).unwrap_or_else(|| panic!("no {path:?} in {v}"));
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} not a number in {v}"))
}

/// Assert `calls` calls all succeeded.
fn all_ok(v: &Value, calls: u64) {
    assert_eq!(num(v, &["ok"]), calls, "summary: {v}");
    assert_eq!(num(v, &["failed_total"]), 0, "summary: {v}");
}

/// The proxy's dialogs are all gone within `secs`.
fn settles(proxy: &Proxy, secs: u64) {
    let deadline = now() + std::time::Duration::from_secs(secs);
    loop {
        let c = proxy.dialog_counters();
        if c.active == 0 {
            return;
        }
        assert!(now() < deadline, "dialogs still active: {c:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn every_scenario_through_the_proxy() {
    let proxy = Proxy::start(&["--log", "warn"]);
    for (scenario, calls) in [
        ("basic", 200),
        ("reject", 50),
        ("cancel", 50),
        ("fork", 50),
        ("reinvite", 50),
        ("options", 50),
    ] {
        let v = run_loadgen(
            &proxy,
            scenario,
            &[
                "--rate",
                "100",
                "--calls",
                &calls.to_string(),
                "--mix",
                &format!("{scenario}=1"),
            ],
        );
        assert_eq!(num(&v, &["ok"]), calls, "{scenario}: {v}");
        assert_eq!(num(&v, &["failed_total"]), 0, "{scenario}: {v}");
    }
    settles(&proxy, 5);
    let c = proxy.dialog_counters();
    // OPTIONS create no dialog: 200 + 4 x 50 INVITE scenarios.
    assert!(c.processed >= 400, "{c:?}");
    assert!(
        c.failed >= 100,
        "reject + cancel count as failed dialogs: {c:?}"
    );
}

#[test]
fn basic_over_tcp_through_the_proxy() {
    let proxy = Proxy::start(&["--log", "warn"]);
    let uas = free_udp_port();
    let ruri = format!("sip:service@127.0.0.1:{uas};transport=tcp");
    let v = run_loadgen_at(
        &proxy,
        "tcp",
        uas,
        &[
            "--rate",
            "100",
            "--calls",
            "200",
            "--transport",
            "tcp",
            "--ruri",
            &ruri,
        ],
    );
    all_ok(&v, 200);
    settles(&proxy, 5);
}

/// `noanswer` needs the proxy to give up (Timer C → CANCEL + 408) and `nobye` needs the dialog
/// timeout to end the call with BYE both ways: both made short by config.
#[test]
fn noanswer_and_nobye_end_by_proxy_timers() {
    let dir = TempDir::new("timers-cfg");
    let cfg = dir.join("short.toml");
    std::fs::write(
        &cfg,
        "[dialog]\nfr_inv_timer = 1500\ndefault_timeout = 2\nnoack_timeout = 2\n",
    )
    .unwrap();
    let proxy = Proxy::start(&["--log", "warn", "--config", cfg.to_str().unwrap()]);
    let v = run_loadgen(
        &proxy,
        "noanswer",
        &["--rate", "20", "--calls", "20", "--mix", "noanswer=1"],
    );
    all_ok(&v, 20);
    let v = run_loadgen(
        &proxy,
        "nobye",
        &[
            "--rate", "20", "--calls", "20", "--mix", "nobye=1", "--hold", "4s",
        ],
    );
    // loadgen reports a BYE from the network as `peer_bye`: here it is the proxy's expiry BYE,
    // the expected end of every call; nothing else may fail.
    assert_eq!(num(&v, &["failed", "peer_bye"]), 20, "nobye: {v}");
    assert_eq!(num(&v, &["failed_total"]), 20, "nobye: {v}");
    settles(&proxy, 10);
    let stats = proxy.rpc("stats.fetch", serde_json::json!([]));
    let expired = stats
        .get("dialog.expired_dialogs")
        .and_then(|x| {
            x.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or(x.as_u64())
        })
        .unwrap_or(0);
    assert!(
        expired >= 20,
        "nobye calls end by the dialog timeout: {stats}"
    );
}
