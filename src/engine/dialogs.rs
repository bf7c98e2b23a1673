//! Dialog-level operations of the engine: creation from an initial INVITE, the single end
//! path, callbacks, termination (early: CANCEL + final reply; confirmed: BYE from stored leg
//! state), expiry, responses within a dialog, and the did cookie.
//!
//! Invariants: [`Engine::end_dialog`] is the only place that applies end effects, and it
//! applies them only when it won [`Dialog::try_end`]; removal from the table is idempotent.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::forward::uri_target;
use super::generated::NewRequest;
use super::{Engine, Inbound, Output, Settings};
use crate::dialog::id::{COOKIE_LEN, DialogId};
use crate::dialog::profile::Memberships;
use crate::dialog::record::{Dialog, Field, NO_TIMER, Strs, route_entries};
use crate::dialog::{DlgEvent, DlgState, EndReason, EventData, Side, Socket};
use crate::stats::Counter;
use crate::txn::branch::{self, Branch, Kind};
use crate::wire::{self, Message, Method, ValidRequest, ValidResponse};

/// How long an ended dialog waiting for its INVITE transaction may stay at most: the
/// transaction frees it after Timer H (64·T1) or with its last branch (Timer B, or 64·T1
/// after a CANCEL); this is the backstop, with slack (40 s with the RFC 3261 timers).
fn with_txn_backstop_ms(t: &crate::txn::Timers) -> u64 {
    t.t1_x64().max(t.timer_b).saturating_add(8_000)
}

/// When an ended dialog leaves the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Right away.
    Now,
    /// When its INVITE transaction is freed (after the ACK window of a negative final).
    WithTxn,
    /// After the BYE's final reply, or `end_timeout`.
    Later,
}

/// What the policy decided for one initial request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Track a dialog (None = the default).
    pub track: Option<bool>,
    /// Reply with this code and reason instead of forwarding.
    pub reply: Option<(u16, String)>,
    /// A rule's `drop`: drop the request silently.
    pub drop: bool,
    /// A `limit` refused the call for its rate (counted as `refused_profile_rate`).
    pub rate_limited: bool,
    /// Target group index.
    pub group: Option<usize>,
    /// Dialog timeout in seconds.
    pub timeout: Option<u32>,
    /// Flags to set.
    pub flags: u32,
    /// Variables to set.
    pub vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// Headers to add to the forwarded request.
    pub add_headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Headers to remove from the forwarded request.
    pub remove_headers: Vec<Vec<u8>>,
    /// Profile memberships taken while evaluating (moved into the dialog, or released).
    pub memberships: Memberships,
}

impl Decision {
    /// Release profile memberships taken for a request that will not create a dialog.
    pub fn release(&mut self, shared: &super::Shared) {
        shared.profiles.load().release_all(&self.memberships);
    }
}

impl Engine {
    /// Write the cookie of `id` into `buf`.
    pub(crate) fn encode_cookie<'b>(
        &self,
        id: DialogId,
        buf: &'b mut [u8; COOKIE_LEN],
    ) -> &'b [u8] {
        id.encode(self.shared.boot, buf);
        &buf[..]
    }

    /// Read a cookie minted by this proxy instance, or by the earlier run that created a
    /// dialog loaded from the store (its boot tag must equal the one stored with the dialog;
    /// the tight Call-ID/tag match still applies to sequential requests).
    pub(crate) fn decode_cookie(&self, b: &[u8]) -> Option<DialogId> {
        match DialogId::decode(b) {
            Some((id, boot)) if boot == self.shared.boot => Some(id),
            // persist: a dialog loaded from the store keeps its pre-restart cookies.
            Some((id, boot)) => self
                .shared
                .table
                .get(id)
                .filter(|d| d.loaded_boot() == Some(boot))
                .map(|_| id),
            None => None,
        }
    }

    /// Fire a dialog event.
    pub(crate) fn fire(
        &self,
        event: DlgEvent,
        d: &Dialog,
        msg: Option<&[u8]>,
        code: u16,
        side: Option<Side>,
    ) {
        self.shared.callbacks.fire(&EventData {
            event,
            dialog: d,
            msg,
            code,
            side,
        });
    }

    /// Create and publish the dialog of an initial INVITE. `Err(holder)` when a live dialog
    /// already holds its Call-ID and From-tag (another worker is creating it from the same
    /// INVITE, or it is a late retransmission): nothing is published and the memberships the
    /// decision took are released.
    pub(crate) fn create_dialog(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        settings: &Settings,
        decision: &mut Decision,
    ) -> Result<Option<Arc<Dialog>>, DialogId> {
        // An INVITE without From tag (RFC 2543) creates no dialog: none could be matched.
        let Some(ftag) = msg.from_tag() else {
            return Ok(None);
        };
        let call_id = msg.call_id();
        let now = inb.now_ms;
        let mut routes = Vec::new();
        for rr in msg.record_routes() {
            routes.extend(
                rr.span
                    .get(msg.buf())
                    .iter()
                    .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
            );
            routes.push(b'\n');
        }
        let contact = msg.contacts().next().map(|c| c.uri).unwrap_or(&[]);
        let strs = Strs::new([
            call_id,
            msg.from_value(),
            msg.from().uri,
            ftag,
            msg.to_value(),
            msg.to().uri,
            msg.request_uri(),
            contact,
            &routes,
        ]);
        let slot = branch::hash(&[call_id]);
        let id = self.didgen.next_id(slot);
        let lifetime = decision.timeout.unwrap_or(settings.default_timeout).max(1);
        let cseq = msg.cseq().num;
        let socket = Socket {
            addr: inb.src,
            transport: inb.transport,
            local: inb.local,
            conn: inb.conn,
        };
        let mut d = Dialog::new(id, strs, socket, now, lifetime, cseq);
        d.profiles = std::mem::take(&mut decision.memberships);
        d.timeout_noreset.store(settings.timeout_noreset, Relaxed);
        d.flags.store(decision.flags, Relaxed);
        let deadline = now.saturating_add(u64::from(settings.early_timeout.max(1)) * 1000);
        d.deadline_ms.store(deadline, Relaxed);
        let d = Arc::new(d);
        for (k, v) in decision.vars.drain(..) {
            d.set_var(&k, &v);
        }
        let live = |d: &Dialog| d.state() != DlgState::Deleted;
        if let Err(holder) = self.shared.table.claim(id, d.clone(), call_id, ftag, live) {
            self.shared.profiles.load().release_all(&d.profiles);
            return Err(holder);
        }
        self.shared.stats.created();
        self.arm_dialog_timer(&d, deadline);
        self.fire(
            DlgEvent::Created,
            &d,
            Some(msg.bytes()),
            0,
            Some(Side::Caller),
        );
        Ok(Some(d))
    }

    /// The one end path. Applies statistics, profile release and callbacks once. `remove`
    /// says when the record leaves the table: now, when its INVITE transaction is freed (so
    /// the ACK of a negative final still finds it), or by a cleanup timer after the BYE's reply
    /// or `end_timeout`.
    pub(crate) fn end_dialog(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        reason: EndReason,
        msg: Option<&[u8]>,
        remove: Removal,
        out: &mut Output,
    ) -> bool {
        let Some(prev) = d.try_end(reason, now) else {
            if remove == Removal::Now {
                self.remove_dialog(d, out);
            }
            return false;
        };
        let s = &self.shared;
        s.stats.transition(prev, DlgState::Deleted);
        match reason {
            EndReason::Failed | EndReason::Cancelled => s.stats.failed(),
            EndReason::Expired => s.stats.expired(),
            _ => {}
        }
        s.profiles.load().release_all(&d.profiles);
        let event = match reason {
            EndReason::Failed | EndReason::Cancelled => DlgEvent::Failed,
            EndReason::Expired => DlgEvent::Expired,
            _ => DlgEvent::Terminated,
        };
        let side = match reason {
            EndReason::ByeCallee => Some(Side::Callee),
            EndReason::ByeCaller => Some(Side::Caller),
            _ => None,
        };
        self.fire(event, d, msg, 0, side);
        // The record stays until a later event removes it; its timer now guards that, and
        // removes it itself by this deadline.
        let linger_ms = match remove {
            Removal::Now => {
                self.remove_dialog(d, out);
                return true;
            }
            Removal::WithTxn => with_txn_backstop_ms(&self.shared.settings.load().txn_timers()),
            Removal::Later => {
                let settings = self.shared.settings.load();
                u64::from(settings.end_timeout.clamp(1, 300)) * 1000
            }
        };
        d.deadline_ms.store(now.saturating_add(linger_ms), Release);
        self.retime_dialog(d, out);
        true
    }

    /// Take a dialog out of the table (idempotent); fires DESTROY once and cancels its timer.
    pub(crate) fn remove_dialog(&mut self, d: &Arc<Dialog>, out: &mut Output) {
        let call_id = d.strs.get(Field::CallId);
        let ftag = d.strs.get(Field::FromTag);
        if self.shared.table.remove(d.id, call_id, ftag).is_some() {
            self.fire(DlgEvent::Destroy, d, None, 0, None);
            self.retime_dialog(d, out);
        }
    }

    /// A response to a request within a dialog (any worker).
    pub(crate) fn on_response_within(
        &mut self,
        msg: &ValidResponse<'_, '_>,
        cookie: &[u8],
        method: Method,
        out: &mut Output,
    ) {
        if let Some(d) = self
            .decode_cookie(cookie)
            .and_then(|id| self.shared.table.get(id))
        {
            self.on_response_within_dialog(msg, msg.code(), &d, method, out);
        }
    }

    /// [`Engine::on_response_within`] for a dialog already in hand (`code` is the response's
    /// status): callbacks, and removal on a BYE's final once the dialog has ended. Nothing happens for a dialog no longer in the
    /// table (the other BYE's final removed it).
    pub(crate) fn on_response_within_dialog(
        &mut self,
        msg: &Message<'_>,
        code: u16,
        d: &Arc<Dialog>,
        method: Method,
        out: &mut Output,
    ) {
        if !self
            .shared
            .table
            .get(d.id)
            .is_some_and(|t| Arc::ptr_eq(&t, d))
        {
            return;
        }
        self.fire(DlgEvent::ResponseWithin, d, Some(msg.bytes()), code, None);
        if method == Method::Bye && code >= 200 && d.state() == DlgState::Deleted {
            self.fire(
                DlgEvent::TerminatedConfirmed,
                d,
                Some(msg.bytes()),
                code,
                None,
            );
            self.remove_dialog(d, out);
        }
    }

    /// Terminate a dialog (`dlg_terminate`, RPC, policy, expiry). Runs on the owning worker.
    pub(crate) fn terminate(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        side: Side,
        reason: &[u8],
        extra_hdrs: &[u8],
        out: &mut Output,
    ) {
        self.end_with(now, d, side, reason, extra_hdrs, EndReason::Terminated, out);
    }

    /// Shared by termination and expiry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_with(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        side: Side,
        reason: &[u8],
        extra_hdrs: &[u8],
        why: EndReason,
        out: &mut Output,
    ) {
        let state = d.state();
        match state {
            DlgState::Deleted => {}
            DlgState::Unconfirmed | DlgState::Early => {
                // Early: CANCEL every pending branch and answer upstream ourselves.
                let slot = d.txn_slot.load(Acquire);
                let settings = self.shared.settings.load_full();
                let mut rs = Vec::with_capacity(reason.len() + 16);
                rs.extend_from_slice(reason);
                self.cancel_txn(now, slot, &rs, out);
                let has_final = self.txns.get(slot).is_none_or(|t| t.up.ist.has_final());
                if !has_final {
                    self.end_dialog(now, d, why, None, Removal::WithTxn, out);
                    let code = settings.bye_early_code;
                    let r = settings.bye_early_reason.clone();
                    self.synthesize_final(now, slot, code, r.as_bytes(), out);
                } else {
                    self.end_dialog(now, d, why, None, Removal::Now, out);
                }
            }
            DlgState::ConfirmedNa | DlgState::Confirmed => {
                if matches!(side, Side::Callee | Side::All) {
                    self.send_bye(now, d, Side::Callee, reason, extra_hdrs, out);
                }
                if matches!(side, Side::Caller | Side::All) {
                    self.send_bye(now, d, Side::Caller, reason, extra_hdrs, out);
                }
                self.end_dialog(now, d, why, None, Removal::Later, out);
            }
        }
    }

    /// Send a BYE toward one side, built from the stored leg state.
    pub(crate) fn send_bye(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        to_side: Side,
        reason: &[u8],
        extra_hdrs: &[u8],
        out: &mut Output,
    ) {
        self.send_within(now, d, b"BYE", to_side, reason, extra_hdrs, out);
    }

    /// Send a request within a confirmed dialog toward one side (BYE, REFER ...), built from
    /// the stored leg state: remote target, route set, CSeq+1, tags, `dlg_extra_hdrs`. It
    /// travels in a client transaction: retransmitted over UDP until a final response or
    /// Timer F (`engine::generated`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_within(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        method: &[u8],
        to_side: Side,
        reason: &[u8],
        extra_hdrs: &[u8],
        out: &mut Output,
    ) {
        let Some(callee) = d.callee.get() else {
            return;
        };
        let settings = self.shared.settings.load_full();
        let (ruri, routes, from, to, cseq, fallback) = match to_side {
            Side::Callee => (
                callee.contact(),
                callee.routes(),
                d.strs.get(Field::From),
                callee.to(),
                d.caller_cseq.fetch_add(1, AcqRel).wrapping_add(1),
                callee.socket(),
            ),
            _ => (
                d.strs.get(Field::CallerContact),
                d.strs.get(Field::CallerRoutes),
                callee.to(),
                d.strs.get(Field::From),
                d.callee_cseq.fetch_add(1, AcqRel).wrapping_add(1).max(1),
                d.caller_socket(),
            ),
        };
        // No remote target (an INVITE or 2xx without Contact): no request can be addressed;
        // the dialog's end timer still removes it (found by the engine fuzz target).
        if ruri.is_empty() {
            return;
        }
        let route_vec: Vec<&[u8]> = route_entries(routes).collect();
        // First hop: the first Route's URI, else the remote target; else where it came from.
        let first_uri = route_vec.first().map(|r| strip_brackets(r));
        let mut dst = first_uri
            .or(Some(ruri))
            .and_then(|u| uri_target(u).ok())
            .map(|(a, t)| Socket {
                addr: a,
                transport: t,
                local: self.listener_for(t, a),
                conn: None,
            })
            .unwrap_or(fallback);
        if route_vec.is_empty() {
            // Without proxies in between, the peer is where its messages came from.
            dst = fallback;
        }
        let (via, txn) = self.client_via(d.id, dst.local);
        let mut extra = Vec::with_capacity(128);
        if !reason.is_empty() {
            extra.extend_from_slice(b"Reason: ");
            extra.extend_from_slice(reason);
            extra.extend_from_slice(b"\r\n");
        }
        extra.extend_from_slice(settings.dlg_extra_hdrs.as_bytes());
        if !settings.dlg_extra_hdrs.is_empty() && !settings.dlg_extra_hdrs.ends_with("\r\n") {
            extra.extend_from_slice(b"\r\n");
        }
        extra.extend_from_slice(extra_hdrs);
        if !extra_hdrs.is_empty() && !extra_hdrs.ends_with(b"\r\n") {
            extra.extend_from_slice(b"\r\n");
        }
        let req = wire::build::InDialog {
            method,
            ruri,
            route_set: &route_vec,
            via: &via,
            from,
            to,
            call_id: d.strs.get(Field::CallId),
            cseq,
            max_forwards: 70,
            extra_headers: &extra,
            content_type: None,
            body: &[],
        };
        let mut bytes = Vec::with_capacity(512);
        wire::build::in_dialog_request(&req, &mut bytes);
        let m = Method::from_bytes(method);
        let req = NewRequest {
            txn,
            bytes,
            // As before the transaction layer: by address, not pinned to a connection.
            dst: Socket { conn: None, ..dst },
            dialog: Some(d.clone()),
            method: m,
            bridge: None,
        };
        self.start_generated(now, req, out);
        if m == Method::Bye {
            self.stats.inc(Counter::ByeSent);
        }
    }

    /// Our Via for a request the proxy originates within dialog `id` (fresh branch of kind
    /// `Within`, so its responses find the dialog).
    fn within_via(&mut self, id: DialogId, local: usize) -> Vec<u8> {
        let mut cookie_buf = [0u8; COOKIE_LEN];
        let cookie = self.encode_cookie(id, &mut cookie_buf);
        let br = Branch {
            kind: Kind::Within,
            worker: self.worker as u16,
            cookie,
            slot: 0,
            leg: 0,
            hash: self.next_rand() as u32,
        };
        let mut via = Vec::with_capacity(128);
        self.write_via(local, &br, &mut via);
        via
    }

    /// A second fork answered 2xx and `end_on_race` is set: ACK and BYE it here.
    pub(crate) fn end_race_leg(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        msg: &ValidResponse<'_, '_>,
        to: Socket,
        out: &mut Output,
    ) {
        let contact = msg.contacts().next().map(|c| c.uri).unwrap_or(&[]);
        let to_hdr = msg.to_value();
        let cseq = msg.cseq().num;
        for (method, n) in [(&b"ACK"[..], cseq), (&b"BYE"[..], cseq.wrapping_add(1))] {
            // The ACK is no transaction; the BYE is, and is retransmitted until answered.
            let (via, txn) = if method == b"ACK" {
                (self.within_via(d.id, to.local), None)
            } else {
                let (v, t) = self.client_via(d.id, to.local);
                (v, Some(t))
            };
            let req = wire::build::InDialog {
                method,
                ruri: contact,
                route_set: &[],
                via: &via,
                from: d.strs.get(Field::From),
                to: to_hdr,
                call_id: d.strs.get(Field::CallId),
                cseq: n,
                max_forwards: 70,
                extra_headers: b"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
                content_type: None,
                body: &[],
            };
            match txn {
                None => {
                    let start = out.buf.len();
                    wire::build::in_dialog_request(&req, &mut out.buf);
                    out.push_from(start, to.addr, to.transport, to.local, None);
                }
                Some(t) => {
                    let mut bytes = Vec::with_capacity(512);
                    wire::build::in_dialog_request(&req, &mut bytes);
                    // Not the dialog's own BYE: its answer must not end the winner's dialog.
                    let dst = Socket { conn: None, ..to };
                    let req = NewRequest::plain(t, bytes, dst, Method::Bye);
                    self.start_generated(now, req, out);
                }
            }
        }
    }

    /// The dialog timer fired: re-arm if the deadline moved later, else expire a live dialog
    /// or take an ended one out of the table.
    pub(crate) fn on_dialog_timer(&mut self, now: u64, id: DialogId, out: &mut Output) {
        let Some(d) = self.shared.table.get(id) else {
            return;
        };
        // The entry that fired was the dialog's one entry: its key is spent.
        d.timer_key.store(NO_TIMER, Relaxed);
        let deadline = d.deadline_ms.load(Acquire);
        if deadline > now {
            self.arm_dialog_timer(&d, deadline);
            return;
        }
        match d.state() {
            // Ended, and neither the BYE's final nor the INVITE transaction removed it.
            DlgState::Deleted => self.remove_dialog(&d, out),
            DlgState::Unconfirmed | DlgState::Early => {
                self.end_with(
                    now,
                    &d,
                    Side::All,
                    b"SIP;cause=408;text=\"early_timeout\"",
                    b"",
                    EndReason::Expired,
                    out,
                );
            }
            DlgState::ConfirmedNa | DlgState::Confirmed => {
                let settings = self.shared.settings.load();
                if settings.send_bye {
                    self.end_with(
                        now,
                        &d,
                        Side::All,
                        b"SIP;cause=200;text=\"dialog timeout\"",
                        b"",
                        EndReason::Expired,
                        out,
                    );
                } else {
                    self.end_dialog(now, &d, EndReason::Expired, None, Removal::Now, out);
                }
            }
        }
    }

    /// Run the policy for an initial INVITE (no-op when none is installed).
    pub(crate) fn run_policy(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        initial: bool,
        dialog: Option<&Dialog>,
    ) -> Decision {
        let (mut d, terminate) = self.evaluate_policy(inb, msg, initial, dialog);
        if terminate.is_some() && d.reply.is_none() {
            d.reply = Some((403, "Forbidden".into()));
        }
        d
    }
}

/// `<uri>;params` → `uri`.
fn strip_brackets(entry: &[u8]) -> &[u8] {
    match (memchr::memchr(b'<', entry), memchr::memchr(b'>', entry)) {
        (Some(a), Some(b)) if b > a => entry.get(a + 1..b).unwrap_or(entry),
        _ => entry,
    }
}
