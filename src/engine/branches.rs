//! The downstream side of an INVITE transaction: one client transaction per branch
//! ([`crate::txn::ict`]). What it asks for, applied (Timer A/B/C/D, the CANCEL as a client
//! transaction of its own, the ACK of a non-2xx final); a response routed to its branch and
//! the branch's report handed to the proxy core (relay, best final, confirmation); CANCEL of
//! every pending branch.
//!
//! # Invariants
//! - CANCEL and ACK are built from the branch's kept forwarded copy ([`crate::wire::Kept`]):
//!   nothing is parsed again.
//! - A timer armed for a branch has its key in [`crate::txn::BranchTxn::keys`] until it fires
//!   or is cancelled (B and C share a slot: arming one replaces the other).
//! - A branch that gets its outcome (a final, Timer B/C) may be the last thing the
//!   transaction waited for: it is then freed ([`Engine::free_if_done`]).

use super::generated::NewRequest;
use super::timers::TxnTimer;
use super::{Engine, Inbound, Output};
use crate::dialog::Socket;
use crate::stats::Counter;
use crate::txn::ict::{self, Action, Report};
use crate::wire::{self, Message, Method, ValidResponse};

impl Engine {
    /// Apply what the client transaction of branch `leg` of `slot` asked for. `resp` is the
    /// response it just got (for the ACK of a non-2xx final).
    pub(crate) fn apply_ict(
        &mut self,
        now: u64,
        slot: u32,
        leg: usize,
        actions: ict::Actions,
        resp: Option<&Message<'_>>,
        out: &mut Output,
    ) {
        for a in actions.iter() {
            match a {
                Action::Send => {
                    let Some(b) = self.txns.get(slot).and_then(|t| t.branches.get(leg)) else {
                        continue;
                    };
                    if let Some(fwd) = &b.forwarded {
                        let s = b.socket;
                        out.push_bytes(fwd.bytes(), s.addr, s.transport, s.local, None);
                        self.stats.inc(Counter::RetransSent);
                    }
                }
                Action::Arm(timer, at) => {
                    self.set_txn_timer(slot, TxnTimer::Ict(leg as u8, timer), Some(at))
                }
                Action::Cancel(timer) => {
                    self.set_txn_timer(slot, TxnTimer::Ict(leg as u8, timer), None)
                }
                Action::SendCancel => self.send_cancel(now, slot, leg, out),
                Action::SendAck => {
                    if let Some(r) = resp {
                        self.send_ack(slot, leg, r, out);
                    }
                }
            }
        }
    }

    /// The ACK of the non-2xx final `resp`, downstream (RFC 3261 §17.1.1.3).
    fn send_ack(&mut self, slot: u32, leg: usize, resp: &Message<'_>, out: &mut Output) {
        let Some(b) = self.txns.get(slot).and_then(|t| t.branches.get(leg)) else {
            return;
        };
        let Some(fwd) = &b.forwarded else {
            return;
        };
        let s = b.socket;
        let start = out.buf.len();
        if wire::build::ack_for_non2xx(&fwd.view(), resp, &mut out.buf).is_ok() {
            out.push_from(start, s.addr, s.transport, s.local, None);
        } else {
            out.buf.truncate(start);
        }
    }

    /// The CANCEL of a branch: a client transaction of its own, retransmitted over UDP until a
    /// final response or Timer F (RFC 3261 §9.1, §17.1.2).
    fn send_cancel(&mut self, now: u64, slot: u32, leg: usize, out: &mut Output) {
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        let Some(b) = t.branches.get(leg) else {
            return;
        };
        let Some(fwd) = &b.forwarded else {
            return;
        };
        let mut bytes = Vec::with_capacity(fwd.bytes().len().min(1024));
        let reason: &[(&[u8], &[u8])] = &[(b"Reason", &t.cancel_reason)];
        let extra = if t.cancel_reason.is_empty() {
            &[]
        } else {
            reason
        };
        if wire::build::cancel_with(&fwd.view(), extra, &mut bytes).is_err() {
            return;
        }
        let dst = Socket {
            conn: None,
            ..b.socket
        };
        let txn = self.reserve_generated();
        let req = NewRequest::plain(txn, bytes, dst, Method::Cancel);
        self.start_generated(now, req, out);
        if let Some(b) = self
            .txns
            .get_mut(slot)
            .and_then(|t| t.branches.get_mut(leg))
        {
            b.cancel_txn = Some(txn);
        }
    }

    /// CANCEL every pending branch of a transaction (upstream CANCEL or termination).
    pub(crate) fn cancel_txn(&mut self, now: u64, slot: u32, reason: &[u8], out: &mut Output) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        t.cancelled = true;
        if !reason.is_empty() {
            t.cancel_reason.clear();
            t.cancel_reason.extend_from_slice(reason);
        }
        t.pending_targets.clear();
        for leg in 0..t.branches.len() {
            self.cancel_branch(now, slot, leg, out);
        }
    }

    /// CANCEL one branch: now if it is proceeding, on its first provisional otherwise.
    pub(crate) fn cancel_branch(&mut self, now: u64, slot: u32, leg: usize, out: &mut Output) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let timers = t.timers;
        let Some(b) = t.branches.get_mut(leg) else {
            return;
        };
        let actions = b.ict.cancel(now, &timers);
        self.apply_ict(now, slot, leg, actions, None, out);
    }

    /// A response for our INVITE transaction in `slot`, branch `leg`.
    pub(crate) fn on_invite_response(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidResponse<'_, '_>,
        slot: u32,
        leg: usize,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        let code = msg.code();
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let timers = t.timers;
        let Some(b) = t.branches.get_mut(leg) else {
            return;
        };
        let (report, actions) = b.ict.on_response(now, code, &timers);
        if !b.ict.resends()
            && let Some(f) = &mut b.forwarded
        {
            // Timer A is over: CANCEL and ACK need only the head.
            f.drop_body();
        }
        self.apply_ict(now, slot, leg, actions, Some(msg.msg()), out);
        match report {
            Report::Nothing | Report::TimedOut => {}
            Report::Provisional => self.on_provisional(now, msg, slot, leg, out),
            Report::Success { first } => self.on_2xx(inb, msg, slot, leg, first, out),
            Report::Failure(code) => self.on_negative(now, msg, slot, code, out),
            Report::Absorbed if code >= 300 => self.stats.inc(Counter::RetransAbsorbed),
            Report::Absorbed => self.stats.inc(Counter::Absorbed),
        }
        if matches!(report, Report::Success { .. } | Report::Failure(_)) {
            self.free_if_done(now, slot, out);
        }
    }

    /// A timer of branch `leg` of `slot` fired.
    pub(crate) fn on_ict_timer(
        &mut self,
        now: u64,
        (slot, generation, leg): (u32, u32, u8),
        timer: ict::Timer,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_current(slot, generation) else {
            return;
        };
        let timers = t.timers;
        let leg = usize::from(leg);
        let Some(b) = t.branches.get_mut(leg) else {
            return;
        };
        if let Some(k) = b.keys.get_mut(timer.slot()) {
            *k = None;
        }
        let (report, actions) = b.ict.on_timer(now, timer, &timers);
        self.apply_ict(now, slot, leg, actions, None, out);
        if report == Report::TimedOut {
            // Timer B or C: the branch counts as a 408 (RFC 3261 §16.7 step 6 picks the best).
            self.stats.inc(Counter::TxnTimeout);
            self.maybe_finish(now, slot, out);
            self.free_if_done(now, slot, out);
        }
    }
}
