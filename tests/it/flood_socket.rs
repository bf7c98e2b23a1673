//! Flood control against a live binary on loopback: one source floods INVITEs at 20,000/s for
//! 5 s while another places 200 calls at 20 cps through the proxy (loadgen, UAC and UAS).
//! The calls complete, the flooder is banned (`pike.list`), and the proxy's memory stays
//! bounded. Prints the figures for the note.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::Proxy;
use common::{TempDir, free_udp_port, loadgen_bin, now};
use serde_json::{Value, json};

const FLOOD_RATE: u64 = 20_000;
const FLOOD_SECS: u64 = 5;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stat(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sends INVITEs from 127.0.0.2 to `proxy` at [`FLOOD_RATE`] for [`FLOOD_SECS`], toward a
/// target that never answers; returns how many were sent.
fn flood(proxy: std::net::SocketAddr, silent: u16) -> u64 {
    let sock = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = sock.local_addr().unwrap().port();
    let start = now();
    let end = start + Duration::from_secs(FLOOD_SECS);
    let mut sent = 0u64;
    let mut buf = String::with_capacity(1024);
    while now() < end {
        let due = start.elapsed().as_micros() as u64 * FLOOD_RATE / 1_000_000;
        while sent < due {
            buf.clear();
            use std::fmt::Write;
            let _ = write!(
                buf,
                "INVITE sip:victim@127.0.0.1:{silent} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bKfl{sent};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:scanner@127.0.0.2>;tag=f{sent}\r\n\
                 To: <sip:victim@127.0.0.1>\r\n\
                 Call-ID: flood-{sent}@127.0.0.2\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:scanner@127.0.0.2:{port}>\r\n\
                 User-Agent: flooder\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(buf.as_bytes(), proxy);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    sent
}

#[test]
fn a_flooder_is_banned_while_legitimate_calls_complete() {
    let dir = TempDir::new("flood");
    let cfg = dir.join("flood.toml");
    // Nobody trusted: the legitimate caller on 127.0.0.1 is counted too, at 20 cps.
    std::fs::write(&cfg, "[flood]\ntrusted = []\n").unwrap();
    let proxy = Proxy::start(&["--log", "warn", "--config", cfg.to_str().unwrap()]);
    let pid = proxy.pid();
    let base = rss_kib(pid);
    let target = proxy.sip_addr();
    let silent = free_udp_port();
    let flooder = std::thread::spawn(move || flood(target, silent));
    // The legitimate calls start while the flood is on.
    std::thread::sleep(Duration::from_millis(300));
    let uas = free_udp_port();
    let json_path = dir.join("summary.json");
    let mut lg = Command::new(loadgen_bin())
        .arg("both")
        .args(["--target", &target.to_string()])
        .args(["--uas", &format!("127.0.0.1:{uas}")])
        .args(["--json", json_path.to_str().unwrap()])
        .args([
            "--rate",
            "20",
            "--calls",
            "200",
            "--invite-timeout",
            "10s",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let mut peak = base;
    let deadline = now() + Duration::from_secs(60);
    let status = loop {
        peak = peak.max(rss_kib(pid));
        if let Some(s) = lg.try_wait().unwrap() {
            break s;
        }
        assert!(now() < deadline, "loadgen did not finish within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let sent = flooder.join().unwrap();
    let summary: Value = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no loadgen summary (exit {status})"));
    let ok = summary.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let stats = proxy.rpc("stats.fetch", json!([]));
    let banned = stat(&stats, "core.refused_banned");
    let over = stat(&stats, "core.refused_source_rate");
    let bans = proxy.rpc("pike.list", json!([]));
    let growth_mib = peak.saturating_sub(base) / 1024;
    eprintln!(
        "flood: {sent} INVITEs from 127.0.0.2 in {FLOOD_SECS} s; refused banned {banned}, \
         over rate {over} (the rest was in its burst or dropped by the kernel); legitimate calls \
         ok {ok}/200; RSS {} MiB -> peak {} MiB (+{growth_mib} MiB); pike.list {bans}",
        base / 1024,
        peak / 1024
    );
    assert!(
        sent >= FLOOD_RATE * FLOOD_SECS * 9 / 10,
        "flooder fell behind: {sent}"
    );
    assert!(
        ok >= 198,
        "at least 99% of the legitimate calls complete: {summary}"
    );
    assert!(growth_mib < 256, "RSS grew by {growth_mib} MiB");
    let listed = bans["banned"]
        .as_array()
        .is_some_and(|a| a.iter().any(|b| b["ip"] == "127.0.0.2"));
    assert!(listed, "the flooder is banned: {bans}");
    assert!(
        !bans.to_string().contains("127.0.0.1"),
        "the legitimate caller is not: {bans}"
    );
    assert!(
        banned + over > sent / 2,
        "most of the flood was refused: {stats}"
    );
    // Unban works over RPC and is idempotent.
    let r = proxy.rpc("pike.unban", json!(["127.0.0.2"]));
    assert_eq!(r["unbanned"], true, "{r}");
    let r = proxy.rpc("pike.unban", json!({ "ip": "127.0.0.2" }));
    assert_eq!(r["unbanned"], false, "{r}");
    let e = proxy.mgmt().try_rpc("pike.unban", json!(["not-an-ip"]));
    assert!(
        e.is_err_and(|e| e.contains("ip")),
        "a bad address is a parameter error"
    );
}
