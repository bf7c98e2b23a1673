//! Client of the proxy's management API: `GET /health` and JSON-RPC 2.0 on `POST /jsonrpc`.
//!
//! Invariants:
//! - Every request has a 5 s overall timeout and ignores `HTTP(S)_PROXY` from the
//!   environment (it only ever talks to 127.0.0.1).
//! - The exact JSON shape of the answers is known ONLY in the "RPC shape" section below
//!   ([`MgmtClient::active_dialogs`], [`MgmtClient::dialog_counters`],
//!   [`MgmtClient::profile_size`]); field lookups tolerate numbers sent as strings and one
//!   or two levels of nesting, so small shape changes are fixed here, in one place.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// HTTP client for one management port.
pub struct MgmtClient {
    port: u16,
    agent: ureq::Agent,
    next_id: AtomicU64,
}

impl MgmtClient {
    /// A client for `http://127.0.0.1:port`.
    pub fn new(port: u16) -> MgmtClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        MgmtClient {
            port,
            agent,
            next_id: AtomicU64::new(1),
        }
    }

    /// Whether `GET /health` answers 200 now.
    pub fn health(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        self.agent
            .get(&url)
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// Calls a JSON-RPC 2.0 method; `params` is omitted when `Value::Null`. Returns the
    /// `result` member or an error text (transport error, non-JSON body, JSON-RPC `error`).
    pub fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        let url = format!("http://127.0.0.1:{}/jsonrpc", self.port);
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

    /// Like [`MgmtClient::try_rpc`] but panics on error.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        match self.try_rpc(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    // ---- RPC shape: the only place that knows method names and result fields ----

    /// `dlg.stats_active` → counts of dialogs per state (`all` is required).
    pub fn active_dialogs(&self) -> ActiveDialogs {
        let r = self.rpc("dlg.stats_active", Value::Null);
        let get = |k: &str| lookup(&r, &[k]).unwrap_or(0);
        ActiveDialogs {
            starting: get("starting"),
            connecting: get("connecting"),
            answering: get("answering"),
            ongoing: get("ongoing"),
            all: require(&r, "dlg.stats_active", &["all"]),
        }
    }

    /// `stats.fetch` → the dialog module's counters.
    pub fn dialog_counters(&self) -> DialogCounters {
        let r = self.rpc("stats.fetch", Value::Null);
        let m = "stats.fetch";
        DialogCounters {
            active: require(
                &r,
                m,
                &[
                    "dialog.active_dialogs",
                    "dialog:active_dialogs",
                    "active_dialogs",
                ],
            ),
            processed: require(
                &r,
                m,
                &[
                    "dialog.processed_dialogs",
                    "dialog:processed_dialogs",
                    "processed_dialogs",
                ],
            ),
            failed: require(
                &r,
                m,
                &[
                    "dialog.failed_dialogs",
                    "dialog:failed_dialogs",
                    "failed_dialogs",
                ],
            ),
        }
    }

    /// `dlg.profile_get_size` with params `[PROFILE]` or `[PROFILE, VALUE]` → `size`.
    pub fn profile_size(&self, profile: &str, value: Option<&str>) -> u64 {
        let params = match value {
            Some(v) => json!([profile, v]),
            None => json!([profile]),
        };
        let r = self.rpc("dlg.profile_get_size", params);
        require(&r, "dlg.profile_get_size", &["count", "size"])
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
pub fn lookup(v: &Value, keys: &[&str]) -> Option<u64> {
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
        let keys = ["dialog:active_dialogs", "active_dialogs"];
        assert_eq!(lookup(&nested, &keys), Some(5));
        assert_eq!(lookup(&nested, &["missing"]), None);
        assert_eq!(lookup(&json!([1, 2]), &["size"]), None);
    }
}
