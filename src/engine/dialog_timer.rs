//! A dialog's one entry in a timer wheel: where it lives, how it moves and how it goes away.
//!
//! # Invariants
//! - A dialog has at most one wheel entry ([`TimerItem::Dialog`]), on its *timer worker*: the
//!   worker that created it, or worker 0 for a dialog loaded from the store whose creator
//!   index no longer exists. Its key is in [`Dialog::timer_key`], which only the timer worker
//!   reads or writes.
//! - While the dialog is live, the entry fires at or before its deadline; a deadline that
//!   moved later is re-armed lazily when the entry fires (one store on any worker, no message).
//!   A deadline that moves earlier (confirmation's `noack_timeout`, the end of the dialog,
//!   `dlg.set_timeout`) is re-timed at once.
//! - Once the dialog has ended, `deadline_ms` is when the record must leave the table (the
//!   BYE's final never came, or the INVITE transaction never freed it) and the entry fires
//!   then.
//! - When the record leaves the table the entry is cancelled at once. No entry outlives its
//!   dialog: an earlier version left one per call in the wheel for `early_timeout` (300 s) or
//!   `default_timeout` (12 h) after the call ended, and memory grew with the call rate.
//! - Another worker never touches the wheel: it emits [`Command::Retime`] for the timer
//!   worker, which re-reads the dialog and moves or cancels the entry.
//! - When a worker dies and is replaced (`io::run`), the replacement's wheel is new: it arms a
//!   fresh entry for each of its dialogs in the table ([`Engine::take_over`]); a dialog that
//!   left the table meanwhile may still hold a key of the old wheel, so a key is used only
//!   when its entry names the dialog.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::timers::TimerItem;
use super::{Command, Engine, Output};
use crate::dialog::id::DialogId;
use crate::dialog::record::{Dialog, NO_TIMER};
use crate::timer::TimerKey;

impl Engine {
    /// The worker whose wheel times dialog `id`.
    pub(crate) fn timer_worker(&self, id: DialogId) -> usize {
        let w = id.worker();
        if w < self.shared.workers { w } else { 0 }
    }

    /// Bring the dialog's wheel entry in line with the record: fire at `deadline_ms` while the
    /// dialog is in the table, gone once it has left. On another worker this becomes a
    /// [`Command::Retime`] for the timer worker.
    pub(crate) fn retime_dialog(&mut self, d: &Arc<Dialog>, out: &mut Output) {
        let owner = self.timer_worker(d.id);
        if owner == self.worker {
            self.retime_local(d);
        } else {
            out.command(owner, Command::Retime(d.clone()));
        }
    }

    /// [`Engine::retime_dialog`] on the timer worker.
    pub(crate) fn retime_local(&mut self, d: &Arc<Dialog>) {
        let in_table = self
            .shared
            .table
            .get(d.id)
            .is_some_and(|t| Arc::ptr_eq(&t, d));
        let bits = d.timer_key.load(Relaxed);
        // Only a key whose entry is this dialog's is used: after a worker restart
        // (`engine::restart`) a dialog that left the table may still hold a key of the dead
        // worker's wheel, which can name another entry of this one.
        let key = Some(TimerKey::from_bits(bits))
            .filter(|k| bits != NO_TIMER && self.wheel.get(*k) == Some(&TimerItem::Dialog(d.id)));
        if !in_table {
            if let Some(k) = key {
                self.wheel.cancel(k);
            }
            d.timer_key.store(NO_TIMER, Relaxed);
            return;
        }
        let at = d.deadline_ms.load(Acquire);
        if key.is_some_and(|k| self.wheel.reset(k, at)) {
            return;
        }
        self.arm_dialog_timer(d, at);
    }

    /// Insert a fresh entry for `d` at `at` and keep its key (timer worker only; the previous
    /// key, if any, must be spent or cancelled).
    pub(crate) fn arm_dialog_timer(&mut self, d: &Dialog, at: u64) {
        let key = self.wheel.insert(at, TimerItem::Dialog(d.id));
        d.timer_key.store(key.to_bits(), Relaxed);
    }

    /// Number of live entries in this worker's wheel (dialogs and transactions).
    pub fn pending_timers(&self) -> usize {
        self.wheel.len()
    }

    /// Slab nodes of this worker's wheel: the high-water mark of live timers.
    pub fn timer_slab(&self) -> usize {
        self.wheel.slab_len()
    }
}
