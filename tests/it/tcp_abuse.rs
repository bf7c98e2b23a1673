//! TCP abuse against the real `sipedge` binary, over loopback sockets: the connection caps are
//! process-wide (not per worker) and give their places back on close; 2,000 half-open
//! connections and 300 slowloris management connections from one address are refused by the
//! per-peer caps or reset at the deadlines while calls from another address complete and
//! `/health` and RPC answer within 2 s; a slowloris peer is reset at the
//! message deadline while a peer that only sends keep-alives between messages is not; a
//! listener that runs out of file descriptors counts the accept errors, pauses and recovers
//! by itself.
//!
//! Peers are told apart by source address (127.0.0.2, .3, .4: all loopback on Linux). Every
//! wait is bounded; counters are read through `stats.fetch` (workers publish them once a
//! second, so reads poll).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mgmt::lookup;
use common::proxy::Proxy;
use common::{TempDir, free_udp_port, loadgen_bin, local, now};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

/// A proxy started with `config` as its config file.
fn proxy_with(name: &str, config: &str) -> (Proxy, TempDir) {
    let dir = TempDir::new(name);
    let cfg = dir.join("tcp.toml");
    std::fs::write(&cfg, config).unwrap();
    let proxy = Proxy::start(&["--log", "warn", "--config", cfg.to_str().unwrap()]);
    (proxy, dir)
}

/// A TCP connection from `src` (port chosen by the kernel) to `dst`; `None` when the proxy
/// reset it before the connect call returned (a refusal can be that quick: the handshake
/// completes in the kernel, the proxy accepts and resets while the caller still waits).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<Option<TcpStream>> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    match s.connect_timeout(&dst.into(), Duration::from_secs(5)) {
        Ok(()) => Ok(Some(s.into())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(e),
    }
}

/// `n` connections from `src` to `dst` (see [`connect_from`]).
fn connect_n(n: usize, src: Ipv4Addr, dst: SocketAddr) -> Vec<Option<TcpStream>> {
    (0..n)
        .map(|i| connect_from(src, dst).unwrap_or_else(|e| panic!("connect {i} from {src}: {e}")))
        .collect()
}

/// Whether the proxy closed or reset `s` (without waiting); `None` was reset on connect.
fn is_closed(s: &Option<TcpStream>) -> bool {
    let Some(mut s) = s.as_ref() else {
        return true;
    };
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// How many of `conns` the proxy closed, once that number has held still for 300 ms (or
/// after `max`).
fn settled_closed(conns: &[Option<TcpStream>], max: Duration) -> usize {
    let deadline = now() + max;
    let mut last = usize::MAX;
    loop {
        let n = conns.iter().filter(|c| is_closed(c)).count();
        if n == last || now() >= deadline {
            return n;
        }
        last = n;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The proxy's `core.<name>` counter.
fn stat(proxy: &Proxy, name: &str) -> u64 {
    let v: Value = proxy.rpc("stats.fetch", json!([]));
    lookup(&v, &[&format!("core.{name}"), &format!("core:{name}")])
        .unwrap_or_else(|| panic!("no core.{name} in stats.fetch: {v}"))
}

/// Polls the counters until `done` holds for them (at most `max`); returns the last values.
fn wait_stats<const N: usize>(
    proxy: &Proxy,
    names: [&str; N],
    max: Duration,
    done: impl Fn(&[u64; N]) -> bool,
) -> [u64; N] {
    let deadline = now() + max;
    loop {
        let v = names.map(|n| stat(proxy, n));
        if done(&v) || now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Raises this process's soft open-file limit to at least `need`; `Err` (the reason to
/// skip) when the hard limit is lower.
fn ensure_open_files(need: libc::rlim_t) -> Result<(), String> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if rl.rlim_cur >= need {
        return Ok(());
    }
    if rl.rlim_max < need {
        return Err(format!(
            "hard open-file limit {} is below the {need} this test needs",
            rl.rlim_max
        ));
    }
    rl.rlim_cur = need;
    // SAFETY: `rl` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        return Err(format!("setrlimit: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Basic calls over TCP from 127.0.0.3 through the proxy to a loadgen UAS; the JSON summary.
fn tcp_calls(proxy_port: u16, calls: u64, rate: u64, dir: &TempDir) -> Value {
    let uas = free_udp_port();
    let json_path = dir.join("calls.json");
    let out = Command::new(loadgen_bin())
        .arg("both")
        .args(["--target", &format!("127.0.0.1:{proxy_port}")])
        .args(["--uas", &format!("127.0.0.1:{uas}")])
        .args([
            "--ruri",
            &format!("sip:service@127.0.0.1:{uas};transport=tcp"),
        ])
        .args(["--transport", "tcp", "--local", "127.0.0.3"])
        .args(["--rate", &rate.to_string(), "--calls", &calls.to_string()])
        .args(["--json", json_path.to_str().unwrap()])
        .args(["--invite-timeout", "10s", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen");
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|e| {
        panic!(
            "no loadgen summary ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).expect("loadgen JSON")
}

/// The caps hold for the whole process: with 2 workers (each accepting on its own
/// SO_REUSEPORT listener) no more than `tcp_max_per_peer` from one address and
/// `tcp_max_connections` in all stay open, the rest are reset at once and counted, and a
/// closed connection gives its place back.
#[test]
fn caps_are_process_wide_and_freed_on_close() {
    let (proxy, _dir) = proxy_with(
        "tcp-caps",
        "[core]\ntcp_max_connections = 20\ntcp_max_per_peer = 15\n",
    );
    let dst = proxy.sip_addr();
    let stats = [
        "tcp_accepted",
        "tcp_refused_per_peer",
        "tcp_refused_global",
        "tcp_closed",
    ];
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let from_two = connect_n(30, two, dst);
    let v = wait_stats(&proxy, stats, Duration::from_secs(10), |v| {
        v[0] + v[1] + v[2] >= 30
    });
    assert_eq!(v, [15, 15, 0, 0], "{stats:?} after 30 from 127.0.0.2");
    let three = Ipv4Addr::new(127, 0, 0, 3);
    let from_three = connect_n(30, three, dst);
    let v = wait_stats(&proxy, stats, Duration::from_secs(10), |v| {
        v[0] + v[1] + v[2] >= 60
    });
    assert_eq!(v, [20, 15, 25, 0], "{stats:?} after 30 more from 127.0.0.3");
    // The client side agrees: the refused ones were reset, the others are open.
    assert_eq!(settled_closed(&from_two, Duration::from_secs(3)), 15);
    assert_eq!(settled_closed(&from_three, Duration::from_secs(3)), 25);
    // Both workers took part (else this would not show the caps are shared).
    let metrics = proxy.metrics();
    for w in 0..2 {
        let label = format!("worker=\"{w}\"");
        let n: f64 = [
            "sipedge_tcp_accepted_total",
            "sipedge_tcp_refused_per_peer_total",
        ]
        .iter()
        .chain(&["sipedge_tcp_refused_global_total"])
        .map(|m| metric(&metrics, m, &label))
        .sum();
        assert!(n >= 1.0, "worker {w} accepted nothing:\n{metrics}");
    }
    // Closing 127.0.0.2's connections frees their places, whichever worker held them.
    drop(from_two);
    let v = wait_stats(&proxy, stats, Duration::from_secs(10), |v| v[3] >= 15);
    assert_eq!(v[3], 15, "{stats:?}");
    let four = Ipv4Addr::new(127, 0, 0, 4);
    let from_four = connect_n(10, four, dst);
    let v = wait_stats(&proxy, stats, Duration::from_secs(10), |v| v[0] >= 30);
    assert_eq!(v, [30, 15, 25, 15], "{stats:?} after 10 from 127.0.0.4");
    assert_eq!(settled_closed(&from_four, Duration::from_secs(1)), 0);
    drop(from_three);
}

/// Sum of the samples of `name` whose labels contain `label`.
fn metric(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| k.split('{').next() == Some(name) && k.contains(label))
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .sum()
}

const FLOOD: usize = 2000;
const PER_PEER: u64 = 100;

/// 2,000 half-open connections from 127.0.0.2, each with the start of an INVITE that never
/// ends, while 200 calls over TCP from 127.0.0.3 go through the proxy: the calls all
/// complete; each half-open connection is either refused by the per-peer cap or reset at the
/// 2 s message deadline, and the counters say which.
#[test]
fn half_open_flood_from_one_address_does_not_stop_calls() {
    if let Err(why) = ensure_open_files(FLOOD as libc::rlim_t + 1024) {
        println!("SKIPPED half_open_flood_from_one_address_does_not_stop_calls: {why}");
        return;
    }
    let (proxy, dir) = proxy_with(
        "tcp-flood",
        &format!("[core]\ntcp_max_per_peer = {PER_PEER}\ntcp_message_timeout = 2\n"),
    );
    let port = proxy.sip_port;
    let calls = std::thread::spawn(move || tcp_calls(port, 200, 50, &dir));
    std::thread::sleep(Duration::from_millis(500));
    let dst = proxy.sip_addr();
    let src = Ipv4Addr::new(127, 0, 0, 2);
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let mut c = connect_from(src, dst).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        // A refused connection may be reset before or during this write: that is fine.
        let _ = c.as_mut().map(|c| c.write_all(
            format!(
                "INVITE sip:flood@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK{i}\r\nMax-Forwards: 70\r\n"
            )
            .as_bytes(),
        ));
        flood.push(c);
    }
    // The same address also holds 300 management connections that send half a request head
    // (slowloris): /health and RPC from another address still answer within 2 s.
    let mgmt = local(proxy.mgmt_port);
    let slow: Vec<_> = (0..300)
        .map(|_| {
            let mut s = connect_from(src, mgmt).ok()??;
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            Some(s)
        })
        .collect();
    for what in ["/health", "rpc"] {
        let t0 = now();
        let ok = if what == "/health" {
            proxy.mgmt().health()
        } else {
            proxy
                .mgmt()
                .try_rpc("core.version", serde_json::json!([]))
                .is_ok()
        };
        let took = now().duration_since(t0);
        assert!(ok, "{what} failed during the flood");
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
        println!("{what} answered in {took:?} during the flood");
    }
    drop(slow);
    // Every one is closed: at once (cap) or at the deadline (2 s, swept once a second).
    let deadline = now() + Duration::from_secs(20);
    let mut open = FLOOD;
    while now() < deadline {
        open = flood.iter().filter(|c| !is_closed(c)).count();
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        open, 0,
        "half-open connections still open 20 s after the flood"
    );
    let summary = calls.join().expect("loadgen thread");
    let ok = summary.get("ok").and_then(Value::as_u64);
    let failed = summary.get("failed_total").and_then(Value::as_u64);
    assert_eq!((ok, failed), (Some(200), Some(0)), "calls: {summary}");
    let names = [
        "tcp_refused_per_peer",
        "tcp_message_timeouts",
        "tcp_refused_global",
    ];
    let v = wait_stats(&proxy, names, Duration::from_secs(5), |v| {
        v[0] + v[1] >= FLOOD as u64
    });
    assert_eq!(v[0] + v[1], FLOOD as u64, "{names:?} = {v:?}");
    assert!(
        v[1] >= PER_PEER,
        "the admitted ones hit the deadline: {v:?}"
    );
    assert!(v[0] >= FLOOD as u64 / 2, "most were refused at once: {v:?}");
    assert_eq!(v[2], 0, "{v:?}");
    println!(
        "flood of {FLOOD}: refused per peer {}, deadline resets {}",
        v[0], v[1]
    );
}

/// [`is_closed`] for a blocking stream (left blocking).
fn slow_closed(s: &TcpStream) -> bool {
    let c = s.try_clone().ok();
    let closed = is_closed(&c);
    let _ = s.set_nonblocking(false);
    closed
}

/// One byte every 200 ms of a request that never ends is reset at the 1 s message deadline
/// (not earlier, and not kept alive by each byte), while a peer that sends only keep-alive
/// pings, between messages, stays open for longer than that and gets its pongs.
#[test]
fn slowloris_is_reset_at_the_message_deadline() {
    let (proxy, _dir) = proxy_with("tcp-slowloris", "[core]\ntcp_message_timeout = 1\n");
    let dst = proxy.sip_addr();
    let mut pinger = connect_from(Ipv4Addr::new(127, 0, 0, 3), dst)
        .unwrap()
        .expect("not refused");
    pinger
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let slow = connect_from(Ipv4Addr::new(127, 0, 0, 2), dst).unwrap();
    let mut slow = slow.expect("not refused");
    let msg = b"OPTIONS sip:slow@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bKslow\r\nMax-Forwards: 70\r\n";
    let start = now();
    let mut sent = 0;
    let mut closed_after = None;
    for b in msg.iter().copied() {
        if slow.write_all(&[b]).is_err() || slow_closed(&slow) {
            closed_after = Some(start.elapsed());
            break;
        }
        sent += 1;
        // The keep-alive peer pings between messages on the same rhythm.
        pinger.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        pinger.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = closed_after.unwrap_or_else(|| panic!("never closed after {sent} bytes"));
    assert!(
        took >= Duration::from_secs(1),
        "reset before the deadline: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(6),
        "reset long after the 1 s deadline: {took:?}"
    );
    assert!(!slow_closed(&pinger), "the keep-alive peer was closed");
    let v = wait_stats(
        &proxy,
        ["tcp_message_timeouts"],
        Duration::from_secs(5),
        |v| v[0] >= 1,
    );
    assert_eq!(v, [1]);
    println!("slowloris reset after {took:?} and {sent} bytes");
}

/// Number of descriptors the process `pid` has open below 128 (the limit the test sets; a
/// descriptor inherited above it, e.g. from the shell that runs the tests, does not count).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) < Some(128))
            .count()
    })
}

/// With `max_open_files = 128` the proxy runs out of descriptors under a burst of
/// connections: accept errors are counted, the listeners pause instead of spinning, and
/// once connections close the connections that were left pending are accepted without any
/// new one arriving to wake the listener (the retry after the pause).
#[cfg(target_os = "linux")]
#[test]
fn accept_errors_pause_the_listener_which_then_recovers() {
    let (proxy, _dir) = proxy_with(
        "tcp-emfile",
        "[core]\nmax_open_files = 128\ntcp_max_per_peer = 1000\n",
    );
    let pid = proxy.pid();
    let used = open_fds(pid);
    assert!(
        used > 0 && used < 100,
        "proxy holds {used} descriptors at rest"
    );
    let dst = proxy.sip_addr();
    let src = Ipv4Addr::new(127, 0, 0, 2);
    // Enough to fill the table and leave 20 waiting in the listen queues.
    let n = 128 - used + 20;
    let conns: Vec<TcpStream> = connect_n(n, src, dst)
        .into_iter()
        .map(|c| c.expect("no cap refuses these"))
        .collect();
    let deadline = now() + Duration::from_secs(5);
    while open_fds(pid) < 128 && now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        open_fds(pid),
        128,
        "the proxy should be at its descriptor limit"
    );
    // Let the paused listeners retry (and fail) a few times.
    std::thread::sleep(Duration::from_millis(1500));
    // (No management request now: it would need a descriptor too.)
    let (first, rest) = conns.split_at(50);
    for c in first {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    // Every remaining connection is served, including the ones still queued when the
    // table filled up: nothing new arrives on the listeners to wake them.
    for (i, mut c) in rest.iter().enumerate() {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong)
            .unwrap_or_else(|e| panic!("no pong on connection {} of {n}: {e}", 50 + i));
        assert_eq!(&pong, b"\r\n");
    }
    drop(conns);
    let v = wait_stats(
        &proxy,
        ["tcp_accept_errors", "tcp_accepted"],
        Duration::from_secs(5),
        |v| v[1] >= n as u64,
    );
    assert!(v[0] >= 1, "accept errors counted: {v:?}");
    assert_eq!(
        v[1], n as u64,
        "every connection accepted in the end: {v:?}"
    );
    assert!(
        v[0] < 200,
        "the listeners paused between tries instead of spinning: {v:?}"
    );
    assert!(proxy.health());
    println!("accept errors while out of descriptors: {}", v[0]);
}
