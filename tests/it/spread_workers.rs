//! Adaptive spreading against the real binary: with `spread = "adaptive"` (the default) the
//! listen sockets feed one worker while the load is light, a second once the first is busy,
//! and go back to one when idle (`sipedge_workers_active`); with `--spread all` every worker
//! is fed, even from one peer socket. The growth threshold is set very low (`spread_busy`) so
//! any machine crosses it with a few hundred calls per second.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::Proxy;
use common::{TempDir, free_udp_port, loadgen_bin, now};
use serde_json::Value;

/// Starts loadgen `both` from ONE UAC socket through the proxy at `127.0.0.1:sip_port`;
/// returns the child and the path of its JSON summary.
pub(crate) fn start_loadgen(
    sip_port: u16,
    dir: &TempDir,
    rate: u32,
    calls: u32,
) -> (std::process::Child, PathBuf) {
    let json = dir.join("summary.json");
    let child = Command::new(loadgen_bin())
        .arg("both")
        .args(["--target", &format!("127.0.0.1:{sip_port}")])
        .args(["--uas", &format!("127.0.0.1:{}", free_udp_port())])
        .args(["--rate", &rate.to_string(), "--calls", &calls.to_string()])
        .args(["--sockets", "1", "--invite-timeout", "10s", "--quiet"])
        .args(["--json", json.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loadgen");
    (child, json)
}

/// The value of an unlabelled gauge, or of one labelled series (exact label text).
fn metric(body: &str, key: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key))
        .and_then(|(_, v)| v.parse().ok())
}

fn active(proxy: &Proxy) -> f64 {
    let body = proxy.metrics();
    metric(&body, "sipedge_workers_active")
        .unwrap_or_else(|| panic!("no sipedge_workers_active in /metrics:\n{body}"))
}

fn packets_in(body: &str, w: u32) -> f64 {
    metric(
        body,
        &format!("sipedge_packets_in_total{{worker=\"{w}\",transport=\"udp\"}}"),
    )
    .unwrap_or(0.0)
}

/// Polls until `active(proxy) == want` or `secs` pass; returns the last value.
fn wait_active(proxy: &Proxy, want: f64, secs: u64) -> f64 {
    let deadline = now() + Duration::from_secs(secs);
    loop {
        let a = active(proxy);
        if a == want || now() >= deadline {
            return a;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn summary(child: &mut std::process::Child, json: &PathBuf) -> Value {
    let status = child.wait().expect("wait loadgen");
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no loadgen summary ({e}); exit {status}"));
    serde_json::from_str(&text).expect("loadgen JSON")
}

#[test]
fn adaptive_grows_under_load_and_shrinks_when_idle() {
    let dir = TempDir::new("spread_adaptive");
    let cfg = dir.join("spread.toml");
    std::fs::write(&cfg, "[core]\nspread = \"adaptive\"\nspread_busy = 0.01\n").unwrap();
    let proxy = Proxy::start(&["--log", "warn", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        wait_active(&proxy, 1.0, 3),
        1.0,
        "idle proxy feeds one worker"
    );

    // 400 calls/s for 4 s: far above 1% of a core on any machine.
    let (mut lg, json) = start_loadgen(proxy.sip_port, &dir, 400, 1600);
    let mut seen_two = false;
    let deadline = now() + Duration::from_secs(15);
    while now() < deadline {
        if active(&proxy) == 2.0 {
            seen_two = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = summary(&mut lg, &json);
    assert_eq!(
        v["ok"], 1600,
        "every call completes while workers are added: {v}"
    );
    assert_eq!(v["failed_total"], 0, "{v}");
    assert!(
        seen_two,
        "sipedge_workers_active never reached 2 under load"
    );
    let body = proxy.metrics();
    assert!(
        packets_in(&body, 0) > 0.0 && packets_in(&body, 1) > 0.0,
        "both workers received datagrams once grown:\n{body}"
    );
    assert_eq!(
        wait_active(&proxy, 1.0, 10),
        1.0,
        "back to one worker when idle"
    );
}

#[test]
fn spread_all_feeds_every_worker_from_one_peer() {
    let dir = TempDir::new("spread_all");
    let proxy = Proxy::start(&["--log", "warn", "--spread", "all"]);
    assert_eq!(active(&proxy), 2.0);
    let (mut lg, json) = start_loadgen(proxy.sip_port, &dir, 100, 200);
    let v = summary(&mut lg, &json);
    assert_eq!(v["ok"], 200, "{v}");
    let body = proxy.metrics();
    let (a, b) = (packets_in(&body, 0), packets_in(&body, 1));
    // Random spreading: each worker gets roughly half of the ~1400 datagrams.
    assert!(a > 200.0 && b > 200.0, "w0={a} w1={b}:\n{body}");
    // Adaptive never runs here: the gauge stays at every worker.
    assert_eq!(active(&proxy), 2.0);
}

#[test]
fn bad_spread_values_are_refused_with_their_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["run", "--spread", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--spread `sometimes`: expected adaptive or all"),
        "{err}"
    );
    let dir = TempDir::new("spread_bad");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[core]\nspread_busy = 0.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["check-config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spread_busy") && err.contains(":2:"), "{err}");
}
