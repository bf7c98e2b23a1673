//! [`MgmtBackend`] over the running engine: reads the shared dialog table and statistics,
//! and sends terminations to the worker that owns each dialog.
//!
//! Invariants: runs on management threads only; never blocks a worker (reads are snapshots
//! of atomics and of the lock-free table; actions are queued commands).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::config::LiveConfig;
use crate::dialog::id::{DialogId, worker_of};
use crate::dialog::record::{Dialog, Field, route_entries};
use crate::dialog::{DlgState, Side, Socket};
use crate::engine::{Command, Shared, apply_snapshot};
use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::model::{
    ActiveStats, BackendError, DialogInfo, DialogSelector, DialogStats, LegInfo, NameValue,
};
use crate::stats::{LatencySnapshot, WorkerStats};

type ReloadHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// A handle to change the log level at runtime.
pub struct LogHandle {
    handle: Option<ReloadHandle>,
    level: std::sync::Mutex<String>,
}

impl LogHandle {
    /// Wrap a reload handle.
    pub fn new(handle: ReloadHandle) -> Self {
        LogHandle {
            handle: Some(handle),
            level: std::sync::Mutex::new("info".into()),
        }
    }
    /// A handle that changes nothing (tests).
    pub fn none() -> Self {
        LogHandle {
            handle: None,
            level: std::sync::Mutex::new("info".into()),
        }
    }
}

/// The engine's clock as management reads it: milliseconds on the workers' time line (the
/// caller, `io`, owns the real clock).
pub type Now = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The engine as the management API sees it.
pub struct EngineBackend {
    shared: Arc<Shared>,
    now: Now,
    live: Arc<LiveConfig>,
    path: Option<PathBuf>,
    log: LogHandle,
    started_ms: u64,
}

impl EngineBackend {
    /// A backend for a running engine whose snapshot `live` was applied; `now` is the engine's
    /// clock and `path` the config file that reloads read.
    pub fn new(
        shared: Arc<Shared>,
        now: Now,
        live: Arc<LiveConfig>,
        path: Option<PathBuf>,
        log: LogHandle,
    ) -> Self {
        let started_ms = now();
        EngineBackend {
            shared,
            now,
            live,
            path,
            log,
            started_ms,
        }
    }

    /// Reload the config file now (SIGHUP, `core.reload`).
    pub fn reload_now(&self) -> Result<String, String> {
        let Some(p) = &self.path else {
            return Err("no config file: sipedge runs on embedded defaults".into());
        };
        let r = self
            .live
            .reload_from_file(p)
            .map_err(|e| e.to_string().trim_end().to_string())?;
        apply_snapshot(&self.shared, self.live.load_full());
        let mut s = format!("generation {} with {} rules", r.generation, r.rules);
        if !r.restart_required.is_empty() {
            s.push_str(&format!(
                "; restart required for: {}",
                r.restart_required.join(", ")
            ));
        }
        Ok(s)
    }

    fn unix_s(&self, ms: u64) -> u64 {
        if ms == 0 {
            0
        } else {
            self.shared.unix_ms(ms) / 1000
        }
    }

    fn info(&self, d: &Dialog, ctx: bool) -> DialogInfo {
        let s = |f: Field| String::from_utf8_lossy(d.strs.get(f)).into_owned();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let sock = |x: &Socket| format!("{}:{}", x.transport.as_str(), x.addr);
        let routes = |r: &[u8]| {
            route_entries(r)
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let caller = LegInfo {
            tag: s(Field::FromTag),
            contact: s(Field::CallerContact),
            cseq: d.caller_cseq.load(Relaxed).to_string(),
            route_set: routes(d.strs.get(Field::CallerRoutes)),
            socket: sock(&d.caller_socket()),
        };
        let callee = match d.callee.get() {
            Some(c) => LegInfo {
                tag: text(c.tag()),
                contact: text(c.contact()),
                cseq: d.callee_cseq.load(Relaxed).to_string(),
                route_set: routes(c.routes()),
                socket: sock(&c.socket()),
            },
            None => LegInfo::default(),
        };
        let early_legs = if d.callee.get().is_none() {
            d.early_legs
                .load()
                .as_deref()
                .map(|v| {
                    v.iter()
                        .map(|l| LegInfo {
                            tag: text(&l.tag),
                            contact: text(&l.contact),
                            ..LegInfo::default()
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let deadline = d.deadline_ms.load(Acquire);
        DialogInfo {
            h_entry: d.id.h_entry,
            h_id: d.id.h_id,
            call_id: s(Field::CallId),
            from_uri: s(Field::FromUri),
            to_uri: s(Field::ToUri),
            req_uri: s(Field::Ruri),
            state: d.state() as u8,
            start_ts: self.unix_s(d.start_ms.load(Relaxed)),
            init_ts: self.unix_s(d.init_ms),
            end_ts: self.unix_s(d.end_ms.load(Relaxed)),
            timeout: self.unix_s(deadline),
            lifetime: d.lifetime_s.load(Relaxed),
            dflags: d.flags.load(Relaxed),
            sflags: 0,
            caller,
            callee,
            early_legs,
            profiles: ctx.then(|| {
                let mut v = Vec::new();
                d.profiles.for_each(|name, value| {
                    v.push(NameValue {
                        name: name.to_string(),
                        value: value.map(text).unwrap_or_default(),
                    })
                });
                v
            }),
            variables: ctx.then(|| {
                d.vars
                    .load()
                    .as_deref()
                    .map(|v| {
                        v.iter()
                            .map(|(k, v)| NameValue {
                                name: text(k),
                                value: text(v),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }),
        }
    }

    fn find(&self, sel: DialogSelector<'_>) -> Option<Arc<Dialog>> {
        match sel {
            DialogSelector::ById { h_entry, h_id } => {
                self.shared.table.get(DialogId { h_entry, h_id })
            }
            DialogSelector::ByTags { callid, ftag, ttag } => {
                let mut found = None;
                for id in self.shared.table.find_by_callid(callid.as_bytes()) {
                    if let Some(d) = self.shared.table.get(id) {
                        let ok = d
                            .match_tags(callid.as_bytes(), ftag.as_bytes(), ttag.as_bytes())
                            .is_some()
                            || (ttag.is_empty() && d.strs.get(Field::FromTag) == ftag.as_bytes());
                        if ok {
                            found = Some(d);
                            break;
                        }
                    }
                }
                found
            }
        }
    }

    fn send_terminate(&self, d: &Dialog, extra: &str) -> Result<(), BackendError> {
        let cmd = Command::Terminate {
            id: d.id,
            side: Side::All,
            reason: "SIP;cause=200;text=\"terminated by management\"".into(),
            extra_hdrs: extra.to_string(),
        };
        if self.shared.send(worker_of(d.id), cmd) {
            Ok(())
        } else {
            Err(BackendError::Internal("worker queue unavailable".into()))
        }
    }

    fn in_profile(
        &self,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<Arc<Dialog>>, BackendError> {
        let profiles = self.shared.profiles.load();
        let idx = profiles
            .index(profile)
            .ok_or_else(|| BackendError::ProfileNotFound(profile.to_string()))?;
        let mut v = Vec::new();
        self.shared.table.for_each(|_, d| {
            if d.state() != DlgState::Deleted
                && profiles.is_in(&d.profiles, idx, value.map(str::as_bytes))
            {
                v.push(d.clone());
            }
        });
        Ok(v)
    }
}

impl MgmtBackend for EngineBackend {
    fn dialog_page(&self, start: usize, count: usize, ctx: bool) -> Vec<DialogInfo> {
        self.shared
            .table
            .page(start, count)
            .iter()
            .map(|(_, d)| self.info(d, ctx))
            .collect()
    }
    fn dialog_count(&self) -> usize {
        self.shared.table.len()
    }
    fn dialogs_by_callid(
        &self,
        callid: &str,
        from_tag: Option<&str>,
        ctx: bool,
    ) -> Vec<DialogInfo> {
        self.shared
            .table
            .find_by_callid(callid.as_bytes())
            .into_iter()
            .filter_map(|id| self.shared.table.get(id))
            .filter(|d| from_tag.is_none_or(|f| d.strs.get(Field::FromTag) == f.as_bytes()))
            .map(|d| self.info(&d, ctx))
            .collect()
    }
    fn terminate(
        &self,
        sel: DialogSelector<'_>,
        extra_hdrs: Option<&str>,
    ) -> Result<(), BackendError> {
        let d = self.find(sel).ok_or(BackendError::DialogNotFound)?;
        if d.state() == DlgState::Deleted {
            return Err(BackendError::InvalidState("dialog already ended".into()));
        }
        self.send_terminate(&d, extra_hdrs.unwrap_or(""))
    }
    fn is_alive(&self, callid: &str, ftag: &str, ttag: &str) -> Result<bool, BackendError> {
        let d = self
            .find(DialogSelector::ByTags { callid, ftag, ttag })
            .ok_or(BackendError::DialogNotFound)?;
        Ok(d.state().is_confirmed())
    }
    fn set_timeout(&self, h_entry: u32, h_id: u32, secs: u32) -> Result<(), BackendError> {
        let id = DialogId { h_entry, h_id };
        let d = self
            .shared
            .table
            .get(id)
            .ok_or(BackendError::DialogNotFound)?;
        d.set_timeout((self.now)(), secs);
        // The deadline may have moved earlier: the owner re-arms.
        let _ = self.shared.send(worker_of(id), Command::Rearm(id));
        Ok(())
    }
    fn profile_size(&self, profile: &str, value: Option<&str>) -> Result<u64, BackendError> {
        let p = self.shared.profiles.load();
        let idx = p
            .index(profile)
            .ok_or_else(|| BackendError::ProfileNotFound(profile.to_string()))?;
        Ok(p.size(idx, value.map(str::as_bytes)))
    }
    fn profile_dialogs(
        &self,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<DialogInfo>, BackendError> {
        Ok(self
            .in_profile(profile, value)?
            .iter()
            .map(|d| self.info(d, true))
            .collect())
    }
    fn profile_end_dlgs(&self, profile: &str, value: Option<&str>) -> Result<usize, BackendError> {
        let ds = self.in_profile(profile, value)?;
        let mut n = 0;
        for d in ds {
            if self.send_terminate(&d, "").is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
    fn profile_top_values(&self, top_n: usize) -> Vec<(String, Option<String>, u64)> {
        self.shared.profiles.load().top_values(top_n)
    }
    fn metrics_top_n(&self) -> usize {
        self.live.load().config.mgmt.metrics_top_n
    }
    fn dialog_stats(&self) -> DialogStats {
        let s = self.shared.stats.snapshot();
        DialogStats {
            active_dialogs: s.active_dialogs.max(0) as u64,
            early_dialogs: s.early_dialogs.max(0) as u64,
            processed_dialogs: s.processed_dialogs,
            expired_dialogs: s.expired_dialogs,
            failed_dialogs: s.failed_dialogs,
        }
    }
    fn stats_active(&self) -> ActiveStats {
        let mut a = ActiveStats::default();
        self.shared.table.for_each(|_, d| {
            match d.state() {
                DlgState::Unconfirmed => a.starting += 1,
                DlgState::Early => a.connecting += 1,
                DlgState::ConfirmedNa => a.answering += 1,
                DlgState::Confirmed => a.ongoing += 1,
                DlgState::Deleted => return,
            }
            a.all += 1;
        });
        a
    }
    fn reset_stats(&self) {
        self.shared.stats.reset_counters();
        for w in &self.shared.worker_stats {
            w.reset();
        }
        self.shared.latency.reset();
    }
    fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.shared.worker_stats.clone()
    }
    fn latency(&self) -> LatencySnapshot {
        self.shared.latency.snapshot()
    }
    fn reload(&self) -> Result<String, String> {
        self.reload_now()
    }
    fn log_level(&self) -> String {
        self.log.level.lock().map(|g| g.clone()).unwrap_or_default()
    }
    fn set_log_level(&self, level: &str) -> Result<(), String> {
        let l = level.to_ascii_lowercase();
        if !matches!(l.as_str(), "trace" | "debug" | "info" | "warn" | "error") {
            return Err(format!(
                "level `{level}`: expected trace, debug, info, warn or error"
            ));
        }
        if let Some(h) = &self.log.handle {
            h.reload(tracing_subscriber::EnvFilter::new(&l))
                .map_err(|e| e.to_string())?;
        }
        if let Ok(mut g) = self.log.level.lock() {
            *g = l;
        }
        Ok(())
    }
    fn bridge(&self, from: &str, to: &str, op: Option<&str>) -> Result<(), BackendError> {
        for u in [Some(from), op].into_iter().flatten() {
            crate::engine::parse_ip(
                crate::wire::parse_uri(u.as_bytes())
                    .map_err(|_| BackendError::InvalidState(format!("{u}: not a SIP URI")))?
                    .host,
            )
            .ok_or_else(|| {
                BackendError::InvalidState(format!("{u}: host must be an IP (no DNS)"))
            })?;
        }
        if self.shared.dlg_bridge(from, to, op) {
            Ok(())
        } else {
            Err(BackendError::Internal("worker queue unavailable".into()))
        }
    }
    fn version(&self) -> String {
        format!("sipedge {}", env!("CARGO_PKG_VERSION"))
    }
    fn flood_bans(&self) -> Vec<(std::net::IpAddr, u64)> {
        self.shared.flood.bans((self.now)())
    }
    fn flood_unban(&self, ip: std::net::IpAddr) -> bool {
        self.shared.flood.unban(ip, (self.now)())
    }
    fn uptime_secs(&self) -> u64 {
        (self.now)().saturating_sub(self.started_ms) / 1000
    }
    fn active_workers(&self) -> Option<usize> {
        Some(
            self.shared
                .active_workers
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
    fn store_stats(&self) -> Option<crate::stats::StoreSnapshot> {
        self.shared.store.snapshot()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dialog::profile::{Memberships, Profiles};
    use crate::engine::{LocalAddrs, Settings};
    use crate::wire::Transport;

    fn config(top_n: usize) -> Config {
        let text =
            format!("[mgmt]\nmetrics_top_n = {top_n}\n[profiles]\nwith_value = [\"caller\"]\n");
        Config::from_toml_str(&text).unwrap()
    }

    /// The `caller` values `/metrics` exports, largest first.
    fn exported(b: &EngineBackend) -> Vec<String> {
        crate::mgmt::metrics::render(b)
            .lines()
            .filter_map(|l| l.strip_prefix(r#"sipedge_profile_size{profile="caller",value=""#))
            .filter_map(|rest| rest.split_once('"').map(|(v, _)| v.to_owned()))
            .filter(|v| !v.is_empty())
            .collect()
    }

    #[test]
    fn metrics_export_metrics_top_n_values_per_profile_and_follow_a_reload() {
        let locals = LocalAddrs::new(&[(Transport::Udp, "127.0.0.1:5060".parse().unwrap())], None);
        let profiles = Profiles::new(&[], &[]).unwrap();
        let shared = Shared::new(1, locals, Settings::default(), profiles, 1, 1);
        let live = Arc::new(LiveConfig::new(config(2)));
        apply_snapshot(&shared, live.load_full());
        // Five values of `caller`; value `vN` holds N dialogs.
        let p = shared.profiles.load();
        let caller = p.index("caller").unwrap();
        let mut members = Vec::new();
        for n in 1..=5u8 {
            let value = format!("v{n}");
            for _ in 0..n {
                let m = Memberships::new();
                assert_eq!(p.set(&m, caller, Some(value.as_bytes())), Ok(true));
                members.push(m);
            }
        }
        let b = EngineBackend::new(
            shared.clone(),
            Arc::new(|| 0),
            live.clone(),
            None,
            LogHandle::none(),
        );
        assert_eq!(exported(&b), ["v5", "v4"], "metrics_top_n = 2 of 5 values");
        live.reload(config(4));
        assert_eq!(
            exported(&b),
            ["v5", "v4", "v3", "v2"],
            "a reload applies to the next scrape"
        );
        live.reload(config(0));
        assert!(
            exported(&b).is_empty(),
            "0 exports only the profile's total"
        );
    }
}
