//! dialog_ng's `dlg_bridge(from, to, op)` / RPC `dlg.bridge_dlg`: the proxy calls `from`
//! itself (INVITE with an on-hold SDP, From = `bridge_controller`), and once answered sends ACK,
//! then REFER (Refer-To `to`), then BYE: the INVITE(hold)-REFER-BYE mechanism, so `from` ends up
//! calling `to`.
//!
//! ## Invariants
//! - Bridge calls belong to the worker that started them; our Via branch (kind `b`) carries the
//!   slot and its generation, and our private UDP port brings the responses back to that
//!   worker; a response for a stale or foreign slot is counted and dropped.
//! - The INVITE is an INVITE client transaction ([`Ict`]): kept once with its spans, sent
//!   again by Timer A over UDP, given up by Timer B, every non-2xx final ACKed from the kept
//!   copy. Every 2xx (retransmissions too) is ACKed by the bridge as the UA core
//!   (RFC 3261 §13.2.2.4), in the dialog the first 2xx made.
//! - REFER and BYE are generated requests (`engine::generated`): retransmitted until a final
//!   response or Timer F, and their outcome (answered or not) moves the bridge on: REFER done
//!   -> BYE; BYE done -> the bridge call ends.
//! - Every bridge call ends (its slot is freed and every timer it armed is cancelled) on its
//!   BYE's outcome, on a BYE from the peer, [`TIMER_D`] after a refused INVITE (to ACK
//!   retransmitted finals), or at [`BRIDGE_TIMEOUT`] at the latest (a still ringing INVITE is
//!   CANCELled then).
//! - Requests from the peer to our Contact (NOTIFY for the REFER, BYE) get 200.

use std::net::SocketAddr;

use super::forward::uri_target;
use super::generated::NewRequest;
use super::timers::{TimerItem, arm, disarm};
use super::{Engine, Inbound, Output};
use crate::dialog::Socket;
use crate::stats::Counter;
use crate::timer::TimerKey;
use crate::txn::branch::{Branch, Kind};
use crate::txn::ict::{self, Action, Ict, Report, TIMER_D};
use crate::wire::{self, Kept, Message, Method, Transport, ValidRequest, ValidResponse};

/// A bridge call gives up after this long (ms).
pub const BRIDGE_TIMEOUT: u64 = 64_000;

/// User part of the Contact of bridge calls (requests to it are answered by the proxy).
pub(crate) const BRIDGE_USER: &str = "sipedge-bridge";

/// Where a bridge call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeState {
    /// INVITE sent, waiting for the answer.
    Inviting,
    /// REFER sent, waiting for its outcome.
    Referring,
    /// BYE sent, waiting for its outcome.
    Ending,
    /// The INVITE failed (refused, timed out or cancelled): the call only ACKs retransmitted
    /// finals until it is freed.
    Failed,
}

/// One call the proxy originates to bridge two parties.
#[derive(Debug)]
pub struct BridgeCall {
    /// Slot generation.
    pub generation: u32,
    /// Where it is.
    pub state: BridgeState,
    /// Call-ID.
    pub call_id: String,
    /// Our From-tag.
    pub from_tag: String,
    /// The peer's To-tag (from its first 2xx).
    pub to_tag: String,
    /// The party called first (`from`).
    pub target_uri: String,
    /// The address it is referred to (`to`).
    pub refer_to: String,
    /// Remote target from the 2xx Contact (requests within the call go there).
    pub remote: String,
    /// Where the INVITE goes (and its CANCEL and non-2xx ACK).
    pub dst: Socket,
    /// Where requests within the call go (the remote target, once answered).
    pub peer: Socket,
    /// The INVITE as sent, with its spans (set once it is built).
    invite: Option<Kept>,
    /// Its client transaction.
    ict: Ict,
    /// Keys of the INVITE's timers (by [`ict::Timer::slot`]).
    ict_keys: [Option<TimerKey>; 3],
    /// Key of the deadline ([`TimerItem::Bridge`]).
    deadline: Option<TimerKey>,
    /// The REFER or BYE in flight (a generated request).
    txn: Option<(u32, u32)>,
    /// The CANCEL of the INVITE, if one went.
    cancel_txn: Option<(u32, u32)>,
}

/// Why a bridge could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// `from` or `op` is not a SIP URI with an IP host.
    #[error("{0}: expected a sip: URI with an IP address (DNS is not supported)")]
    BadUri(String),
}

/// The parts of one request of a bridge call.
struct Req<'a> {
    method: &'a [u8],
    cseq: u32,
    content_type: &'a [u8],
    body: &'a [u8],
    extra: &'a [u8],
}

impl Engine {
    /// Start a bridge call: INVITE `from` (through `op` when given) with an on-hold SDP.
    pub fn start_bridge(
        &mut self,
        now: u64,
        from: &str,
        to: &str,
        op: Option<&str>,
        out: &mut Output,
    ) -> Result<(), BridgeError> {
        let first_hop = op.unwrap_or(from);
        let (addr, transport) =
            uri_target(first_hop.as_bytes()).map_err(|_| BridgeError::BadUri(first_hop.into()))?;
        wire::parse_uri(from.as_bytes()).map_err(|_| BridgeError::BadUri(from.into()))?;
        let local = self.listener_for(transport, addr);
        let dst = Socket {
            addr,
            transport,
            local,
            conn: None,
        };
        let salt = self.next_rand();
        let call_id = format!("{salt:016x}-bridge@sipedge");
        let from_tag = format!("{:08x}", salt as u32 ^ 0x5eed);
        let slot = match self.bridges.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.bridges.push(None);
                self.bridges.len() - 1
            }
        };
        self.bridge_gen = self.bridge_gen.wrapping_add(1);
        let ip = self
            .shared
            .locals
            .get(local)
            .map(|l| l.addr.ip())
            .unwrap_or(addr.ip());
        let sdp = format!(
            "v=0\r\no=sipedge 0 0 IN {fam} {ip}\r\ns=bridge\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
             m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n",
            fam = if ip.is_ipv4() { "IP4" } else { "IP6" }
        );
        let timers = self.shared.settings.load().txn_timers();
        let (ict, actions) = Ict::start(now, transport != Transport::Udp, &timers);
        let mut call = BridgeCall {
            generation: self.bridge_gen,
            state: BridgeState::Inviting,
            call_id,
            from_tag,
            to_tag: String::new(),
            target_uri: from.to_string(),
            refer_to: to.to_string(),
            remote: from.to_string(),
            dst,
            peer: dst,
            invite: None,
            ict,
            ict_keys: [None; 3],
            deadline: None,
            txn: None,
            cancel_txn: None,
        };
        let via = self.bridge_via(local, slot, call.generation);
        let req = Req {
            method: b"INVITE",
            cseq: 1,
            content_type: b"application/sdp",
            body: sdp.as_bytes(),
            extra: b"",
        };
        let bytes = self.bridge_bytes(&call, &via, &req);
        // Our own request, parsed once for its spans (CANCEL and ACK are built from them).
        call.invite = match wire::parse(&bytes) {
            Ok(m) => Some(Kept::new(&m)),
            Err(_) => return Err(BridgeError::BadUri(from.into())),
        };
        out.push_bytes(&bytes, dst.addr, dst.transport, dst.local, None);
        let generation = call.generation;
        arm(
            &mut self.wheel,
            &mut call.deadline,
            now + BRIDGE_TIMEOUT,
            TimerItem::Bridge {
                slot: slot as u32,
                generation,
            },
        );
        if let Some(s) = self.bridges.get_mut(slot) {
            *s = Some(call);
        }
        self.apply_bridge_ict(now, slot, actions, None, out);
        Ok(())
    }

    /// Our Via for a request of bridge call `slot` (branch kind `b`; `hash` is the slot's
    /// generation for the INVITE, random for a 2xx ACK).
    fn bridge_via(&self, local: usize, slot: usize, hash: u32) -> Vec<u8> {
        let br = Branch {
            kind: Kind::Bridge,
            worker: self.worker as u16,
            cookie: b"br",
            slot: slot as u32,
            leg: 0,
            hash,
        };
        let mut via = Vec::with_capacity(128);
        self.write_via(local, &br, &mut via);
        via
    }

    /// The bytes of one request of bridge call `call` with Via line `via`.
    fn bridge_bytes(&self, call: &BridgeCall, via: &[u8], req: &Req<'_>) -> Vec<u8> {
        let controller = self.shared.settings.load().bridge_controller.clone();
        let hostport = self
            .shared
            .locals
            .get(call.dst.local)
            .map(|l| l.hostport.clone())
            .unwrap_or_default();
        let from = format!("<{controller}>;tag={}", call.from_tag);
        let to = if call.to_tag.is_empty() {
            format!("<{}>", call.target_uri)
        } else {
            format!("<{}>;tag={}", call.target_uri, call.to_tag)
        };
        let mut headers = format!("Contact: <sip:{BRIDGE_USER}@{hostport}>\r\n").into_bytes();
        headers.extend_from_slice(req.extra);
        let ruri = if req.method == b"INVITE" {
            call.target_uri.as_bytes()
        } else {
            call.remote.as_bytes()
        };
        let r = wire::build::InDialog {
            method: req.method,
            ruri,
            route_set: &[],
            via,
            from: from.as_bytes(),
            to: to.as_bytes(),
            call_id: call.call_id.as_bytes(),
            cseq: req.cseq,
            max_forwards: 70,
            extra_headers: &headers,
            content_type: (!req.content_type.is_empty()).then_some(req.content_type),
            body: req.body,
        };
        let mut bytes = Vec::with_capacity(512 + req.body.len());
        wire::build::in_dialog_request(&r, &mut bytes);
        bytes
    }

    /// The ACK of a 2xx to the INVITE (RFC 3261 §13.2.2.4): a request of its own in the
    /// dialog, with a new branch, sent once per 2xx received.
    fn bridge_ack(&mut self, slot: usize, out: &mut Output) {
        let hash = self.next_rand() as u32;
        let Some(call) = self.bridges.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let via = self.bridge_via(call.peer.local, slot, hash);
        let req = Req {
            method: b"ACK",
            cseq: 1,
            content_type: b"",
            body: b"",
            extra: b"",
        };
        let bytes = self.bridge_bytes(call, &via, &req);
        let p = call.peer;
        out.push_bytes(&bytes, p.addr, p.transport, p.local, None);
    }

    /// Send the REFER (cseq 2) or the BYE (cseq 3) of bridge call `slot` as a generated
    /// request whose outcome comes back to [`Engine::on_bridge_outcome`].
    fn bridge_request(&mut self, now: u64, slot: usize, method: Method, out: &mut Output) {
        let Some(call) = self.bridges.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let (name, cseq): (&[u8], u32) = match method {
            Method::Refer => (b"REFER", 2),
            _ => (b"BYE", 3),
        };
        let extra = if method == Method::Refer {
            let controller = self.shared.settings.load().bridge_controller.clone();
            format!(
                "Refer-To: <{}>\r\nReferred-By: <{controller}>\r\n",
                call.refer_to
            )
        } else {
            String::new()
        };
        let (peer, generation) = (call.peer, call.generation);
        let (via, txn) = self.client_via_cookie(b"br", peer.local);
        let Some(call) = self.bridges.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let req = Req {
            method: name,
            cseq,
            content_type: b"",
            body: b"",
            extra: extra.as_bytes(),
        };
        let bytes = self.bridge_bytes(call, &via, &req);
        if let Some(c) = self.bridges.get_mut(slot).and_then(Option::as_mut) {
            c.txn = Some(txn);
        }
        let req = NewRequest {
            bridge: Some((slot as u32, generation)),
            ..NewRequest::plain(txn, bytes, peer, method)
        };
        self.start_generated(now, req, out);
    }

    /// The live bridge call in `slot` of generation `generation`.
    fn bridge_mut(&mut self, slot: usize, generation: u32) -> Option<&mut BridgeCall> {
        self.bridges
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.generation == generation)
    }

    /// End bridge call `slot`: cancel every timer it armed, drop its requests in flight, free
    /// the slot.
    fn free_bridge(&mut self, slot: usize) {
        let Some(call) = self.bridges.get_mut(slot).and_then(Option::take) else {
            return;
        };
        for k in call.ict_keys.into_iter().chain([call.deadline]).flatten() {
            self.wheel.cancel(k);
        }
        for t in [call.txn, call.cancel_txn].into_iter().flatten() {
            self.drop_generated(t);
        }
    }

    /// Carry out what the INVITE's client transaction asked for.
    fn apply_bridge_ict(
        &mut self,
        now: u64,
        slot: usize,
        actions: ict::Actions,
        resp: Option<&Message<'_>>,
        out: &mut Output,
    ) {
        for a in actions.iter() {
            let Some(call) = self.bridges.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let d = call.dst;
            let Some(invite) = &call.invite else {
                return;
            };
            match a {
                Action::Send => {
                    out.push_bytes(invite.bytes(), d.addr, d.transport, d.local, None);
                    self.stats.inc(Counter::RetransSent);
                }
                Action::Arm(timer, at) => {
                    let item = TimerItem::BridgeIct {
                        slot: slot as u32,
                        generation: call.generation,
                        timer,
                    };
                    if let Some(k) = call.ict_keys.get_mut(timer.slot()) {
                        arm(&mut self.wheel, k, at, item);
                    }
                }
                Action::Cancel(timer) => {
                    if let Some(k) = call.ict_keys.get_mut(timer.slot()) {
                        disarm(&mut self.wheel, k);
                    }
                }
                Action::SendCancel => {
                    let mut bytes = Vec::with_capacity(512);
                    if wire::build::cancel_with(&invite.view(), &[], &mut bytes).is_err() {
                        continue;
                    }
                    let txn = self.reserve_generated();
                    if let Some(c) = self.bridges.get_mut(slot).and_then(Option::as_mut) {
                        c.cancel_txn = Some(txn);
                    }
                    let req = NewRequest::plain(txn, bytes, d, Method::Cancel);
                    self.start_generated(now, req, out);
                }
                Action::SendAck => {
                    let Some(r) = resp else { continue };
                    let start = out.buf.len();
                    if wire::build::ack_for_non2xx(&invite.view(), r, &mut out.buf).is_ok() {
                        out.push_from(start, d.addr, d.transport, d.local, None);
                    } else {
                        out.buf.truncate(start);
                    }
                }
            }
        }
    }

    /// The INVITE failed (refused or timed out): keep the call only to ACK retransmitted
    /// finals ([`TIMER_D`] over UDP), then free it.
    fn bridge_failed(&mut self, now: u64, slot: usize) {
        let Some(call) = self.bridges.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        call.state = BridgeState::Failed;
        if call.dst.transport != Transport::Udp && call.cancel_txn.is_none() {
            return self.free_bridge(slot);
        }
        let item = TimerItem::Bridge {
            slot: slot as u32,
            generation: call.generation,
        };
        arm(&mut self.wheel, &mut call.deadline, now + TIMER_D, item);
    }

    /// A response to the INVITE (or its CANCEL) of bridge call `slot`.
    pub(crate) fn on_bridge_response(
        &mut self,
        now: u64,
        msg: &ValidResponse<'_, '_>,
        (slot, generation): (u32, u32),
        out: &mut Output,
    ) {
        let i = slot as usize;
        let method = msg.cseq().method;
        let code = msg.code();
        let timers = self.shared.settings.load().txn_timers();
        let Some(call) = self.bridge_mut(i, generation) else {
            self.stats.inc(Counter::Absorbed);
            return;
        };
        if method == Method::Cancel {
            if let Some(t) = call.cancel_txn {
                self.on_generated_response(now, msg, t, method, out);
            } else {
                self.stats.inc(Counter::Absorbed);
            }
            return;
        }
        if method != Method::Invite {
            self.stats.inc(Counter::Absorbed);
            return;
        }
        let (report, actions) = call.ict.on_response(now, code, &timers);
        if let Report::Success { first: true } = report
            && matches!(call.state, BridgeState::Inviting | BridgeState::Failed)
        {
            // The dialog: the peer's tag and remote target (RFC 3261 §12.1.2).
            call.to_tag = msg
                .to()
                .tag()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default();
            if let Some(c) = msg.contacts().next() {
                call.remote = String::from_utf8_lossy(c.uri).into_owned();
            }
            if let Ok(u) = wire::parse_uri(call.remote.as_bytes())
                && let Some(ip) = u.host_ip()
            {
                call.peer.addr = SocketAddr::new(ip, u.port.unwrap_or(5060));
            }
        }
        self.apply_bridge_ict(now, i, actions, Some(msg), out);
        match report {
            Report::Success { first } => {
                // Every 2xx is ACKed (the first, its retransmissions), as the UA core does.
                self.bridge_ack(i, out);
                let state = self.bridge_mut(i, generation).map(|c| c.state);
                match (first, state) {
                    (true, Some(BridgeState::Inviting)) => {
                        if let Some(c) = self.bridge_mut(i, generation) {
                            c.state = BridgeState::Referring;
                        }
                        self.bridge_request(now, i, Method::Refer, out);
                    }
                    // Answered after we gave up (a 2xx crossing our CANCEL): ACK, then BYE
                    // (RFC 3261 §15), and the call ends on the BYE's outcome.
                    (true, Some(BridgeState::Failed)) => {
                        if let Some(c) = self.bridge_mut(i, generation) {
                            c.state = BridgeState::Ending;
                        }
                        self.bridge_request(now, i, Method::Bye, out);
                    }
                    _ => {}
                }
            }
            Report::Failure(_) => self.bridge_failed(now, i),
            _ => {}
        }
    }

    /// A timer of the INVITE of bridge call `slot` fired.
    pub(crate) fn on_bridge_ict_timer(
        &mut self,
        now: u64,
        (slot, generation): (u32, u32),
        timer: ict::Timer,
        out: &mut Output,
    ) {
        let i = slot as usize;
        let timers = self.shared.settings.load().txn_timers();
        let Some(call) = self.bridge_mut(i, generation) else {
            return;
        };
        if let Some(k) = call.ict_keys.get_mut(timer.slot()) {
            *k = None;
        }
        let (report, actions) = call.ict.on_timer(now, timer, &timers);
        self.apply_bridge_ict(now, i, actions, None, out);
        if report == Report::TimedOut {
            self.stats.inc(Counter::GeneratedTimedOut);
            self.bridge_failed(now, i);
        }
    }

    /// A REFER or BYE of bridge call `slot` ended (answered, or Timer F): REFER -> BYE, BYE
    /// -> the call ends.
    pub(crate) fn on_bridge_outcome(
        &mut self,
        now: u64,
        (slot, generation): (u32, u32),
        method: Method,
        out: &mut Output,
    ) {
        let i = slot as usize;
        let Some(call) = self.bridge_mut(i, generation) else {
            return;
        };
        call.txn = None;
        match (call.state, method) {
            (BridgeState::Referring, Method::Refer) => {
                call.state = BridgeState::Ending;
                self.bridge_request(now, i, Method::Bye, out);
            }
            (BridgeState::Ending, Method::Bye) => self.free_bridge(i),
            _ => {}
        }
    }

    /// The deadline of bridge call `slot`: a still ringing INVITE is CANCELled (and the call
    /// waits [`TIMER_D`] for the 487), anything else ends now.
    pub(crate) fn on_bridge_timeout(
        &mut self,
        now: u64,
        slot: u32,
        generation: u32,
        out: &mut Output,
    ) {
        let i = slot as usize;
        let timers = self.shared.settings.load().txn_timers();
        let Some(call) = self.bridge_mut(i, generation) else {
            return;
        };
        call.deadline = None;
        if call.state == BridgeState::Inviting && call.ict.is_pending() {
            let actions = call.ict.cancel(now, &timers);
            self.apply_bridge_ict(now, i, actions, None, out);
            self.bridge_failed(now, i);
            return;
        }
        self.free_bridge(i);
    }

    /// A request to our bridge Contact (NOTIFY about the REFER, BYE): 200, and a BYE ends the
    /// bridge call. True when it was one.
    pub(crate) fn on_bridge_request(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        out: &mut Output,
    ) -> bool {
        let is_bridge_uri = msg.uri().user.is_some_and(|u| u == BRIDGE_USER.as_bytes());
        if !is_bridge_uri {
            return false;
        }
        // Bridge calls are started on worker 0 (see `Shared::dlg_bridge`).
        if self.worker != 0 {
            out.handoff = Some(0);
            return true;
        }
        let call_id = msg.call_id();
        let pos = self
            .bridges
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.call_id.as_bytes() == call_id));
        if msg.method() == Method::Ack {
            return true;
        }
        match pos {
            Some(i) => {
                self.reply(inb, msg, 200, b"OK", None, &[], out);
                if msg.method() == Method::Bye {
                    self.free_bridge(i);
                }
            }
            None => self.reply(
                inb,
                msg,
                481,
                b"Call/Transaction Does Not Exist",
                None,
                &[],
                out,
            ),
        }
        true
    }

    /// Bridge calls in progress on this worker.
    pub fn bridges_active(&self) -> usize {
        self.bridges.iter().filter(|b| b.is_some()).count()
    }
}

impl super::Shared {
    /// `dlg_bridge(from, to, op)` from any thread: worker 0 calls `from` and refers it to `to`.
    /// False when the queue is unavailable; URI errors are logged by the worker.
    pub fn dlg_bridge(&self, from: &str, to: &str, op: Option<&str>) -> bool {
        self.send(
            0,
            super::Command::Bridge {
                from: from.to_string(),
                to: to.to_string(),
                op: op.map(str::to_string),
            },
        )
    }
}
