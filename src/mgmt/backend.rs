//! The contract between the management layer and the dialog engine.
//!
//! Owns the [`MgmtBackend`] trait. The engine implements it; the RPC layer, the metrics
//! renderer and the tests (with a fake) only call it.
//!
//! ## Invariants
//! - Every method is called from the management thread only, never from a worker, and must
//!   not block a worker: read snapshots/atomics, and hand mutations (terminate, timeout) to the
//!   owning worker over its channel.
//! - Paging (`dialog_page`) lets callers stream 1,000,000 dialogs without building one list:
//!   pages are contiguous in some stable-enough order; a page shorter than `count` means the
//!   end was reached.

use std::sync::Arc;

use crate::mgmt::model::{ActiveStats, BackendError, DialogInfo, DialogSelector, DialogStats};
use crate::stats::{LatencySnapshot, StoreSnapshot, WorkerStats};

/// Everything management needs from the running proxy.
pub trait MgmtBackend: Send + Sync {
    /// Up to `count` dialogs starting at position `start`; with `ctx`, fill profiles/variables.
    fn dialog_page(&self, start: usize, count: usize, ctx: bool) -> Vec<DialogInfo>;
    /// Number of dialogs in the table.
    fn dialog_count(&self) -> usize;
    /// Dialogs with this Call-ID (and From-tag when given).
    fn dialogs_by_callid(&self, callid: &str, from_tag: Option<&str>, ctx: bool)
    -> Vec<DialogInfo>;
    /// End a dialog (BYE both ways when confirmed, CANCEL + final reply when early).
    fn terminate(
        &self,
        sel: DialogSelector<'_>,
        extra_hdrs: Option<&str>,
    ) -> Result<(), BackendError>;
    /// Whether the dialog exists and is confirmed.
    fn is_alive(&self, callid: &str, ftag: &str, ttag: &str) -> Result<bool, BackendError>;
    /// Set a dialog's remaining timeout in seconds.
    fn set_timeout(&self, h_entry: u32, h_id: u32, secs: u32) -> Result<(), BackendError>;
    /// Members of a profile (of one value when given).
    fn profile_size(&self, profile: &str, value: Option<&str>) -> Result<u64, BackendError>;
    /// Dialogs in a profile (of one value when given).
    fn profile_dialogs(
        &self,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<DialogInfo>, BackendError>;
    /// End every dialog in a profile; returns how many were asked to end.
    fn profile_end_dlgs(&self, profile: &str, value: Option<&str>) -> Result<usize, BackendError>;
    /// For each profile, its `top_n` largest values: `(profile, value, size)`; profiles
    /// without values report one row with `None`.
    fn profile_top_values(&self, top_n: usize) -> Vec<(String, Option<String>, u64)>;
    /// How many values per profile `/metrics` exports (`[mgmt] metrics_top_n`), asked at
    /// every scrape so a reload applies to the next one. The default is the config default.
    fn metrics_top_n(&self) -> usize {
        crate::config::MgmtConfig::default().metrics_top_n
    }
    /// Dialog counters.
    fn dialog_stats(&self) -> DialogStats;
    /// Dialogs by state.
    fn stats_active(&self) -> ActiveStats;
    /// Reset resettable statistics (dialog counters that are not gauges, worker counters and
    /// latency histograms) for `stats.reset_statistics`.
    fn reset_stats(&self);
    /// Per-worker counters.
    fn workers(&self) -> Vec<Arc<WorkerStats>>;
    /// Workers the listen sockets currently feed (adaptive spreading); `None` if unknown.
    fn active_workers(&self) -> Option<usize> {
        None
    }
    /// Merged latency histograms.
    fn latency(&self) -> LatencySnapshot;
    /// Reload configuration/policy; `Ok(message)` or `Err(reason)` (old config kept).
    fn reload(&self) -> Result<String, String>;
    /// Current log level name.
    fn log_level(&self) -> String;
    /// Set the log level (`error`, `warn`, `info`, `debug`, `trace` or a filter directive).
    fn set_log_level(&self, level: &str) -> Result<(), String>;
    /// Sources banned by flood control, with seconds left (`pike.list`).
    fn flood_bans(&self) -> Vec<(std::net::IpAddr, u64)> {
        Vec::new()
    }
    /// Lift a flood-control ban; `true` if the source was banned (`pike.unban`).
    fn flood_unban(&self, _ip: std::net::IpAddr) -> bool {
        false
    }
    /// Version string.
    fn version(&self) -> String;
    /// Seconds since start.
    fn uptime_secs(&self) -> u64;
    /// `dlg.bridge_dlg from to [op]`: call `from` and refer it to `to` (dialog_ng
    /// `dlg_bridge`). The default refuses.
    fn bridge(&self, from: &str, to: &str, op: Option<&str>) -> Result<(), BackendError> {
        let _ = (from, to, op);
        Err(BackendError::InvalidState(
            "bridging is not available".into(),
        ))
    }
    /// Counters of the dialog store's writer; `None` when no store is configured.
    fn store_stats(&self) -> Option<StoreSnapshot> {
        None
    }
}
