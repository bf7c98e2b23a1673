//! A short soak: memory must stay flat under a constant load. The real `sipedge` binary, and
//! loadgen's UAS and UAC as separate processes, carry calls at a constant rate with a 1 s hold
//! for `SOAK_S` seconds (75 by default), while the proxy's RSS is sampled every 5 s.
//!
//! The population of dialogs is constant after the first second, so after a warm-up the RSS
//! must not drift: at most 5 % between the first sample after `WARM_S` and the last. An
//! earlier version left one timer-wheel entry per call for 300 s after the call ended, which
//! grew RSS by ~120 B per call (≈ 14 MB a minute at this rate) and failed this test. Calls must
//! not fail (at most 0.01 %), and the proxy holds no dialog once the load has stopped.
//!
//! It is its own test binary so it never shares the 2 CI cores with other tests.
//! `benches/compare/soak.sh` is the 10-minute benchmark of the same thing on release builds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

#[path = "../it/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::proxy::Proxy;
use common::{TempDir, free_udp_port, now, spawn_guarded};

/// Calls per second.
const RATE: u32 = 2000;
/// Samples before this (s) are warm-up.
const WARM_S: u64 = 30;
/// RSS sample period.
const SAMPLE: Duration = Duration::from_secs(5);

fn loadgen_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_sipedge")).with_file_name("loadgen");
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace`",
        p.display()
    );
    p
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn rss_stays_flat_under_a_constant_call_rate() {
    let soak_s: u64 = std::env::var("SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(75)
        .max(WARM_S + 20);
    // Both workers from the start: with adaptive spreading the second worker may first be
    // fed at any moment of the run (when the first passes 80 % of a core), and touching its
    // receive buffers then is a one-time step of several MiB, not a leak (seen once at 60 s).
    let proxy = Proxy::start(&["--log", "warn", "--spread", "all"]);
    let pid = proxy.pid();
    let dir = TempDir::new("soak");
    let uas_port = free_udp_port();
    let mut uas = spawn_guarded(
        Command::new(loadgen_bin())
            .arg("uas")
            .args(["--listen", &format!("127.0.0.1:{uas_port}")])
            .args(["--duration", &format!("{}s", soak_s + 40)])
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "loadgen uas",
    )
    .expect("spawn loadgen uas");
    thread::sleep(Duration::from_millis(300));
    let json = dir.join("uac.json");
    let mut uac = spawn_guarded(
        Command::new(loadgen_bin())
            .arg("uac")
            .args(["--target", &format!("127.0.0.1:{}", proxy.sip_port)])
            .args(["--uas", &format!("127.0.0.1:{uas_port}")])
            .args(["--rate", &RATE.to_string()])
            .args(["--duration", &format!("{soak_s}s")])
            .args(["--hold", "1s", "--sockets", "2", "--quiet"])
            .args(["--json", json.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "loadgen uac",
    )
    .expect("spawn loadgen uac");

    let t0 = now();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    while uac.try_wait().is_none() && t0.elapsed() < Duration::from_secs(soak_s + 60) {
        thread::sleep(SAMPLE);
        let t = t0.elapsed().as_secs();
        if t <= soak_s {
            samples.push((t, rss_kib(pid), proxy.active_dialogs().all));
        }
    }
    assert!(
        uac.wait_timeout(Duration::from_secs(30)).is_some(),
        "loadgen uac did not finish"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("uac summary")).unwrap();
    let ok = summary["ok"].as_u64().unwrap();
    let failed = summary["failed_total"].as_u64().unwrap();
    let table: Vec<String> = samples
        .iter()
        .map(|(t, r, d)| format!("{t:>4} s {:>8.1} MiB {d:>6} dialogs", *r as f64 / 1024.0))
        .collect();
    let report = format!(
        "ok {ok}, failed {failed}\n{}\nproxy log:\n{}",
        table.join("\n"),
        proxy.log_tail()
    );
    assert!(
        ok >= u64::from(RATE) * (soak_s - 2),
        "too few calls: {report}"
    );
    assert!(
        failed * 10_000 <= ok + failed,
        "more than 0.01 % failed: {report}"
    );
    let warm: Vec<_> = samples.iter().filter(|s| s.0 >= WARM_S).collect();
    assert!(warm.len() >= 4, "too few samples: {report}");
    let (first, last) = (warm[0].1, warm[warm.len() - 1].1);
    let drift = (last as f64 - first as f64) / first as f64 * 100.0;
    println!("{report}\ndrift after {WARM_S} s: {drift:.2} %");
    assert!(
        drift <= 5.0,
        "RSS drifted {drift:.2} % after warm-up: {report}"
    );
    // The load has stopped: every dialog ends (the last BYEs are 1 s behind the last INVITE).
    let deadline = now() + Duration::from_secs(20);
    let mut left = proxy.active_dialogs().all;
    while left > 0 && now() < deadline {
        thread::sleep(Duration::from_millis(250));
        left = proxy.active_dialogs().all;
    }
    assert_eq!(left, 0, "dialogs left after the load: {report}");
    let _ = uas.stop(Duration::from_secs(2));
}
