//! Fake [`MgmtBackend`] (n synthetic dialogs, two workers, one latency flush) and HTTP/RPC
//! helpers for the management tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sipedge::io::mgmt_http::{self, MgmtHandle};
use sipedge::mgmt::model::NameValue;
use sipedge::mgmt::{
    ActiveStats, BackendError, DialogInfo, DialogSelector, DialogStats, LegInfo, MgmtBackend,
};
use sipedge::stats::{Counter, LatencyHub, LatencyMetric, LatencySnapshot, WorkerStats};

pub struct Fake {
    pub dialogs: Vec<DialogInfo>,
    pub page_calls: AtomicUsize,
    pub max_page: AtomicUsize,
    pub ended: Mutex<Vec<String>>,
    pub timeouts: Mutex<Vec<(u32, u32, u32)>>,
    pub resets: AtomicUsize,
    pub loglevel: Mutex<String>,
    pub workers: Vec<Arc<WorkerStats>>,
    pub hub: LatencyHub,
}

static KINDS: &[&str] = &["bad_start_line", "bad_header"];

fn leg(tag: String) -> LegInfo {
    LegInfo {
        tag,
        contact: "sip:x@192.0.2.1:5060".into(),
        cseq: "1".into(),
        route_set: String::new(),
        socket: "udp:127.0.0.1:5060".into(),
    }
}

fn dialog(i: u32, ctx: bool) -> DialogInfo {
    let early = i % 2 == 1;
    DialogInfo {
        h_entry: i % 16,
        h_id: i,
        call_id: format!("call-{i}"),
        from_uri: format!("sip:alice{i}@a.example"),
        to_uri: "sip:bob@b.example".into(),
        req_uri: "sip:bob@10.0.0.1".into(),
        state: if early { 2 } else { 4 },
        start_ts: 1000 + u64::from(i),
        init_ts: 999 + u64::from(i),
        timeout: 5000,
        lifetime: 3600,
        caller: leg(format!("ft{i}")),
        callee: leg(if early {
            String::new()
        } else {
            format!("tt{i}")
        }),
        early_legs: if early {
            vec![leg("e1".into()), leg("e2".into())]
        } else {
            Vec::new()
        },
        profiles: ctx.then(|| {
            vec![NameValue {
                name: "caller".into(),
                value: format!("sip:alice{i}@a.example"),
            }]
        }),
        variables: ctx.then(|| {
            vec![NameValue {
                name: "k".into(),
                value: "v".into(),
            }]
        }),
        ..DialogInfo::default()
    }
}

impl Fake {
    pub fn new(n: u32) -> Arc<Self> {
        let workers: Vec<_> = (0..2)
            .map(|w| Arc::new(WorkerStats::new(w, KINDS)))
            .collect();
        workers[0].add(Counter::PacketsInUdp, 10);
        workers[1].add(Counter::PacketsInUdp, 5);
        workers[1].inc(Counter::PacketsOutTcp);
        workers[0].inc_parse_error(1);
        workers[1].inc_reply(486);
        let hub = LatencyHub::new(8);
        let mut rec = hub.recorder(0);
        for us in [10, 20, 30, 40, 5000] {
            rec.record(LatencyMetric::Packet, us);
        }
        assert!(rec.flush());
        Arc::new(Fake {
            dialogs: (0..n).map(|i| dialog(i, false)).collect(),
            page_calls: AtomicUsize::new(0),
            max_page: AtomicUsize::new(0),
            ended: Mutex::new(Vec::new()),
            timeouts: Mutex::new(Vec::new()),
            resets: AtomicUsize::new(0),
            loglevel: Mutex::new("info".into()),
            workers,
            hub,
        })
    }

    fn with_ctx(&self, d: &DialogInfo, ctx: bool) -> DialogInfo {
        dialog(d.h_id, ctx)
    }

    fn find(&self, h_entry: u32, h_id: u32) -> Result<&DialogInfo, BackendError> {
        self.dialogs
            .iter()
            .find(|d| d.h_entry == h_entry && d.h_id == h_id)
            .ok_or(BackendError::DialogNotFound)
    }

    fn by_tags(&self, callid: &str, ftag: &str, ttag: &str) -> Result<&DialogInfo, BackendError> {
        self.dialogs
            .iter()
            .find(|d| d.call_id == callid && d.caller.tag == ftag && d.callee.tag == ttag)
            .ok_or(BackendError::DialogNotFound)
    }

    fn in_profile(
        &self,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<&DialogInfo>, BackendError> {
        if profile != "caller" {
            return Err(BackendError::ProfileNotFound(profile.into()));
        }
        Ok(self
            .dialogs
            .iter()
            .filter(|d| value.is_none_or(|v| d.from_uri == v))
            .collect())
    }
}

impl MgmtBackend for Fake {
    fn dialog_page(&self, start: usize, count: usize, ctx: bool) -> Vec<DialogInfo> {
        self.page_calls.fetch_add(1, Ordering::Relaxed);
        self.max_page.fetch_max(count, Ordering::Relaxed);
        self.dialogs
            .iter()
            .skip(start)
            .take(count)
            .map(|d| self.with_ctx(d, ctx))
            .collect()
    }
    fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }
    fn dialogs_by_callid(
        &self,
        callid: &str,
        from_tag: Option<&str>,
        ctx: bool,
    ) -> Vec<DialogInfo> {
        self.dialogs
            .iter()
            .filter(|d| d.call_id == callid && from_tag.is_none_or(|t| d.caller.tag == t))
            .map(|d| self.with_ctx(d, ctx))
            .collect()
    }
    fn terminate(&self, sel: DialogSelector<'_>, extra: Option<&str>) -> Result<(), BackendError> {
        let d = match sel {
            DialogSelector::ByTags { callid, ftag, ttag } => self.by_tags(callid, ftag, ttag)?,
            DialogSelector::ById { h_entry, h_id } => self.find(h_entry, h_id)?,
        };
        let note = format!("{}|{}", d.call_id, extra.unwrap_or(""));
        self.ended.lock().unwrap().push(note);
        Ok(())
    }
    fn is_alive(&self, callid: &str, ftag: &str, ttag: &str) -> Result<bool, BackendError> {
        self.by_tags(callid, ftag, ttag).map(|d| d.state == 4)
    }
    fn set_timeout(&self, h_entry: u32, h_id: u32, secs: u32) -> Result<(), BackendError> {
        self.find(h_entry, h_id)?;
        self.timeouts.lock().unwrap().push((h_entry, h_id, secs));
        Ok(())
    }
    fn profile_size(&self, profile: &str, value: Option<&str>) -> Result<u64, BackendError> {
        Ok(self.in_profile(profile, value)?.len() as u64)
    }
    fn profile_dialogs(&self, p: &str, v: Option<&str>) -> Result<Vec<DialogInfo>, BackendError> {
        Ok(self
            .in_profile(p, v)?
            .into_iter()
            .map(|d| self.with_ctx(d, true))
            .collect())
    }
    fn profile_end_dlgs(&self, p: &str, v: Option<&str>) -> Result<usize, BackendError> {
        Ok(self.in_profile(p, v)?.len())
    }
    fn profile_top_values(&self, top_n: usize) -> Vec<(String, Option<String>, u64)> {
        let mut v: Vec<_> = self
            .dialogs
            .iter()
            .take(top_n)
            .map(|d| ("caller".to_owned(), Some(d.from_uri.clone()), 1))
            .collect();
        v.push(("trunk \"x\"".to_owned(), None, 7));
        v
    }
    fn dialog_stats(&self) -> DialogStats {
        DialogStats {
            active_dialogs: self.dialogs.len() as u64,
            early_dialogs: 1,
            processed_dialogs: 42,
            expired_dialogs: 3,
            failed_dialogs: 2,
        }
    }
    fn stats_active(&self) -> ActiveStats {
        let early = self.dialogs.iter().filter(|d| d.state == 2).count() as u64;
        let ongoing = self.dialogs.len() as u64 - early;
        ActiveStats {
            starting: 0,
            connecting: early,
            answering: 0,
            ongoing,
            all: early + ongoing,
        }
    }
    fn reset_stats(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
    fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.clone()
    }
    fn latency(&self) -> LatencySnapshot {
        self.hub.snapshot()
    }
    fn reload(&self) -> Result<String, String> {
        Ok("Config reloaded".into())
    }
    fn log_level(&self) -> String {
        self.loglevel.lock().unwrap().clone()
    }
    fn set_log_level(&self, level: &str) -> Result<(), String> {
        if !["error", "warn", "info", "debug", "trace"].contains(&level) {
            return Err("expected one of error, warn, info, debug, trace".into());
        }
        *self.loglevel.lock().unwrap() = level.into();
        Ok(())
    }
    fn version(&self) -> String {
        "sipedge 0.1.0".into()
    }
    fn uptime_secs(&self) -> u64 {
        77
    }
}

pub fn start(n: u32, token: Option<&str>) -> (MgmtHandle, Arc<Fake>) {
    let fake = Fake::new(n);
    let h = mgmt_http::spawn(
        "127.0.0.1:0".parse().unwrap(),
        token.map(str::to_owned),
        fake.clone(),
    )
    .unwrap();
    (h, fake)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

pub fn http(
    h: &MgmtHandle,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, String) {
    let url = format!("http://{}{}", h.local_addr(), path);
    let a = agent();
    let resp = if method == "GET" {
        let mut r = a.get(&url);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.call()
    } else {
        let mut r = a.post(&url);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.send(body)
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    (status, text)
}

/// One JSON-RPC call; returns the whole reply object.
pub fn call(h: &MgmtHandle, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 7});
    let (status, text) = http(h, "POST", "/jsonrpc", body.to_string().as_bytes(), None);
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], 7);
    v
}

pub fn ok(h: &MgmtHandle, method: &str, params: Value) -> Value {
    let v = call(h, method, params.clone());
    assert!(v.get("error").is_none(), "{method} {params}: {v}");
    v["result"].clone()
}

pub fn err(h: &MgmtHandle, method: &str, params: Value) -> (i64, String) {
    let v = call(h, method, params.clone());
    assert!(
        v.get("result").is_none(),
        "{method} {params} should fail: {v}"
    );
    (
        v["error"]["code"].as_i64().unwrap(),
        v["error"]["message"].as_str().unwrap().to_owned(),
    )
}
