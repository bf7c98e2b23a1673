//! Requests: validation, Route pre-processing (RFC 3261 §16.3–16.4), then the initial INVITE
//! path (dialog creation, forking), CANCEL, non-2xx ACK, sequential requests and stateless
//! forwarding.
//!
//! Invariants: every request either gets a reply, is forwarded, is absorbed by its
//! transaction, is handed to the owning worker, or is dropped and counted. Past validation a
//! handler takes the [`ValidRequest`], never the bare message: Call-ID, From, To, CSeq, the top
//! Via and its branch and the Request-URI are read once, by validation, and are never
//! `Option`s here (only flood control runs before it, on the bare message).

use super::forward::{HopError, RecordRoute, uri_target, uri_target_parsed};
use super::invite::recent_key_of;
use super::{Engine, Inbound, Output};
use crate::dialog::{DlgEvent, DlgState, EndReason, Side, Socket};
use crate::stats::Counter;
use crate::txn::branch::{self, Branch, Kind};
use crate::txn::recent::Found;
use crate::wire::{self, Edits, HeaderName, Message, Method, ParseError, ValidRequest};

/// Where the INVITE transaction of a request (an INVITE, its CANCEL, the ACK of its non-2xx
/// final) is: at `(owner worker, slot)`, freed less than `txn::recent::REMEMBER_MS` ago, or
/// unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnOf {
    /// Live, on this worker or another.
    At(usize, u32),
    /// Freed recently (RFC 6026 Accepted).
    Finished,
    /// No such transaction.
    Unknown,
}

/// What Route pre-processing found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RouteInfo<'a> {
    /// How many top Route entries are ours (removed when forwarding).
    pub ours: usize,
    /// The dialog cookie from our Route entry (or strict-routed R-URI).
    pub cookie: Option<&'a [u8]>,
    /// URI of the next Route entry that is not ours, if any.
    pub next_route: Option<&'a [u8]>,
    /// The R-URI was ours and addressed to us (no strict-router fixup applies).
    pub ruri_ours: bool,
    /// RFC 3261 §16.4: the R-URI is a Record-Route URI of ours (with `lr`) and the previous
    /// hop was a strict router; the request really goes to the URI of the *last* Route entry,
    /// which replaces the R-URI when forwarding.
    pub strict: Option<&'a [u8]>,
}

impl RouteInfo<'_> {
    /// Route edits for forwarding: strict-router fixup, then our own top Route entries.
    pub(crate) fn apply(&self, edits: &mut Edits<'_, '_>) -> bool {
        if self.strict.is_some() && edits.strict_route_fixup().is_err() {
            return false;
        }
        (0..self.ours).all(|_| edits.remove_top_route().is_ok())
    }
}

impl Engine {
    /// A message that did not parse.
    pub(crate) fn on_parse_error(&mut self, inb: &Inbound<'_>, e: ParseError, out: &mut Output) {
        self.stats.inc_parse_error(e.kind_index());
        self.warn_malformed(inb, e, None);
        if inb.bytes.starts_with(b"SIP/") {
            return;
        }
        if e != ParseError::BadVersion {
            // Too many headers, a header too long, NUL or a bare CR: a request that can still
            // be answered gets its error status (513, 400), never silence.
            if let Some(m) = wire::parse_for_reply(inb.bytes, e)
                && m.is_request()
                && m.method() != Some(Method::Ack)
            {
                self.reply(inb, &m, e.status(), e.reason().as_bytes(), None, &[], out);
            }
            return;
        }
        // Answer 505 to a request with a bad version: patch the version and re-parse so the
        // reply can copy Via, From, To, Call-ID and CSeq.
        let Some(eol) = memchr::memchr(b'\n', inb.bytes) else {
            return;
        };
        let line = inb.bytes.get(..eol).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(sp) = memchr::memrchr(b' ', line) else {
            return;
        };
        let mut patched = std::mem::take(&mut self.scratch);
        patched.clear();
        patched.extend_from_slice(inb.bytes.get(..sp + 1).unwrap_or(&[]));
        patched.extend_from_slice(b"SIP/2.0");
        patched.extend_from_slice(inb.bytes.get(line.len()..).unwrap_or(&[]));
        if let Ok(m) = wire::parse(&patched)
            && m.is_request()
            && m.method() != Some(Method::Ack)
        {
            self.reply(inb, &m, 505, b"Version Not Supported", None, &[], out);
        }
        self.scratch = patched;
    }

    /// Route pre-processing: which top Route entries are ours, the dialog cookie, the next hop.
    pub(crate) fn route_info<'a>(&self, msg: &Message<'a>) -> RouteInfo<'a> {
        let settings = self.shared.settings.load();
        let rr_param = settings.rr_param.as_bytes();
        let mut info = RouteInfo::default();
        let ruri = msg.parsed_request_uri().ok();
        let ruri_ours = ruri
            .as_ref()
            .is_some_and(|u| self.shared.locals.is_ours(u.host, u.port));
        // Strict-router fixup (§16.4): our lr URI in the R-URI and a Route set to follow.
        let nroutes = msg.routes().count();
        let strict = ruri_ours && nroutes > 0 && ruri.as_ref().is_some_and(|u| u.has_lr());
        for (i, r) in msg.routes().enumerate() {
            if strict && i + 1 == nroutes {
                info.strict = Some(r.uri);
                break;
            }
            let Ok(u) = r.parsed_uri() else {
                break;
            };
            if self.shared.locals.is_ours(u.host, u.port) {
                info.ours += 1;
                if info.cookie.is_none() {
                    info.cookie = u.param(rr_param).flatten();
                }
                continue;
            }
            info.next_route = Some(r.uri);
            break;
        }
        if let Some(u) = ruri.filter(|_| ruri_ours) {
            info.ruri_ours = !strict;
            if info.cookie.is_none() {
                info.cookie = u.param(rr_param).flatten();
            }
        }
        info
    }

    /// Entry point for requests.
    pub(crate) fn on_request(&mut self, inb: &Inbound<'_>, msg: &Message<'_>, out: &mut Output) {
        self.stats.inc(Counter::RequestsIn);
        let method = msg.method().unwrap_or(Method::Other);
        // Flood control counts every out-of-dialog request, valid or not, before any work.
        if !self.flood_gate(inb, msg, method, out) {
            return;
        }
        let msg = match wire::validate_request(msg) {
            Ok(v) => v,
            Err(e) => {
                self.stats.inc_parse_error(e.kind_index());
                self.warn_malformed(inb, e, msg.call_id());
                if method != Method::Ack {
                    self.reply(inb, msg, e.status(), e.reason().as_bytes(), None, &[], out);
                }
                return;
            }
        };
        // From here on the request is trusted: Call-ID, From, To, CSeq, the top Via and the
        // Request-URI are fields of `msg`, read once by validation.
        let msg = &msg;
        // We support no extensions a proxy must understand (RFC 3261 §16.3 step 4).
        if method != Method::Ack
            && method != Method::Cancel
            && let Some(pr) = msg.header_value(HeaderName::ProxyRequire)
            && !pr.is_empty()
        {
            self.reply(
                inb,
                msg,
                420,
                b"Bad Extension",
                None,
                &[(b"Unsupported", pr)],
                out,
            );
            return;
        }
        let info = self.route_info(msg);
        // Requests to the Contact of a call the proxy originated (dlg_bridge).
        if info.ruri_ours && info.next_route.is_none() && self.on_bridge_request(inb, msg, out) {
            return;
        }
        let to_tag = msg.to_tag();
        // OPTIONS to the proxy itself: keep-alive probes.
        if method == Method::Options
            && to_tag.is_none()
            && info.ruri_ours
            && info.next_route.is_none()
            && info.cookie.is_none()
        {
            let tag = self.local_tag(msg);
            self.reply(
                inb,
                msg,
                200,
                b"OK",
                Some(&tag),
                &[
                    (b"Allow", b"INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE"),
                    (b"Accept", b"application/sdp"),
                ],
                out,
            );
            return;
        }
        if let Some(0) = msg.max_forwards() {
            if method != Method::Ack {
                self.reply(inb, msg, 483, b"Too Many Hops", None, &[], out);
            }
            return;
        }
        match (method, to_tag) {
            (Method::Cancel, _) => self.on_cancel(inb, msg, &info, out),
            (Method::Ack, _) if info.cookie.is_none() => self.on_plain_ack(inb, msg, &info, out),
            (_, Some(_)) => self.on_sequential(inb, msg, method, &info, out),
            (_, None) if info.cookie.is_some() && method != Method::Invite => {
                self.on_sequential(inb, msg, method, &info, out)
            }
            (Method::Invite, None) => self.on_invite(inb, msg, &info, out),
            _ => self.on_initial_other(inb, msg, method, &info, out),
        }
    }

    /// An initial request other than INVITE (OPTIONS, REGISTER, MESSAGE, SUBSCRIBE ...): the
    /// policy may answer it or pick a target group; then it goes statelessly.
    fn on_initial_other(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        method: Method,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        let (mut decision, _) = self.evaluate_policy(inb, msg, true, None);
        // No dialog is created for these: memberships taken by rules are released now.
        decision.release(&self.shared);
        if self.policy_refused(&decision) {
            return;
        }
        if let Some((code, reason)) = decision.reply.take() {
            let tag = self.local_tag(msg);
            self.reply(inb, msg, code, reason.as_bytes(), Some(&tag), &[], out);
            return;
        }
        let settings = self.shared.settings.load();
        let target = decision
            .group
            .and_then(|g| settings.groups.get(g))
            .and_then(|g| g.targets.first())
            .copied();
        self.forward_stateless_to(inb, msg, method, info, None, target, out);
    }

    /// The next hop of a request after our own Route entries are removed.
    pub(crate) fn next_hop(
        &self,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
    ) -> Result<Socket, HopError> {
        let (addr, transport) = match info.next_route.or(info.strict) {
            Some(r) => uri_target(r)?,
            None if info.ruri_ours => {
                let s = self.shared.settings.load();
                let t = s
                    .default_group
                    .and_then(|g| s.groups.get(g))
                    .and_then(|g| g.targets.first())
                    .copied()
                    .ok_or(HopError::Ours)?;
                return Ok(t);
            }
            // The Request-URI as parsed by validation.
            None => uri_target_parsed(&msg.uri())?,
        };
        Ok(Socket {
            addr,
            transport,
            local: self.listener_for(transport, addr),
            conn: None,
        })
    }

    /// Answer a request whose next hop cannot be found.
    pub(crate) fn reply_hop_error(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        e: HopError,
        out: &mut Output,
    ) {
        if msg.method() == Method::Ack {
            self.stats.inc(Counter::Dropped);
            return;
        }
        let (code, reason): (u16, &[u8]) = match e {
            HopError::BadUri => (400, b"Bad Request-URI"),
            HopError::NeedsDns => (503, b"Service Unavailable (DNS not supported)"),
            HopError::Ours => (404, b"Not Found"),
        };
        let tag = self.local_tag(msg);
        self.reply(inb, msg, code, reason, Some(&tag), &[], out);
    }

    /// Forward a request statelessly (RFC 3261 §16.11). `cookie` marks requests within a
    /// tracked dialog so their responses find it.
    pub(crate) fn forward_stateless(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        method: Method,
        info: &RouteInfo<'_>,
        cookie: Option<&[u8]>,
        out: &mut Output,
    ) {
        self.forward_stateless_to(inb, msg, method, info, cookie, None, out);
    }

    /// [`Engine::forward_stateless`] to a given target instead of Route / R-URI.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_stateless_to(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        method: Method,
        info: &RouteInfo<'_>,
        cookie: Option<&[u8]>,
        target: Option<Socket>,
        out: &mut Output,
    ) {
        let hop = match target {
            Some(t) => Ok(Socket {
                local: self.listener_for(t.transport, t.addr),
                ..t
            }),
            None => self.next_hop(msg, info),
        };
        let to = match hop {
            Ok(t) => t,
            Err(e) => return self.reply_hop_error(inb, msg, e, out),
        };
        // The same for a request's retransmissions, and an ACK or CANCEL takes its INVITE's
        // (RFC 3261 §16.11, §17.2.3: they match the INVITE's server transaction downstream).
        let method_key: &[u8] = match method {
            Method::Ack | Method::Cancel => b"INVITE",
            _ => msg.method_bytes(),
        };
        let h = branch::hash(&[msg.branch(), method_key]);
        let br = Branch {
            kind: if cookie.is_some() {
                Kind::Within
            } else {
                Kind::Stateless
            },
            worker: self.worker as u16,
            cookie: cookie.unwrap_or(&[]),
            slot: 0,
            leg: 0,
            hash: h,
        };
        let mut edits = Edits::new(msg);
        if !info.apply(&mut edits) {
            self.stats.inc(Counter::Dropped);
            return;
        }
        // Dialog-creating requests other than tracked INVITEs still get a Record-Route.
        let rr = if msg.to_tag().is_none()
            && matches!(method, Method::Invite | Method::Subscribe | Method::Refer)
        {
            RecordRoute::Add(None)
        } else {
            RecordRoute::No
        };
        if self
            .forward_request(inb, msg, &mut edits, &br, to, rr, out)
            .is_none()
        {
            self.stats.inc(Counter::Dropped);
        }
    }

    /// A request within a dialog: tight match, state update, stateless forward.
    pub(crate) fn on_sequential(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        method: Method,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        let dialog = info
            .cookie
            .and_then(|c| self.decode_cookie(c))
            .and_then(|id| self.shared.table.get(id));
        let side = dialog.as_ref().and_then(|d| {
            // No From tag (RFC 2543): no dialog of ours can match.
            let ftag = msg.from_tag()?;
            let ttag = msg.to_tag().unwrap_or(&[]);
            d.match_tags(msg.call_id(), ftag, ttag)
        });
        let (Some(d), Some(side)) = (dialog, side) else {
            // Unknown or forged dialog id: route it, but touch no dialog.
            if info.cookie.is_some() {
                self.stats.inc(Counter::DialogMismatch);
            }
            return self.forward_stateless(inb, msg, method, info, None, out);
        };
        let now = inb.now_ms;
        // Rules for sequential requests (flags, vars, timeout, terminate, reply).
        if self.shared.policy.load().is_some() && d.state() != DlgState::Deleted {
            let (decision, terminate) = self.evaluate_policy(inb, msg, false, Some(&d));
            if let Some(reason) = terminate {
                let owner = self.timer_worker(d.id);
                let reason = String::from_utf8_lossy(&reason).into_owned();
                if owner == self.worker {
                    self.terminate(now, &d, Side::All, reason.as_bytes(), b"", out);
                } else {
                    let cmd = crate::engine::Command::Terminate {
                        id: d.id,
                        side: Side::All,
                        reason,
                        extra_hdrs: String::new(),
                    };
                    out.command(owner, cmd);
                }
                if method == Method::Bye {
                    return;
                }
            }
            if self.policy_refused(&decision) {
                return;
            }
            if let Some((code, reason)) = decision.reply
                && method != Method::Ack
            {
                self.reply(inb, msg, code, reason.as_bytes(), None, &[], out);
                return;
            }
        }
        let cseq = msg.cseq().num;
        match side {
            Side::Callee => {
                d.callee_cseq
                    .fetch_max(cseq, std::sync::atomic::Ordering::AcqRel);
            }
            _ => {
                if method != Method::Ack {
                    d.caller_cseq
                        .fetch_max(cseq, std::sync::atomic::Ordering::AcqRel);
                }
            }
        }
        match method {
            Method::Ack => {
                if let Some(prev) = d.advance(&[DlgState::ConfirmedNa], DlgState::Confirmed) {
                    self.shared.stats.transition(prev, DlgState::Confirmed);
                    let life = u64::from(d.lifetime_s.load(std::sync::atomic::Ordering::Relaxed));
                    d.deadline_ms.store(
                        now.saturating_add(life * 1000),
                        std::sync::atomic::Ordering::Release,
                    );
                    self.fire(DlgEvent::Confirmed, &d, Some(msg.bytes()), 0, Some(side));
                }
            }
            Method::Bye => {
                let reason = if side == Side::Callee {
                    EndReason::ByeCallee
                } else {
                    EndReason::ByeCaller
                };
                self.end_dialog(
                    now,
                    &d,
                    reason,
                    Some(msg.bytes()),
                    super::dialogs::Removal::Later,
                    out,
                );
            }
            _ => {
                if d.state() != DlgState::Deleted {
                    d.refresh_deadline(now);
                    self.fire(DlgEvent::ReqWithin, &d, Some(msg.bytes()), 0, Some(side));
                }
            }
        }
        let mut cookie = [0u8; crate::dialog::id::COOKIE_LEN];
        let c = self.encode_cookie(d.id, &mut cookie);
        self.forward_stateless(inb, msg, method, info, Some(c), out);
    }

    /// An ACK that names no dialog: the ACK of a non-2xx final (absorbed by its transaction),
    /// or an ACK to route statelessly.
    pub(crate) fn on_plain_ack(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        match self.txn_of(msg, inb.now_ms) {
            TxnOf::At(owner, _) if owner != self.worker => {
                out.handoff = Some(owner);
                return;
            }
            TxnOf::At(_, slot) => {
                if self.absorb_ack(inb.now_ms, slot, msg.branch(), out) {
                    return;
                }
            }
            TxnOf::Finished => {
                // The ACK of a non-2xx final whose transaction is gone: hop-by-hop, absorbed.
                self.stats.inc(Counter::AckAbsorbed);
                return;
            }
            TxnOf::Unknown => {}
        }
        // The ACK of a reply we generated without a transaction (policy reply, 404, 503).
        if let Some(tag) = msg.to_tag()
            && tag.starts_with(super::proxy::LOCAL_TAG_PREFIX)
            && tag == self.local_tag(msg)
        {
            self.stats.inc(Counter::AckAbsorbed);
            return;
        }
        self.forward_stateless(inb, msg, Method::Ack, info, None, out);
    }

    /// The transaction of the INVITE that this CANCEL/ACK/retransmission refers to: owner
    /// worker and slot, via the Call-ID + From-tag index.
    pub(crate) fn txn_of(&self, msg: &ValidRequest<'_, '_>, now_ms: u64) -> TxnOf {
        // The shared index by upstream key finds tracked and untracked transactions alike; the
        // owner verifies the slot's generation (a hand-off is verified on arrival). One key,
        // one probe: it also tells a transaction freed less than REMEMBER_MS ago.
        let found = self.shared.invites.lookup(recent_key_of(msg), now_ms);
        if let Some(Found::Live(l)) = found {
            let owner = usize::from(l.worker);
            if owner != self.worker && owner < self.shared.workers {
                return TxnOf::At(owner, l.slot);
            }
            if owner == self.worker
                && self
                    .txns
                    .get(l.slot)
                    .is_some_and(|t| t.generation == l.generation)
            {
                return TxnOf::At(owner, l.slot);
            }
        }
        if let Some(at) = self.txn_of_dialog(msg) {
            return at;
        }
        if found == Some(Found::Finished) {
            TxnOf::Finished
        } else {
            TxnOf::Unknown
        }
    }

    /// The INVITE transaction through the dialog table (Call-ID and From-tag -> `txn_slot`).
    fn txn_of_dialog(&self, msg: &ValidRequest<'_, '_>) -> Option<TxnOf> {
        let id = self
            .shared
            .table
            .find_by_callid_ftag(msg.call_id(), msg.from_tag()?)?;
        let slot = self
            .shared
            .table
            .get(id)?
            .txn_slot
            .load(std::sync::atomic::Ordering::Acquire);
        (slot != u32::MAX).then(|| TxnOf::At(crate::dialog::id::worker_of(id), slot))
    }

    /// CANCEL from upstream (RFC 3261 §16.10).
    pub(crate) fn on_cancel(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        let (owner, slot) = match self.txn_of(msg, inb.now_ms) {
            TxnOf::At(owner, slot) => (owner, slot),
            // Its INVITE transaction ended already (RFC 3261 §16.10: a matching response
            // context answers 200; the CANCEL has no effect).
            TxnOf::Finished => {
                let tag = self.local_tag(msg);
                return self.reply(inb, msg, 200, b"OK", Some(&tag), &[], out);
            }
            TxnOf::Unknown => return self.cancel_without_txn(inb, msg, info, out),
        };
        if owner != self.worker {
            out.handoff = Some(owner);
            return;
        }
        let matches = self
            .txns
            .get_mut(slot)
            .is_some_and(|t| t.up.branch == msg.branch());
        if !matches {
            return self.cancel_without_txn(inb, msg, info, out);
        }
        let tag = self
            .txns
            .get_mut(slot)
            .map(|t| t.to_tag)
            .unwrap_or_default();
        self.reply(inb, msg, 200, b"OK", Some(&tag), &[], out);
        self.cancel_txn(inb.now_ms, slot, b"", out);
    }

    /// A CANCEL that matches no INVITE transaction of ours. Within a dialog (To tag, or our
    /// cookie in its Route) it cancels a request we forwarded statelessly (a re-INVITE): it
    /// goes the same way, so it gets that request's branch (RFC 3261 §16.11) and the callee can
    /// match it. Otherwise its INVITE never came through us, or so long ago that even its
    /// tombstone is gone: a stateless copy could not match the callee's transaction (whose
    /// branch is ours), so it is dropped and counted, as Kamailio's default script does.
    fn cancel_without_txn(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        if msg.to_tag().is_some() || info.cookie.is_some() {
            return self.on_sequential(inb, msg, Method::Cancel, info, out);
        }
        self.stats.inc(Counter::CancelUnmatched);
    }

    /// An initial INVITE: retransmission, loop, spiral or a new dialog.
    pub(crate) fn on_invite(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        info: &RouteInfo<'_>,
        out: &mut Output,
    ) {
        let top_branch = msg.branch();
        // Retransmission of an INVITE we are handling?
        match self.txn_of(msg, inb.now_ms) {
            TxnOf::At(owner, _) if owner != self.worker => {
                out.handoff = Some(owner);
                return;
            }
            TxnOf::At(_, slot) => {
                let retrans = self
                    .txns
                    .get_mut(slot)
                    .is_some_and(|t| t.up.branch == top_branch);
                if retrans {
                    return self.absorb_invite_retransmission(inb, msg, slot, out);
                }
            }
            // A retransmission of a transaction already freed (RFC 6026 Accepted, on any
            // worker).
            TxnOf::Finished => {
                self.stats.inc(Counter::RetransAbsorbed);
                return;
            }
            TxnOf::Unknown => {}
        }
        // Loop or spiral (RFC 3261 §16.3 step 4): a Via of ours with a dialog branch.
        let cseq_b = msg.cseq().num.to_le_bytes();
        let lh = branch::hash(&[
            msg.request_uri(),
            msg.call_id(),
            msg.from_tag_or_empty(),
            &cseq_b,
            info.next_route.unwrap_or(&[]),
        ]);
        let mut spiral_of = None;
        // Every Via counts (§16.3 step 4), the top one too: a request sent back to us
        // directly carries our Via on top.
        for v in msg.vias() {
            if !self.shared.locals.is_ours(v.host, v.port) {
                continue;
            }
            if let Some(b) = v.branch().and_then(branch::parse)
                && b.kind == Kind::Dialog
            {
                if b.hash == lh {
                    self.reply(inb, msg, 482, b"Loop Detected", None, &[], out);
                    return;
                }
                spiral_of = self.decode_cookie(b.cookie);
            }
        }
        let settings = self.shared.settings.load_full();
        let existing = match spiral_of {
            Some(id) if settings.detect_spirals => self.shared.table.get(id),
            _ => None,
        };
        self.start_invite(inb, msg, info, lh, existing, &settings, out);
    }
}
