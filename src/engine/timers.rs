//! Timer items on the worker's wheel and what each one does when it fires, and the two ways a
//! transaction arms and cancels its timers ([`arm`], [`disarm`]).
//!
//! Invariants: a timer never trusts that its transaction still exists: it checks the slot's
//! generation first, and the state machine ignores a timer its state has no use for, so a
//! stale timer is a no-op. Whoever arms a timer keeps its key in one slot and replaces or
//! cancels it there, so no wheel entry outlives what it guards.

use super::{Engine, Output};
use crate::dialog::id::DialogId;
use crate::timer::{TimerKey, Wheel};

/// What a timer on the wheel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerItem {
    /// A timer of an INVITE branch's client transaction (A, B, C, D).
    Ict {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Branch.
        leg: u8,
        /// Which timer.
        timer: crate::txn::ict::Timer,
    },
    /// A timer of an INVITE server transaction (Trying, G, H, I, L).
    Ist {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Which timer.
        timer: crate::txn::ist::Timer,
    },
    /// The dialog's deadline (lazy: re-armed if the true deadline moved later); after the
    /// dialog ended, when its record leaves the table. One entry per dialog
    /// (`engine::dialog_timer`).
    Dialog(DialogId),
    /// A timer of a request the proxy originated (`engine::generated`).
    Client {
        /// Slot in the worker's table of generated requests.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Which timer (E, F, K).
        timer: crate::txn::nict::Timer,
    },
    /// A timer of the INVITE of a `dlg_bridge` call (A, B, C, D).
    BridgeIct {
        /// Bridge slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Which timer.
        timer: crate::txn::ict::Timer,
    },
    /// A `dlg_bridge` call's deadline.
    Bridge {
        /// Bridge slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
    },
}

/// Arm `item` at `at` and keep its key in `key`, cancelling the entry it replaces.
pub(crate) fn arm(
    wheel: &mut Wheel<TimerItem>,
    key: &mut Option<TimerKey>,
    at: u64,
    item: TimerItem,
) {
    if let Some(old) = key.replace(wheel.insert(at, item)) {
        wheel.cancel(old);
    }
}

/// Cancel the entry whose key is in `key`, if any.
pub(crate) fn disarm(wheel: &mut Wheel<TimerItem>, key: &mut Option<TimerKey>) {
    if let Some(k) = key.take() {
        wheel.cancel(k);
    }
}

/// A timer of an INVITE transaction, by where its key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnTimer {
    /// Of the server transaction.
    Ist(crate::txn::ist::Timer),
    /// Of the client transaction of a branch.
    Ict(u8, crate::txn::ict::Timer),
}

impl Engine {
    /// Arm (`at` is `Some`) or cancel timer `which` of the INVITE transaction in `slot`; its
    /// key is kept in the transaction ([`crate::txn::Upstream::keys`],
    /// [`crate::txn::BranchTxn::keys`]).
    pub(crate) fn set_txn_timer(&mut self, slot: u32, which: TxnTimer, at: Option<u64>) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let generation = t.generation;
        let (key, item) = match which {
            TxnTimer::Ist(timer) => (
                t.up.keys.get_mut(timer.slot()),
                TimerItem::Ist {
                    slot,
                    generation,
                    timer,
                },
            ),
            TxnTimer::Ict(leg, timer) => (
                t.branches
                    .get_mut(usize::from(leg))
                    .and_then(|b| b.keys.get_mut(timer.slot())),
                TimerItem::Ict {
                    slot,
                    generation,
                    leg,
                    timer,
                },
            ),
        };
        match (key, at) {
            (Some(key), Some(at)) => arm(&mut self.wheel, key, at, item),
            (Some(key), None) => disarm(&mut self.wheel, key),
            (None, _) => {}
        }
    }

    /// One timer fired.
    pub(crate) fn on_timer(&mut self, now: u64, item: TimerItem, out: &mut Output) {
        match item {
            TimerItem::Ict {
                slot,
                generation,
                leg,
                timer,
            } => self.on_ict_timer(now, (slot, generation, leg), timer, out),
            TimerItem::Ist {
                slot,
                generation,
                timer,
            } => self.on_ist_timer(now, slot, generation, timer, out),
            TimerItem::Dialog(id) => self.on_dialog_timer(now, id, out),
            TimerItem::Client {
                slot,
                generation,
                timer,
            } => self.on_generated_timer(now, slot, generation, timer, out),
            TimerItem::BridgeIct {
                slot,
                generation,
                timer,
            } => self.on_bridge_ict_timer(now, (slot, generation), timer, out),
            TimerItem::Bridge { slot, generation } => {
                self.on_bridge_timeout(now, slot, generation, out)
            }
        }
    }
}
