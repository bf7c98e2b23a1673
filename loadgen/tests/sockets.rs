//! loadgen UAC -> loadgen UAS over real UDP sockets on 127.0.0.1, one run per scenario that
//! needs no proxy, plus multi-thread / multi-socket runs, and the honesty check: a relay that
//! stalls once for 200 ms must show up in the tail while p50 stays low.
// Real-socket tests run on the wall clock (the relay stub stalls at a wall-clock time).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loadgen::io::{self, Mode, Transport};
use loadgen::scenario::{Mix, Scenario};
use loadgen::stats::Metric;

fn run_ok(scen: &str, rate: f64, calls: u64, threads: usize, sockets: usize) {
    run_ok_on(Transport::Udp, scen, rate, calls, threads, sockets);
}

fn run_ok_on(tp: Transport, scen: &str, rate: f64, calls: u64, threads: usize, sockets: usize) {
    let uas = common::free_port();
    let mut cfg = common::config(Mode::Both, uas, uas, rate, calls);
    cfg.transport = tp;
    cfg.mix = scen.parse::<Mix>().unwrap();
    cfg.threads = threads;
    cfg.sockets = sockets;
    cfg.hold_us = 5_000;
    let r = io::run(&cfg, Arc::new(AtomicBool::new(false))).expect("run");
    let (u, s) = (&r.uac.c, &r.uas.c);
    assert_eq!(u.started, calls, "{scen}");
    assert_eq!((u.ok, u.failed_total()), (calls, 0), "{scen}: {u:?}");
    assert_eq!(s.failed_total(), 0, "{scen}: {s:?}");
    assert_eq!(s.uas_calls, calls, "{scen}");
    assert_eq!(u.stray + s.stray, 0, "{scen}");
    assert!(r.uac.hist(Metric::Setup).len() >= calls, "{scen}");
}

#[test]
fn each_direct_scenario_over_udp() {
    for scen in [
        "basic", "reject", "cancel", "fork", "reinvite", "options", "nobye",
    ] {
        run_ok(scen, 500.0, 200, 1, 1);
    }
}

#[test]
fn each_direct_scenario_over_tcp() {
    for scen in [
        "basic", "reject", "cancel", "fork", "reinvite", "options", "nobye",
    ] {
        run_ok_on(Transport::Tcp, scen, 500.0, 200, 1, 1);
    }
    let mix = "basic=50,reject=10,cancel=10,fork=10,reinvite=10,options=5,nobye=5";
    run_ok_on(Transport::Tcp, mix, 2000.0, 2000, 2, 4);
}

#[test]
fn mixed_scenarios_two_threads_four_sockets() {
    run_ok(
        "basic=50,reject=10,cancel=10,fork=10,reinvite=10,options=5,nobye=5",
        2000.0,
        2000,
        2,
        4,
    );
}

/// A relay between UAC and UAS that holds everything for 200 ms once.
fn stalling_relay(
    listen: UdpSocket,
    uas: SocketAddr,
    stall_after: Duration,
    stop: Arc<AtomicBool>,
) {
    listen
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let t0 = Instant::now();
    let mut stalled = false;
    let mut uac: Option<SocketAddr> = None;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if !stalled && t0.elapsed() >= stall_after {
            stalled = true;
            std::thread::sleep(Duration::from_millis(200)); // packets queue in the socket
        }
        let Ok((n, src)) = listen.recv_from(&mut buf) else {
            continue;
        };
        let dst = if src == uas { uac } else { Some(uas) };
        if src != uas {
            uac = Some(src);
        }
        if let Some(d) = dst {
            let _ = listen.send_to(&buf[..n], d);
        }
    }
}

#[test]
fn a_stalled_relay_shows_in_the_tail_not_the_median() {
    let uas = common::free_port();
    let relay = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    relay.set_recv_buffer_size(4 << 20).unwrap();
    relay
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let relay: UdpSocket = relay.into();
    let relay_addr = relay.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || stalling_relay(relay, uas, Duration::from_millis(700), st));
    let mut cfg = common::config(Mode::Both, relay_addr, uas, 500.0, 1500);
    cfg.mix = Mix::single(Scenario::Basic);
    let r = io::run(&cfg, Arc::new(AtomicBool::new(false))).expect("run");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert_eq!(r.uac.c.ok, 1500, "{:?}", r.uac.c);
    assert_eq!(r.uac.c.retrans, 0, "relay queue overflowed: {:?}", r.uac.c);
    let setup = r.uac.hist(Metric::Setup);
    let p50 = setup.value_at_quantile(0.5);
    let p999 = setup.value_at_quantile(0.999);
    assert!(p999 >= 150_000, "stall hidden: p99.9 {p999} us");
    assert!(
        setup.max() >= 150_000 && setup.max() < 400_000,
        "max {}",
        setup.max()
    );
    assert!(p50 < 20_000, "p50 {p50} us should stay low");
    // The stalled calls were sent on time: coordinated omission would shrink this count.
    let stalled = setup.count_between(100_000, 1_000_000);
    assert!(stalled >= 50, "only {stalled} calls saw the stall");
}

/// The Call-ID of a SIP datagram (compact form too), or empty.
fn call_id(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    text.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
                .then(|| value.trim().as_bytes().to_vec())
        })
        .unwrap_or_default()
}

/// The `host:port` of the Request-URI of a request, if it has one.
fn ruri_addr(msg: &[u8]) -> Option<SocketAddr> {
    let line = String::from_utf8_lossy(msg).lines().next()?.to_owned();
    let uri = line.split(' ').nth(1)?;
    uri.split_once('@')?.1.parse().ok()
}

/// A proxy stub that routes each initial request by its Request-URI and sends it out of one
/// of two sockets in turn, as a multi-worker proxy does; responses go back to the client of
/// that Call-ID. No Record-Route, so ACK and BYE go from the UAC straight to the Contact.
fn two_socket_proxy(listen: UdpSocket, stop: Arc<AtomicBool>) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let clients: Arc<Mutex<HashMap<Vec<u8>, SocketAddr>>> = Arc::default();
    let ups: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut threads = Vec::new();
    for up in &ups {
        let (up, down) = (up.try_clone().unwrap(), listen.try_clone().unwrap());
        let (clients, stop) = (clients.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            up.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = up.recv_from(&mut buf) else {
                    continue;
                };
                let to = clients.lock().unwrap().get(&call_id(&buf[..n])).copied();
                if let Some(to) = to {
                    let _ = down.send_to(&buf[..n], to);
                }
            }
        }));
    }
    listen
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = listen.recv_from(&mut buf) else {
            continue;
        };
        let Some(dst) = ruri_addr(&buf[..n]) else {
            continue;
        };
        clients.lock().unwrap().insert(call_id(&buf[..n]), src);
        turn += 1;
        let _ = ups[turn % 2].send_to(&buf[..n], dst);
    }
    for t in threads {
        t.join().unwrap();
    }
}

/// Two UDP ports in a row on 127.0.0.1 that were free a moment ago.
fn two_free_ports() -> SocketAddr {
    for _ in 0..50 {
        let a = common::free_port();
        let Some(next) = a.port().checked_add(1) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", next)).is_ok() {
            return a;
        }
    }
    panic!("no two consecutive free UDP ports");
}

/// With two threads, each thread's UAS has its own port and its UAC calls that port, so an
/// INVITE that a proxy sends from one socket and the ACK/BYE the UAC sends straight to the
/// Contact reach the same thread. With one shared port the kernel would hash the two sources
/// to different threads and the second one would answer 481.
#[test]
fn two_threads_behind_a_proxy_sending_from_two_sockets() {
    let uas = two_free_ports();
    let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || two_socket_proxy(proxy, st));
    let mut cfg = common::config(Mode::Both, proxy_addr, uas, 1000.0, 1000);
    cfg.threads = 2;
    cfg.sockets = 8;
    cfg.uas_port_per_thread = true;
    let (l1, t1, r1) = cfg.thread_addrs(1).unwrap();
    assert_eq!(l1.port(), uas.port() + 1);
    assert_eq!((t1, r1), (proxy_addr, format!("sip:service@{l1}")));
    let r = io::run(&cfg, Arc::new(AtomicBool::new(false))).expect("run");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let (u, s) = (&r.uac.c, &r.uas.c);
    assert_eq!((u.ok, u.failed_total()), (1000, 0), "{u:?}");
    assert_eq!((s.uas_calls, s.failed_total()), (1000, 0), "{s:?}");
}

#[test]
fn per_thread_uas_ports_stop_at_65535() {
    let mut cfg = common::config(
        Mode::Both,
        "127.0.0.1:65535".parse().unwrap(),
        "127.0.0.1:65535".parse().unwrap(),
        1.0,
        1,
    );
    cfg.threads = 2;
    cfg.uas_port_per_thread = true;
    let (l0, t0, _) = cfg.thread_addrs(0).unwrap();
    assert_eq!((l0.port(), t0.port()), (65535, 65535));
    let err = cfg.thread_addrs(1).unwrap_err().to_string();
    assert!(err.contains("65535"), "{err}");
}
