//! What an INVITE's provisional and 2xx responses do to its dialog on their way upstream:
//! early legs (one per To-tag, across branches), confirmation by the first 2xx (callee leg,
//! route set, the ACK wait), 2xx races between forks, and the CANCEL of the other branches.
//!
//! # Invariants
//! - Every 2xx is relayed, unless `end_on_race` ends a second fork's 2xx here (ACK and BYE).
//! - The first 2xx of the transaction confirms the dialog once, CANCELs every other branch
//!   (§16.7 step 10) and moves the server transaction to Accepted; the transaction then drops
//!   the copies it no longer needs (the kept INVITE, the replayed provisional, the winner's
//!   forwarded copy), so a confirmed call holds no message copies.
//! - A provisional goes upstream only before a final did; the last one is kept (in a buffer
//!   allocated once per transaction) to answer INVITE retransmissions.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use super::{Engine, Inbound, Output, Settings};
use crate::dialog::record::{CalleeLeg, Dialog};
use crate::dialog::{DlgEvent, DlgState, Side, Socket};
use crate::stats::{Counter, LatencyMetric};
use crate::wire::ValidResponse;

impl Engine {
    /// A provisional (101-199) on branch `leg`: early dialog leg, relay, keep for replays.
    pub(crate) fn on_provisional(
        &mut self,
        now: u64,
        msg: &ValidResponse<'_, '_>,
        slot: u32,
        leg: usize,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        if !t.up.ist.may_send_provisional() {
            self.stats.inc(Counter::Absorbed);
            return;
        }
        let dialog = t.dialog.clone();
        let first = !t.up.ist.provisional_sent();
        let started = t.started_us;
        if let (Some(d), Some(tag)) = (&dialog, msg.to_tag()) {
            let contact = msg.contacts().next().map(|c| c.uri).unwrap_or(&[]);
            if d.add_early_leg(tag, contact, leg as u8) {
                if let Some(prev) = d.advance(&[DlgState::Unconfirmed], DlgState::Early) {
                    self.shared.stats.transition(prev, DlgState::Early);
                }
                self.fire(
                    DlgEvent::Early,
                    d,
                    Some(msg.bytes()),
                    msg.code(),
                    Some(Side::Callee),
                );
            }
        }
        let start = out.buf.len();
        if !self.relay_response(msg, None, out) {
            return;
        }
        if let Some(t) = self.txns.get_mut(slot) {
            let relayed = out.buf.get(start..).unwrap_or(&[]);
            let lp = &mut t.up.last_provisional;
            lp.clear();
            // Room for a somewhat longer provisional later (180 then 183 with SDP), so a
            // transaction allocates this buffer once, not per provisional.
            if lp.capacity() < relayed.len() {
                lp.reserve(relayed.len().max(512) * 2);
            }
            lp.extend_from_slice(relayed);
            let actions = t.up.ist.on_provisional();
            self.apply_ist(now, slot, actions, None, out);
        }
        let metric = first.then_some(LatencyMetric::InviteToProvisional);
        self.response_forwarded(metric, started, dialog.as_deref(), msg);
    }

    /// A reply to the INVITE went upstream: record its latency (when `metric` is given) and
    /// fire RESPONSE_FWDED.
    fn response_forwarded(
        &mut self,
        metric: Option<LatencyMetric>,
        started_us: u64,
        dialog: Option<&Dialog>,
        msg: &ValidResponse<'_, '_>,
    ) {
        if let Some(m) = metric {
            self.latency
                .record(m, self.now_us.saturating_sub(started_us));
        }
        if let Some(d) = dialog {
            let code = msg.code();
            self.fire(
                DlgEvent::ResponseFwded,
                d,
                Some(msg.bytes()),
                code,
                Some(Side::Callee),
            );
        }
    }

    /// A 2xx on branch `leg`; `first_on_branch` when the branch had none before.
    pub(crate) fn on_2xx(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidResponse<'_, '_>,
        slot: u32,
        leg: usize,
        first_on_branch: bool,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        // The first 2xx of the transaction: no other branch had one.
        let first_2xx = first_on_branch
            && !t
                .branches
                .iter()
                .enumerate()
                .any(|(i, b)| i != leg && b.ict.is_accepted());
        let cancelled = t.cancelled;
        let started = t.started_us;
        let dialog = t.dialog.clone();
        let socket = t.branches.get(leg).map(|b| b.socket);
        let tag = msg.to_tag().unwrap_or(&[]);
        let settings = self.shared.settings.load_full();
        if let Some(d) = &dialog {
            let same_leg = d.callee.get().is_some_and(|c| c.tag() == tag);
            if first_2xx && d.state() != DlgState::Deleted {
                if cancelled {
                    d.races.fetch_add(1, AcqRel);
                    self.shared.stats.race();
                }
                self.confirm(now, d, msg, socket, &settings, out);
            } else if !same_leg {
                // 200/200 race from a second fork.
                d.races.fetch_add(1, AcqRel);
                self.shared.stats.race();
                if settings.end_on_race {
                    if let Some(s) = socket {
                        self.end_race_leg(now, d, msg, s, out);
                    }
                    // The transaction still ends: a first 2xx accepts it here too, or it
                    // would stay with no timer (found by the engine fuzz target).
                    if first_2xx {
                        self.accept(now, slot, out);
                    }
                    return;
                }
            }
        }
        if self.relay_response(msg, None, out) && first_2xx {
            let metric = Some(LatencyMetric::InviteToFinal);
            self.response_forwarded(metric, started, dialog.as_deref(), msg);
        }
        if first_2xx {
            // RFC 3261 §16.7 step 10: cancel every other pending branch.
            let n = self.txns.get(slot).map_or(0, |t| t.branches.len());
            for other in (0..n).filter(|&o| o != leg) {
                self.cancel_branch(now, slot, other, out);
            }
            if let Some(t) = self.txns.get_mut(slot) {
                // The transaction lingers only to absorb late responses of other forks: the
                // upstream request, the replayed provisional and the winner's copy are not
                // needed any more, so a confirmed call holds no message copies.
                t.pending_targets = Vec::new();
                t.up.request = None;
                t.up.last_provisional = Vec::new();
                if let Some(b) = t.branches.get_mut(leg) {
                    b.forwarded = None;
                }
            }
            self.accept(now, slot, out);
        }
    }

    /// Confirm the dialog with the winning 2xx.
    fn confirm(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        msg: &ValidResponse<'_, '_>,
        socket: Option<Socket>,
        settings: &Settings,
        out: &mut Output,
    ) {
        let tag = msg.to_tag().unwrap_or(&[]);
        let to = msg.to_value();
        let contact = msg.contacts().next().map(|c| c.uri).unwrap_or(&[]);
        // Route set toward the callee: the Record-Route entries above ours, reversed.
        let mut above: Vec<&[u8]> = Vec::new();
        for rr in msg.record_routes() {
            let ours = rr
                .parsed_uri()
                .is_ok_and(|u| self.shared.locals.is_ours(u.host, u.port));
            if ours {
                break;
            }
            above.push(rr.span.get(msg.buf()));
        }
        let mut routes = Vec::new();
        for e in above.iter().rev() {
            routes.extend(
                e.iter()
                    .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
            );
            routes.push(b'\n');
        }
        let _ = d.callee.set(CalleeLeg::new(
            tag,
            to,
            contact,
            &routes,
            socket.unwrap_or(d.caller_socket()),
        ));
        // Confirmed: the callee leg replaces the early legs (tag matching uses it from now on).
        d.early_legs.store(None);
        if let Some(prev) = d.advance(
            &[DlgState::Unconfirmed, DlgState::Early],
            DlgState::ConfirmedNa,
        ) {
            self.shared.stats.transition(prev, DlgState::ConfirmedNa);
            d.start_ms.store(now, Release);
            let noack = u64::from(settings.noack_timeout.max(1)) * 1000;
            let life = u64::from(d.lifetime_s.load(Acquire)) * 1000;
            let deadline = now.saturating_add(noack.min(life.max(1)));
            // The early timer may be armed later than this: arm the earlier deadline too
            // (the lazy re-arm only handles deadlines that move later).
            if deadline < d.deadline_ms.swap(deadline, AcqRel) {
                self.retime_dialog(d, out);
            }
            self.fire(
                DlgEvent::ConfirmedNa,
                d,
                Some(msg.bytes()),
                msg.code(),
                Some(Side::Callee),
            );
        }
    }
}
