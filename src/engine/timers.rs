//! Timer items on the worker's wheel and what each one does when it fires.
//!
//! Invariant: a timer never trusts that its transaction still exists: it checks the slot's
//! generation and the branch state first, so a stale timer is a no-op.

use super::{Engine, Output};
use crate::dialog::id::DialogId;
use crate::stats::Counter;
use crate::txn::BranchState;

/// What a timer on the wheel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerItem {
    /// Timer A: retransmit the INVITE on a UDP branch.
    A {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Branch.
        leg: u8,
    },
    /// Timer B (no provisional) or C (no final after a provisional).
    Bc {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
        /// Branch.
        leg: u8,
    },
    /// Timer G: retransmit a non-2xx final upstream until the ACK.
    G {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
    },
    /// Timer "Trying": send the held-back 100 upstream if nothing was relayed yet.
    Trying {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
    },
    /// The transaction is over: free it.
    Linger {
        /// Transaction slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
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
    /// A `dlg_bridge` call gives up.
    Bridge {
        /// Bridge slot.
        slot: u32,
        /// Slot generation.
        generation: u32,
    },
}

impl Engine {
    /// One timer fired.
    pub(crate) fn on_timer(&mut self, now: u64, item: TimerItem, out: &mut Output) {
        match item {
            TimerItem::A {
                slot,
                generation,
                leg,
            } => {
                let Some(t) = self.txns.get_current(slot, generation) else {
                    return;
                };
                let t2 = t.timers.t2;
                let Some(b) = t.branches.get_mut(usize::from(leg)) else {
                    return;
                };
                b.timer_a = None;
                if b.state != BranchState::Calling {
                    return;
                }
                let sock = b.socket;
                out.push_bytes(&b.forwarded, sock.addr, sock.transport, sock.local, None);
                b.a_interval = b.a_interval.saturating_mul(2).min(t2);
                let next = now + b.a_interval;
                let key = self.wheel.insert(
                    next,
                    TimerItem::A {
                        slot,
                        generation,
                        leg,
                    },
                );
                if let Some(b) = self
                    .txns
                    .get_mut(slot)
                    .and_then(|t| t.branches.get_mut(usize::from(leg)))
                {
                    b.timer_a = Some(key);
                }
                self.stats.inc(Counter::RetransSent);
            }
            TimerItem::Bc {
                slot,
                generation,
                leg,
            } => {
                let Some(t) = self.txns.get_current(slot, generation) else {
                    return;
                };
                let Some(b) = t.branches.get_mut(usize::from(leg)) else {
                    return;
                };
                b.timer_bc = None;
                if b.state == BranchState::Completed {
                    return;
                }
                let proceeding = b.state == BranchState::Proceeding;
                let key_a = b.timer_a.take();
                if let Some(k) = key_a {
                    self.wheel.cancel(k);
                }
                // Timer C with a provisional: CANCEL the branch; either way it counts as 408.
                if proceeding {
                    self.cancel_branch(now, slot, usize::from(leg), out);
                }
                if let Some(b) = self
                    .txns
                    .get_mut(slot)
                    .and_then(|t| t.branches.get_mut(usize::from(leg)))
                {
                    b.state = BranchState::Completed;
                    b.final_code = 408;
                }
                self.stats.inc(Counter::TxnTimeout);
                self.maybe_finish(now, slot, out);
            }
            TimerItem::G { slot, generation } => self.on_timer_g(now, slot, generation, out),
            TimerItem::Trying { slot, generation } => {
                self.on_timer_trying(now, slot, generation, out)
            }
            TimerItem::Linger { slot, generation } => {
                if self.txns.get_current(slot, generation).is_some()
                    && let Some(t) = self.txns.remove(slot)
                {
                    self.stats.inc(Counter::TxnsClosed);
                    self.stats
                        .add(Counter::TxnBytesReleased, t.held_bytes as u64);
                    // RFC 6026 Accepted: a retransmission that comes later is still absorbed.
                    let loc = crate::txn::recent::Loc {
                        worker: self.worker as u16,
                        slot,
                        generation,
                    };
                    self.shared.invites.finish(t.recent_key, loc, now);
                    if let Some(k) = t.up.timer_g {
                        self.wheel.cancel(k);
                    }
                    for b in &t.branches {
                        for k in [b.timer_a, b.timer_bc].into_iter().flatten() {
                            self.wheel.cancel(k);
                        }
                        // A CANCEL still unanswered can no longer be matched: stop it.
                        if let Some(c) = b.cancel_txn {
                            self.drop_generated(c);
                        }
                    }
                    if let Some(d) = &t.dialog {
                        if d.state() == crate::dialog::DlgState::Deleted
                            && d.txn_slot.load(std::sync::atomic::Ordering::Acquire) == slot
                        {
                            self.remove_dialog(d, out);
                        }
                        let _ = d.txn_slot.compare_exchange(
                            slot,
                            u32::MAX,
                            std::sync::atomic::Ordering::AcqRel,
                            std::sync::atomic::Ordering::Acquire,
                        );
                    }
                }
            }
            TimerItem::Dialog(id) => self.on_dialog_timer(now, id, out),
            TimerItem::Client {
                slot,
                generation,
                timer,
            } => self.on_generated_timer(now, slot, generation, timer, out),
            TimerItem::Bridge { slot, generation } => self.on_bridge_timeout(slot, generation),
        }
    }
}
