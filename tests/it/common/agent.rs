//! Single SIPp processes for acceptance tests that need more than one UAC per UAS: a UAS
//! ([`Uas`]) started on its own, then any number of UACs ([`UacRun`]) pointed at it through
//! the proxy, each with its own scenario, caller (`-key caller`), R-URI user (`-s`), call
//! count and hold. [`super::sipp::CallRun`] stays the way to run one UAC/UAS pair.
//!
//! Invariants (as in [`super::sipp`]):
//! - Every SIPp binds 127.0.0.1 on ports of its own (SIP and control) and runs UDP.
//! - Every wait is bounded: SIPp gets `-timeout`; [`Uac::wait`] kills the UAC past its hard
//!   deadline; [`Uas::finish`] stops the UAS softly (SIGUSR1), then for good after 3 s.
//! - Each SIPp writes `ROLE_stat.csv`, `ROLE_err.log`, `ROLE.stderr` and (UAC)
//!   `ROLE_msg.log` into the test's scratch dir; results are read from those files only.
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sipp::{
    SippStats, Transport, file_or_null, first_error, scenario_dir, sipp_bin, wait_bound,
};
use super::{ChildGuard, TempDir, free_udp_port, now, spawn_guarded, tail};

/// Arguments every SIPp of this module gets (`role` names its output files).
fn base_command(dir: &TempDir, role: &str, scenario: &str, port: u16, timeout_s: u64) -> Command {
    let mut cmd = Command::new(sipp_bin());
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(scenario_dir().join(scenario))
        .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-cp", &free_udp_port().to_string()])
        .args(["-nostdin", "-timeout", &format!("{timeout_s}s")])
        .args([
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
            &format!("{role}_stat.csv"),
        ])
        .args(["-trace_err", "-error_file", &format!("{role}_err.log")])
        .args(["-max_log_size", "2000000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file_or_null(&dir.join(&format!("{role}.stderr"))));
    cmd
}

/// A SIPp UAS running a scenario for as many calls as come, until [`Uas::finish`].
pub struct Uas {
    child: ChildGuard,
    port: u16,
    role: String,
    dir: PathBuf,
}

impl Uas {
    /// Starts `scenario` (a file in `tests/sipp/`) as UAS `role` and waits until it listens.
    pub fn start(dir: &TempDir, role: &str, scenario: &str) -> Uas {
        let port = free_udp_port();
        let mut cmd = base_command(dir, role, scenario, port, 120);
        let child = match spawn_guarded(&mut cmd, role) {
            Ok(c) => c,
            Err(e) => panic!("cannot start sipp {role} ({}): {e}", sipp_bin()),
        };
        wait_bound(port, Transport::Udp, Duration::from_secs(5));
        Uas {
            child,
            port,
            role: role.to_owned(),
            dir: dir.path().to_path_buf(),
        }
    }

    /// The UAS's SIP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the UAS once its open calls end (SIGUSR1, at most 3 s, then SIGTERM) and
    /// returns its final counters (`None` if it wrote none).
    pub fn finish(mut self) -> Option<SippStats> {
        self.child.signal(libc::SIGUSR1);
        if self.child.wait_timeout(Duration::from_secs(3)).is_none() {
            self.child.stop(Duration::from_secs(1));
        }
        SippStats::read(&self.dir.join(format!("{}_stat.csv", self.role)))
    }

    /// The start of the UAS's error log (for failure messages).
    pub fn errors(&self) -> String {
        first_error(&self.dir, &self.role)
    }
}

/// How to run one SIPp UAC against a [`Uas`] through a proxy.
#[derive(Clone, Debug)]
pub struct UacRun {
    /// Names the output files (`ROLE_stat.csv`, ...); unique within a test.
    pub role: String,
    /// Scenario file in `tests/sipp/`.
    pub scenario: &'static str,
    /// Total calls (`-m`).
    pub calls: u32,
    /// Calls per second (`-r`).
    pub rate: u32,
    /// Hold in ms (`-d`, the scenario's `<pause/>`).
    pub hold_ms: u32,
    /// `[caller]` keyword (`-key caller`): the From user of `uac_caller.xml`/`uac_reject.xml`
    /// (default `anonymous`).
    pub caller: Option<String>,
    /// `[service]` (`-s`): the R-URI and To user.
    pub service: Option<String>,
}

impl UacRun {
    /// `calls` calls of `scenario` at 10 cps, no hold, default caller and service.
    pub fn new(role: &str, scenario: &'static str, calls: u32) -> UacRun {
        UacRun {
            role: role.to_owned(),
            scenario,
            calls,
            rate: 10,
            hold_ms: 0,
            caller: None,
            service: None,
        }
    }

    /// Sets the From user (`-key caller NAME`).
    pub fn caller(mut self, name: &str) -> UacRun {
        self.caller = Some(name.to_owned());
        self
    }

    /// Sets the R-URI/To user (`-s NAME`).
    pub fn service(mut self, name: &str) -> UacRun {
        self.service = Some(name.to_owned());
        self
    }

    /// Sets the hold time (ms).
    pub fn hold_ms(mut self, hold_ms: u32) -> UacRun {
        self.hold_ms = hold_ms;
        self
    }

    /// Sets the call rate (cps, at least 1).
    pub fn rate(mut self, rate: u32) -> UacRun {
        self.rate = rate.max(1);
        self
    }

    /// Sending phase plus hold plus 20 s of slack (BYE waits in the scenarios are 10 s).
    pub fn hard_timeout(&self) -> Duration {
        let send_s = u64::from(self.calls / self.rate);
        Duration::from_secs(send_s + u64::from(self.hold_ms / 1000) + 20)
    }

    /// Starts the UAC: R-URI host is the UAS, every request goes to `proxy` (`-rsa`).
    pub fn start(&self, dir: &TempDir, uas: &Uas, proxy: SocketAddr) -> Uac {
        let tmo = self.hard_timeout();
        let mut cmd = base_command(
            dir,
            &self.role,
            self.scenario,
            free_udp_port(),
            tmo.as_secs(),
        );
        cmd.arg(format!("127.0.0.1:{}", uas.port()))
            .args(["-rsa", &proxy.to_string()])
            .args(["-r", &self.rate.to_string(), "-m", &self.calls.to_string()])
            .args(["-d", &self.hold_ms.to_string()])
            .args(["-recv_timeout", "12000", "-timeout_error"])
            .args([
                "-trace_msg",
                "-message_file",
                &format!("{}_msg.log", self.role),
            ]);
        // Always set: a scenario using [caller] fails to load without it.
        cmd.args([
            "-key",
            "caller",
            self.caller.as_deref().unwrap_or("anonymous"),
        ]);
        if let Some(s) = &self.service {
            cmd.args(["-s", s]);
        }
        let child = match spawn_guarded(&mut cmd, &self.role) {
            Ok(c) => c,
            Err(e) => panic!("cannot start sipp {} ({}): {e}", self.role, sipp_bin()),
        };
        Uac {
            child,
            role: self.role.clone(),
            dir: dir.path().to_path_buf(),
            deadline: now() + tmo + Duration::from_secs(5),
        }
    }
}

/// A UAC in progress.
pub struct Uac {
    child: ChildGuard,
    role: String,
    dir: PathBuf,
    deadline: Instant,
}

impl Uac {
    /// Whether the UAC is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// Waits for the UAC to end (killed at its hard deadline) and reads its results.
    pub fn wait(mut self) -> UacOutcome {
        let left = self.deadline.saturating_duration_since(now());
        let status = self.child.wait_timeout(left);
        let timed_out = status.is_none();
        if timed_out {
            self.child.stop(Duration::from_secs(1));
        }
        let messages =
            fs::read_to_string(self.dir.join(format!("{}_msg.log", self.role))).unwrap_or_default();
        UacOutcome {
            role: self.role.clone(),
            exit: status.and_then(|s| s.code()),
            timed_out,
            stats: SippStats::read(&self.dir.join(format!("{}_stat.csv", self.role))),
            messages,
            errors: format!(
                "{} stderr: {}\n{} errors: {}",
                self.role,
                tail(&self.dir.join(format!("{}.stderr", self.role)), 600),
                self.role,
                first_error(&self.dir, &self.role)
            ),
        }
    }
}

/// Results of one UAC.
#[derive(Debug)]
pub struct UacOutcome {
    /// The role name given to [`UacRun::new`].
    pub role: String,
    /// Exit code (0 = every call succeeded), `None` if killed.
    pub exit: Option<i32>,
    /// The UAC had to be killed at its hard deadline.
    pub timed_out: bool,
    /// Final counters (`None` if SIPp wrote none).
    pub stats: Option<SippStats>,
    /// The message trace (every message sent and received).
    pub messages: String,
    /// Tails of the error outputs, for failure messages.
    pub errors: String,
}

impl UacOutcome {
    /// Asserts that exactly `calls` calls succeeded, none failed, before the deadline.
    pub fn assert_all_ok(&self, calls: u64) {
        let Some(s) = &self.stats else {
            panic!("sipp {} wrote no statistics\n{}", self.role, self.errors);
        };
        let ok = !self.timed_out && s.successful == calls && s.failed == 0;
        assert!(
            ok,
            "{}: expected {calls} successful calls: successful={} failed={} unexpected={} \
             recv_timeouts={} created={} timed_out={} exit={:?}\n{}",
            self.role,
            s.successful,
            s.failed,
            s.unexpected,
            s.recv_timeouts,
            s.created,
            self.timed_out,
            self.exit,
            self.errors
        );
    }

    /// Status lines of the final error responses (code 300..=699) the UAC received, e.g.
    /// `SIP/2.0 486 Too Many Calls`, in order (retransmissions included). The UAC itself
    /// only ever sends requests and 200s, so every such line in the trace was received.
    pub fn error_status_lines(&self) -> Vec<String> {
        self.messages
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.strip_prefix("SIP/2.0 ")
                    .and_then(|rest| rest.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| (300..700).contains(&c))
            })
            .map(str::to_owned)
            .collect()
    }
}
