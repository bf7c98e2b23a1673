//! A second `sipedge` on a SIP address another process already serves must refuse to start:
//! the listen sockets are SO_REUSEPORT, so without the check it would join the first
//! instance's sockets and silently take a share of its traffic. `--allow-shared-port` is the
//! explicit opt-out.
//!
//! Invariants checked: the refusal is a non-zero exit within 5 s whose stderr names the
//! address (UDP and TCP alike); the first instance stays healthy; with the opt-out the second
//! instance starts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::common::mgmt::MgmtClient;
use crate::common::proxy::Proxy;
use crate::common::{TempDir, free_udp_port, now, spawn_guarded, tail};

/// Longest a refused start may take.
const REFUSAL: Duration = Duration::from_secs(5);

/// `sipedge run --listen <listen> --mgmt 127.0.0.1:<free> <extra>` with its output in a file.
fn second(listen: &str, extra: &[&str], dir: &TempDir) -> (crate::common::ChildGuard, u16) {
    let mgmt_port = free_udp_port();
    let log = dir.join("second.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
    cmd.arg("run")
        .args(["--listen", listen])
        .args(["--mgmt", &format!("127.0.0.1:{mgmt_port}")])
        .args(["--workers", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f));
    (
        spawn_guarded(&mut cmd, "sipedge-second").unwrap(),
        mgmt_port,
    )
}

#[test]
fn a_second_instance_on_the_same_port_refuses_to_start() {
    let mut first = Proxy::start(&[]);
    let port = first.sip_port;
    for transport in ["udp", "tcp"] {
        let dir = TempDir::new("second-instance");
        let listen = format!("{transport}:127.0.0.1:{port}");
        let started = now();
        let (mut child, _) = second(&listen, &[], &dir);
        let status = child.wait_timeout(REFUSAL);
        let stderr = tail(&dir.join("second.log"), 4096);
        let status = status.unwrap_or_else(|| {
            panic!("second instance on {listen} still running after {REFUSAL:?}:\n{stderr}")
        });
        assert!(!status.success(), "{listen}: exit {status}\n{stderr}");
        assert!(now() - started < REFUSAL);
        assert!(
            stderr.contains(&listen) && stderr.contains("already in use"),
            "{listen}: stderr does not name the address:\n{stderr}"
        );
    }
    assert!(first.running() && first.health(), "{}", first.log_tail());
}

#[test]
fn allow_shared_port_starts_anyway() {
    let first = Proxy::start(&[]);
    let dir = TempDir::new("second-instance-shared");
    let listen = format!("udp:127.0.0.1:{}", first.sip_port);
    let (mut child, mgmt_port) = second(&listen, &["--allow-shared-port"], &dir);
    let mgmt = MgmtClient::new(mgmt_port);
    let deadline = now() + Duration::from_secs(10);
    while !mgmt.health() {
        if let Some(status) = child.try_wait() {
            panic!(
                "second instance exited ({status}):\n{}",
                tail(&dir.join("second.log"), 4096)
            );
        }
        assert!(now() < deadline, "second instance never became healthy");
        thread::sleep(Duration::from_millis(50));
    }
    child.stop(Duration::from_secs(2));
    assert!(first.health());
}
