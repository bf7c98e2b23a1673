//! A new INVITE transaction: admission, policy, targets and the dialog, then the server
//! transaction upstream ([`crate::txn::ist`]) and one client transaction per branch
//! ([`crate::txn::ict`]), forking in parallel, serially or round-robin.
//!
//! # Invariants
//! - A transaction is in the worker's table and claimed in the shared index
//!   ([`crate::txn::recent`]) before anything is sent for it; an untracked INVITE that another
//!   worker claimed at the same instant leaves no state here.
//! - The INVITE is kept once, as received, with its spans ([`wire::Kept`]): our own replies and
//!   later serial branches are built from that copy without parsing it again (without serial
//!   targets only its head and the lines a reply copies are kept). Each branch
//!   keeps its forwarded copy with the spans its CANCEL and ACK need, mapped from the edit
//!   list ([`wire::Edits::kept`]).
//! - What a state machine asks for is applied at once ([`Engine::apply_ist`],
//!   [`Engine::apply_ict`]), so every timer it arms has its key stored in the transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Release};

use super::forward::RecordRoute;
use super::request::RouteInfo;
use super::{Engine, ForkMode, Inbound, Output, Settings};
use crate::dialog::{Dialog, DlgEvent, Side, Socket};
use crate::stats::Counter;
use crate::txn::branch::{Branch, Kind};
use crate::txn::ict::Ict;
use crate::txn::ist::Ist;
use crate::txn::{BranchTxn, Cookie, InviteTxn, Upstream};
use crate::wire::{self, Edits, Message, Transport, ValidRequest};

/// Cookie used in branches of INVITEs whose dialog is not tracked.
pub(crate) const UNTRACKED: &[u8] = b"x";

/// The [`crate::txn::recent`] key of an INVITE: top Via branch, Call-ID, From-tag, CSeq.
pub(crate) fn recent_key_of(msg: &ValidRequest<'_, '_>) -> u64 {
    crate::txn::recent::key(
        msg.branch(),
        msg.call_id(),
        msg.from_tag_or_empty(),
        msg.cseq().num,
    )
}

impl Engine {
    /// Create the transaction (and dialog) for a new initial INVITE, answer 100 (or arm the
    /// Trying timer that sends it later if still needed) and fork.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_invite(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
        loop_hash: u32,
        spiral: Option<Arc<Dialog>>,
        settings: &Arc<Settings>,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        if !self.admit_invite(inb, msg, out) {
            return;
        }
        let mut decision = self.run_policy(inb, msg, true, spiral.as_deref());
        if self.policy_refused(&decision) {
            decision.release(&self.shared);
            return;
        }
        if let Some((code, reason)) = decision.reply.take() {
            let tag = self.local_tag(msg);
            self.reply(inb, msg, code, reason.as_bytes(), Some(&tag), &[], out);
            decision.release(&self.shared);
            return;
        }
        // Targets: the policy's group, else the default group for an R-URI of ours without
        // a Route to follow, else Route / R-URI.
        let group = decision.group.or_else(|| {
            (info.ruri_ours && info.next_route.is_none())
                .then_some(settings.default_group)
                .flatten()
        });
        let (mut targets, mode) = match group.and_then(|g| settings.groups.get(g)) {
            Some(g) if !g.targets.is_empty() => (g.targets.clone(), g.mode),
            _ => match self.next_hop(msg, info) {
                Ok(t) => (vec![t], ForkMode::Parallel),
                Err(e) => {
                    decision.release(&self.shared);
                    return self.reply_hop_error(inb, msg, e, out);
                }
            },
        };
        if mode == ForkMode::RoundRobin && !targets.is_empty() {
            let i = self.rr_pos % targets.len();
            self.rr_pos = self.rr_pos.wrapping_add(1);
            targets.swap(0, i);
            targets.truncate(1);
        }
        let track = decision.track.unwrap_or(settings.track_invites);
        if spiral.is_none()
            && track
            && settings.max_dialogs > 0
            && self.shared.table.len() >= settings.max_dialogs
        {
            decision.release(&self.shared);
            let tag = self.local_tag(msg);
            self.reply(inb, msg, 503, b"Too Many Dialogs", Some(&tag), &[], out);
            return;
        }
        let dialog = match spiral {
            Some(d) => {
                self.fire(
                    DlgEvent::Spiraled,
                    &d,
                    Some(msg.bytes()),
                    0,
                    Some(Side::Caller),
                );
                Some(d)
            }
            None if track => match self.create_dialog(inb, msg, settings, &mut decision) {
                Ok(d) => d,
                // Another worker is creating this INVITE's dialog right now (the request and
                // its retransmission arrived at once), or it is a retransmission that came
                // after its transaction: the dialog's worker absorbs it.
                Err(holder) => {
                    decision.release(&self.shared);
                    let owner = crate::dialog::id::worker_of(holder);
                    if owner == self.worker || owner >= self.shared.workers {
                        self.stats.inc(Counter::RetransAbsorbed);
                    } else {
                        out.handoff = Some(owner);
                    }
                    return;
                }
            },
            None => None,
        };
        let mut cookie_buf = [0u8; crate::dialog::id::COOKIE_LEN];
        let cookie = Cookie::new(match &dialog {
            Some(d) => self.encode_cookie(d.id, &mut cookie_buf),
            None => UNTRACKED,
        });
        let top_branch = msg.branch();
        let timers = settings.txn_timers();
        let serial_rest = if mode == ForkMode::Serial && targets.len() > 1 {
            targets.split_off(1)
        } else {
            Vec::new()
        };
        let n_targets = targets.len() + serial_rest.len();
        let up_reliable = inb.transport != Transport::Udp;
        let (ist, ist_actions) = Ist::start(now, up_reliable, settings.inv_100_delay_ms, &timers);
        // Our replies need only the INVITE's head and the lines they copy; serial forking
        // needs all of it for the next branch.
        let request = if serial_rest.is_empty() {
            wire::Kept::head(msg, wire::build::response_header)
        } else {
            wire::Kept::new(msg)
        };
        // The INVITE as kept, one forwarded copy per target (with the spans of the lines its
        // CANCEL and ACK copy), and the records.
        let per_branch = msg.bytes().len()
            + 8 * std::mem::size_of::<wire::Header>()
            + std::mem::size_of::<BranchTxn>();
        let held_bytes =
            request.heap_bytes() + n_targets * per_branch + std::mem::size_of::<InviteTxn>();
        let txn = InviteTxn {
            generation: 0,
            dialog: dialog.clone(),
            cookie,
            up: Upstream {
                socket: Socket {
                    addr: inb.src,
                    transport: inb.transport,
                    local: inb.local,
                    conn: inb.conn,
                },
                request: Some(request),
                branch: top_branch.to_vec(),
                last_provisional: Vec::new(),
                final_response: Vec::new(),
                ist,
                keys: [None; 3],
            },
            branches: Vec::with_capacity(targets.len()),
            pending_targets: serial_rest.into_iter().rev().collect(),
            best: None,
            cancelled: false,
            cancel_reason: Vec::new(),
            loop_hash,
            started_us: inb.now_us,
            to_tag: self.new_tag(),
            recent_key: recent_key_of(msg),
            held_bytes,
            timers,
        };
        let key = txn.recent_key;
        let slot = self.txns.insert(txn);
        self.stats.inc(Counter::TxnsOpened);
        self.stats.add(Counter::TxnBytesHeld, held_bytes as u64);
        let loc = crate::txn::recent::Loc {
            worker: self.worker as u16,
            slot,
            generation: self.txns.get(slot).map_or(0, |t| t.generation),
        };
        if let Err(other) = self.shared.invites.claim(key, loc, now)
            && dialog.is_none()
        {
            // An untracked INVITE another worker took at the same instant (the request and
            // its retransmission): that worker's transaction handles it.
            decision.release(&self.shared);
            self.remove_txn(slot);
            let owner = usize::from(other.worker);
            if owner != self.worker && owner < self.shared.workers {
                out.handoff = Some(owner);
            } else {
                self.stats.inc(Counter::RetransAbsorbed);
            }
            return;
        }
        if let Some(d) = &dialog
            && d.txn_slot.load(Acquire) == u32::MAX
        {
            d.txn_slot.store(slot, Release);
        }
        // RFC 3261 §17.2.1: 100 Trying unless the next hop answers within 200 ms. With a
        // delay, a provisional or final relayed before the Trying timer makes it unneeded,
        // which saves a datagram per call on fast paths.
        self.apply_ist(now, slot, ist_actions, Some((inb, msg.msg())), out);
        let mut started = 0;
        for t in targets {
            if self.start_branch(inb, msg, info, slot, t, &decision, out) {
                started += 1;
            }
        }
        if started == 0 {
            self.synthesize_final(now, slot, 500, b"Server Internal Error", out);
        }
    }

    /// Forward the INVITE to one more target as a new branch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_branch(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        info: &RouteInfo<'_>,
        slot: u32,
        target: Socket,
        decision: &super::dialogs::Decision,
        out: &mut Output,
    ) -> bool {
        let now = inb.now_ms;
        let Some(t) = self.txns.get(slot) else {
            return false;
        };
        let leg = t.branches.len() as u8;
        let cookie = t.cookie;
        let (lh, timers, cancelled) = (t.loop_hash, t.timers, t.cancelled);
        let tracked = cookie.as_bytes() != UNTRACKED;
        let br = Branch {
            kind: Kind::Dialog,
            worker: self.worker as u16,
            cookie: cookie.as_bytes(),
            slot,
            leg,
            hash: lh,
        };
        let mut edits = Edits::new(msg);
        let mut ok = info.apply(&mut edits);
        for (name, value) in decision.add_headers.iter() {
            ok &= edits.add_header(name, value).is_ok();
        }
        for name in decision.remove_headers.iter() {
            for h in msg.headers() {
                if h.name_span.get(msg.buf()).eq_ignore_ascii_case(name) {
                    ok &= edits.remove_header(h).is_ok();
                }
            }
        }
        let rr = RecordRoute::Add(tracked.then_some(cookie.as_bytes()));
        let range = if ok {
            self.forward_request(inb, msg, &mut edits, &br, target, rr, out)
        } else {
            None
        };
        let Some((s, e)) = range else {
            return false;
        };
        let written = out.buf.get(s..e).unwrap_or(&[]);
        // The spans of the copy as sent, from the edit list; parsed only if that fails.
        let mut forwarded = match edits.kept(written, wire::build::cancel_ack_header) {
            Some(k) => k,
            None => match wire::parse(written) {
                Ok(m) => wire::Kept::new(&m),
                Err(_) => return false,
            },
        };
        let (mut ict, actions) = Ict::start(now, target.transport != Transport::Udp, &timers);
        if !ict.resends() {
            // Sent once over a reliable transport: CANCEL and ACK need only the head.
            forwarded.drop_body();
        }
        let cancel = cancelled.then(|| ict.cancel(now, &timers));
        let Some(t) = self.txns.get_mut(slot) else {
            return false;
        };
        t.branches.push(BranchTxn {
            socket: target,
            forwarded: Some(forwarded),
            ict,
            keys: [None; 3],
            cancel_txn: None,
        });
        let leg = usize::from(leg);
        self.apply_ict(now, slot, leg, actions, None, out);
        if let Some(a) = cancel {
            self.apply_ict(now, slot, leg, a, None, out);
        }
        true
    }

    /// Start the next serial target from the kept upstream INVITE. False if none is left.
    pub(crate) fn next_serial_branch(&mut self, now: u64, slot: u32, out: &mut Output) -> bool {
        let Some(t) = self.txns.get_mut(slot) else {
            return false;
        };
        if t.cancelled {
            return false;
        }
        let Some(target) = t.pending_targets.pop() else {
            return false;
        };
        let up = t.up.socket;
        // A copy of the kept INVITE for as long as the branch is forwarded from it (the
        // table must be free meanwhile); serial forking only.
        let Some(req) = t.up.request.clone() else {
            return false;
        };
        let msg = req.view();
        let info = self.route_info(&msg);
        let inb = self.upstream_inbound(now, up, req.bytes());
        let decision = super::dialogs::Decision::default();
        self.start_branch(&inb, &msg, &info, slot, target, &decision, out)
    }

    /// The kept upstream INVITE `req` as if it had just arrived from `up`, for work a timer
    /// or a later reply does on the original request (the held-back 100, the next serial
    /// branch, our own final).
    pub(crate) fn upstream_inbound<'b>(&self, now: u64, up: Socket, req: &'b [u8]) -> Inbound<'b> {
        Inbound {
            now_ms: now,
            now_us: self.now_us,
            src: up.addr,
            local: up.local,
            transport: up.transport,
            conn: up.conn,
            bytes: req,
        }
    }
}
