//! Operational safety through the real binary, real UDP calls and `/metrics`:
//!
//! - a panic while a worker handles one packet, or fires one dialog timer, is isolated: the
//!   worker goes on, `sipedge_worker_panics_total` counts it, one log line names the worker
//!   and the item, later calls complete, and a call whose timer panicked still times out;
//! - more than 100 panics within a second end the worker, which is replaced;
//! - a worker that dies is reported dead (`sipedge_worker_alive` 0, a log line), replaced
//!   on the same sockets (alive again, `sipedge_worker_restarts_total` 1), and a dialog set
//!   up before its death still gets its timeout BYE both ways;
//! - a corrupt dialog store stops the start with an error naming the file and
//!   `--db-recover`; with `--db-recover` (or `dialog.db_recover = true`) the proxy starts on
//!   an empty store and the corrupt file is kept aside.
//!
//! Panics and deaths are injected with `io::fault` (debug builds only, and only with
//! `SIPEDGE_FAULT_INJECTION=1` in the proxy's environment).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::mgmt::MgmtClient;
use crate::common::{ChildGuard, TempDir, free_port_pair, now, spawn_guarded};
use crate::persist_restart::{Phones, headers, recv_until, response, wait_for};

/// Environment that turns fault injection on in the proxy.
const FAULTS: (&str, &str) = ("SIPEDGE_FAULT_INJECTION", "1");

/// A `sipedge run` whose stderr is collected in memory by a thread (not written by the proxy
/// into a file: `persist_failure` limits the size of the files it may write).
pub(crate) struct Sipedge {
    child: ChildGuard,
    pub(crate) sip: u16,
    pub(crate) mgmt: MgmtClient,
    mgmt_port: u16,
    log: Arc<Mutex<String>>,
}

impl Sipedge {
    /// Spawn `sipedge run --listen udp:127.0.0.1:SIP --mgmt 127.0.0.1:MGMT <args>` with `env`.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Sipedge {
        let (sip, mgmt_port) = free_port_pair();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
        cmd.arg("run")
            .args(["--listen", &format!("udp:127.0.0.1:{sip}")])
            .args(["--mgmt", &format!("127.0.0.1:{mgmt_port}")])
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (read, write) = pipe();
        cmd.stderr(Stdio::from(write));
        let child = spawn_guarded(&mut cmd, "sipedge").unwrap();
        // The parent's copy of the write end goes with `cmd`: EOF once the proxy exits.
        drop(cmd);
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Sipedge {
            child,
            sip,
            mgmt: MgmtClient::new(mgmt_port),
            mgmt_port,
            log,
        }
    }

    /// [`Sipedge::spawn`], then wait (at most 10 s) until `/health` answers.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Sipedge {
        let mut p = Sipedge::spawn(args, env);
        let deadline = now() + Duration::from_secs(10);
        while !p.mgmt.health() {
            if let Some(st) = p.child.try_wait() {
                panic!("sipedge exited ({st}):\n{}", p.log());
            }
            assert!(now() < deadline, "not healthy:\n{}", p.log());
            thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the proxy wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `t` for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_timeout(t)
    }

    /// The value of one series of `GET /metrics` (e.g. `sipedge_worker_alive{worker="0"}`).
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .build()
            .into();
        let url = format!("http://127.0.0.1:{}/metrics", self.mgmt_port);
        let text = agent
            .get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Wait (at most 10 s) until `series` has value `v`.
    pub(crate) fn wait_metric(&self, series: &str, v: f64) {
        let deadline = now() + Duration::from_secs(10);
        loop {
            let got = self.metric(series);
            if got == Some(v) {
                return;
            }
            assert!(
                now() < deadline,
                "{series} is {got:?}, not {v}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the process must exit cleanly within 5 s.
    pub(crate) fn stop(mut self) {
        let st = self.child.stop(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "bad exit {st:?}:\n{}",
            self.log()
        );
    }
}

/// A pipe (read end, write end), both close-on-exec (the child gets the write end by dup2).
fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// A config file in `dir` with `text`.
pub(crate) fn config(dir: &TempDir, text: &str) -> PathBuf {
    let p = dir.join("sipedge.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// An OPTIONS from the UAC to the UAS through the proxy, carrying `X-Sipedge-Fault: fault`.
fn send_fault(phones: &Phones, fault: &str, n: u32) {
    let (uac, uas) = (phones.uac_addr(), phones.uas_addr());
    let m = format!(
        "OPTIONS sip:bob@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {uac};branch=z9hG4bK-fault-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{uac}>;tag=f{n}\r\nTo: <sip:bob@{uas}>\r\n\
         Call-ID: fault-{n}\r\nCSeq: 1 OPTIONS\r\nX-Sipedge-Fault: {fault}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    phones.uac.send_to(m.as_bytes(), phones.proxy).unwrap();
}

/// Nothing starting with `prefix` reaches `s` within `t`.
fn nothing_like(s: &UdpSocket, prefix: &str, t: Duration) -> bool {
    let end = now() + t;
    let mut buf = vec![0u8; 65_536];
    while now() < end {
        if let Ok((n, _)) = s.recv_from(&mut buf)
            && buf[..n].starts_with(prefix.as_bytes())
        {
            return false;
        }
    }
    true
}

/// The timeout BYEs of `call_id` reach both phones; each is answered 200.
fn timeout_byes(phones: &Phones, call_id: &str) {
    for (s, me) in [
        (&phones.uas, phones.uas_addr()),
        (&phones.uac, phones.uac_addr()),
    ] {
        let (bye, from) = recv_until(s, "BYE ");
        assert_eq!(headers(&bye, "Call-ID"), vec![call_id.to_string()], "{bye}");
        assert!(bye.contains("dialog timeout"), "{bye}");
        s.send_to(response(&bye, "200 OK", me).as_bytes(), from)
            .unwrap();
    }
}

#[test]
fn a_panic_while_handling_one_packet_is_isolated() {
    let p = Sipedge::start(&["--workers", "1"], &[FAULTS]);
    let phones = Phones::new(p.sip);
    let ok = phones.call("iso-1");
    phones.bye(&ok, "iso-1");

    send_fault(&phones, "panic", 1);
    p.wait_metric("sipedge_worker_panics_total{worker=\"0\"}", 1.0);
    // The engine ran, then the worker panicked: the OPTIONS it would have forwarded is gone.
    assert!(nothing_like(
        &phones.uas,
        "OPTIONS ",
        Duration::from_millis(300)
    ));
    let log = p.log();
    let want = format!("packet from udp:{}", phones.uac_addr());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("internal error (panic)"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per panic:\n{log}");
    assert!(
        lines[0].contains(&want) && lines[0].contains("worker=0"),
        "{log}"
    );

    // The worker goes on: calls complete, it never died.
    for id in ["iso-2", "iso-3"] {
        let ok = phones.call(id);
        phones.bye(&ok, id);
    }
    assert_eq!(p.metric("sipedge_worker_alive{worker=\"0\"}"), Some(1.0));
    assert_eq!(
        p.metric("sipedge_worker_restarts_total{worker=\"0\"}"),
        Some(0.0)
    );
    assert_eq!(
        p.metric("sipedge_worker_panics_total{worker=\"0\"}"),
        Some(1.0)
    );
    p.stop();
}

#[test]
fn a_panic_in_a_dialog_timer_is_isolated_and_the_call_still_times_out() {
    let dir = TempDir::new("ops-timer-panic");
    let cfg = config(&dir, "[dialog]\ndefault_timeout = 2\n");
    let cfg = cfg.to_str().unwrap();
    let p = Sipedge::start(&["--workers", "1", "--config", cfg], &[FAULTS]);
    let phones = Phones::new(p.sip);
    let _ok = phones.call("timer-1");
    send_fault(&phones, "panic-dialog-timer", 2);
    // Timeout at 2 s panics; the dialog is armed again 1 s later and then times out.
    timeout_byes(&phones, "timer-1");
    assert_eq!(
        p.metric("sipedge_worker_panics_total{worker=\"0\"}"),
        Some(1.0)
    );
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("internal error (panic)") && l.contains("timer Dialog(")),
        "{log}"
    );
    wait_for("no active dialog", || p.mgmt.active_dialogs().all == 0);
    p.stop();
}

#[test]
fn a_dead_worker_is_replaced_and_its_dialogs_still_time_out() {
    let dir = TempDir::new("ops-worker-death");
    let cfg = config(&dir, "[dialog]\ndefault_timeout = 5\n");
    let cfg = cfg.to_str().unwrap();
    // The replacement waits 1.5 s, so the test can see the worker dead.
    let env = [FAULTS, ("SIPEDGE_FAULT_RESTART_DELAY_MS", "1500")];
    let p = Sipedge::start(&["--workers", "1", "--config", cfg], &env);
    let phones = Phones::new(p.sip);
    let alive = "sipedge_worker_alive{worker=\"0\"}";
    let restarts = "sipedge_worker_restarts_total{worker=\"0\"}";
    assert_eq!(p.metric(alive), Some(1.0));
    let _ok = phones.call("before-death");

    send_fault(&phones, "die", 3);
    p.wait_metric(alive, 0.0);
    assert_eq!(p.metric(restarts), Some(0.0));
    p.wait_metric(alive, 1.0);
    assert_eq!(p.metric(restarts), Some(1.0));
    assert!(p.mgmt.health());
    let log = p.log();
    assert!(
        log.contains("worker died") && log.contains("fault injection"),
        "{log}"
    );
    assert!(
        log.contains("worker restarted") && log.contains("rearmed_dialog_timers=1"),
        "{log}"
    );
    assert!(
        p.metric("sipedge_worker_transactions_lost_total{worker=\"0\"}")
            .is_some()
    );

    // The replacement serves new calls on the same sockets ...
    let ok = phones.call("after-death");
    phones.bye(&ok, "after-death");
    // ... and times out the call set up before the death.
    assert_eq!(p.mgmt.active_dialogs().all, 1);
    timeout_byes(&phones, "before-death");
    wait_for("no active dialog", || p.mgmt.active_dialogs().all == 0);
    assert_eq!(p.metric(restarts), Some(1.0));
    p.stop();
}

#[test]
fn a_panic_loop_ends_the_worker_and_a_fresh_one_replaces_it() {
    let p = Sipedge::start(&["--workers", "1"], &[FAULTS]);
    let phones = Phones::new(p.sip);
    // More than MAX_PANICS_PER_SEC (100) within a second.
    for n in 0..150 {
        send_fault(&phones, "panic", 1000 + n);
    }
    p.wait_metric("sipedge_worker_restarts_total{worker=\"0\"}", 1.0);
    p.wait_metric("sipedge_worker_alive{worker=\"0\"}", 1.0);
    let panics = p
        .metric("sipedge_worker_panics_total{worker=\"0\"}")
        .unwrap();
    assert!((101.0..=150.0).contains(&panics), "{panics}");
    let log = p.log();
    assert!(log.contains("panics within one second"), "{log}");
    let ok = phones.call("after-loop");
    phones.bye(&ok, "after-loop");
    p.stop();
}

/// A store config for `db` in `dir`, with `extra` lines in `[dialog]`.
fn store_config(dir: &TempDir, db: &Path, extra: &str) -> PathBuf {
    config(
        dir,
        &format!(
            "[dialog]\ndb_url = \"{}\"\ndb_mode = 2\ndb_update_period = 100\n{extra}",
            db.display()
        ),
    )
}

/// The files next to `db` named `<db>.corrupt-*`.
fn set_aside(db: &Path) -> Vec<PathBuf> {
    let name = format!("{}.corrupt-", db.file_name().unwrap().to_str().unwrap());
    let mut v: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&name))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_corrupt_store_stops_the_start_unless_db_recover() {
    let dir = TempDir::new("ops-corrupt-db");
    let db = dir.join("dialogs.redb");
    let garbage: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let cfg = store_config(&dir, &db, "");
    let cfg = cfg.to_str().unwrap();

    let started = now();
    let mut refused = Sipedge::spawn(&["--config", cfg], &[]);
    let st = refused.wait_exit(Duration::from_secs(5));
    let log = refused.log();
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{log}");
    assert!(now() - started < Duration::from_secs(5));
    assert!(
        log.contains(&db.display().to_string())
            && log.contains("corrupt")
            && log.contains("--db-recover"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the file is left alone"
    );
    assert!(set_aside(&db).is_empty());

    let p = Sipedge::start(&["--config", cfg, "--db-recover"], &[]);
    let aside = set_aside(&db);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        garbage,
        "kept aside as it was"
    );
    let log = p.log();
    assert!(
        log.contains("DIALOG DB IS CORRUPT") && log.contains(&aside[0].display().to_string()),
        "{log}"
    );
    // It runs on a new, empty store.
    let phones = Phones::new(p.sip);
    let ok = phones.call("after-recovery");
    p.wait_metric("sipedge_dialog_db_written_total", 1.0);
    phones.bye(&ok, "after-recovery");
    p.stop();

    // The config switch does the same.
    std::fs::write(&db, &garbage).unwrap();
    let cfg2 = store_config(&dir, &db, "db_recover = true\n");
    let p = Sipedge::start(&["--config", cfg2.to_str().unwrap()], &[]);
    assert!(p.log().contains("DIALOG DB IS CORRUPT"));
    p.stop();
    assert!(set_aside(&db).len() >= 2, "{:?}", set_aside(&db));
}

/// Adaptive spreading keeps working after the worker it feeds died and was replaced: under
/// load the spreader still sees the replacement busy and grows to two workers.
#[test]
fn adaptive_spreading_sees_a_replaced_worker_busy() {
    let dir = TempDir::new("spread_after_death");
    let cfg = config(&dir, "[core]\nspread = \"adaptive\"\nspread_busy = 0.01\n");
    let cfg = cfg.to_str().unwrap();
    let p = Sipedge::start(&["--workers", "2", "--config", cfg], &[FAULTS]);
    let phones = Phones::new(p.sip);
    p.wait_metric("sipedge_workers_active", 1.0);
    // Worker 0 is the one the listen sockets feed while idle: it dies on this request.
    send_fault(&phones, "die", 9);
    p.wait_metric("sipedge_worker_restarts_total{worker=\"0\"}", 1.0);
    p.wait_metric("sipedge_worker_alive{worker=\"0\"}", 1.0);
    p.wait_metric("sipedge_workers_active", 1.0);
    // 100 calls/s for 6 s: above 1 % of a core, too few to fill a receive batch (a backlog
    // would make the spreader grow whatever the CPU clocks say).
    let (mut lg, _) = crate::spread_workers::start_loadgen(p.sip, &dir, 100, 600);
    let deadline = now() + Duration::from_secs(15);
    let mut grew = false;
    while now() < deadline && !grew {
        grew = p.metric("sipedge_workers_active") == Some(2.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = lg.wait().unwrap();
    assert!(status.success(), "loadgen: {status}");
    assert!(
        grew,
        "sipedge_workers_active never reached 2 after the restart"
    );
}
