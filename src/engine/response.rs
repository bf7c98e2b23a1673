//! Responses and the INVITE transaction: starting branches, relaying responses by Via,
//! forked early dialogs, 2xx confirmation, best-response selection (RFC 3261 §16.7), CANCEL,
//! and ACK generation for non-2xx finals.
//!
//! Invariants: only the owning worker touches a transaction; 2xx responses are always
//! relayed (unless `end_on_race` ends a second fork's 2xx here); a non-2xx final goes
//! upstream once, after every branch completed.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use super::forward::{RecordRoute, is_broadcast, via_target};
use super::generated::NewRequest;
use super::request::RouteInfo;
use super::timers::TimerItem;
use super::{Engine, ForkMode, Inbound, Output, Settings};
use crate::dialog::record::{CalleeLeg, Dialog};
use crate::dialog::{DlgEvent, DlgState, EndReason, Side, Socket};
use crate::stats::{Counter, LatencyMetric};
use crate::txn::branch::{self, Branch, Kind};
use crate::txn::{BranchState, BranchTxn, InviteTxn, LINGER, Upstream, better_final};
use crate::wire::{self, Edits, Message, Method, Transport};

/// Cookie used in branches of INVITEs whose dialog is not tracked.
pub(crate) const UNTRACKED: &[u8] = b"x";

/// The [`crate::txn::recent`] key of an INVITE: top Via branch, Call-ID, From-tag, CSeq.
pub(crate) fn recent_key_of(msg: &Message<'_>) -> u64 {
    crate::txn::recent::key(
        msg.top_via().and_then(|v| v.branch()).unwrap_or(&[]),
        msg.call_id().unwrap_or(&[]),
        msg.from_tag().unwrap_or(&[]),
        msg.cseq().map_or(0, |c| c.num),
    )
}

impl Engine {
    /// Create the transaction (and dialog) for a new initial INVITE, answer 100 (or arm the
    /// Trying timer that sends it later if still needed) and fork.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_invite(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
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
        // Targets: a target group chosen by policy, else Route / R-URI.
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
            targets = vec![targets[i]];
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
        let cookie: Vec<u8> = match &dialog {
            Some(d) => self.encode_cookie(d.id, &mut cookie_buf).to_vec(),
            None => UNTRACKED.to_vec(),
        };
        let top_branch = msg.top_via().and_then(|v| v.branch()).unwrap_or(&[]);
        let timers = settings.txn_timers();
        let serial_rest = if mode == ForkMode::Serial && targets.len() > 1 {
            targets.split_off(1)
        } else {
            Vec::new()
        };
        let serial_len = serial_rest.len();
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
                request: msg.bytes().to_vec(),
                branch: top_branch.to_vec(),
                last_provisional: Vec::new(),
                final_response: Vec::new(),
                final_code: 0,
                g_interval: timers.t1,
                timer_g: None,
                acked: false,
                trying_sent: false,
            },
            branches: Vec::with_capacity(targets.len()),
            pending_targets: serial_rest.into_iter().rev().collect(),
            best: Vec::new(),
            best_code: 0,
            got_2xx: false,
            cancelled: false,
            cancel_reason: Vec::new(),
            loop_hash,
            started_us: inb.now_us,
            first_prov_seen: false,
            linger: None,
            to_tag: self.new_tag(),
            // The INVITE as received and one forwarded copy per target, and the records.
            recent_key: recent_key_of(msg),
            held_bytes: msg.bytes().len() * (1 + targets.len() + serial_len)
                + std::mem::size_of::<InviteTxn>()
                + (targets.len() + serial_len) * std::mem::size_of::<crate::txn::BranchTxn>(),
            timers,
        };
        let held = txn.held_bytes;
        let key = txn.recent_key;
        let slot = self.txns.insert(txn);
        self.stats.inc(Counter::TxnsOpened);
        self.stats.add(Counter::TxnBytesHeld, held as u64);
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
            if let Some(t) = self.txns.remove(slot) {
                self.stats.inc(Counter::TxnsClosed);
                self.stats
                    .add(Counter::TxnBytesReleased, t.held_bytes as u64);
            }
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
        if settings.inv_100_delay_ms == 0 {
            self.reply(inb, msg, 100, b"Trying", None, &[], out);
            if let Some(t) = self.txns.get_mut(slot) {
                t.up.trying_sent = true;
            }
        } else if let Some(t) = self.txns.get_mut(slot) {
            let generation = t.generation;
            self.wheel.insert(
                now + settings.inv_100_delay_ms,
                TimerItem::Trying { slot, generation },
            );
        }
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
        let Some(t) = self.txns.get_mut(slot) else {
            return false;
        };
        let leg = t.branches.len() as u8;
        let generation = t.generation;
        let timers = t.timers;
        let cookie = std::mem::take(&mut t.cookie);
        let lh = t.loop_hash;
        let tracked = cookie != UNTRACKED;
        let br = Branch {
            kind: Kind::Dialog,
            worker: self.worker as u16,
            cookie: &cookie,
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
        let rr = RecordRoute::Add(if tracked { Some(&cookie[..]) } else { None });
        let range = if ok {
            self.forward_request(inb, msg, &mut edits, &br, target, rr, out)
        } else {
            None
        };
        let Some((s, e)) = range else {
            if let Some(t) = self.txns.get_mut(slot) {
                t.cookie = cookie;
            }
            return false;
        };
        let forwarded = out.buf.get(s..e).unwrap_or(&[]).to_vec();
        let timer_a = (target.transport == Transport::Udp).then(|| {
            self.wheel.insert(
                now + timers.t1,
                TimerItem::A {
                    slot,
                    generation,
                    leg,
                },
            )
        });
        let timer_bc = Some(self.wheel.insert(
            now + timers.timer_b,
            TimerItem::Bc {
                slot,
                generation,
                leg,
            },
        ));
        if let Some(t) = self.txns.get_mut(slot) {
            t.cookie = cookie;
            t.branches.push(BranchTxn {
                socket: target,
                forwarded,
                state: BranchState::Calling,
                final_code: 0,
                a_interval: timers.t1,
                timer_a,
                timer_bc,
                cancel_wanted: t.cancelled,
                cancel_sent: false,
                cancel_txn: None,
            });
        }
        true
    }

    /// Start the next serial target from the stored upstream INVITE. False if none is left.
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
        let req = std::mem::take(&mut t.up.request);
        let up = t.up.socket;
        let started = match wire::parse(&req) {
            Ok(msg) => {
                let info = self.route_info(&msg);
                let inb = self.upstream_inbound(now, up, &req);
                let decision = super::dialogs::Decision::default();
                self.start_branch(&inb, &msg, &info, slot, target, &decision, out)
            }
            Err(_) => false,
        };
        if let Some(t) = self.txns.get_mut(slot) {
            t.up.request = req;
        }
        started
    }

    /// An INVITE retransmission from upstream: replay the last provisional or the final.
    pub(crate) fn absorb_invite_retransmission(
        &mut self,
        inb: &Inbound<'_>,
        slot: u32,
        out: &mut Output,
    ) {
        self.stats.inc(Counter::RetransAbsorbed);
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let bytes = if !t.up.final_response.is_empty() {
            &t.up.final_response
        } else if !t.up.last_provisional.is_empty() {
            &t.up.last_provisional
        } else {
            // Only our 100 so far (or not even that, while it is held back): answer 100.
            t.up.trying_sent = true;
            let req = std::mem::take(&mut t.up.request);
            if let Ok(m) = wire::parse(&req) {
                self.reply(inb, &m, 100, b"Trying", None, &[], out);
            }
            if let Some(t) = self.txns.get_mut(slot) {
                t.up.request = req;
            }
            return;
        };
        out.push_bytes(bytes, inb.src, inb.transport, inb.local, inb.conn);
        self.stats.inc(Counter::RetransSent);
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
        let reason = std::mem::take(&mut t.cancel_reason);
        let mut cancel = None;
        if let Some(b) = t.branches.get_mut(leg) {
            match b.state {
                BranchState::Completed => {}
                BranchState::Calling => b.cancel_wanted = true,
                BranchState::Proceeding if !b.cancel_sent => {
                    b.cancel_sent = true;
                    if let Ok(m) = wire::parse(&b.forwarded) {
                        let mut bytes = Vec::with_capacity(b.forwarded.len().min(1024));
                        if wire::build::cancel(&m, &mut bytes).is_ok() {
                            if !reason.is_empty() {
                                add_reason(&mut bytes, 0, &reason);
                            }
                            cancel = Some((
                                bytes,
                                Socket {
                                    conn: None,
                                    ..b.socket
                                },
                            ));
                        }
                    }
                }
                BranchState::Proceeding => {}
            }
        }
        if let Some(t) = self.txns.get_mut(slot) {
            t.cancel_reason = reason;
        }
        // The CANCEL is a client transaction of its own: retransmitted over UDP until a final
        // response or Timer F (RFC 3261 §9.1, §17.1.2).
        if let Some((bytes, dst)) = cancel {
            let txn = self.reserve_generated();
            let req = NewRequest {
                txn,
                bytes,
                dst,
                dialog: None,
                method: Method::Cancel,
            };
            self.start_generated(now, req, out);
            if let Some(b) = self
                .txns
                .get_mut(slot)
                .and_then(|t| t.branches.get_mut(leg))
            {
                b.cancel_txn = Some(txn);
            }
        }
    }

    /// Entry point for responses.
    pub(crate) fn on_response(&mut self, inb: &Inbound<'_>, msg: &Message<'_>, out: &mut Output) {
        self.stats.inc(Counter::ResponsesIn);
        if let Err(e) = wire::validate_response(msg) {
            self.stats.inc_parse_error(e.kind_index());
            self.warn_malformed(inb, e, msg.call_id());
            return;
        }
        let Some(top) = msg.top_via() else {
            return self.stats.inc(Counter::Dropped);
        };
        let ours = self.shared.locals.is_ours(top.host, top.port);
        // A branch naming a worker we do not have was not written by this proxy instance.
        let workers = self.shared.workers;
        let Some(b) = top
            .branch()
            .and_then(branch::parse)
            .filter(|b| ours && usize::from(b.worker) < workers)
        else {
            self.stats.inc(Counter::NotOurs);
            return;
        };
        let method = msg.cseq().map(|c| c.method).unwrap_or(Method::Other);
        match (b.kind, method) {
            (Kind::Dialog, Method::Invite) => {
                if usize::from(b.worker) != self.worker {
                    out.handoff = Some(usize::from(b.worker));
                    return;
                }
                if self.txns.get_checked(b.slot, b.cookie).is_some() {
                    self.on_invite_response(inb, msg, b.slot, usize::from(b.leg), out);
                } else {
                    // The transaction is gone: relay (late 2xx retransmissions matter).
                    self.relay_response(msg, None, out);
                }
            }
            // Replies to CANCELs we generated: they end the CANCEL's client transaction.
            (Kind::Dialog, Method::Cancel) => {
                if usize::from(b.worker) != self.worker {
                    out.handoff = Some(usize::from(b.worker));
                    return;
                }
                let cancel = self
                    .txns
                    .get_checked(b.slot, b.cookie)
                    .and_then(|t| t.branches.get(usize::from(b.leg)))
                    .and_then(|br| br.cancel_txn);
                match cancel {
                    Some(c) => self.on_generated_response(inb.now_ms, msg, c, method, out),
                    None => self.stats.inc(Counter::Absorbed),
                }
            }
            (Kind::Dialog, _) => self.stats.inc(Counter::Absorbed),
            (Kind::Within, _) => {
                self.on_response_within(msg, b.cookie, method, out);
                let worker = usize::from(b.worker);
                self.relay_response(msg, Some(worker), out);
            }
            (Kind::Stateless, _) => {
                let worker = usize::from(b.worker);
                self.relay_response(msg, Some(worker), out);
            }
            (Kind::Bridge, _) => {
                if usize::from(b.worker) != self.worker {
                    out.handoff = Some(usize::from(b.worker));
                } else {
                    self.on_bridge_response(msg, b.slot, out);
                }
            }
            // A response to a request we originated: it ends here, never relayed.
            (Kind::Client, _) => {
                if usize::from(b.worker) != self.worker {
                    out.handoff = Some(usize::from(b.worker));
                } else {
                    self.on_generated_response(inb.now_ms, msg, (b.slot, b.hash), method, out);
                }
            }
        }
    }

    /// Remove our Via and write the response for the next Via into `into`. Returns where it
    /// goes, or `None` when there is no next Via (a reply to our own request) or it is bad.
    pub(crate) fn strip_via(
        &mut self,
        msg: &Message<'_>,
        into: &mut Vec<u8>,
    ) -> Option<(std::net::SocketAddr, Transport)> {
        let next = msg.second_via()?;
        if is_broadcast(&next) {
            self.stats.inc(Counter::Dropped);
            return None;
        }
        let dst = via_target(&next)?;
        let transport = Transport::from_token(next.transport).unwrap_or(Transport::Udp);
        let mut edits = Edits::new(msg);
        edits.remove_top_via().ok()?;
        let start = into.len();
        if edits.write(into).is_err() {
            into.truncate(start);
            return None;
        }
        Some((dst, transport))
    }

    /// Relay a response upstream by Via. `conn_owner` is the worker that forwarded the
    /// request (the owner of a TCP connection upstream).
    pub(crate) fn relay_response(
        &mut self,
        msg: &Message<'_>,
        conn_owner: Option<usize>,
        out: &mut Output,
    ) -> bool {
        if let Some(next) = msg.second_via() {
            let t = Transport::from_token(next.transport).unwrap_or(Transport::Udp);
            if t == Transport::Tcp && conn_owner.is_some_and(|w| w != self.worker) {
                out.handoff = conn_owner;
                return false;
            }
        }
        let start = out.buf.len();
        let mut buf = std::mem::take(&mut out.buf);
        let r = self.strip_via(msg, &mut buf);
        out.buf = buf;
        match r {
            Some((dst, transport)) => {
                let local = self.listener_for(transport, dst);
                out.push_from(start, dst, transport, local, None);
                self.stats.inc(Counter::Relayed);
                true
            }
            None => {
                out.buf.truncate(start);
                false
            }
        }
    }

    /// A response for our INVITE transaction in `slot`, branch `leg`.
    pub(crate) fn on_invite_response(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        slot: u32,
        leg: usize,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        let code = msg.code().unwrap_or(0);
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let generation = t.generation;
        let Some(b) = t.branches.get_mut(leg) else {
            return;
        };
        let was = b.state;
        // Stop Timer A on any response; a provisional swaps Timer B for Timer C.
        let mut cancel_keys = [None, None];
        if code < 200 {
            if was == BranchState::Calling {
                b.state = BranchState::Proceeding;
                cancel_keys = [b.timer_a.take(), b.timer_bc.take()];
                b.timer_bc = Some(self.wheel.insert(
                    now + t.timers.timer_c,
                    TimerItem::Bc {
                        slot,
                        generation,
                        leg: leg as u8,
                    },
                ));
            }
        } else if was != BranchState::Completed {
            b.state = BranchState::Completed;
            b.final_code = code;
            cancel_keys = [b.timer_a.take(), b.timer_bc.take()];
        }
        let cancel_now = code < 200 && was == BranchState::Calling && b.cancel_wanted;
        for k in cancel_keys.into_iter().flatten() {
            self.wheel.cancel(k);
        }
        if cancel_now {
            if let Some(b) = self
                .txns
                .get_mut(slot)
                .and_then(|t| t.branches.get_mut(leg))
            {
                b.cancel_wanted = false;
            }
            self.cancel_branch(now, slot, leg, out);
        }
        match code {
            100 => {}
            101..=199 => self.on_provisional(msg, slot, leg, was, out),
            200..=299 => self.on_2xx(inb, msg, slot, leg, out),
            _ => self.on_negative(inb, msg, slot, leg, code, was, out),
        }
    }

    fn on_provisional(
        &mut self,
        msg: &Message<'_>,
        slot: u32,
        leg: usize,
        was: BranchState,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if was == BranchState::Completed || t.up.final_code != 0 {
            self.stats.inc(Counter::Absorbed);
            return;
        }
        let dialog = t.dialog.clone();
        let first = !t.first_prov_seen;
        t.first_prov_seen = true;
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
                    msg.code().unwrap_or(0),
                    Some(Side::Callee),
                );
            }
        }
        let start = out.buf.len();
        if self.relay_response(msg, None, out) {
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
            }
            let metric = first.then_some(LatencyMetric::InviteToProvisional);
            self.response_forwarded(metric, started, dialog.as_deref(), msg);
        }
    }

    /// A reply to the INVITE went upstream: record its latency (when `metric` is given) and
    /// fire RESPONSE_FWDED.
    fn response_forwarded(
        &mut self,
        metric: Option<LatencyMetric>,
        started_us: u64,
        dialog: Option<&Dialog>,
        msg: &Message<'_>,
    ) {
        if let Some(m) = metric {
            self.latency
                .record(m, self.now_us.saturating_sub(started_us));
        }
        if let Some(d) = dialog {
            let code = msg.code().unwrap_or(0);
            self.fire(
                DlgEvent::ResponseFwded,
                d,
                Some(msg.bytes()),
                code,
                Some(Side::Callee),
            );
        }
    }

    fn on_2xx(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        slot: u32,
        leg: usize,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let first_2xx = !t.got_2xx;
        t.got_2xx = true;
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
                    // The transaction still ends: a first 2xx arms its linger here too, or it
                    // would stay with no timer (found by the engine fuzz target).
                    if first_2xx
                        && let Some(t) = self.txns.get_mut(slot)
                        && t.linger.is_none()
                    {
                        let generation = t.generation;
                        t.linger = Some(
                            self.wheel
                                .insert(now + LINGER, TimerItem::Linger { slot, generation }),
                        );
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
            let n = self
                .txns
                .get_mut(slot)
                .map(|t| t.branches.len())
                .unwrap_or(0);
            for other in (0..n).filter(|&o| o != leg) {
                self.cancel_branch(now, slot, other, out);
            }
            if let Some(t) = self.txns.get_mut(slot) {
                t.up.final_code = msg.code().unwrap_or(200);
                t.pending_targets = Vec::new();
                // The transaction lingers only to absorb late responses of other forks: the
                // upstream request, the replayed provisional and the winner's copy are not
                // needed any more, so a confirmed call holds no message copies.
                t.up.request = Vec::new();
                t.up.last_provisional = Vec::new();
                if let Some(b) = t.branches.get_mut(leg) {
                    b.forwarded = Vec::new();
                }
                let generation = t.generation;
                if t.linger.is_none() {
                    t.linger = Some(
                        self.wheel
                            .insert(now + LINGER, TimerItem::Linger { slot, generation }),
                    );
                }
            }
        }
    }

    /// Confirm the dialog with the winning 2xx.
    fn confirm(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        msg: &Message<'_>,
        socket: Option<Socket>,
        settings: &Settings,
        out: &mut Output,
    ) {
        let tag = msg.to_tag().unwrap_or(&[]);
        let to = msg.header_value(wire::HeaderName::To).unwrap_or(&[]);
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
                msg.code().unwrap_or(200),
                Some(Side::Callee),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_negative(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        slot: u32,
        leg: usize,
        code: u16,
        was: BranchState,
        out: &mut Output,
    ) {
        let now = inb.now_ms;
        // ACK the non-2xx final downstream (every time: retransmissions too).
        if let Some(b) = self.txns.get_mut(slot).and_then(|t| t.branches.get(leg)) {
            let sock = b.socket;
            if let Ok(inv) = wire::parse(&b.forwarded) {
                let start = out.buf.len();
                if wire::build::ack_for_non2xx(&inv, msg, &mut out.buf).is_ok() {
                    out.push_from(start, sock.addr, sock.transport, sock.local, None);
                } else {
                    out.buf.truncate(start);
                }
            }
        }
        if was == BranchState::Completed {
            self.stats.inc(Counter::RetransAbsorbed);
            return;
        }
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if t.got_2xx || t.up.final_code != 0 {
            return;
        }
        if better_final(code, t.best_code) {
            let mut best = std::mem::take(&mut t.best);
            best.clear();
            if self.strip_via(msg, &mut best).is_some()
                && let Some(t) = self.txns.get_mut(slot)
            {
                t.best_code = code;
                t.best = best;
            }
        }
        if code >= 600 {
            self.cancel_txn(now, slot, b"", out);
        }
        self.maybe_finish(now, slot, out);
    }

    /// Every branch completed and no 2xx: try the next serial target, or send the best final
    /// upstream and end the dialog.
    pub(crate) fn maybe_finish(&mut self, now: u64, slot: u32, out: &mut Output) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if t.got_2xx || t.up.final_code != 0 {
            return;
        }
        if t.branches.iter().any(|b| b.state != BranchState::Completed) {
            return;
        }
        if t.best_code < 600 && self.next_serial_branch(now, slot, out) {
            return;
        }
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if t.best.is_empty() {
            let (code, reason): (u16, &[u8]) = if t.cancelled {
                (487, b"Request Terminated")
            } else {
                (408, b"Request Timeout")
            };
            return self.synthesize_final(now, slot, code, reason, out);
        }
        let mut code = t.best_code;
        let mut best = std::mem::take(&mut t.best);
        if code == 503 {
            // RFC 3261 §16.7 step 6: a 503 chosen as the best response goes upstream as 500,
            // or the caller would take this proxy for the overloaded one.
            best = status_500(best);
            code = 500;
        }
        self.send_final_upstream(now, slot, code, best, out);
    }

    /// The stored upstream INVITE `req` as if it had just arrived from `up`, for work a timer
    /// or a later reply does on the original request (the held-back 100, the next serial
    /// branch).
    fn upstream_inbound<'b>(&self, now: u64, up: Socket, req: &'b [u8]) -> Inbound<'b> {
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

    /// Timer "Trying": the held-back 100 goes upstream unless a provisional or final reply
    /// went first (or a retransmission already got one).
    pub(crate) fn on_timer_trying(
        &mut self,
        now: u64,
        slot: u32,
        generation: u32,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_current(slot, generation) else {
            return;
        };
        // Every final (2xx included) sets `final_code`; a 2xx also drops the stored request.
        let answered = t.up.trying_sent
            || t.up.final_code != 0
            || !t.up.last_provisional.is_empty()
            || t.up.request.is_empty();
        if answered {
            return;
        }
        t.up.trying_sent = true;
        let up = t.up.socket;
        let req = std::mem::take(&mut t.up.request);
        if let Ok(m) = wire::parse(&req) {
            let inb = self.upstream_inbound(now, up, &req);
            self.reply(&inb, &m, 100, b"Trying", None, &[], out);
        }
        if let Some(t) = self.txns.get_mut(slot) {
            t.up.request = req;
        }
    }

    /// Build our own final response from the stored INVITE and send it upstream.
    pub(crate) fn synthesize_final(
        &mut self,
        now: u64,
        slot: u32,
        code: u16,
        reason: &[u8],
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let req = std::mem::take(&mut t.up.request);
        let tag = t.to_tag;
        let mut bytes = Vec::new();
        if let Ok(m) = wire::parse(&req) {
            wire::build::response(&m, code, reason, Some(&tag), &[], &mut bytes);
        }
        if let Some(t) = self.txns.get_mut(slot) {
            t.up.request = req;
        }
        self.stats.inc_reply(code);
        self.send_final_upstream(now, slot, code, bytes, out);
    }

    /// Send the final non-2xx response upstream, arm Timer G/H, end the dialog.
    fn send_final_upstream(
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
        let up = t.up.socket;
        let generation = t.generation;
        let started = t.started_us;
        let cancelled = t.cancelled;
        let dialog = t.dialog.clone();
        t.up.final_code = code;
        t.up.final_response = bytes;
        out.push_bytes(
            &t.up.final_response,
            up.addr,
            up.transport,
            up.local,
            up.conn,
        );
        if up.transport == Transport::Udp {
            t.up.g_interval = t.timers.t1;
            t.up.timer_g = Some(
                self.wheel
                    .insert(now + t.timers.t1, TimerItem::G { slot, generation }),
            );
        }
        if t.linger.is_none() {
            t.linger = Some(self.wheel.insert(
                now + t.timers.t1_x64(),
                TimerItem::Linger { slot, generation },
            ));
        }
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

    /// Timer G: retransmit the non-2xx final upstream until the ACK.
    pub(crate) fn on_timer_g(&mut self, now: u64, slot: u32, generation: u32, out: &mut Output) {
        let Some(t) = self.txns.get_current(slot, generation) else {
            return;
        };
        t.up.timer_g = None;
        if t.up.acked || t.up.final_response.is_empty() {
            return;
        }
        let up = t.up.socket;
        out.push_bytes(
            &t.up.final_response,
            up.addr,
            up.transport,
            up.local,
            up.conn,
        );
        t.up.g_interval = t.up.g_interval.saturating_mul(2).min(t.timers.t2);
        let next = t.up.g_interval;
        t.up.timer_g = Some(
            self.wheel
                .insert(now + next, TimerItem::G { slot, generation }),
        );
        self.stats.inc(Counter::RetransSent);
    }
}

/// Add a `Reason` header to the message written at `buf[start..]`.
/// `resp` with its status line replaced by `SIP/2.0 500 Server Internal Error`.
fn status_500(resp: Vec<u8>) -> Vec<u8> {
    let Some(eol) = memchr::memchr(b'\n', &resp) else {
        return resp;
    };
    let mut out = Vec::with_capacity(resp.len() + 16);
    out.extend_from_slice(b"SIP/2.0 500 Server Internal Error\r\n");
    out.extend_from_slice(resp.get(eol + 1..).unwrap_or(&[]));
    out
}

fn add_reason(buf: &mut Vec<u8>, start: usize, reason: &[u8]) {
    let msg = buf.split_off(start);
    let ok = match wire::parse(&msg) {
        Ok(m) => {
            let mut e = Edits::new(&m);
            e.add_header(b"Reason", reason).is_ok() && e.write(buf).is_ok()
        }
        Err(_) => false,
    };
    if !ok {
        buf.truncate(start);
        buf.extend_from_slice(&msg);
    }
}
