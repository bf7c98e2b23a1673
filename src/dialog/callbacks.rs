//! Dialog callbacks (Kamailio `register_dlgcb`): observers of dialog events.
//!
//! Observers run synchronously on the thread that caused the event: a worker thread for
//! events driven by packets and timers, and for terminations requested by the management API
//! (those are executed by the dialog's owning worker). They must not block. Registration swaps
//! the observer list as a whole, so firing takes no lock and does not allocate.
//!
//! Invariant: end events (`Failed`, `Terminated`, `Expired`) fire exactly once per dialog,
//! because only the winner of [`super::record::Dialog::try_end`] fires them.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::record::Dialog;
use super::state::Side;

/// Dialog event types, as in Kamailio's `DLGCB_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DlgEvent {
    /// A dialog was created by an initial INVITE.
    Created = 0,
    /// First 1xx with a To-tag (or a new early leg).
    Early,
    /// 2xx relayed.
    ConfirmedNa,
    /// ACK for the 2xx seen.
    Confirmed,
    /// A request within the dialog.
    ReqWithin,
    /// A reply to the initial INVITE was relayed.
    ResponseFwded,
    /// A reply to a request within the dialog.
    ResponseWithin,
    /// The INVITE failed (negative final reply or CANCEL).
    Failed,
    /// BYE or termination.
    Terminated,
    /// The final reply to the BYE.
    TerminatedConfirmed,
    /// The dialog timed out.
    Expired,
    /// A spiral of the initial INVITE was mapped to this dialog.
    Spiraled,
    /// The record is being removed from the table.
    Destroy,
    /// The dialog was loaded from persistent storage.
    Loaded,
}

impl DlgEvent {
    /// Bit of this event in an interest mask.
    pub fn bit(self) -> u32 {
        1 << (self as u8)
    }
    /// Mask of every event.
    pub const ALL: u32 = (1 << 14) - 1;
}

/// Data passed to an observer.
#[derive(Debug)]
pub struct EventData<'a> {
    /// What happened.
    pub event: DlgEvent,
    /// The dialog.
    pub dialog: &'a Dialog,
    /// The SIP message that caused it, when there is one.
    pub msg: Option<&'a [u8]>,
    /// Reply code, for reply-driven events.
    pub code: u16,
    /// Which side sent the message, when known.
    pub side: Option<Side>,
}

/// An observer of dialog events.
pub trait DialogObserver: Send + Sync {
    /// Called for each event in the registered mask.
    fn on_event(&self, ev: &EventData<'_>);
}

type Entry = (u32, Arc<dyn DialogObserver>);

/// The registry of observers.
pub struct Callbacks {
    list: ArcSwap<Vec<Entry>>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Callbacks({} observers)", self.list.load().len())
    }
}

impl Default for Callbacks {
    fn default() -> Self {
        Callbacks {
            list: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl Callbacks {
    /// Register an observer for the events in `mask` (see [`DlgEvent::bit`]).
    pub fn register(&self, mask: u32, obs: Arc<dyn DialogObserver>) {
        self.list.rcu(|cur| {
            let mut v = (**cur).clone();
            v.push((mask, obs.clone()));
            v
        });
    }

    /// Fire an event to every interested observer.
    pub fn fire(&self, ev: &EventData<'_>) {
        let list = self.list.load();
        if list.is_empty() {
            return;
        }
        let bit = ev.event.bit();
        for (mask, obs) in list.iter() {
            if mask & bit != 0 {
                obs.on_event(ev);
            }
        }
    }
}
