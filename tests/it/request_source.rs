//! Where forwarded UDP requests leave from, against the real binary with 2 workers fed at
//! random (`--spread all`): by default from a private per-worker socket (its port in our Via,
//! so responses return to the owning worker); with `core.private_send_sockets = false` from the
//! listen socket itself, so a peer that filters on source port sees one address, and every
//! call still completes although responses now reach either worker and are handed off.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::proxy::Proxy;
use common::{TempDir, now};

const CALLS: usize = 20;

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Receives until `pred` accepts a datagram or 5 s pass.
fn recv_until(s: &UdpSocket, what: &str, pred: impl Fn(&str) -> bool) -> (String, SocketAddr) {
    let deadline = now() + Duration::from_secs(5);
    let mut buf = [0u8; 65_535];
    while now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&text) {
                return (text, from);
            }
        }
    }
    panic!("no {what} within 5 s");
}

fn header_lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// Runs `CALLS` INVITE/200 exchanges through the proxy; returns the source ports the
/// forwarded INVITEs came from and the ports their top Via named.
fn calls(proxy: &Proxy) -> Vec<(u16, u16)> {
    let uac = bind();
    let uas = bind();
    let uac_port = uac.local_addr().unwrap().port();
    let uas_port = uas.local_addr().unwrap().port();
    let mut seen = Vec::new();
    for i in 0..CALLS {
        let invite = format!(
            "INVITE sip:bob@127.0.0.1:{uas_port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-rs{i};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@127.0.0.1>;tag=a{i}\r\n\
             To: <sip:bob@127.0.0.1>\r\n\
             Call-ID: rs-{i}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@127.0.0.1:{uac_port}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        uac.send_to(invite.as_bytes(), proxy.sip_addr()).unwrap();
        let call_id = format!("Call-ID: rs-{i}\r\n");
        let (fwd, from) = recv_until(&uas, "forwarded INVITE", |t| {
            t.starts_with("INVITE ") && t.contains(&call_id)
        });
        let top_via = header_lines(&fwd, "Via")[0];
        let via_port: u16 = top_via
            .split_once("127.0.0.1:")
            .and_then(|(_, r)| r.split(';').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in our Via: {top_via}"));
        seen.push((from.port(), via_port));
        // 200 OK with every Via of the request, back to where the INVITE came from.
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for v in header_lines(&fwd, "Via") {
            ok.push_str(v);
            ok.push_str("\r\n");
        }
        for h in ["Record-Route", "From", "Call-ID", "CSeq"] {
            for l in header_lines(&fwd, h) {
                ok.push_str(l);
                ok.push_str("\r\n");
            }
        }
        ok.push_str(&format!(
            "To: <sip:bob@127.0.0.1>;tag=b{i}\r\nContact: <sip:bob@127.0.0.1:{uas_port}>\r\nContent-Length: 0\r\n\r\n"
        ));
        uas.send_to(ok.as_bytes(), from).unwrap();
        recv_until(&uac, "200 OK upstream", |t| {
            t.starts_with("SIP/2.0 200 ") && t.contains(&call_id)
        });
    }
    seen
}

#[test]
fn requests_leave_from_private_worker_sockets_by_default() {
    let proxy = Proxy::start(&["--log", "warn", "--spread", "all"]);
    for (src, via) in calls(&proxy) {
        assert_ne!(src, proxy.sip_port, "a private socket, not the listen port");
        assert_eq!(src, via, "our Via names the socket the request left from");
    }
}

#[test]
fn requests_leave_from_the_listen_socket_without_private_sockets() {
    let dir = TempDir::new("request_source");
    let cfg = dir.join("listen.toml");
    std::fs::write(&cfg, "[core]\nprivate_send_sockets = false\n").unwrap();
    let proxy = Proxy::start(&[
        "--log",
        "warn",
        "--spread",
        "all",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    for (src, via) in calls(&proxy) {
        assert_eq!(src, proxy.sip_port, "sent from the listen socket");
        assert_eq!(via, proxy.sip_port, "our Via names the listen port");
    }
    // Every 200 above made it upstream; with responses spread at random over 2 workers some
    // had to be handed to the transaction's owner.
    let stats = proxy.rpc(
        "stats.get_statistics",
        serde_json::json!(["core:handoff_in"]),
    );
    let text = stats.to_string();
    let n: u64 = text
        .split("core:handoff_in = ")
        .nth(1)
        .and_then(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or_else(|| panic!("no core:handoff_in in {text}"));
    assert!(n > 0, "no response was handed off: {text}");
}
