//! The UAS: sans-IO answering machine whose behaviour per call comes from the
//! `X-Loadgen-Scenario` header of the INVITE (absent = basic, so SIPp UACs work).
//!
//! Invariants:
//! - No clock, no sockets: `handle(now_us, sock, src, bytes, out)` and `handle_timeout`.
//! - A call is found by a 64-bit hash of its Call-ID in a pre-hashed map, then confirmed by
//!   comparing the stored Call-ID bytes; a slot is recycled only after its linger time.
//! - Responses go back to the source address of the request, from the socket it came in on.
//! - A final response to INVITE is retransmitted (T1 doubling, capped at T2, like Timer G)
//!   until the ACK (or a BYE) arrives, and the call fails with `NoAck` after 64*T1.
//! - Repeated requests are absorbed: a retransmitted INVITE gets the last response again, a
//!   retransmitted BYE the 200 again (during the linger time).
//! - Steady state allocates nothing: slots keep their buffers when recycled.
//! - Opt-in callee hang-up ([`Uas::hang_up_nobye_after`], off by default): a confirmed
//!   `nobye` call gets a BYE from the UAS (RFC 3261 §12.2.1.1: R-URI = the INVITE's Contact,
//!   Route = its Record-Route in order, sent to the first Route hop), retransmitted like Timer
//!   E until a final response or 64*T1.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use crate::outbox::{Outbox, Timers, rfc};
use crate::scenario::Scenario;
use crate::sipmsg::{self, Kind, Method, Msg, ResponseOpts};
use crate::stats::{FailReason, Stats};

/// Static configuration of a UAS.
#[derive(Clone, Debug)]
pub struct UasConfig {
    /// Local address of each socket, by socket index (used in Contact).
    pub local: Vec<SocketAddr>,
    /// Send 100 Trying before answering.
    pub send_100: bool,
    /// Number of early dialogs (distinct To tags) in the `fork` scenario.
    pub fork_legs: u8,
    /// How long a finished call is kept to absorb retransmissions, µs.
    pub linger_us: u64,
    /// How long an unanswered (`noanswer`/`cancel`) or confirmed-without-BYE call is kept, µs.
    pub max_call_us: u64,
    /// Reliable transport (TCP): only 2xx are retransmitted until ACK (RFC 3261 §13.3.1.4),
    /// non-2xx finals are not (Timer G is UDP-only); Contact carries `;transport=tcp`.
    pub reliable: bool,
}

impl Default for UasConfig {
    fn default() -> Self {
        UasConfig {
            local: Vec::new(),
            send_100: true,
            fork_legs: 3,
            // RFC 3261 Timer J (64·T1): a UAC retransmits its BYE for up to 32 s, and a late
            // copy must still find the call, not get 481.
            linger_us: rfc::TXN_TIMEOUT,
            max_call_us: 300_000_000,
            reliable: false,
        }
    }
}

/// Passes a pre-computed 64-bit hash through.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// 64-bit hash of a Call-ID, 8 bytes at a time.
fn hash_call_id(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01b3_u64 | 0x9e37_0000_0000_0000);
        h = h.rotate_left(29);
    }
    for &x in chunks.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Free,
    /// 1xx sent, no final yet (cancel / noanswer).
    Early,
    /// Final response to (re-)INVITE sent, waiting for ACK.
    Completed,
    /// 2xx ACKed.
    Confirmed,
    /// BYE answered or non-2xx ACKed; absorbing retransmissions until the linger ends.
    Terminated,
    /// Our own BYE sent (callee hang-up), waiting for its final response.
    Byeing,
}

#[derive(Debug)]
struct Call {
    generation: u32,
    seq: u32,
    st: St,
    scen: Scenario,
    hash: u64,
    call_id: Vec<u8>,
    invite_cseq: u32,
    final_2xx: bool,
    sock: u16,
    src: SocketAddr,
    /// Last response to the (re-)INVITE, for retransmission.
    resp: Vec<u8>,
    /// The INVITE itself while the call is early (to build 487 on CANCEL).
    invite: Vec<u8>,
    retx_at: u64,
    retx_iv: u64,
    deadline: u64,
    armed: u64,
    /// Our BYE, built with the 2xx when the callee will hang up (else empty).
    bye: Vec<u8>,
    /// Where the BYE goes.
    bye_dst: SocketAddr,
    /// When the callee hangs up (NEVER = it does not).
    hangup_at: u64,
}

const NEVER: u64 = u64::MAX;

/// Answers calls; one per worker thread.
#[derive(Debug)]
pub struct Uas {
    cfg: UasConfig,
    contact: Vec<String>,
    index: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    calls: Vec<Call>,
    free: Vec<u32>,
    timers: Timers,
    /// XORed into the slot part of our To-tags ([`Uas::set_tag_salt`]).
    tag_salt: u32,
    /// Hang up confirmed `nobye` calls this long after the ACK ([`Uas::hang_up_nobye_after`]).
    hangup_us: Option<u64>,
    /// Counters (UAS fields) recorded so far.
    pub stats: Stats,
}

impl Uas {
    /// A UAS with no calls.
    pub fn new(cfg: UasConfig) -> Uas {
        let tp = if cfg.reliable { ";transport=tcp" } else { "" };
        let contact = cfg
            .local
            .iter()
            .map(|a| format!("sip:uas@{a}{tp}"))
            .collect();
        Uas {
            cfg,
            contact,
            index: HashMap::default(),
            calls: Vec::new(),
            free: Vec::new(),
            timers: Timers::default(),
            tag_salt: 0,
            hangup_us: None,
            stats: Stats::default(),
        }
    }

    /// Make this UAS's To-tags differ from another instance's: `salt` is XORed into the slot
    /// part of every tag (default 0). Tags are `hex8(slot) hex8(generation)`, unique per
    /// instance only; several instances behind one forking proxy need salts that differ above
    /// the highest slot (e.g. `instance << 24`), or two forks answer with the same tag.
    pub fn set_tag_salt(&mut self, salt: u32) {
        self.tag_salt = salt;
    }

    /// Callee hang-up (off by default): `Some(d)` makes the UAS send BYE on every `nobye`
    /// call `d` µs after the ACK of its 2xx (the UAC of a `nobye` call never sends one). The
    /// call then ends when the BYE gets a final response (counted `uas_ok`), or after 64*T1
    /// without one (counted `non_invite_timeout`). When on, each such call allocates its BYE.
    pub fn hang_up_nobye_after(&mut self, d: Option<u64>) {
        self.hangup_us = d;
    }

    /// Calls held (any state but free).
    pub fn active(&self) -> usize {
        self.index.len()
    }

    /// Earliest time `handle_timeout` has work (may be early; never late).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek()
    }

    /// Every call held (as [`Uas::active`] counts them): its Call-ID and state, one of
    /// `early` (1xx sent, no final), `completed` (final sent, no ACK), `confirmed` (2xx ACKed,
    /// no BYE) and `terminated` (ended, absorbing retransmissions until the linger time).
    /// For diagnostics and simulations; allocates.
    pub fn held_calls(&self) -> Vec<(String, &'static str)> {
        self.index
            .values()
            .filter_map(|&slot| self.calls.get(slot as usize))
            .map(|c| {
                let st = match c.st {
                    St::Free => "free",
                    St::Early => "early",
                    St::Completed => "completed",
                    St::Confirmed => "confirmed",
                    St::Terminated => "terminated",
                    St::Byeing => "byeing",
                };
                (String::from_utf8_lossy(&c.call_id).into_owned(), st)
            })
            .collect()
    }

    fn lookup(&self, cid: &[u8]) -> Option<u32> {
        let h = hash_call_id(cid);
        let slot = *self.index.get(&h)?;
        let c = self.calls.get(slot as usize)?;
        (c.st != St::Free && c.call_id == cid).then_some(slot)
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
        let method = match m.kind {
            Kind::Request(method) => method,
            Kind::Response(code) => {
                self.on_response(now_us, code, &m);
                return;
            }
        };
        let found = self.lookup(m.get(m.call_id));
        match (method, found) {
            (Method::Invite, None) if m.to_tag.is_empty() => {
                self.new_call(now_us, sock, src, &m, out)
            }
            (Method::Invite, Some(slot)) => {
                self.on_invite_again(now_us, slot, (sock, src), &m, out)
            }
            (Method::Ack, Some(slot)) => self.on_ack(now_us, slot),
            (Method::Bye, Some(slot)) => self.on_bye(now_us, slot, sock, src, &m, out),
            (Method::Cancel, Some(slot)) => self.on_cancel(now_us, slot, sock, src, &m, out),
            (Method::Options, None) => {
                self.stats.c.uas_calls += 1;
                self.stats.c.uas_ok += 1;
                self.reply(out, (sock, src), &m, 200, b"", false);
            }
            (Method::Ack, None) => self.stats.c.stray += 1,
            (_, None) => {
                self.stats.fail(FailReason::UnknownDialog);
                self.reply(out, (sock, src), &m, 481, b"", false);
            }
            _ => self.stats.c.stray += 1,
        }
    }

    fn reply(
        &mut self,
        out: &mut Outbox,
        (sock, src): (u16, SocketAddr),
        m: &Msg<'_>,
        code: u16,
        tag: &[u8],
        rich: bool,
    ) {
        let contact = if rich {
            self.contact
                .get(usize::from(sock))
                .or_else(|| self.contact.first())
                .map_or("", String::as_str)
        } else {
            ""
        };
        let o = ResponseOpts {
            code,
            to_tag: tag,
            contact: contact.as_bytes(),
            record_route: rich,
            sdp: rich && code == 200,
        };
        out.push_with(sock, src, |b| sipmsg::build_response(b, m, &o));
        self.stats.c.sent += 1;
    }

    fn new_call(&mut self, now_us: u64, sock: u16, src: SocketAddr, m: &Msg<'_>, out: &mut Outbox) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.calls.push(Call {
                    generation: 0,
                    seq: 0,
                    st: St::Free,
                    scen: Scenario::Basic,
                    hash: 0,
                    call_id: Vec::with_capacity(64),
                    invite_cseq: 0,
                    final_2xx: false,
                    sock: 0,
                    src,
                    resp: Vec::with_capacity(768),
                    invite: Vec::new(),
                    retx_at: NEVER,
                    retx_iv: rfc::T1,
                    deadline: NEVER,
                    armed: NEVER,
                    bye: Vec::new(),
                    bye_dst: src,
                    hangup_at: NEVER,
                });
                (self.calls.len() - 1) as u32
            }
        };
        let cid = m.get(m.call_id);
        let hash = hash_call_id(cid);
        if let Some(old) = self.index.insert(hash, slot) {
            // 64-bit hash collision with a live call: keep the old one, drop this INVITE.
            self.index.insert(hash, old);
            self.free.push(slot);
            self.stats.c.stray += 1;
            return;
        }
        self.stats.c.uas_calls += 1;
        let scen = Scenario::from_header(m.get(m.scenario));
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        c.generation = c.generation.wrapping_add(1);
        c.scen = scen;
        c.hash = hash;
        c.call_id.clear();
        c.call_id.extend_from_slice(cid);
        c.invite_cseq = m.cseq;
        c.sock = sock;
        c.src = src;
        c.retx_at = NEVER;
        c.retx_iv = rfc::T1;
        c.hangup_at = NEVER;
        c.bye.clear();
        // To tag: hex(slot) hex(generation), plus one byte naming the leg when forking.
        let mut tag = [0u8; 17];
        let key = sipmsg::key16(slot ^ self.tag_salt, c.generation);
        tag[..16].copy_from_slice(&key);
        let tag16 = &key[..];
        if self.cfg.send_100 || matches!(scen, Scenario::Cancel | Scenario::Noanswer) {
            self.reply(out, (sock, src), m, 100, b"", false);
        }
        match scen {
            Scenario::Reject => self.send_final(now_us, slot, m, 486, tag16, out),
            Scenario::Cancel | Scenario::Noanswer => {
                let contact = self
                    .contact
                    .get(usize::from(sock))
                    .or_else(|| self.contact.first())
                    .map_or("", String::as_str);
                let o = ResponseOpts {
                    code: 180,
                    to_tag: tag16,
                    contact: contact.as_bytes(),
                    record_route: true,
                    sdp: false,
                };
                if let Some(c) = self.calls.get_mut(slot as usize) {
                    c.st = St::Early;
                    c.invite.clear();
                    c.invite.extend_from_slice(m.buf);
                    // Keep the 180 so a retransmitted INVITE gets it again.
                    c.resp.clear();
                    sipmsg::build_response(&mut c.resp, m, &o);
                    out.push(sock, src, &c.resp);
                    self.stats.c.sent += 1;
                    c.deadline = now_us + self.cfg.max_call_us;
                }
                self.rearm(slot, true);
            }
            Scenario::Fork => {
                let legs = self.cfg.fork_legs.max(1);
                for leg in 0..legs {
                    tag[16] = b'a' + leg;
                    self.reply(out, (sock, src), m, 180, &tag, true);
                }
                tag[16] = b'a' + legs / 2;
                self.send_final(now_us, slot, m, 200, &tag, out);
            }
            _ => {
                self.reply(out, (sock, src), m, 180, tag16, true);
                self.send_final(now_us, slot, m, 200, tag16, out);
                if scen == Scenario::Nobye && self.hangup_us.is_some() {
                    self.prepare_bye(slot, m, tag16);
                }
            }
        }
    }

    /// Build the BYE of a callee hang-up from the initial INVITE (RFC 3261 §12.1.1,
    /// §12.2.1.1): From = the INVITE's To with our tag, To = its From, R-URI = its Contact,
    /// Route = its Record-Route in order; it goes to the first Route hop, else the Contact,
    /// else where the INVITE came from.
    fn prepare_bye(&mut self, slot: u32, m: &Msg<'_>, tag: &[u8]) {
        let local = self
            .cfg
            .local
            .first()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        let value = |line: &[u8]| -> Vec<u8> {
            let colon = memchr::memchr(b':', line).map_or(line.len(), |i| i + 1);
            let v = line.get(colon..).unwrap_or(&[]);
            let start = v
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(v.len());
            v.get(start..).unwrap_or(&[]).to_vec()
        };
        let contact = m.get(m.contact);
        let mut first_route = None;
        let b = &mut c.bye;
        b.clear();
        b.extend_from_slice(b"BYE ");
        b.extend_from_slice(contact);
        b.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/UDP ");
        b.extend_from_slice(local.as_bytes());
        b.extend_from_slice(b";branch=z9hG4bK");
        b.extend_from_slice(tag);
        b.extend_from_slice(b"-bye;rport\r\n");
        for (i, r) in m.record_routes().enumerate() {
            b.extend_from_slice(if i == 0 { b"Route: " } else { b", " });
            b.extend_from_slice(r);
            if i == 0 {
                first_route = sipmsg::uri_addr(r);
            }
        }
        if first_route.is_some() {
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"Max-Forwards: 70\r\nFrom: ");
        b.extend_from_slice(&value(m.get(m.to_line)));
        b.extend_from_slice(b";tag=");
        b.extend_from_slice(tag);
        b.extend_from_slice(b"\r\nTo: ");
        b.extend_from_slice(&value(m.get(m.from_line)));
        b.extend_from_slice(b"\r\nCall-ID: ");
        b.extend_from_slice(m.get(m.call_id));
        b.extend_from_slice(b"\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
        c.bye_dst = first_route
            .or_else(|| sipmsg::uri_addr(contact))
            .unwrap_or(c.src);
    }

    /// A response: only the final response to our own BYE matters (it ends the call).
    fn on_response(&mut self, now_us: u64, code: u16, m: &Msg<'_>) {
        let slot = self.lookup(m.get(m.call_id));
        let Some(c) = slot.and_then(|s| self.calls.get_mut(s as usize)) else {
            self.stats.c.stray += 1;
            return;
        };
        if m.cseq_method != Method::Bye || c.st != St::Byeing {
            self.stats.c.stray += 1;
            return;
        }
        if code < 200 {
            return;
        }
        c.st = St::Terminated;
        c.retx_at = NEVER;
        c.deadline = now_us + self.cfg.linger_us;
        self.stats.c.uas_ok += 1;
        if let Some(s) = slot {
            self.rearm(s, true);
        }
    }

    fn send_final(
        &mut self,
        now_us: u64,
        slot: u32,
        m: &Msg<'_>,
        code: u16,
        tag: &[u8],
        out: &mut Outbox,
    ) {
        let Some((sock, src)) = self.calls.get(slot as usize).map(|c| (c.sock, c.src)) else {
            return;
        };
        let contact = self
            .contact
            .get(usize::from(sock))
            .or_else(|| self.contact.first())
            .map_or("", String::as_str);
        let rich = code < 300;
        let o = ResponseOpts {
            code,
            to_tag: tag,
            contact: if rich { contact.as_bytes() } else { b"" },
            record_route: rich,
            sdp: rich,
        };
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        c.resp.clear();
        sipmsg::build_response(&mut c.resp, m, &o);
        out.push(sock, src, &c.resp);
        self.stats.c.sent += 1;
        c.st = St::Completed;
        c.final_2xx = rich;
        c.retx_iv = rfc::T1;
        c.retx_at = if rich || !self.cfg.reliable {
            now_us + rfc::T1
        } else {
            NEVER
        };
        c.deadline = now_us + rfc::TXN_TIMEOUT;
        self.rearm(slot, true);
    }

    fn on_invite_again(
        &mut self,
        now_us: u64,
        slot: u32,
        (sock, src): (u16, SocketAddr),
        m: &Msg<'_>,
        out: &mut Outbox,
    ) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        if !m.to_tag.is_empty()
            && m.cseq > c.invite_cseq
            && matches!(c.st, St::Confirmed | St::Completed)
        {
            // re-INVITE: answer 200 (To already carries our tag).
            c.invite_cseq = m.cseq;
            c.sock = sock;
            c.src = src;
            self.send_final(now_us, slot, m, 200, b"", out);
            return;
        }
        // Retransmission: repeat the last response (if any).
        if !c.resp.is_empty() {
            out.push(c.sock, c.src, &c.resp);
            self.stats.c.sent += 1;
            self.stats.c.uas_retrans += 1;
        }
    }

    fn on_ack(&mut self, now_us: u64, slot: u32) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        if c.st != St::Completed {
            return; // duplicate ACK
        }
        c.retx_at = NEVER;
        if c.final_2xx {
            c.st = St::Confirmed;
            c.deadline = now_us + self.cfg.max_call_us;
            if let Some(d) = self.hangup_us.filter(|_| !c.bye.is_empty()) {
                c.hangup_at = now_us + d;
            }
        } else {
            c.st = St::Terminated;
            c.deadline = now_us + self.cfg.linger_us;
            self.stats.c.uas_ok += 1;
        }
        self.rearm(slot, false);
    }

    fn on_bye(
        &mut self,
        now_us: u64,
        slot: u32,
        sock: u16,
        src: SocketAddr,
        m: &Msg<'_>,
        out: &mut Outbox,
    ) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        match c.st {
            St::Terminated => self.stats.c.uas_retrans += 1,
            St::Confirmed | St::Completed | St::Byeing => {
                c.st = St::Terminated;
                c.retx_at = NEVER;
                c.hangup_at = NEVER;
                c.deadline = now_us + self.cfg.linger_us;
                self.stats.c.uas_ok += 1;
            }
            _ => {
                self.reply(out, (sock, src), m, 481, b"", false);
                return;
            }
        }
        self.reply(out, (sock, src), m, 200, b"", false);
        self.rearm(slot, true);
    }

    fn on_cancel(
        &mut self,
        now_us: u64,
        slot: u32,
        sock: u16,
        src: SocketAddr,
        m: &Msg<'_>,
        out: &mut Outbox,
    ) {
        self.reply(out, (sock, src), m, 200, b"", false);
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        if c.st != St::Early {
            return;
        }
        let inv = std::mem::take(&mut c.invite);
        let generation = c.generation;
        if let Ok(im) = Msg::parse(&inv) {
            let tag = sipmsg::key16(slot ^ self.tag_salt, generation);
            self.send_final(now_us, slot, &im, 487, &tag, out);
        }
        if let Some(c) = self.calls.get_mut(slot as usize) {
            c.invite = inv;
        }
    }

    /// Runs due timers: 2xx/non-2xx retransmissions, ACK timeouts, callee hang-ups and
    /// their BYE retransmissions, linger expiry.
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
                let st = c.st;
                let scen = c.scen;
                if st == St::Completed || (st == St::Early && scen == Scenario::Cancel) {
                    self.stats.fail(FailReason::NoAck);
                } else if st == St::Byeing {
                    self.stats.fail(FailReason::NonInviteTimeout);
                }
                self.release(slot);
                continue;
            }
            if now_us >= c.hangup_at && c.st == St::Confirmed {
                // Callee hang-up: BYE, then Timer E retransmissions until a final response.
                c.hangup_at = NEVER;
                c.st = St::Byeing;
                c.retx_iv = rfc::T1;
                c.retx_at = now_us + rfc::T1;
                c.deadline = now_us + rfc::TXN_TIMEOUT;
                out.push(c.sock, c.bye_dst, &c.bye);
                self.stats.c.sent += 1;
            } else if now_us >= c.retx_at {
                c.retx_iv = (c.retx_iv * 2).min(rfc::T2);
                c.retx_at = now_us + c.retx_iv;
                if c.st == St::Byeing {
                    out.push(c.sock, c.bye_dst, &c.bye);
                } else {
                    out.push(c.sock, c.src, &c.resp);
                }
                self.stats.c.sent += 1;
                self.stats.c.uas_retrans += 1;
            }
            self.rearm(slot, false);
        }
    }

    fn release(&mut self, slot: u32) {
        if let Some(c) = self.calls.get_mut(slot as usize) {
            c.st = St::Free;
            c.seq = c.seq.wrapping_add(1);
            if self.index.get(&c.hash) == Some(&slot) {
                self.index.remove(&c.hash);
            }
            self.free.push(slot);
        }
    }

    fn rearm(&mut self, slot: u32, force: bool) {
        let Some(c) = self.calls.get_mut(slot as usize) else {
            return;
        };
        let w = c.retx_at.min(c.deadline).min(c.hangup_at);
        if w != NEVER && (force || w < c.armed) {
            c.seq = c.seq.wrapping_add(1);
            c.armed = w;
            self.timers.arm(w, slot, c.seq);
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn call_id_hash_differs_on_small_changes() {
        let a = hash_call_id(b"0000000100000001-12345678@loadgen");
        let b = hash_call_id(b"0000000200000001-12345678@loadgen");
        let c = hash_call_id(b"0000000100000001-12345678@loadgeo");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(hash_call_id(b""), hash_call_id(b"a"));
    }

    const INVITE: &[u8] = b"INVITE sip:service@10.0.1.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKu1;rport\r\n\
Record-Route: <sip:192.0.2.1:5060;lr;did=abc>\r\n\
From: <sip:loadgen@10.0.0.1:5060>;tag=ft1\r\n\
To: <sip:service@10.0.1.1:5060>\r\n\
Call-ID: c1@loadgen\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:loadgen@10.0.0.1:5060>\r\n\
X-Loadgen-Scenario: nobye\r\n\
Content-Length: 0\r\n\r\n";

    fn sent(out: &Outbox) -> Vec<(SocketAddr, String)> {
        out.items
            .iter()
            .map(|t| (t.dst, String::from_utf8_lossy(out.bytes(t)).into_owned()))
            .collect()
    }

    #[test]
    fn callee_hangs_up_a_nobye_call_when_asked() {
        let proxy: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let mut uas = Uas::new(UasConfig {
            local: vec!["10.0.1.1:5060".parse().unwrap()],
            ..UasConfig::default()
        });
        uas.set_tag_salt(1 << 24);
        uas.hang_up_nobye_after(Some(1_000_000));
        let mut out = Outbox::default();
        uas.handle(0, 0, proxy, INVITE, &mut out);
        let ok = sent(&out).pop().unwrap().1;
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let tag = ok
            .split("To: <sip:service@10.0.1.1:5060>;tag=")
            .nth(1)
            .unwrap();
        let tag = tag.lines().next().unwrap().to_string();
        assert!(tag.starts_with("01000000"), "the salt is in the tag: {tag}");
        let ack = String::from_utf8_lossy(INVITE)
            .replace("INVITE sip:service", "ACK sip:service")
            .replace("1 INVITE", "1 ACK")
            .replace(
                "To: <sip:service@10.0.1.1:5060>",
                &format!("To: <sip:service@10.0.1.1:5060>;tag={tag}"),
            );
        out.clear();
        uas.handle(10, 0, proxy, ack.as_bytes(), &mut out);
        uas.handle_timeout(999_000, &mut out);
        assert!(out.is_empty(), "no BYE before the hang-up time");
        uas.handle_timeout(1_000_010, &mut out);
        let (dst, bye) = sent(&out).pop().unwrap();
        assert_eq!(dst, proxy, "the BYE goes to the first Route hop");
        for want in [
            "BYE sip:loadgen@10.0.0.1:5060 SIP/2.0\r\n",
            "Route: <sip:192.0.2.1:5060;lr;did=abc>\r\n",
            &format!("From: <sip:service@10.0.1.1:5060>;tag={tag}\r\n"),
            "To: <sip:loadgen@10.0.0.1:5060>;tag=ft1\r\n",
            "Call-ID: c1@loadgen\r\nCSeq: 1 BYE\r\n",
        ] {
            assert!(bye.contains(want), "{want:?} missing in\n{bye}");
        }
        assert_eq!(uas.held_calls()[0].1, "byeing");
        // Retransmitted until answered; the 200 ends the call.
        out.clear();
        uas.handle_timeout(1_600_000, &mut out);
        assert_eq!(sent(&out).len(), 1, "Timer E retransmission");
        let resp = bye.replace("BYE sip:loadgen@10.0.0.1:5060 SIP/2.0", "SIP/2.0 200 OK");
        uas.handle(1_700_000, 0, proxy, resp.as_bytes(), &mut out);
        assert_eq!(uas.held_calls()[0].1, "terminated");
        assert_eq!(uas.stats.c.uas_ok, 1);
        // Kept for Timer J (64·T1) to absorb retransmissions, then gone.
        uas.handle_timeout(1_700_000 + rfc::TXN_TIMEOUT + 1, &mut out);
        assert_eq!(uas.active(), 0);
    }

    #[test]
    fn without_the_opt_in_a_nobye_call_stays_up() {
        let proxy: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let mut uas = Uas::new(UasConfig::default());
        let mut out = Outbox::default();
        uas.handle(0, 0, proxy, INVITE, &mut out);
        uas.handle_timeout(100_000_000, &mut out);
        assert!(sent(&out).iter().all(|(_, m)| !m.starts_with("BYE")));
    }
}
