//! The upstream side of an INVITE transaction: what its server transaction
//! ([`crate::txn::ist`]) asks for, applied (our 100, replayed provisionals and finals, Timers
//! "Trying", G, H, I, L); INVITE retransmissions and the ACK of a non-2xx final; our own final
//! responses; and freeing the transaction.
//!
//! # Invariants
//! - Every response we build upstream comes from the kept INVITE ([`crate::wire::Kept`]) or
//!   the request in hand: nothing is parsed again.
//! - A timer armed for the server transaction has its key in [`crate::txn::Upstream::keys`]
//!   until it fires or is cancelled; a fired timer clears its key before the state machine
//!   sees it.
//! - A transaction is freed only through [`Engine::free_if_done`]: when its server transaction
//!   ended and no branch waits for its outcome. Freeing cancels every key it holds, stops the
//!   CANCELs it still retransmits, tells the shared index (RFC 6026: later copies are
//!   absorbed) and removes a dialog that waited for it.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use super::timers::TxnTimer;
use super::{Engine, Inbound, Output};
use crate::dialog::EndReason;
use crate::stats::{Counter, LatencyMetric};
use crate::txn::ist::{self, Action};
use crate::wire::{self, Message};

impl Engine {
    /// Apply what the server transaction of `slot` asked for. `fresh` is the INVITE in hand
    /// (our 100 is built from it rather than from the kept copy).
    pub(crate) fn apply_ist(
        &mut self,
        now: u64,
        slot: u32,
        actions: ist::Actions,
        fresh: Option<(&Inbound<'_>, &Message<'_>)>,
        out: &mut Output,
    ) {
        for a in actions.iter() {
            match a {
                Action::SendTrying => self.send_trying(now, slot, fresh, out),
                Action::SendProvisional => self.send_upstream(slot, false, out),
                Action::SendFinal => self.send_upstream(slot, true, out),
                Action::Arm(timer, at) => self.set_txn_timer(slot, TxnTimer::Ist(timer), Some(at)),
                Action::Cancel(timer) => self.set_txn_timer(slot, TxnTimer::Ist(timer), None),
                Action::Free => self.free_if_done(now, slot, out),
            }
        }
    }

    /// Our 100 Trying upstream.
    fn send_trying(
        &mut self,
        now: u64,
        slot: u32,
        fresh: Option<(&Inbound<'_>, &Message<'_>)>,
        out: &mut Output,
    ) {
        if let Some((inb, msg)) = fresh {
            return self.reply(inb, msg, 100, b"Trying", None, &[], out);
        }
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        if let Some(req) = &t.up.request {
            let inb = self.upstream_inbound(now, t.up.socket, req.bytes());
            self.reply(&inb, &req.view(), 100, b"Trying", None, &[], out);
        }
    }

    /// Send the last provisional (or the non-2xx final) upstream again.
    fn send_upstream(&mut self, slot: u32, final_response: bool, out: &mut Output) {
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        let up = t.up.socket;
        let bytes = if final_response {
            &t.up.final_response
        } else {
            &t.up.last_provisional
        };
        out.push_bytes(bytes, up.addr, up.transport, up.local, up.conn);
    }

    /// An INVITE retransmission from upstream: answered with what went last, or absorbed.
    pub(crate) fn absorb_invite_retransmission(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        slot: u32,
        out: &mut Output,
    ) {
        self.stats.inc(Counter::RetransAbsorbed);
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let actions = t.up.ist.on_retransmission();
        let replay = |a: Action| matches!(a, Action::SendProvisional | Action::SendFinal);
        if actions.iter().any(replay) {
            self.stats.inc(Counter::RetransSent);
        }
        self.apply_ist(inb.now_ms, slot, actions, Some((inb, msg)), out);
    }

    /// An ACK without a dialog for transaction `slot` whose INVITE had top Via branch
    /// `branch`: true if it is the ACK of our non-2xx final (absorbed).
    pub(crate) fn absorb_ack(
        &mut self,
        now: u64,
        slot: u32,
        branch: &[u8],
        out: &mut Output,
    ) -> bool {
        let Some(t) = self.txns.get_mut(slot) else {
            return false;
        };
        if t.up.branch != branch {
            return false;
        }
        let timers = t.timers;
        let (ours, actions) = t.up.ist.on_ack(now, &timers);
        if ours {
            self.apply_ist(now, slot, actions, None, out);
            self.stats.inc(Counter::AckAbsorbed);
        }
        ours
    }

    /// A timer of the server transaction of `slot` fired.
    pub(crate) fn on_ist_timer(
        &mut self,
        now: u64,
        slot: u32,
        generation: u32,
        timer: ist::Timer,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_current(slot, generation) else {
            return;
        };
        if let Some(k) = t.up.keys.get_mut(timer.slot()) {
            *k = None;
        }
        let timers = t.timers;
        let actions = t.up.ist.on_timer(now, timer, &timers);
        if timer == ist::Timer::G && actions.iter().any(|a| a == Action::SendFinal) {
            self.stats.inc(Counter::RetransSent);
        }
        self.apply_ist(now, slot, actions, None, out);
    }

    /// Build our own final response from the kept INVITE and send it upstream.
    pub(crate) fn synthesize_final(
        &mut self,
        now: u64,
        slot: u32,
        code: u16,
        reason: &[u8],
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        let mut bytes = Vec::new();
        if let Some(req) = &t.up.request {
            wire::build::response(&req.view(), code, reason, Some(&t.to_tag), &[], &mut bytes);
        }
        self.stats.inc_reply(code);
        self.send_final_upstream(now, slot, code, bytes, out);
    }

    /// Send the final non-2xx response upstream (Timer G/H) and end the dialog.
    pub(crate) fn send_final_upstream(
        &mut self,
        now: u64,
        slot: u32,
        code: u16,
        bytes: Vec<u8>,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if t.up.ist.has_final() {
            return;
        }
        let timers = t.timers;
        let actions = t.up.ist.on_final(now, code, &timers);
        t.up.final_response = bytes;
        let (started, cancelled, dialog) = (t.started_us, t.cancelled, t.dialog.clone());
        self.apply_ist(now, slot, actions, None, out);
        self.latency.record(
            LatencyMetric::InviteToFinal,
            self.now_us.saturating_sub(started),
        );
        if let Some(d) = dialog {
            let reason = if cancelled {
                EndReason::Cancelled
            } else {
                EndReason::Failed
            };
            self.end_dialog(now, &d, reason, None, super::dialogs::Removal::WithTxn, out);
        }
    }

    /// A 2xx went upstream (or was answered here, `end_on_race`): the server transaction
    /// stays Accepted for Timer L.
    pub(crate) fn accept(&mut self, now: u64, slot: u32, out: &mut Output) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let timers = t.timers;
        let actions = t.up.ist.on_final(now, 200, &timers);
        self.apply_ist(now, slot, actions, None, out);
    }

    /// Take transaction `slot` out of the table, counted as closed with the bytes it held.
    pub(crate) fn remove_txn(&mut self, slot: u32) -> Option<crate::txn::InviteTxn> {
        let t = self.txns.remove(slot)?;
        self.stats.inc(Counter::TxnsClosed);
        self.stats
            .add(Counter::TxnBytesReleased, t.held_bytes as u64);
        Some(t)
    }

    /// Free the transaction in `slot` if it is over ([`crate::txn::InviteTxn::is_done`]).
    pub(crate) fn free_if_done(&mut self, now: u64, slot: u32, out: &mut Output) {
        if !self.txns.get(slot).is_some_and(|t| t.is_done()) {
            return;
        }
        let Some(mut t) = self.remove_txn(slot) else {
            return;
        };
        // RFC 6026 Accepted: a retransmission that comes later is still absorbed.
        let loc = crate::txn::recent::Loc {
            worker: self.worker as u16,
            slot,
            generation: t.generation,
        };
        self.shared.invites.finish(t.recent_key, loc, now);
        for k in t.take_keys() {
            self.wheel.cancel(k);
        }
        for b in &t.branches {
            // A CANCEL still unanswered can no longer be matched: stop it.
            if let Some(c) = b.cancel_txn {
                self.drop_generated(c);
            }
        }
        if let Some(d) = &t.dialog {
            if d.state() == crate::dialog::DlgState::Deleted && d.txn_slot.load(Acquire) == slot {
                self.remove_dialog(d, out);
            }
            let _ = d.txn_slot.compare_exchange(slot, u32::MAX, AcqRel, Acquire);
        }
    }
}
