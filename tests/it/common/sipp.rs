//! SIPp runner: a UAS child and a UAC child driving one scenario pair from `tests/sipp/`,
//! either straight at the UAS (direct mode, proves the harness) or through a proxy.
//!
//! Invariants:
//! - Both SIPp processes bind 127.0.0.1 on ports of their own (SIP and control port), so
//!   runs in parallel tests never collide.
//! - Every run is bounded: SIPp gets `-timeout` and `-recv_timeout`, and [`Calls::wait`]
//!   kills the UAC past its hard deadline. Both children are killed on drop.
//! - Results come from the UAC's final `-trace_stat` CSV line, looked up by column name.
use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{ChildGuard, TempDir, free_udp_port, local, spawn_guarded, tail};

/// Path of the SIPp binary (override with env `SIPP`).
pub fn sipp_bin() -> String {
    std::env::var("SIPP").unwrap_or_else(|_| "sipp".to_owned())
}

/// Whether the test should run. Returns `false` (after printing "skipped") only when SIPp
/// is missing and env `SIPEDGE_SKIP_SIPP=1`; panics with install advice when it is missing
/// otherwise.
pub fn sipp_available() -> bool {
    let found = Command::new(sipp_bin())
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if std::env::var("SIPEDGE_SKIP_SIPP").is_ok_and(|v| v == "1") {
        eprintln!("skipped: sipp not found and SIPEDGE_SKIP_SIPP=1");
        return false;
    }
    panic!(
        "sipp is not installed (needed by the SIP interop tests): run `apt-get install \
         sip-tester`, or set SIPEDGE_SKIP_SIPP=1 to skip these tests"
    );
}

/// Directory holding the scenario XML files.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
}

/// A UAC/UAS scenario pair in `tests/sipp/`.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// UAC scenario file name.
    pub uac: &'static str,
    /// UAS scenario file name.
    pub uas: &'static str,
}

/// INVITE / 100 / 180 / 200 / ACK / hold / BYE / 200, ACK and BYE routed by Record-Route.
pub const BASIC: Scenario = Scenario {
    uac: "uac.xml",
    uas: "uas.xml",
};
/// INVITE / 486 / ACK (hop-by-hop ACK through a proxy).
pub const REJECT_486: Scenario = Scenario {
    uac: "uac_486.xml",
    uas: "uas_486.xml",
};
/// INVITE / 180 / CANCEL / 200 / 487 / ACK.
pub const CANCEL: Scenario = Scenario {
    uac: "uac_cancel.xml",
    uas: "uas_cancel.xml",
};

/// SIP transport of a run (`-t u1` or `-t t1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One UDP socket per SIPp.
    Udp,
    /// One TCP connection from the UAC.
    Tcp,
}

impl Transport {
    fn flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// How to run a batch of calls.
#[derive(Clone, Debug)]
pub struct CallRun {
    /// Scenario pair.
    pub scenario: Scenario,
    /// Transport for both SIPps.
    pub transport: Transport,
    /// Calls per second.
    pub rate: u32,
    /// Total calls.
    pub calls: u32,
    /// Hold time in ms (the `<pause/>` of the basic scenario).
    pub hold_ms: u32,
    /// Where the UAC sends (`-rsa`): the proxy, or `None` for straight to the UAS.
    pub proxy: Option<SocketAddr>,
}

impl CallRun {
    /// `calls` calls of `scenario` over UDP at 100 cps, no hold, direct.
    pub fn new(scenario: Scenario, calls: u32) -> CallRun {
        CallRun {
            scenario,
            transport: Transport::Udp,
            rate: 100,
            calls,
            hold_ms: 0,
            proxy: None,
        }
    }

    /// Sets the call rate (cps).
    pub fn rate(mut self, rate: u32) -> CallRun {
        self.rate = rate.max(1);
        self
    }

    /// Sets the hold time (ms).
    pub fn hold_ms(mut self, hold_ms: u32) -> CallRun {
        self.hold_ms = hold_ms;
        self
    }

    /// Sets the transport.
    pub fn transport(mut self, transport: Transport) -> CallRun {
        self.transport = transport;
        self
    }

    /// Sends through the proxy at `addr`.
    pub fn via(mut self, addr: SocketAddr) -> CallRun {
        self.proxy = Some(addr);
        self
    }

    /// Expected duration of the sending phase plus hold, plus 30 s of slack.
    pub fn hard_timeout(&self) -> Duration {
        let send_s = u64::from(self.calls / self.rate);
        Duration::from_secs(send_s + u64::from(self.hold_ms / 1000) + 30)
    }

    /// Starts the UAS, then the UAC; returns at once. The scratch files go to `dir`.
    pub fn start(&self, dir: &TempDir) -> Calls {
        let uas_port = free_udp_port();
        let uac_port = free_udp_port();
        let dir_path = dir.path().to_path_buf();
        let tmo = format!("{}s", self.hard_timeout().as_secs());
        let common = |cmd: &mut Command, port: u16, role: &str| {
            cmd.current_dir(&dir_path)
                .args(["-t", self.transport.flag(), "-i", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .args(["-cp", &free_udp_port().to_string()])
                .args(["-nostdin", "-buff_size", "1048576", "-timeout", &tmo])
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
                .stdout(Stdio::null());
        };
        let scen = scenario_dir();

        let mut uas_cmd = Command::new(sipp_bin());
        uas_cmd.arg("-sf").arg(scen.join(self.scenario.uas));
        common(&mut uas_cmd, uas_port, "uas");
        uas_cmd.stderr(file_or_null(&dir.join("uas.stderr")));
        let uas = match spawn_guarded(&mut uas_cmd, "sipp uas") {
            Ok(c) => c,
            Err(e) => panic!("cannot start sipp UAS ({}): {e}", sipp_bin()),
        };
        wait_bound(uas_port, self.transport, Duration::from_secs(5));

        let target = self.proxy.unwrap_or(local(uas_port));
        let mut uac_cmd = Command::new(sipp_bin());
        uac_cmd
            .arg(format!("127.0.0.1:{uas_port}"))
            .arg("-sf")
            .arg(scen.join(self.scenario.uac))
            .args(["-rsa", &target.to_string()])
            .args(["-r", &self.rate.to_string(), "-m", &self.calls.to_string()])
            .args(["-d", &self.hold_ms.to_string()])
            .args(["-recv_timeout", "10000", "-timeout_error"]);
        common(&mut uac_cmd, uac_port, "uac");
        uac_cmd.stderr(file_or_null(&dir.join("uac.stderr")));
        let uac = match spawn_guarded(&mut uac_cmd, "sipp uac") {
            Ok(c) => c,
            Err(e) => panic!("cannot start sipp UAC ({}): {e}", sipp_bin()),
        };
        Calls {
            uas,
            uac,
            dir: dir.path().to_path_buf(),
            deadline: super::now() + self.hard_timeout() + Duration::from_secs(5),
        }
    }

    /// Starts the run and waits for its end (see [`Calls::wait`]).
    pub fn run(&self, dir: &TempDir) -> SippReport {
        self.start(dir).wait()
    }
}

pub(super) fn file_or_null(path: &Path) -> Stdio {
    fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Waits until a SIPp has bound its port (UDP or TCP listening), at most `max`.
pub(super) fn wait_bound(port: u16, transport: Transport, max: Duration) {
    let deadline = super::now() + max;
    while super::now() < deadline {
        let busy = match transport {
            Transport::Udp => std::net::UdpSocket::bind(local(port)).is_err(),
            // std sets SO_REUSEADDR, which on Linux still refuses a port with a listener.
            Transport::Tcp => std::net::TcpListener::bind(local(port)).is_err(),
        };
        if busy {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A run in progress: the UAS and UAC children.
pub struct Calls {
    uas: ChildGuard,
    uac: ChildGuard,
    dir: PathBuf,
    deadline: std::time::Instant,
}

impl Calls {
    /// Whether the UAC is still running.
    pub fn running(&mut self) -> bool {
        self.uac.try_wait().is_none()
    }

    /// Waits for the UAC (killed at the hard deadline), then lets the UAS finish its calls
    /// (SIGUSR1 = stop softly, at most 3 s) and parses both stat files.
    pub fn wait(mut self) -> SippReport {
        let left = self.deadline.saturating_duration_since(super::now());
        let uac_status = self.uac.wait_timeout(left);
        let timed_out = uac_status.is_none();
        if timed_out {
            self.uac.stop(Duration::from_secs(1));
        }
        // The UAS quits once its open calls end (timewait 500 ms), writing its final stats.
        self.uas.signal(libc::SIGUSR1);
        if self.uas.wait_timeout(Duration::from_secs(3)).is_none() {
            self.uas.stop(Duration::from_secs(1));
        }
        let uac = SippStats::read(&self.dir.join("uac_stat.csv"));
        let uas = SippStats::read(&self.dir.join("uas_stat.csv"));
        SippReport {
            uac_exit: uac_status.and_then(|s| s.code()),
            timed_out,
            uac,
            uas,
            errors: format!(
                "uac stderr: {}\nuac errors: {}\nuas errors: {}",
                tail(&self.dir.join("uac.stderr"), 600),
                first_error(&self.dir, "uac"),
                first_error(&self.dir, "uas"),
            ),
        }
    }
}

/// The first kilobyte of a SIPp error log (the first error is the informative one).
pub(super) fn first_error(dir: &Path, role: &str) -> String {
    let data = fs::read(dir.join(format!("{role}_err.log"))).unwrap_or_default();
    let end = data.len().min(1200);
    String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned()
}

/// Cumulative counters of one SIPp, from the last line of its `-trace_stat` CSV.
#[derive(Clone, Debug, Default)]
pub struct SippStats {
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)`.
    pub failed: u64,
    /// `Retransmissions(C)`.
    pub retransmissions: u64,
    /// `FailedUnexpectedMessage(C)`.
    pub unexpected: u64,
    /// `FailedTimeoutOnRecv(C)`.
    pub recv_timeouts: u64,
    /// `FailedMaxUDPRetrans(C)`.
    pub max_udp_retrans: u64,
    /// `TotalCallCreated`.
    pub created: u64,
    /// Every column of the last line, by name (raw text).
    pub raw: HashMap<String, String>,
}

impl SippStats {
    /// Parses a stat CSV (`;`-separated, header line first); `None` if missing or empty.
    pub fn read(path: &Path) -> Option<SippStats> {
        Self::parse(&fs::read_to_string(path).ok()?)
    }

    /// Parses stat CSV text; the last non-empty line holds the final counters.
    pub fn parse(text: &str) -> Option<SippStats> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let raw: HashMap<String, String> = header
            .iter()
            .zip(last.iter())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let n = |k: &str| raw.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Some(SippStats {
            successful: n("SuccessfulCall(C)"),
            failed: n("FailedCall(C)"),
            retransmissions: n("Retransmissions(C)"),
            unexpected: n("FailedUnexpectedMessage(C)"),
            recv_timeouts: n("FailedTimeoutOnRecv(C)"),
            max_udp_retrans: n("FailedMaxUDPRetrans(C)"),
            created: n("TotalCallCreated"),
            raw,
        })
    }
}

/// Outcome of one run.
#[derive(Debug)]
pub struct SippReport {
    /// UAC exit code (0 = all calls succeeded, 1 = some failed), `None` if killed.
    pub uac_exit: Option<i32>,
    /// The UAC had to be killed at the hard deadline.
    pub timed_out: bool,
    /// UAC counters (`None` if SIPp wrote no stats: it failed to start).
    pub uac: Option<SippStats>,
    /// UAS counters (informational: the UAS runs without `-m`).
    pub uas: Option<SippStats>,
    /// Tails of the SIPp error outputs, for failure messages.
    pub errors: String,
}

impl SippReport {
    /// The UAC counters; panics with the error logs when SIPp wrote none.
    pub fn uac(&self) -> &SippStats {
        match &self.uac {
            Some(s) => s,
            None => panic!("sipp UAC wrote no statistics\n{}", self.errors),
        }
    }

    /// Asserts that all `calls` calls succeeded with no failure and no unexpected message,
    /// and that the UAC finished before its deadline.
    pub fn assert_all_ok(&self, calls: u64) {
        let s = self.uac();
        let ok = !self.timed_out && s.successful == calls && s.failed == 0 && s.unexpected == 0;
        assert!(
            ok,
            "expected {calls} successful calls: successful={} failed={} unexpected={} \
             recv_timeouts={} max_udp_retrans={} retrans={} created={} timed_out={} exit={:?}\n{}",
            s.successful,
            s.failed,
            s.unexpected,
            s.recv_timeouts,
            s.max_udp_retrans,
            s.retransmissions,
            s.created,
            self.timed_out,
            self.uac_exit,
            self.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::SippStats;

    #[test]
    fn parses_last_line_by_column_name() {
        let csv = "StartTime;SuccessfulCall(C);FailedCall(C);Retransmissions(C);\n\
                   t0;1;0;0;\n\
                   t1;200;3;7;\n";
        let s = SippStats::parse(csv).unwrap_or_default();
        assert_eq!((s.successful, s.failed, s.retransmissions), (200, 3, 7));
        assert_eq!(s.unexpected, 0);
        assert!(SippStats::parse("only;a;header\n").is_none());
    }
}
