//! The UAC: a slab of sans-IO call state machines that originate calls and record latencies.
//!
//! Invariants:
//! - No clock, no sockets: time comes in as `now_us`, datagrams as bytes, output goes to the
//!   caller's [`Outbox`].
//! - A call lives in `calls[slot]`; its Call-ID, From tag and branches start with
//!   `hex8(slot) hex8(generation)`, so a response finds its call in O(1) without hashing, and a late
//!   response for a recycled slot (other `generation`) is counted as stray, never misapplied.
//! - In-dialog requests follow RFC 3261 §12.1.2/§12.2.1.1: R-URI = the 2xx Contact, Route =
//!   the 2xx Record-Route entries in order, To tag from the 2xx; sent to the first Route hop,
//!   else to the Contact address, else to the target.
//! - Retransmissions: INVITE Timer A doubles from T1 until a provisional; non-INVITE Timer E
//!   doubles up to T2; Timer B/F (configurable INVITE timeout) fail the call.
//! - Latencies are measured from intended send times: INVITE from the call's scheduled start,
//!   BYE from the end of the scheduled hold.
//! - Steady state allocates nothing: slots keep their buffers when recycled. The opt-in
//!   outcome log ([`Uac::log_outcomes`], off by default, for simulations) allocates per call.

use std::net::SocketAddr;

use crate::outbox::{Outbox, Timers, rfc};
use crate::scenario::Scenario;
use crate::sipmsg::{self, Kind, Method, Msg};
use crate::stats::{FailReason, Metric, Stats};

/// Static configuration of a UAC.
#[derive(Clone, Debug)]
pub struct UacConfig {
    /// Where initial requests go (proxy or UAS).
    pub target: SocketAddr,
    /// Request-URI of initial requests.
    pub ruri: String,
    /// Local address of each socket, by socket index (`Transmit::sock`).
    pub local: Vec<SocketAddr>,
    /// Maximum wait for a final response to INVITE (Timer B), µs.
    pub invite_timeout_us: u64,
    /// Maximum calls in progress.
    pub max_concurrent: usize,
    /// Distinguishes runs in Call-IDs.
    pub run_tag: u32,
    /// Reliable transport (TCP): no request retransmissions (Timer A/E off, B/F still on),
    /// `SIP/2.0/TCP` in Via.
    pub reliable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Free,
    Inviting,
    Cancelling,
    Holding,
    ReInviting,
    Byeing,
    Optioning,
}

#[derive(Debug)]
struct Call {
    generation: u32,
    seq: u32,
    st: St,
    scen: Scenario,
    sock: u16,
    start_us: u64,
    /// When the loop actually started the call (≥ `start_us` when the generator is late).
    sent_us: u64,
    hold_us: u64,
    req_us: u64,
    retx_at: u64,
    retx_iv: u64,
    deadline: u64,
    hold_end: u64,
    armed: u64,
    cseq: u32,
    got100: bool,
    got180: bool,
    cancel_ok: bool,
    got487: bool,
    last: Vec<u8>,
    last_dst: SocketAddr,
    dlg: Vec<u8>,
    tag_len: usize,
    contact_len: usize,
    dst: SocketAddr,
}

const NEVER: u64 = u64::MAX;

/// When the first retransmission of a new request is due (never over a reliable transport).
fn first_retx(reliable: bool, now_us: u64) -> u64 {
    if reliable { NEVER } else { now_us + rfc::T1 }
}

impl Call {
    fn new(dst: SocketAddr) -> Call {
        Call {
            generation: 0,
            seq: 0,
            st: St::Free,
            scen: Scenario::Basic,
            sock: 0,
            start_us: 0,
            sent_us: 0,
            hold_us: 0,
            req_us: 0,
            retx_at: NEVER,
            retx_iv: rfc::T1,
            deadline: NEVER,
            hold_end: NEVER,
            armed: NEVER,
            cseq: 1,
            got100: false,
            got180: false,
            cancel_ok: false,
            got487: false,
            last: Vec::with_capacity(768),
            last_dst: dst,
            dlg: Vec::with_capacity(256),
            tag_len: 0,
            contact_len: 0,
            dst,
        }
    }
    fn next_wake(&self) -> u64 {
        self.retx_at.min(self.deadline).min(self.hold_end)
    }
    fn to_tag(&self) -> &[u8] {
        self.dlg.get(..self.tag_len).unwrap_or(&[])
    }
    fn contact(&self) -> &[u8] {
        self.dlg
            .get(self.tag_len..self.tag_len + self.contact_len)
            .unwrap_or(&[])
    }
    fn route(&self) -> &[u8] {
        self.dlg
            .get(self.tag_len + self.contact_len..)
            .unwrap_or(&[])
    }
}

/// How one call ended, as recorded by the opt-in outcome log ([`Uac::log_outcomes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The call's Call-ID.
    pub call_id: String,
    /// Its scenario.
    pub scenario: Scenario,
    /// `None` when the call went as the scenario expects, else why it failed.
    pub fail: Option<FailReason>,
}

/// Why a call could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// `max_concurrent` calls are in progress.
    Full,
}

/// What one request carries (see [`Uac::build_request`]).
struct Req<'b> {
    method: Method,
    ruri: &'b [u8],
    branch_cseq: u32,
    branch_kind: u8,
    cseq: u32,
    to_tag: &'b [u8],
    route: &'b [u8],
    sdp: bool,
    scenario: Option<Scenario>,
}

/// Originates calls; one per worker thread.
#[derive(Debug)]
pub struct Uac {
    cfg: UacConfig,
    local_str: Vec<String>,
    calls: Vec<Call>,
    free: Vec<u32>,
    active: usize,
    timers: Timers,
    next_sock: usize,
    /// Latencies and counters recorded so far (the caller may drain them).
    pub stats: Stats,
    /// Per-call outcomes, recorded only when enabled ([`Uac::log_outcomes`]).
    outcomes: Option<Vec<CallOutcome>>,
}

impl Uac {
    /// A UAC with no calls.
    pub fn new(cfg: UacConfig) -> Uac {
        let local_str = cfg.local.iter().map(|a| a.to_string()).collect();
        Uac {
            cfg,
            local_str,
            calls: Vec::new(),
            free: Vec::new(),
            active: 0,
            timers: Timers::default(),
            next_sock: 0,
            stats: Stats::default(),
            outcomes: None,
        }
    }

    /// Turns the per-call outcome log on or off (off by default: it allocates per call).
    pub fn log_outcomes(&mut self, on: bool) {
        self.outcomes = on.then(Vec::new);
    }

    /// The outcomes logged since the previous `take_outcomes` (empty when the log is off).
    pub fn take_outcomes(&mut self) -> Vec<CallOutcome> {
        self.outcomes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Earliest time `handle_timeout` has work (may be early; never late).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek()
    }

    /// Starts call flow `scen` whose schedule said `intended_us`, holding `hold_us`.
    pub fn start_call(
        &mut self,
        now_us: u64,
        intended_us: u64,
        scen: Scenario,
        hold_us: u64,
        out: &mut Outbox,
    ) -> Result<(), StartError> {
        if self.active >= self.cfg.max_concurrent {
            return Err(StartError::Full);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.calls.push(Call::new(self.cfg.target));
                (self.calls.len() - 1) as u32
            }
        };
        let nsock = self.cfg.local.len().max(1);
        let sock = (self.next_sock % nsock) as u16;
        self.next_sock = self.next_sock.wrapping_add(1);
        self.active += 1;
        self.stats.c.started += 1;
        let late = now_us.saturating_sub(intended_us);
        if late > 10_000 {
            self.stats.c.behind += 1;
        }
        self.stats.max_behind_us = self.stats.max_behind_us.max(late);
        self.stats.record(Metric::StartLag, late);
        let target = self.cfg.target;
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return Err(StartError::Full);
        };
        c.generation = c.generation.wrapping_add(1);
        c.st = if scen == Scenario::Options {
            St::Optioning
        } else {
            St::Inviting
        };
        c.scen = scen;
        c.sock = sock;
        c.start_us = intended_us;
        c.sent_us = now_us.max(intended_us);
        c.req_us = intended_us;
        c.hold_us = hold_us;
        c.retx_at = first_retx(self.cfg.reliable, now_us);
        c.retx_iv = rfc::T1;
        c.deadline = now_us
            + if scen == Scenario::Options {
                rfc::TXN_TIMEOUT
            } else {
                self.cfg.invite_timeout_us
            };
        c.hold_end = NEVER;
        c.cseq = 1;
        c.got100 = false;
        c.got180 = false;
        c.cancel_ok = false;
        c.got487 = false;
        c.dlg.clear();
        c.tag_len = 0;
        c.contact_len = 0;
        c.dst = target;
        c.last_dst = target;
        let mut last = std::mem::take(&mut c.last);
        last.clear();
        let method = if scen == Scenario::Options {
            Method::Options
        } else {
            Method::Invite
        };
        let req = Req {
            method,
            ruri: self.cfg.ruri.as_bytes(),
            branch_cseq: 1,
            branch_kind: b'i',
            cseq: 1,
            to_tag: &[],
            route: &[],
            sdp: method == Method::Invite,
            scenario: (scen != Scenario::Basic).then_some(scen),
        };
        self.build_request(&mut last, slot, &req);
        out.push(sock, target, &last);
        self.stats.c.sent += 1;
        if let Some(c) = self.calls.get_mut(slot as usize) {
            c.last = last;
        }
        self.rearm(slot, true);
        Ok(())
    }

    /// Feeds one datagram received on socket `sock` from `src`.
    pub fn handle(
        &mut self,
        now_us: u64,
        sock: u16,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut Outbox,
    ) {
        self.stats.c.recv += 1;
        let Ok(m) = Msg::parse(bytes) else {
            self.stats.c.stray += 1;
            return;
        };
        let code = match m.kind {
            Kind::Response(code) => code,
            Kind::Request(method) => {
                self.on_request(method, sock, src, &m, out);
                return;
            }
        };
        let cid = m.get(m.call_id);
        let (Some(slot), Some(generation)) = (
            sipmsg::parse_hex8(cid),
            cid.get(8..).and_then(sipmsg::parse_hex8),
        ) else {
            self.stats.c.stray += 1;
            return;
        };
        let Some(c) = self.calls.get(slot as usize) else {
            self.stats.c.stray += 1;
            return;
        };
        if c.generation != generation || c.st == St::Free {
            self.stats.c.stray += 1;
            return;
        }
        match m.cseq_method {
            Method::Invite => self.on_invite_resp(now_us, slot, code, &m, out),
            Method::Cancel => self.on_cancel_resp(slot, code),
            Method::Bye if c.st == St::Byeing => {
                self.on_final(now_us, slot, code, 200, Metric::Bye200)
            }
            Method::Options if c.st == St::Optioning => {
                self.on_final(now_us, slot, code, 200, Metric::Setup)
            }
            _ => self.stats.c.stray += 1,
        }
    }

    /// A request to the UAC: a BYE from the peer or a proxy (e.g. a dialog timeout) is
    /// answered 200 and ends a live call as failed (`PeerBye`); OPTIONS is answered 200;
    /// anything else is stray.
    fn on_request(
        &mut self,
        method: Method,
        sock: u16,
        src: SocketAddr,
        m: &Msg<'_>,
        out: &mut Outbox,
    ) {
        if !matches!(method, Method::Bye | Method::Options) {
            self.stats.c.stray += 1;
            return;
        }
        let o = sipmsg::ResponseOpts {
            code: 200,
            to_tag: b"",
            contact: b"",
            record_route: false,
            sdp: false,
        };
        out.push_with(sock, src, |b| sipmsg::build_response(b, m, &o));
        self.stats.c.sent += 1;
        if method != Method::Bye {
            return;
        }
        self.stats.c.peer_byes += 1;
        let cid = m.get(m.call_id);
        if let (Some(slot), Some(generation)) = (
            sipmsg::parse_hex8(cid),
            cid.get(8..).and_then(sipmsg::parse_hex8),
        ) && let Some(c) = self.calls.get(slot as usize)
            && c.generation == generation
            && c.st != St::Free
        {
            self.finish(slot, Some(FailReason::PeerBye));
        }
    }

    /// Runs due timers: retransmissions, timeouts, end of hold.
    pub fn handle_timeout(&mut self, now_us: u64, out: &mut Outbox) {
        while let Some((slot, seq)) = self.timers.pop_due(now_us) {
            let Some(c) = self.calls.get_mut(slot as usize) else {
                continue;
            };
            if c.seq != seq || c.st == St::Free {
                continue;
            }
            c.armed = NEVER;
            if now_us >= c.deadline {
                let r = if matches!(c.st, St::Inviting | St::ReInviting) {
                    FailReason::InviteTimeout
                } else {
                    FailReason::NonInviteTimeout
                };
                self.finish(slot, Some(r));
                continue;
            }
            if now_us >= c.hold_end {
                c.hold_end = NEVER;
                let intended = c.req_us;
                self.after_hold(now_us, intended, slot, out);
                continue;
            }
            if now_us >= c.retx_at {
                let invite = matches!(c.st, St::Inviting | St::ReInviting);
                c.retx_iv = if invite {
                    c.retx_iv * 2
                } else {
                    (c.retx_iv * 2).min(rfc::T2)
                };
                c.retx_at = now_us + c.retx_iv;
                out.push(c.sock, c.last_dst, &c.last);
                self.stats.c.sent += 1;
                self.stats.c.retrans += 1;
            }
            self.rearm(slot, false);
        }
    }

    fn rearm(&mut self, slot: u32, force: bool) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        let w = c.next_wake();
        if w != NEVER && (force || w < c.armed) {
            c.seq = c.seq.wrapping_add(1);
            c.armed = w;
            self.timers.arm(w, slot, c.seq);
        }
    }

    fn finish(&mut self, slot: u32, fail: Option<FailReason>) {
        if let Some(c) = self.calls.get_mut(slot as usize) {
            if c.st == St::Free {
                return;
            }
            c.st = St::Free;
            c.seq = c.seq.wrapping_add(1);
            self.free.push(slot);
            self.active = self.active.saturating_sub(1);
            match fail {
                None => self.stats.c.ok += 1,
                Some(r) => self.stats.fail(r),
            }
            let (generation, scenario) = (c.generation, c.scen);
            if let Some(log) = self.outcomes.as_mut() {
                let mut id = Vec::with_capacity(40);
                sipmsg::push_hex8(&mut id, slot);
                sipmsg::push_hex8(&mut id, generation);
                id.push(b'-');
                sipmsg::push_hex8(&mut id, self.cfg.run_tag);
                id.extend_from_slice(b"@loadgen");
                log.push(CallOutcome {
                    call_id: String::from_utf8_lossy(&id).into_owned(),
                    scenario,
                    fail,
                });
            }
        }
    }

    fn on_invite_resp(&mut self, now_us: u64, slot: u32, code: u16, m: &Msg<'_>, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        let since = now_us.saturating_sub(c.req_us);
        match (c.st, code) {
            (St::Inviting | St::Cancelling, 100..=199) => {
                if code == 100 && !c.got100 {
                    c.got100 = true;
                    self.stats.record(Metric::Invite100, since);
                } else if code >= 180 && !c.got180 {
                    c.got180 = true;
                    self.stats.record(Metric::Invite180, since);
                }
                if c.st == St::Inviting {
                    c.retx_at = NEVER; // Timer A stops on a provisional
                    if c.scen == Scenario::Cancel && code >= 180 {
                        self.send_cancel(now_us, slot, out);
                    }
                }
            }
            (St::Inviting, 200..=299) => {
                self.stats.record(Metric::Invite200, since);
                let served = now_us.saturating_sub(c.sent_us);
                self.stats.record(Metric::Invite200Sent, served);
                self.stats.record(Metric::Setup, since);
                self.store_dialog(slot, m);
                self.send_ack(slot, 1, out);
                let ok = matches!(
                    self.calls.get(slot as usize).map(|c| c.scen),
                    Some(Scenario::Basic | Scenario::Fork | Scenario::Nobye | Scenario::Reinvite)
                );
                if !ok {
                    self.finish(slot, Some(FailReason::UnexpectedStatus));
                    return;
                }
                if let Some(c) = self.calls.get_mut(slot as usize) {
                    c.st = St::Holding;
                    c.retx_at = NEVER;
                    c.deadline = NEVER;
                    c.req_us = now_us + c.hold_us;
                    if c.hold_us == 0 {
                        self.after_hold(now_us, now_us, slot, out);
                        return;
                    }
                    c.hold_end = c.req_us;
                }
                self.rearm(slot, false);
            }
            (St::ReInviting, 200..=299) if m.cseq == c.cseq => {
                self.send_ack(slot, m.cseq, out);
                self.send_bye(now_us, now_us, slot, out);
            }
            (St::Holding | St::ReInviting | St::Byeing, 200..=299) => {
                // Retransmitted 2xx: our ACK was lost. ACK again.
                self.stats.c.retrans += 1;
                self.send_ack(slot, m.cseq, out);
            }
            (St::Inviting | St::Cancelling | St::ReInviting, 300..=699) => {
                self.send_ack_non2xx(slot, m, out);
                let Some(c) = self.calls.get_mut(slot as usize) else {
                    return;
                };
                let expected = match c.st {
                    St::Inviting => {
                        (c.scen == Scenario::Reject && code == 486)
                            || (c.scen == Scenario::Noanswer && code == 408)
                    }
                    St::Cancelling => code == 487,
                    _ => false,
                };
                if !expected {
                    self.finish(slot, Some(FailReason::UnexpectedStatus));
                } else if c.st == St::Cancelling {
                    if !c.got487 {
                        c.got487 = true;
                        self.stats.record(Metric::Setup, since);
                    }
                    if c.cancel_ok {
                        self.finish(slot, None);
                    }
                } else {
                    self.stats.record(Metric::Setup, since);
                    self.finish(slot, None);
                }
            }
            _ => {}
        }
    }

    fn on_cancel_resp(&mut self, slot: u32, code: u16) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        if c.st != St::Cancelling || code < 200 {
            return;
        }
        if code >= 300 {
            self.finish(slot, Some(FailReason::UnexpectedStatus));
            return;
        }
        c.cancel_ok = true;
        c.retx_at = NEVER;
        if c.got487 {
            self.finish(slot, None);
        }
    }

    fn on_final(&mut self, now_us: u64, slot: u32, code: u16, want: u16, metric: Metric) {
        let Some(c) = self.calls.get(slot as usize) else {
            return;
        };
        if code < 200 {
            if let Some(c) = self.calls.get_mut(slot as usize) {
                c.retx_iv = rfc::T2; // Timer E after a provisional
            }
            return;
        }
        let since = now_us.saturating_sub(c.req_us);
        if code == want {
            self.stats.record(metric, since);
            self.finish(slot, None);
        } else {
            self.finish(slot, Some(FailReason::UnexpectedStatus));
        }
    }

    fn after_hold(&mut self, now_us: u64, intended_us: u64, slot: u32, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        match c.scen {
            Scenario::Nobye => self.finish(slot, None),
            Scenario::Reinvite if c.cseq == 1 => {
                c.cseq = 2;
                c.st = St::ReInviting;
                c.req_us = intended_us;
                c.retx_at = first_retx(self.cfg.reliable, now_us);
                c.retx_iv = rfc::T1;
                c.deadline = now_us + self.cfg.invite_timeout_us;
                self.send_in_dialog(slot, Method::Invite, b'r', true, out);
                self.rearm(slot, false);
            }
            _ => self.send_bye(now_us, intended_us, slot, out),
        }
    }

    fn send_bye(&mut self, now_us: u64, intended_us: u64, slot: u32, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        c.cseq += 1;
        c.st = St::Byeing;
        c.req_us = intended_us;
        c.retx_at = first_retx(self.cfg.reliable, now_us);
        c.retx_iv = rfc::T1;
        c.deadline = now_us + rfc::TXN_TIMEOUT;
        c.hold_end = NEVER;
        self.send_in_dialog(slot, Method::Bye, b'b', false, out);
        self.rearm(slot, false);
    }

    fn send_cancel(&mut self, now_us: u64, slot: u32, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        c.st = St::Cancelling;
        c.retx_at = first_retx(self.cfg.reliable, now_us);
        c.retx_iv = rfc::T1;
        c.deadline = now_us + rfc::TXN_TIMEOUT;
        let mut last = std::mem::take(&mut c.last);
        last.clear();
        let req = Req {
            method: Method::Cancel,
            ruri: self.cfg.ruri.as_bytes(),
            branch_cseq: 1,
            branch_kind: b'i',
            cseq: 1,
            to_tag: &[],
            route: &[],
            sdp: false,
            scenario: None,
        };
        self.build_request(&mut last, slot, &req);
        let target = self.cfg.target;
        if let Some(c) = self.calls.get_mut(slot as usize) {
            out.push(c.sock, target, &last);
            c.last = last;
            c.last_dst = target;
        }
        self.stats.c.sent += 1;
        self.rearm(slot, false);
    }

    /// Builds an in-dialog request into `last` (for retransmission) and sends it.
    fn send_in_dialog(&mut self, slot: u32, method: Method, kind: u8, sdp: bool, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        let mut last = std::mem::take(&mut c.last);
        let dlg = std::mem::take(&mut c.dlg);
        let (cseq, tl, cl, dst, sock) = (c.cseq, c.tag_len, c.contact_len, c.dst, c.sock);
        last.clear();
        let contact = dlg.get(tl..tl + cl).unwrap_or(&[]);
        let req = Req {
            method,
            ruri: if contact.is_empty() {
                self.cfg.ruri.as_bytes()
            } else {
                contact
            },
            branch_cseq: cseq,
            branch_kind: kind,
            cseq,
            to_tag: dlg.get(..tl).unwrap_or(&[]),
            route: dlg.get(tl + cl..).unwrap_or(&[]),
            sdp,
            scenario: None,
        };
        self.build_request(&mut last, slot, &req);
        out.push(sock, dst, &last);
        self.stats.c.sent += 1;
        if let Some(c) = self.calls.get_mut(slot as usize) {
            c.last = last;
            c.dlg = dlg;
            c.last_dst = dst;
        }
    }

    fn send_ack(&mut self, slot: u32, cseq: u32, out: &mut Outbox) {
        let Some(c) = self.calls.get(slot as usize) else {
            return;
        };
        let contact = c.contact();
        let req = Req {
            method: Method::Ack,
            ruri: if contact.is_empty() {
                self.cfg.ruri.as_bytes()
            } else {
                contact
            },
            branch_cseq: cseq,
            branch_kind: b'a',
            cseq,
            to_tag: c.to_tag(),
            route: c.route(),
            sdp: false,
            scenario: None,
        };
        let (sock, dst) = (c.sock, c.dst);
        out.push_with(sock, dst, |b| self.build_request(b, slot, &req));
        self.stats.c.sent += 1;
    }

    /// ACK for a non-2xx final: hop-by-hop, same branch as the INVITE, To tag of the response.
    fn send_ack_non2xx(&mut self, slot: u32, m: &Msg<'_>, out: &mut Outbox) {
        let Some(c) = self.calls.get(slot as usize) else {
            return;
        };
        let req = Req {
            method: Method::Ack,
            ruri: self.cfg.ruri.as_bytes(),
            branch_cseq: m.cseq,
            branch_kind: if m.cseq == 1 { b'i' } else { b'r' },
            cseq: m.cseq,
            to_tag: m.get(m.to_tag),
            route: &[],
            sdp: false,
            scenario: None,
        };
        let sock = c.sock;
        let dst = if m.cseq == 1 { self.cfg.target } else { c.dst };
        out.push_with(sock, dst, |b| self.build_request(b, slot, &req));
        self.stats.c.sent += 1;
    }

    fn store_dialog(&mut self, slot: u32, m: &Msg<'_>) {
        let target = self.cfg.target;
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        c.dlg.clear();
        c.dlg.extend_from_slice(m.get(m.to_tag));
        c.tag_len = c.dlg.len();
        c.dlg.extend_from_slice(m.get(m.contact));
        c.contact_len = c.dlg.len() - c.tag_len;
        let mut first = None;
        for (i, r) in m.record_routes().enumerate() {
            if i > 0 {
                c.dlg.extend_from_slice(b", ");
            } else {
                first = sipmsg::uri_addr(r);
            }
            c.dlg.extend_from_slice(r);
        }
        c.dst = first
            .or_else(|| sipmsg::uri_addr(m.get(m.contact)))
            .unwrap_or(target);
    }

    fn build_request(&self, b: &mut Vec<u8>, slot: u32, r: &Req<'_>) {
        let Some(c) = self.calls.get(slot as usize) else {
            return;
        };
        let local = self
            .local_str
            .get(usize::from(c.sock))
            .map_or("127.0.0.1", String::as_str)
            .as_bytes();
        let m = r.method.as_str().as_bytes();
        b.extend_from_slice(m);
        b.push(b' ');
        b.extend_from_slice(r.ruri);
        b.extend_from_slice(if self.cfg.reliable {
            b" SIP/2.0\r\nVia: SIP/2.0/TCP "
        } else {
            b" SIP/2.0\r\nVia: SIP/2.0/UDP "
        });
        b.extend_from_slice(local);
        b.extend_from_slice(b";branch=z9hG4bK");
        sipmsg::push_hex8(b, slot);
        sipmsg::push_hex8(b, c.generation);
        b.push(r.branch_kind);
        sipmsg::push_dec(b, u64::from(r.branch_cseq));
        b.extend_from_slice(b";rport\r\n");
        if !r.route.is_empty() {
            b.extend_from_slice(b"Route: ");
            b.extend_from_slice(r.route);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"Max-Forwards: 70\r\nFrom: <sip:loadgen@");
        b.extend_from_slice(local);
        b.extend_from_slice(b">;tag=");
        sipmsg::push_hex8(b, slot);
        sipmsg::push_hex8(b, c.generation);
        b.extend_from_slice(b"\r\nTo: <");
        b.extend_from_slice(self.cfg.ruri.as_bytes());
        b.push(b'>');
        if !r.to_tag.is_empty() {
            b.extend_from_slice(b";tag=");
            b.extend_from_slice(r.to_tag);
        }
        b.extend_from_slice(b"\r\nCall-ID: ");
        sipmsg::push_hex8(b, slot);
        sipmsg::push_hex8(b, c.generation);
        b.push(b'-');
        sipmsg::push_hex8(b, self.cfg.run_tag);
        b.extend_from_slice(b"@loadgen\r\nCSeq: ");
        sipmsg::push_dec(b, u64::from(r.cseq));
        b.push(b' ');
        b.extend_from_slice(m);
        b.extend_from_slice(b"\r\n");
        if matches!(r.method, Method::Invite) {
            b.extend_from_slice(b"Contact: <sip:loadgen@");
            b.extend_from_slice(local);
            b.extend_from_slice(b">\r\n");
        }
        if let Some(s) = r.scenario {
            b.extend_from_slice(sipmsg::SCENARIO_HDR.as_bytes());
            b.extend_from_slice(b": ");
            b.extend_from_slice(s.name().as_bytes());
            b.extend_from_slice(b"\r\n");
        }
        if r.sdp {
            b.extend_from_slice(b"Content-Type: application/sdp\r\nContent-Length: ");
            sipmsg::push_dec(b, sipmsg::SDP.len() as u64);
            b.extend_from_slice(b"\r\n\r\n");
            b.extend_from_slice(sipmsg::SDP);
        } else {
            b.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        }
    }
}
