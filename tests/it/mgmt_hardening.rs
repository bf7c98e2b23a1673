//! The management listener against hostile and careless clients, on the real `sipedge`
//! binary over loopback sockets: slowloris connections from one address, a huge header
//! line, too many connections, running out of descriptors, the token rules (`/health` open,
//! everything else guarded, the token checked before the body), the JSON-RPC batch limit,
//! and `sipedge ctl` over the UNIX socket with the token from a file or `SIPEDGE_TOKEN`.
//!
//! Every client socket has a read timeout and every loop a deadline; addresses are
//! 127.0.0.0/8 only (slow clients come from 127.0.0.2-127.0.0.9, so 127.0.0.1 is another
//! client address). Thread count and RSS are read from `/proc/<pid>/status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::proxy::Proxy;
use common::{TempDir, local, now, spawn_guarded};
use serde_json::{Value, json};

const TOKEN: &str = "hardening-s3cret";
const TWO: Duration = Duration::from_secs(2);
const PER_IP: &str = r#"sipedge_mgmt_connections_refused_total{reason="per_ip"}"#;
const TOTAL: &str = r#"sipedge_mgmt_connections_refused_total{reason="total"}"#;

/// Writes a config with `[mgmt]` lines and returns its path.
fn config(dir: &TempDir, mgmt: &str) -> String {
    let p = dir.join("sipedge.toml");
    std::fs::write(&p, format!("[mgmt]\n{mgmt}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

/// `(threads, rss_kb)` of a process.
fn proc_status(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("Threads:"), field("VmRSS:"))
}

/// `(threads, rss_kb)` once RSS stopped moving: the proxy touches its tables during its
/// first second, so a baseline taken earlier would blame that on the test.
fn settled_status(pid: u32) -> (u64, u64) {
    let deadline = now() + Duration::from_secs(6);
    let mut last = proc_status(pid);
    let mut stable = 0;
    loop {
        thread::sleep(Duration::from_millis(300));
        let cur = proc_status(pid);
        stable = if cur.1.abs_diff(last.1) < 256 {
            stable + 1
        } else {
            0
        };
        if stable >= 2 || now() >= deadline {
            return cur;
        }
        last = cur;
    }
}

/// Polls `value` (every 50 ms, at most 5 s) until it reaches `want`; returns the last value.
fn wait_for_value(want: f64, mut value: impl FnMut() -> f64) -> f64 {
    let deadline = now() + Duration::from_secs(5);
    loop {
        let v = value();
        if v >= want || now() >= deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), TWO)?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TWO))?;
    s.set_write_timeout(Some(TWO))?;
    Ok(s)
}

/// Sends `req` (which should say `Connection: close`) and reads the answer to EOF:
/// `(status, body)`. Fails on any socket error or after 2 s without data.
fn exchange(mut s: impl Read + Write, req: &[u8]) -> std::io::Result<(u16, String)> {
    s.write_all(req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request over TCP from 127.0.0.1.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let s = TcpStream::connect_timeout(&local(port), TWO).unwrap();
    s.set_read_timeout(Some(TWO)).unwrap();
    exchange(s, &request(method, path, token, body))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One JSON-RPC call over the UNIX socket.
fn rpc_unix(sock: &Path, token: Option<&str>, body: &str) -> (u16, String) {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(TWO)).unwrap();
    s.set_write_timeout(Some(TWO)).unwrap();
    exchange(s, &request("POST", "/jsonrpc", token, body)).unwrap()
}

/// The value of a metric line `name` (exact series, labels included) in `/metrics`.
fn metric(port: u16, series: &str) -> f64 {
    let (s, text) = http(port, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(s, 200, "{text}");
    series_value(&text, series)
}

/// Like [`metric`], over the UNIX socket.
fn metric_unix(sock: &Path, series: &str) -> f64 {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(TWO)).unwrap();
    let (status, text) = exchange(s, &request("GET", "/metrics", Some(TOKEN), "")).unwrap();
    assert_eq!(status, 200, "{text}");
    series_value(&text, series)
}

fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Whether the server closed `s` (EOF or reset) within `wait`; false if it is still open.
fn closed_within(s: &TcpStream, wait: Duration) -> bool {
    let _ = s.set_read_timeout(Some(wait));
    let mut b = [0u8; 512];
    let mut r = s;
    loop {
        match r.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {} // a 408/431 answer before the close
            Err(e) if is_timeout(&e) => return false,
            Err(_) => return true,
        }
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = now();
    let r = f();
    assert!(t0.elapsed() < TWO, "{what} took {:?}", t0.elapsed());
    r
}

/// 300 slowloris connections from one address hold only its 16 slots: `/health` (another
/// address) and an RPC over the UNIX socket answer within 2 s, the thread count and RSS stay
/// flat, and the held connections are closed by the head timeout.
#[test]
fn slowloris_from_one_address_locks_nobody_out() {
    let dir = TempDir::new("mgmt_slowloris");
    let sock = dir.join("ctl.sock");
    let cfg = config(
        &dir,
        &format!("token = \"{TOKEN}\"\nsocket = \"{}\"", sock.display()),
    );
    let proxy = Proxy::start(&["--log", "warn", "--config", &cfg]);
    let port = proxy.mgmt_port;
    let version = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    // Warm up every path (the blocking threads start on first use).
    for _ in 0..3 {
        assert_eq!(http(port, "GET", "/health", None, "").0, 200);
        assert_eq!(http(port, "GET", "/metrics", Some(TOKEN), "").0, 200);
        assert_eq!(rpc_unix(&sock, Some(TOKEN), version).0, 200);
    }
    let (threads0, rss0) = settled_status(proxy.pid());
    let refused0 = metric(port, PER_IP);

    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let started = now();
    let mut conns: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = connect_from(attacker, local(port)).unwrap();
            if i % 2 == 0 {
                // Half send the start of a head, the other half nothing at all.
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            }
            s
        })
        .collect();
    // Trickle a byte now and then, as a slowloris does.
    for _ in 0..3 {
        for s in &mut conns {
            let _ = s.write_all(b"a");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let (s, body) = timed("/health during the flood", || {
        http(port, "GET", "/health", None, "")
    });
    assert_eq!((s, body.as_str()), (200, "ok"));
    let (s, body) = timed("RPC over the UNIX socket during the flood", || {
        rpc_unix(&sock, Some(TOKEN), version)
    });
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("sipedge"), "{body}");
    // A kept-alive connection left idle, and a body that stops halfway, from 127.0.0.1.
    let mut idle = TcpStream::connect_timeout(&local(port), TWO).unwrap();
    idle.set_read_timeout(Some(TWO)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    while !got.ends_with(b"ok") {
        let n = idle.read(&mut b).unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&b[..n]);
    }
    let mut slow_body = TcpStream::connect_timeout(&local(port), TWO).unwrap();
    let head = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 100\r\n\r\n{{\"jsonrpc\""
    );
    slow_body.write_all(head.as_bytes()).unwrap();
    let slow_started = now();
    let (threads1, rss1) = proc_status(proxy.pid());
    assert!(
        threads1 <= threads0 + 1,
        "threads {threads0} -> {threads1} with 300 slow connections"
    );
    assert!(
        rss1 <= rss0 + 6 * 1024,
        "RSS {rss0} kB -> {rss1} kB with 300 slow connections"
    );
    // Exactly the per-IP cap is held; the rest were closed at accept (once all were
    // accepted: wait for the count).
    wait_for_value(refused0 + 284.0, || metric(port, PER_IP));
    let held: Vec<TcpStream> = conns
        .into_iter()
        .filter(|s| !closed_within(s, Duration::from_millis(20)))
        .collect();
    assert_eq!(held.len(), 16, "connections held from one address");
    let refused = metric(port, PER_IP);
    assert_eq!(refused - refused0, 284.0, "refused by the per-IP cap");
    // The head timeout (10 s, counted from accept) closes the held ones, trickle or not.
    for s in &held {
        let left = (started + Duration::from_secs(14)).saturating_duration_since(now());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1))),
            "a slow connection outlived the 10 s head timeout"
        );
    }
    // The idle kept-alive connection went the same way; the half body got 408 (10 s each).
    let left = (slow_started + Duration::from_secs(13)).saturating_duration_since(now());
    assert!(
        closed_within(&idle, left.max(Duration::from_millis(1))),
        "an idle kept-alive connection outlived the 10 s idle timeout"
    );
    let left = (slow_started + Duration::from_secs(13)).saturating_duration_since(now());
    slow_body
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "half a body: {answer:?}"
    );
    assert!(metric(port, "sipedge_mgmt_timeouts_total") >= 18.0);
    assert_eq!(http(port, "GET", "/health", None, "").0, 200);
}

/// A 1 MiB header line gets 431 (or a close) after at most 16 KiB is buffered; a hundred
/// header lines too; memory stays flat and the listener keeps answering.
#[test]
fn huge_header_line_gets_431_and_memory_stays_bounded() {
    let proxy = Proxy::start(&["--log", "warn"]);
    let port = proxy.mgmt_port;
    assert_eq!(http(port, "GET", "/health", None, "").0, 200);
    let (_, rss0) = settled_status(proxy.pid());
    let big = {
        let mut r = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        r.resize(r.len() + (1 << 20), b'a');
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let big = big.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect_timeout(&local(port), TWO).unwrap();
                s.set_read_timeout(Some(TWO)).unwrap();
                s.set_write_timeout(Some(TWO)).unwrap();
                // The server stops reading after its 16 KiB head limit: the write may fail.
                let _ = s.write_all(&big);
                let mut got = Vec::new();
                let timed_out = s.read_to_end(&mut got).is_err_and(|e| is_timeout(&e));
                (String::from_utf8_lossy(&got).into_owned(), timed_out)
            })
        })
        .collect();
    for w in workers {
        let (answer, timed_out) = w.join().unwrap();
        assert!(!timed_out, "the server kept a 1 MiB header line open");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "answer to a 1 MiB header line: {answer:?}"
        );
    }
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let s = TcpStream::connect_timeout(&local(port), TWO).unwrap();
    s.set_read_timeout(Some(TWO)).unwrap();
    match exchange(s, req.as_bytes()) {
        Ok((status, _)) => assert_eq!(status, 431, "100 header lines"),
        Err(e) => assert!(!is_timeout(&e), "100 header lines: no answer and no close"),
    }
    let (_, rss1) = proc_status(proxy.pid());
    assert!(
        rss1 <= rss0 + 6 * 1024,
        "RSS {rss0} kB -> {rss1} kB after eight 1 MiB header lines"
    );
    // No token configured: /health shows the detail to anyone (loopback only).
    let (s, body) = http(port, "GET", "/health", None, "");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");
}

/// With a token: `/metrics` and RPC need it (checked before the body arrives), `/health`
/// does not but shows worker detail only to the token holder; batches are capped at 100.
#[test]
fn token_guards_all_but_health_and_batches_are_capped() {
    let dir = TempDir::new("mgmt_token");
    let cfg = config(&dir, &format!("token = \"{TOKEN}\""));
    let proxy = Proxy::start(&["--log", "warn", "--config", &cfg]);
    let port = proxy.mgmt_port;
    let version = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    assert_eq!(http(port, "GET", "/metrics", None, "").0, 401);
    assert_eq!(http(port, "POST", "/jsonrpc", None, version).0, 401);
    assert_eq!(http(port, "POST", "/RPC", Some("wrong"), version).0, 401);
    assert_eq!(http(port, "POST", "/jsonrpc", Some(TOKEN), version).0, 200);
    assert_eq!(http(port, "GET", "/metrics", Some(TOKEN), "").0, 200);

    assert_eq!(http(port, "GET", "/health", None, ""), (200, "ok".into()));
    let (s, body) = http(port, "GET", "/health", Some(TOKEN), "");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!((s, v["status"].clone()), (200, json!("ok")), "{body}");
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "--workers 2: {body}");
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(
            (
                w["index"].clone(),
                w["alive"].clone(),
                w["restarts"].clone()
            ),
            (json!(i), json!(true), json!(0)),
            "{body}"
        );
    }

    // A head announcing a 1 MB body, without the token and without the body: 401 at once.
    let s = TcpStream::connect_timeout(&local(port), TWO).unwrap();
    s.set_read_timeout(Some(TWO)).unwrap();
    let head = "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
    let mut s = s;
    s.write_all(head.as_bytes()).unwrap();
    let mut got = [0u8; 64];
    let n = timed("401 before the body", || s.read(&mut got)).unwrap();
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");

    let batch = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({"jsonrpc": "2.0", "method": "core.version", "id": i}))
            .collect();
        Value::Array(items).to_string()
    };
    let (s, body) = http(port, "POST", "/jsonrpc", Some(TOKEN), &batch(100));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(100)));
    let (s, body) = http(port, "POST", "/jsonrpc", Some(TOKEN), &batch(101));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s, v["error"]["code"].clone()), (200, json!(-32600)), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("101") && msg.contains("limit of 100"), "{msg}");
}

/// Output of one `sipedge ctl` run.
struct Ctl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ctl(dir: &TempDir, tag: &str, args: &[&str], env_token: Option<&str>) -> Ctl {
    let (out, err) = (
        dir.join(&format!("{tag}.out")),
        dir.join(&format!("{tag}.err")),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
    cmd.arg("ctl")
        .args(args)
        .env_remove("SIPEDGE_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    if let Some(t) = env_token {
        cmd.env("SIPEDGE_TOKEN", t);
    }
    let mut child = spawn_guarded(&mut cmd, tag).unwrap();
    let status = child.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some(), "ctl {args:?} still running after 10 s");
    Ctl {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

/// `sipedge ctl --socket` with the token from `--token-file` or `SIPEDGE_TOKEN`; the socket
/// is mode 0600 and removed at shutdown; a socket in a missing directory does not stop the
/// proxy from starting.
#[test]
fn ctl_over_unix_socket_with_token_file_and_env() {
    let dir = TempDir::new("mgmt_ctl_sock");
    let sock = dir.join("ctl.sock");
    let cfg = config(
        &dir,
        &format!("token = \"{TOKEN}\"\nsocket = \"{}\"", sock.display()),
    );
    let mut proxy = Proxy::start(&["--log", "warn", "--config", &cfg]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (s, f) = (
        sock.to_string_lossy().into_owned(),
        token_file.to_string_lossy().into_owned(),
    );

    let out = ctl(
        &dir,
        "file",
        &["--socket", &s, "--token-file", &f, "core.version"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("sipedge"), "{}", out.stdout);
    let out = ctl(
        &dir,
        "env",
        &["--socket", &s, "dlg.stats_active"],
        Some(TOKEN),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(common::mgmt::lookup(&v, &["all"]), Some(0), "{v}");
    // The same token from the environment over TCP.
    let mgmt = format!("127.0.0.1:{}", proxy.mgmt_port);
    let out = ctl(
        &dir,
        "env_tcp",
        &["--mgmt", &mgmt, "core.version"],
        Some(TOKEN),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = ctl(&dir, "none", &["--socket", &s, "core.version"], None);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("unauthorized"), "{}", out.stderr);
    let out = ctl(
        &dir,
        "wrong",
        &["--socket", &s, "core.version"],
        Some("nope"),
    );
    assert_eq!(out.code, Some(1));
    let missing = dir.join("missing-token").to_string_lossy().into_owned();
    let out = ctl(
        &dir,
        "nofile",
        &["--socket", &s, "--token-file", &missing, "x"],
        None,
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.starts_with("error: cannot read token file"),
        "{}",
        out.stderr
    );

    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(Duration::from_secs(5)).is_some());
    assert!(!sock.exists(), "socket file left behind");
    let out = ctl(&dir, "gone", &["--socket", &s, "core.version"], Some(TOKEN));
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);

    // A socket whose directory does not exist: logged, the proxy still starts.
    let dir2 = TempDir::new("mgmt_ctl_nodir");
    let nowhere: PathBuf = dir2.join("no-such-dir").join("ctl.sock");
    let cfg2 = config(&dir2, &format!("socket = \"{}\"", nowhere.display()));
    let proxy2 = Proxy::start(&["--log", "warn", "--config", &cfg2]);
    assert!(!nowhere.exists());
    assert!(
        proxy2.log_tail().contains("does not exist"),
        "{}",
        proxy2.log_tail()
    );
    assert_eq!(http(proxy2.mgmt_port, "GET", "/health", None, "").0, 200);
}

/// With the total cap full (many addresses), TCP clients are closed at accept and counted,
/// while `ctl` over the UNIX socket (a budget of its own) still answers.
#[test]
fn total_cap_holds_and_the_unix_socket_still_answers() {
    let dir = TempDir::new("mgmt_total_cap");
    let sock = dir.join("ctl.sock");
    let cfg = config(
        &dir,
        &format!(
            "token = \"{TOKEN}\"\nsocket = \"{}\"\nmax_connections = 40\nmax_connections_per_ip = 12",
            sock.display()
        ),
    );
    let proxy = Proxy::start(&["--log", "warn", "--config", &cfg]);
    let port = proxy.mgmt_port;
    let refused0 = metric(port, TOTAL);
    let mut conns = Vec::new();
    for last in 3..=7u8 {
        for _ in 0..10 {
            conns.push(connect_from(Ipv4Addr::new(127, 0, 0, last), local(port)).unwrap());
        }
    }
    let refused = wait_for_value(refused0 + 10.0, || metric_unix(&sock, TOTAL));
    let held = conns
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(20)))
        .count();
    assert_eq!(held, 40, "connections held under max_connections = 40");
    let version = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    let (s, body) = timed("RPC over the UNIX socket with the TCP cap full", || {
        rpc_unix(&sock, Some(TOKEN), version)
    });
    assert_eq!(s, 200, "{body}");
    assert_eq!(refused - refused0, 10.0, "50 connections, cap 40");
    drop(conns);
    let deadline = now() + Duration::from_secs(3);
    while TcpStream::connect_timeout(&local(port), TWO)
        .and_then(|s| {
            s.set_read_timeout(Some(TWO))?;
            exchange(s, &request("GET", "/health", None, ""))
        })
        .is_err()
    {
        assert!(
            now() < deadline,
            "/health did not come back after the flood"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Running out of file descriptors makes accept fail; the listener counts it, backs off,
/// and answers again once descriptors are free (it used to panic and stay down).
#[test]
fn out_of_descriptors_does_not_kill_the_listener() {
    let dir = TempDir::new("mgmt_emfile");
    let cfg = config(&dir, &format!("token = \"{TOKEN}\""));
    let mut proxy = Proxy::start(&["--log", "warn", "--config", &cfg]);
    let port = proxy.mgmt_port;
    let pid = libc::pid_t::try_from(proxy.pid()).unwrap();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on our own child's pid with a valid pointer to a local struct.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let low = libc::rlimit {
        rlim_cur: open_fds + 6,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let conns: Vec<TcpStream> = [3u8, 4]
        .iter()
        .flat_map(|last| {
            (0..16).map(move |_| connect_from(Ipv4Addr::new(127, 0, 0, *last), local(port)))
        })
        .map(Result::unwrap)
        .collect();
    // The accept loop hits EMFILE and backs off; the process keeps running.
    thread::sleep(Duration::from_millis(1500));
    assert!(proxy.running(), "proxy died out of descriptors");
    drop(conns);
    // Still under the low limit: once the flood is gone, /health answers again.
    let deadline = now() + Duration::from_secs(5);
    loop {
        let ok = TcpStream::connect_timeout(&local(port), TWO)
            .and_then(|s| {
                s.set_read_timeout(Some(TWO))?;
                exchange(s, &request("GET", "/health", None, ""))
            })
            .is_ok_and(|(s, _)| s == 200);
        if ok {
            break;
        }
        assert!(
            now() < deadline,
            "/health did not come back after descriptors were freed\n{}",
            proxy.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above; restores the limit read before.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit restore");
    assert!(metric(port, "sipedge_mgmt_accept_errors_total") >= 1.0);
    assert!(
        proxy.log_tail().contains("management accept failed"),
        "{}",
        proxy.log_tail()
    );
    let version = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    assert_eq!(http(port, "POST", "/jsonrpc", Some(TOKEN), version).0, 200);
}
