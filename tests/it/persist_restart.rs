//! Dialog persistence across a restart, through the real binary and real UDP sockets: a call
//! set up in the first run survives SIGTERM (the shutdown path must not delete it), is loaded
//! by the second run with the same id and state, and its BYE — carrying the Route set (and so
//! the did cookie) of the first run — is relayed and ends it. A call that ended before the
//! restart is not loaded.
//!
//! The UAC/UAS helpers ([`Phones`]) are shared with the other tests that need a real call
//! through the binary (`persist_failure`, `ops_safety`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::mgmt::MgmtClient;
use common::{ChildGuard, TempDir, free_port_pair, local, now, spawn_guarded, tail};
use serde_json::Value;

/// Write-behind period used by these tests (ms).
const PERIOD_MS: u64 = 200;

struct Run {
    child: ChildGuard,
    mgmt: MgmtClient,
    log: std::path::PathBuf,
}

impl Run {
    fn start(sip: u16, mgmt: u16, config: &Path, log: std::path::PathBuf) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("udp:127.0.0.1:{sip}")])
            .args(["--mgmt", &format!("127.0.0.1:{mgmt}")])
            .args(["--workers", "2"])
            .stdin(Stdio::null());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        let mut child = spawn_guarded(&mut cmd, "sipedge").unwrap();
        let client = MgmtClient::new(mgmt);
        let deadline = now() + Duration::from_secs(10);
        while !client.health() {
            assert!(child.try_wait().is_none(), "exited:\n{}", tail(&log, 4096));
            assert!(now() < deadline, "not healthy:\n{}", tail(&log, 4096));
            thread::sleep(Duration::from_millis(50));
        }
        Run {
            child,
            mgmt: client,
            log,
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        let st = self.child.stop(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "bad exit {st:?}:\n{}",
            tail(&self.log, 4096)
        );
    }

    /// Every dialog object in `dlg.list`.
    fn dialogs(&self) -> Vec<Value> {
        let mut out = Vec::new();
        collect(&self.mgmt.rpc("dlg.list", Value::Null), &mut out);
        out
    }

    fn active_all(&self) -> u64 {
        self.mgmt.active_dialogs().all
    }
}

pub(crate) fn collect(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) if m.contains_key("h_entry") => out.push(v.clone()),
        Value::Object(m) => m.values().for_each(|x| collect(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        _ => {}
    }
}

/// Receive until a message whose first line starts with `prefix` (skips 100/180 etc.).
pub(crate) fn recv_until(s: &UdpSocket, prefix: &str) -> (String, SocketAddr) {
    let deadline = now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65_536];
    loop {
        assert!(now() < deadline, "no `{prefix}` received");
        if let Ok((n, src)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with(prefix) {
                return (text, src);
            }
        }
    }
}

/// Every value of header `name` (full name only), in order.
pub(crate) fn headers(msg: &str, name: &str) -> Vec<String> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A response from the UAS to request `req`: Via, Record-Route, From, Call-ID, CSeq copied.
pub(crate) fn response(req: &str, code: &str, uas: SocketAddr) -> String {
    let mut r = format!("SIP/2.0 {code}\r\n");
    for v in headers(req, "Via") {
        r += &format!("Via: {v}\r\n");
    }
    for v in headers(req, "Record-Route") {
        r += &format!("Record-Route: {v}\r\n");
    }
    let to = headers(req, "To").remove(0);
    let to = if to.contains("tag=") {
        to
    } else {
        format!("{to};tag=uas-tag")
    };
    r += &format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@{uas}>\r\nContent-Length: 0\r\n\r\n",
        headers(req, "From").remove(0),
        headers(req, "Call-ID").remove(0),
        headers(req, "CSeq").remove(0),
    );
    r
}

/// An in-dialog request from the UAC, built from the 200 OK of the INVITE.
pub(crate) fn in_dialog(
    method: &str,
    ok: &str,
    uac: SocketAddr,
    cseq: u32,
    branch: &str,
) -> String {
    let target = headers(ok, "Contact").remove(0);
    let target = target.trim_start_matches('<').trim_end_matches('>');
    let mut r = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {uac};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
    );
    for v in headers(ok, "Record-Route") {
        r += &format!("Route: {v}\r\n");
    }
    r += &format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        headers(ok, "From").remove(0),
        headers(ok, "To").remove(0),
        headers(ok, "Call-ID").remove(0),
    );
    r
}

pub(crate) struct Phones {
    pub(crate) uac: UdpSocket,
    pub(crate) uas: UdpSocket,
    pub(crate) proxy: SocketAddr,
}

impl Phones {
    pub(crate) fn new(sip: u16) -> Phones {
        let uac = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&uac, &uas] {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        Phones {
            uac,
            uas,
            proxy: local(sip),
        }
    }
    pub(crate) fn uac_addr(&self) -> SocketAddr {
        self.uac.local_addr().unwrap()
    }
    pub(crate) fn uas_addr(&self) -> SocketAddr {
        self.uas.local_addr().unwrap()
    }

    /// INVITE / 180 / 200 / ACK through the proxy; returns the 200 OK the UAC saw.
    pub(crate) fn call(&self, call_id: &str) -> String {
        let (uac, uas) = (self.uac_addr(), self.uas_addr());
        let invite = format!(
            "INVITE sip:bob@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {uac};branch=z9hG4bK-{call_id}-1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{uac}>;tag=uac-{call_id}\r\nTo: <sip:bob@{uas}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{uac}>\r\nContent-Length: 0\r\n\r\n"
        );
        self.uac.send_to(invite.as_bytes(), self.proxy).unwrap();
        let (inv, from_proxy) = recv_until(&self.uas, "INVITE ");
        for code in ["180 Ringing", "200 OK"] {
            let r = response(&inv, code, uas);
            self.uas.send_to(r.as_bytes(), from_proxy).unwrap();
        }
        let (ok, _) = recv_until(&self.uac, "SIP/2.0 200");
        assert!(
            !headers(&ok, "Record-Route").is_empty(),
            "no Record-Route: {ok}"
        );
        let ack = in_dialog("ACK", &ok, uac, 1, &format!("-{call_id}-ack"));
        self.uac.send_to(ack.as_bytes(), self.proxy).unwrap();
        recv_until(&self.uas, "ACK ");
        ok
    }

    /// BYE from the UAC; the UAS must receive it and answers 200.
    pub(crate) fn bye(&self, ok: &str, call_id: &str) {
        let bye = in_dialog("BYE", ok, self.uac_addr(), 2, &format!("-{call_id}-bye"));
        self.uac.send_to(bye.as_bytes(), self.proxy).unwrap();
        let (b, from_proxy) = recv_until(&self.uas, "BYE ");
        assert_eq!(headers(&b, "Call-ID"), vec![call_id.to_string()]);
        let r = response(&b, "200 OK", self.uas_addr());
        self.uas.send_to(r.as_bytes(), from_proxy).unwrap();
        recv_until(&self.uac, "SIP/2.0 200");
    }
}

fn write_config(dir: &TempDir) -> std::path::PathBuf {
    let db = dir.join("dialogs.redb");
    let cfg = dir.join("sipedge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dialog]\ndb_url = \"{}\"\ndb_mode = 2\ndb_update_period = {PERIOD_MS}\n",
            db.display()
        ),
    )
    .unwrap();
    cfg
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = now() + Duration::from_secs(5);
    while !f() {
        assert!(now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn confirmed_dialog_survives_restart_and_bye_ends_it() {
    let dir = TempDir::new("persist-restart");
    let cfg = write_config(&dir);
    let (sip, mgmt) = free_port_pair();
    let phones = Phones::new(sip);

    let first = Run::start(sip, mgmt, &cfg, dir.join("run1.log"));
    let ok = phones.call("persist-call-1");
    let before = first.dialogs();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["state"], 4);
    // Wait past the write-behind period, then stop (SIGTERM ends dialogs in the engine).
    thread::sleep(Duration::from_millis(PERIOD_MS * 3));
    first.stop();

    let second = Run::start(sip, mgmt, &cfg, dir.join("run2.log"));
    let after = second.dialogs();
    assert_eq!(
        after.len(),
        1,
        "not loaded: {after:?}\n{}",
        tail(&second.log, 4096)
    );
    assert_eq!(after[0]["state"], 4);
    assert_eq!(after[0]["h_entry"], before[0]["h_entry"]);
    assert_eq!(after[0]["h_id"], before[0]["h_id"]);
    assert_eq!(after[0]["call-id"], "persist-call-1");
    assert_eq!(second.active_all(), 1);

    // The BYE carries the first run's Route (did cookie with the old boot tag).
    phones.bye(&ok, "persist-call-1");
    wait_for("active dialogs to reach 0", || second.active_all() == 0);
    second.stop();

    // The end was stored: a third run loads nothing.
    let third = Run::start(sip, mgmt, &cfg, dir.join("run3.log"));
    assert!(third.dialogs().is_empty());
    assert_eq!(third.active_all(), 0);
    third.stop();
}

#[test]
fn ended_dialog_is_not_loaded_and_new_ids_do_not_collide() {
    let dir = TempDir::new("persist-ended");
    let cfg = write_config(&dir);
    let (sip, mgmt) = free_port_pair();
    let phones = Phones::new(sip);

    let first = Run::start(sip, mgmt, &cfg, dir.join("run1.log"));
    let ok_a = phones.call("persist-a");
    let ok_b = phones.call("persist-b");
    phones.bye(&ok_a, "persist-a");
    wait_for("one active dialog", || first.active_all() == 1);
    let kept = first.dialogs();
    // No wait here: stop() itself must flush what is queued.
    first.stop();

    let second = Run::start(sip, mgmt, &cfg, dir.join("run2.log"));
    let loaded: Vec<Value> = second
        .dialogs()
        .into_iter()
        .filter(|d| d["state"] == 4)
        .collect();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0]["call-id"], "persist-b");
    let old = kept
        .iter()
        .find(|d| d["call-id"] == "persist-b")
        .cloned()
        .unwrap();
    assert_eq!(loaded[0]["h_id"], old["h_id"]);
    // New calls get fresh ids, never one of a loaded dialog.
    let ok_c = phones.call("persist-c");
    let all = second.dialogs();
    assert_eq!(all.len(), 2, "{all:?}");
    let ids: std::collections::HashSet<(String, String)> = all
        .iter()
        .map(|d| (d["h_entry"].to_string(), d["h_id"].to_string()))
        .collect();
    assert_eq!(ids.len(), 2);
    phones.bye(&ok_c, "persist-c");
    phones.bye(&ok_b, "persist-b");
    wait_for("no active dialogs", || second.active_all() == 0);
    second.stop();
}
