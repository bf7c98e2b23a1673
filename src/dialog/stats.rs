//! Dialog statistics with Kamailio's meanings, as shared atomics.
//!
//! - `active_dialogs`: confirmed dialogs (2xx seen) that have not ended.
//! - `early_dialogs`: dialogs in the early state.
//! - `processed_dialogs`: dialogs created since start (or the last reset).
//! - `expired_dialogs`: dialogs ended by their timeout.
//! - `failed_dialogs`: dialogs that ended with a negative final reply (incl. CANCEL).
//!
//! Invariant: the gauges move only on state transitions won by compare-and-swap in the record,
//! so each transition is counted exactly once. Resetting affects the counters, never the gauges.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

use super::state::DlgState;

/// Shared dialog statistics.
#[derive(Debug, Default)]
pub struct DialogStats {
    active: CachePadded<AtomicI64>,
    early: CachePadded<AtomicI64>,
    processed: CachePadded<AtomicU64>,
    expired: CachePadded<AtomicU64>,
    failed: CachePadded<AtomicU64>,
    races: CachePadded<AtomicU64>,
}

/// A point-in-time copy of [`DialogStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DialogStatsSnapshot {
    /// Confirmed, not ended.
    pub active_dialogs: i64,
    /// Early.
    pub early_dialogs: i64,
    /// Created.
    pub processed_dialogs: u64,
    /// Ended by timeout.
    pub expired_dialogs: u64,
    /// Ended by a negative reply.
    pub failed_dialogs: u64,
    /// 2xx races seen (second fork or after CANCEL).
    pub race_dialogs: u64,
}

impl DialogStats {
    /// A dialog was created.
    pub fn created(&self) {
        self.processed.fetch_add(1, Relaxed);
    }
    /// A state transition `from → to` happened (exactly once).
    pub fn transition(&self, from: DlgState, to: DlgState) {
        if from == DlgState::Early && to != DlgState::Early {
            self.early.fetch_sub(1, Relaxed);
        }
        if to == DlgState::Early && from != DlgState::Early {
            self.early.fetch_add(1, Relaxed);
        }
        let was_active = from.is_confirmed();
        let is_active = to.is_confirmed();
        if was_active && !is_active {
            self.active.fetch_sub(1, Relaxed);
        }
        if is_active && !was_active {
            self.active.fetch_add(1, Relaxed);
        }
    }
    /// A dialog expired.
    pub fn expired(&self) {
        self.expired.fetch_add(1, Relaxed);
    }
    /// A dialog failed.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    /// A 2xx race was seen.
    pub fn race(&self) {
        self.races.fetch_add(1, Relaxed);
    }
    /// Reset the counters (not the gauges), like `stats.reset_statistics`.
    pub fn reset_counters(&self) {
        self.processed.store(0, Relaxed);
        self.expired.store(0, Relaxed);
        self.failed.store(0, Relaxed);
        self.races.store(0, Relaxed);
    }
    /// Read everything.
    pub fn snapshot(&self) -> DialogStatsSnapshot {
        DialogStatsSnapshot {
            active_dialogs: self.active.load(Relaxed),
            early_dialogs: self.early.load(Relaxed),
            processed_dialogs: self.processed.load(Relaxed),
            expired_dialogs: self.expired.load(Relaxed),
            failed_dialogs: self.failed.load(Relaxed),
            race_dialogs: self.races.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DlgState::*;

    #[test]
    fn gauges_follow_transitions() {
        let s = DialogStats::default();
        s.created();
        s.transition(Unconfirmed, Early);
        assert_eq!(s.snapshot().early_dialogs, 1);
        s.transition(Early, ConfirmedNa);
        let snap = s.snapshot();
        assert_eq!((snap.early_dialogs, snap.active_dialogs), (0, 1));
        s.transition(ConfirmedNa, Confirmed);
        assert_eq!(s.snapshot().active_dialogs, 1);
        s.transition(Confirmed, Deleted);
        let snap = s.snapshot();
        assert_eq!((snap.early_dialogs, snap.active_dialogs), (0, 0));
        assert_eq!(snap.processed_dialogs, 1);
        s.transition(Unconfirmed, Deleted);
        assert_eq!(s.snapshot().active_dialogs, 0);
        s.reset_counters();
        assert_eq!(s.snapshot().processed_dialogs, 0);
    }
}
