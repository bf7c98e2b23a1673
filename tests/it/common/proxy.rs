//! The `sipedge` binary under test: start on fresh ports, wait for `/health`, query, stop.
//!
//! Invariants:
//! - The command line is exactly `sipedge run --listen udp:127.0.0.1:SIP --listen
//!   tcp:127.0.0.1:SIP --mgmt 127.0.0.1:MGMT --workers 2` followed by the caller's arguments.
//! - [`Proxy::start`] returns only once `GET /health` answered 200 (at most 10 s); it panics
//!   early, with the proxy's output, if the process exits first.
//! - Management answers are decoded only in [`super::mgmt`]; failures here carry the tail of
//!   the proxy's log.
//! - Dropping the [`Proxy`] sends SIGTERM, then SIGKILL after 2 s.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::mgmt::{ActiveDialogs, DialogCounters, MgmtClient};
use super::{ChildGuard, TempDir, free_port_pair, local, now, spawn_guarded, tail};

/// Longest wait for `/health` after spawning.
const STARTUP: Duration = Duration::from_secs(10);

/// A running proxy.
pub struct Proxy {
    // Declared first: dropped (stopped) before the scratch dir with its log goes away.
    child: ChildGuard,
    /// SIP port, UDP and TCP.
    pub sip_port: u16,
    /// Management (HTTP JSON-RPC) port.
    pub mgmt_port: u16,
    mgmt: MgmtClient,
    dir: TempDir,
}

impl Proxy {
    /// Starts `sipedge run` on fresh ports with `args` appended (e.g. `["--log", "warn"]`)
    /// and waits until it is healthy.
    pub fn start(args: &[&str]) -> Proxy {
        let (sip_port, mgmt_port) = free_port_pair();
        let dir = TempDir::new("proxy");
        let log = dir.join("proxy.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
        cmd.arg("run")
            .args(["--listen", &format!("udp:127.0.0.1:{sip_port}")])
            .args(["--listen", &format!("tcp:127.0.0.1:{sip_port}")])
            .args(["--mgmt", &format!("127.0.0.1:{mgmt_port}")])
            .args(["--workers", "2"])
            .args(args)
            .stdin(Stdio::null());
        match std::fs::File::create(&log) {
            Ok(f) => {
                let err = f.try_clone().map_or_else(|_| Stdio::null(), Stdio::from);
                cmd.stdout(Stdio::from(f)).stderr(err);
            }
            Err(_) => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = match spawn_guarded(&mut cmd, "sipedge") {
            Ok(c) => c,
            Err(e) => panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_sipedge")),
        };
        let mut proxy = Proxy {
            child,
            sip_port,
            mgmt_port,
            mgmt: MgmtClient::new(mgmt_port),
            dir,
        };
        proxy.wait_healthy();
        proxy
    }

    fn wait_healthy(&mut self) {
        let deadline = now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait() {
                panic!(
                    "sipedge exited during startup ({status}); args: run --listen \
                     udp/tcp:127.0.0.1:{} --mgmt 127.0.0.1:{} --workers 2\nlog:\n{}",
                    self.sip_port,
                    self.mgmt_port,
                    self.log_tail()
                );
            }
            if self.mgmt.health() {
                return;
            }
            if now() >= deadline {
                panic!(
                    "sipedge did not answer GET /health on 127.0.0.1:{} within {STARTUP:?}\nlog:\n{}",
                    self.mgmt_port,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        local(self.sip_port)
    }

    /// Whether `GET /health` answers 200 now.
    pub fn health(&self) -> bool {
        self.mgmt.health()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// Sends a signal to the proxy process (SIGHUP reloads its config, SIGTERM stops it).
    pub fn signal(&self, sig: libc::c_int) {
        self.child.signal(sig);
    }

    /// Waits up to `timeout` for the proxy to exit by itself; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// The last 4 KB of the proxy's stdout+stderr.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("proxy.log"), 4096)
    }

    /// The management client (typed accessors live there).
    pub fn mgmt(&self) -> &MgmtClient {
        &self.mgmt
    }

    /// The `/metrics` page (Prometheus text); panics when it cannot be fetched.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.mgmt_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(r) => r.into_body().read_to_string().unwrap_or_default(),
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// Calls a JSON-RPC 2.0 method and returns its `result`; panics (with the proxy's log)
    /// on any error. `params` is omitted when `Value::Null`.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        match self.mgmt.try_rpc(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{e}\nproxy log:\n{}", self.log_tail()),
        }
    }

    /// `dlg.stats_active` (see [`MgmtClient::active_dialogs`]).
    pub fn active_dialogs(&self) -> ActiveDialogs {
        self.mgmt.active_dialogs()
    }

    /// `stats.fetch` dialog counters (see [`MgmtClient::dialog_counters`]).
    pub fn dialog_counters(&self) -> DialogCounters {
        self.mgmt.dialog_counters()
    }

    /// `dlg.profile_get_size` (see [`MgmtClient::profile_size`]).
    pub fn profile_size(&self, profile: &str, value: Option<&str>) -> u64 {
        self.mgmt.profile_size(profile, value)
    }
}
