//! The proxy's view of every call: a [`DialogObserver`] on `shared.callbacks` that records,
//! per Call-ID, the dialog events the engine fired.
//!
//! Invariants:
//! - Observers run inline on the (single) simulation thread, so the mutex is never contended;
//!   it is there because `DialogObserver` must be `Sync`.
//! - A Call-ID's record only grows: events are counted, never forgotten, so the checks in
//!   `invariants` see everything that happened over the whole run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sipedge::dialog::callbacks::{DialogObserver, EventData};
use sipedge::dialog::{DlgEvent, EndReason, Field};

/// What the proxy did with one Call-ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialogLog {
    /// `Created` events (one per dialog; a Call-ID makes one dialog here).
    pub created: u32,
    /// A 2xx was relayed (`ConfirmedNa`) or its ACK seen (`Confirmed`).
    pub answered: bool,
    /// End events (`Failed`, `Expired`, `Terminated`) with the dialog's end reason.
    pub ends: Vec<(DlgEvent, EndReason)>,
    /// `Destroy` events (the record left the table).
    pub destroyed: u32,
    /// Every event in order, with the dialog's id (`h_entry:h_id`), for diagnostics.
    pub events: Vec<(DlgEvent, String)>,
}

impl DialogLog {
    /// The end reason, when exactly one end event fired.
    pub fn end(&self) -> Option<EndReason> {
        match self.ends.as_slice() {
            [(_, r)] => Some(*r),
            _ => None,
        }
    }
}

/// Totals over all Call-IDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// `Created` events.
    pub created: u64,
    /// `Failed` events.
    pub failed: u64,
    /// `Expired` events.
    pub expired: u64,
    /// `Terminated` events (ended normally: BYE either way, termination, race).
    pub terminated: u64,
    /// `Destroy` events.
    pub destroyed: u64,
}

/// The recording observer.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<(BTreeMap<String, DialogLog>, Totals)>,
}

impl DialogObserver for Ledger {
    fn on_event(&self, ev: &EventData<'_>) {
        let call_id = String::from_utf8_lossy(ev.dialog.strs.get(Field::CallId)).into_owned();
        let mut g = self.inner.lock().unwrap();
        let (calls, totals) = &mut *g;
        let log = calls.entry(call_id).or_default();
        let id = ev.dialog.id;
        log.events
            .push((ev.event, format!("{:x}:{}", id.h_entry, id.h_id)));
        match ev.event {
            DlgEvent::Created => {
                log.created += 1;
                totals.created += 1;
            }
            DlgEvent::ConfirmedNa | DlgEvent::Confirmed => log.answered = true,
            DlgEvent::Failed | DlgEvent::Expired | DlgEvent::Terminated => {
                log.ends.push((ev.event, ev.dialog.end_reason()));
                match ev.event {
                    DlgEvent::Failed => totals.failed += 1,
                    DlgEvent::Expired => totals.expired += 1,
                    _ => totals.terminated += 1,
                }
            }
            DlgEvent::Destroy => {
                log.destroyed += 1;
                totals.destroyed += 1;
            }
            _ => {}
        }
    }
}

impl Ledger {
    /// A copy of every Call-ID's record, in Call-ID order.
    pub fn calls(&self) -> BTreeMap<String, DialogLog> {
        self.inner.lock().unwrap().0.clone()
    }

    /// The totals.
    pub fn totals(&self) -> Totals {
        self.inner.lock().unwrap().1
    }
}
