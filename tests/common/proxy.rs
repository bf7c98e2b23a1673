//! The `sipedge` binary under test: start on fresh ports, wait for `/health`, JSON-RPC, stop.
//!
//! Invariants:
//! - The command line is exactly `sipedge run --listen udp:127.0.0.1:SIP --listen
//!   tcp:127.0.0.1:SIP --mgmt 127.0.0.1:MGMT --workers 2` followed by the caller's arguments.
//! - [`Proxy::start`] returns only once `GET /health` answered 200 (at most 10 s); it panics
//!   early, with the proxy's stderr, if the process exits first.
//! - The exact JSON shape of the management answers is known ONLY in the "RPC shape" section
//!   below ([`Proxy::active_dialogs`], [`Proxy::dialog_counters`], [`Proxy::profile_size`]).
//! - Dropping the [`Proxy`] sends SIGTERM, then SIGKILL after 2 s.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

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
    agent: ureq::Agent,
    next_id: AtomicU64,
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut proxy = Proxy {
            child,
            sip_port,
            mgmt_port,
            agent,
            next_id: AtomicU64::new(1),
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
            if self.health() {
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

    /// The SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        local(self.sip_port)
    }

    /// Whether `GET /health` answers 200 now.
    pub fn health(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/health", self.mgmt_port);
        self.agent
            .get(&url)
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// The last 4 KB of the proxy's stdout+stderr.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("proxy.log"), 4096)
    }

    /// Calls a JSON-RPC 2.0 method; `params` is omitted when `Value::Null`. Returns the
    /// `result` member or an error text (transport error, HTTP status, JSON-RPC `error`).
    pub fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        let url = format!("http://127.0.0.1:{}/jsonrpc", self.mgmt_port);
        let resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(req.to_string())
            .map_err(|e| format!("POST {url} {method}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .read_to_string()
            .map_err(|e| format!("{method}: reading body: {e}"))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{method}: HTTP {status}, body is not JSON ({e}): {body}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("{method}: JSON-RPC error {err}"));
        }
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("{method}: HTTP {status}, no result: {body}")),
        }
    }

    /// Like [`Proxy::try_rpc`] but panics (with the proxy log) on error.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        match self.try_rpc(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{e}\nproxy log:\n{}", self.log_tail()),
        }
    }

    // ---- RPC shape: the only place that knows method names and result fields ----

    /// `dlg.stats_active` → counts of dialogs per state.
    pub fn active_dialogs(&self) -> ActiveDialogs {
        let r = self.rpc("dlg.stats_active", Value::Null);
        let get = |k: &str| lookup(&r, &[k]);
        ActiveDialogs {
            starting: get("starting").unwrap_or(0),
            connecting: get("connecting").unwrap_or(0),
            answering: get("answering").unwrap_or(0),
            ongoing: get("ongoing").unwrap_or(0),
            all: require(&r, "dlg.stats_active", &["all"]),
        }
    }

    /// `stats.fetch` → the dialog module's counters.
    pub fn dialog_counters(&self) -> DialogCounters {
        let r = self.rpc("stats.fetch", Value::Null);
        DialogCounters {
            active: require(
                &r,
                "stats.fetch",
                &["dialog:active_dialogs", "active_dialogs"],
            ),
            processed: require(
                &r,
                "stats.fetch",
                &["dialog:processed_dialogs", "processed_dialogs"],
            ),
            failed: require(
                &r,
                "stats.fetch",
                &["dialog:failed_dialogs", "failed_dialogs"],
            ),
        }
    }

    /// `dlg.profile_get_size PROFILE [VALUE]` → the profile's size.
    pub fn profile_size(&self, profile: &str, value: Option<&str>) -> u64 {
        let params = match value {
            Some(v) => json!([profile, v]),
            None => json!([profile]),
        };
        let r = self.rpc("dlg.profile_get_size", params);
        require(&r, "dlg.profile_get_size", &["size"])
    }
}

/// `dlg.stats_active` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveDialogs {
    /// Dialogs with an INVITE and no reply yet.
    pub starting: u64,
    /// Dialogs with a provisional reply.
    pub connecting: u64,
    /// Dialogs with a 2xx but no ACK yet.
    pub answering: u64,
    /// Confirmed dialogs.
    pub ongoing: u64,
    /// All of them.
    pub all: u64,
}

/// Dialog counters from `stats.fetch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogCounters {
    /// `dialog:active_dialogs`.
    pub active: u64,
    /// `dialog:processed_dialogs`.
    pub processed: u64,
    /// `dialog:failed_dialogs`.
    pub failed: u64,
}

/// A number (or numeric string) under any of `keys`, searched at the top level first and
/// then one and two object levels down (tolerates `{"dialog": {...}}` style nesting).
fn lookup(v: &Value, keys: &[&str]) -> Option<u64> {
    fn num(v: &Value) -> Option<u64> {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }
    fn walk(v: &Value, keys: &[&str], depth: u32) -> Option<u64> {
        let obj = v.as_object()?;
        if let Some(n) = keys.iter().find_map(|k| obj.get(*k).and_then(num)) {
            return Some(n);
        }
        if depth == 0 {
            return None;
        }
        obj.values().find_map(|child| walk(child, keys, depth - 1))
    }
    walk(v, keys, 2)
}

fn require(v: &Value, method: &str, keys: &[&str]) -> u64 {
    match lookup(v, keys) {
        Some(n) => n,
        None => panic!("{method}: no numeric field {keys:?} in result {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;
    use serde_json::json;

    #[test]
    fn lookup_tolerates_nesting_and_strings() {
        let flat = json!({"dialog:active_dialogs": 3, "size": "7"});
        assert_eq!(lookup(&flat, &["dialog:active_dialogs"]), Some(3));
        assert_eq!(lookup(&flat, &["size"]), Some(7));
        let nested = json!({"dialog": {"active_dialogs": 5}});
        assert_eq!(
            lookup(&nested, &["dialog:active_dialogs", "active_dialogs"]),
            Some(5)
        );
        assert_eq!(lookup(&nested, &["missing"]), None);
    }
}
