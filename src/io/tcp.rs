//! TCP connections of one worker: accept, Content-Length framing, CRLF keep-alive pong
//! (RFC 5626), outbound connections to `transport=tcp` targets with reuse, and the limits that
//! keep a bad peer from exhausting the process.
//!
//! Invariants:
//! - A framing error or a buffer over the limit closes the connection; a connection id is
//!   `generation << 32 | slot`, so a stale id never reaches a new connection.
//! - Every connection, accepted or opened, holds an [`Admission`] of the process-wide
//!   [`TcpGate`] (total and per-peer caps over all workers); one over a cap is closed at once
//!   (reset) and counted, never registered.
//! - Two clocks per connection: between messages the idle timeout runs from the last complete
//!   message, keep-alive or send; once the first byte of a message has arrived, the whole
//!   message must arrive within the message timeout, however it trickles in (a slowloris peer
//!   is reset at that deadline and counted). Checked by [`TcpConns::sweep_idle`], which the
//!   worker runs once a second: a close comes up to a second late, never early.
//! - Framing is linear: each connection keeps a [`StreamFramer`], so each read scans only
//!   the bytes it brought.
//! - A listener never stops being served: an accept error other than "nothing pending" is
//!   counted and pauses that listener for a back-off (100 ms doubling to 1 s); the worker then
//!   retries by itself ([`TcpConns::retry_accepts`]), since an edge-triggered poll does not
//!   report connections that were already pending. The same retry follows a full accept batch.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

pub use super::tcp_gate::{Admission, Refused, TcpGate};
use crate::wire::{Frame, StreamFramer};

/// First mio token used for connections.
pub const CONN_BASE: usize = 1 << 20;

/// Accepts per listener readiness before the worker turns to its other sockets (the rest
/// are accepted on the next loop turn).
pub const ACCEPT_BATCH: usize = 256;

/// First pause of a listener after an accept error (ms); it doubles up to [`ACCEPT_PAUSE_MAX`].
pub const ACCEPT_PAUSE_MIN: u64 = 100;

/// Longest pause of a listener after repeated accept errors (ms).
pub const ACCEPT_PAUSE_MAX: u64 = 1000;

/// At most one log line about accept errors per worker this often (ms); the counter has them
/// all.
pub const ACCEPT_WARN_EVERY: u64 = 10_000;

/// Limits for TCP.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Close connections idle this long between messages (ms).
    pub idle_ms: u64,
    /// A message must be complete this long after its first byte (ms).
    pub message_ms: u64,
    /// Connections in the whole process (all workers).
    pub max_conns: usize,
    /// Connections per peer IP in the whole process (all workers).
    pub max_per_peer: u32,
    /// Largest read or write buffer (bytes).
    pub max_buffer: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            idle_ms: 600_000,
            message_ms: 10_000,
            max_conns: 4096,
            max_per_peer: 256,
            max_buffer: 1 << 20,
        }
    }
}

impl TcpLimits {
    /// The process-wide gate for these caps (one per process, shared by the workers).
    pub fn gate(&self) -> Arc<TcpGate> {
        Arc::new(TcpGate::new(self.max_conns, self.max_per_peer))
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Framing progress of the message at the start of `rbuf`.
    framer: StreamFramer,
    /// Last complete message, keep-alive or send (the idle clock).
    last_ms: u64,
    /// When the first byte of the incomplete message at the start of `rbuf` arrived.
    msg_start_ms: Option<u64>,
    generation: u32,
    want_write: bool,
    /// This connection's place under the process-wide caps (given back on drop).
    _admission: Admission,
}

/// What happened on a connection, for statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpEvents {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections opened by us.
    pub connected: u64,
    /// Connections closed.
    pub closed: u64,
    /// Framing errors.
    pub framing_errors: u64,
    /// Connections refused (closed at once) because `tcp_max_connections` were open.
    pub refused_global: u64,
    /// Connections refused (closed at once) because `tcp_max_per_peer` were open from the peer.
    pub refused_per_peer: u64,
    /// Connections reset because a message was not complete within the message timeout.
    pub message_timeouts: u64,
    /// Errors from `accept` (other than "nothing pending").
    pub accept_errors: u64,
}

/// Why a connection could not be added (a refusal is counted where it happens).
#[derive(Debug)]
enum AddError {
    /// Over a cap of the [`TcpGate`].
    Refused,
    /// It could not be registered with the poll.
    Io,
}

/// Accept back-off of one listener.
#[derive(Clone, Copy, Debug, Default)]
struct AcceptPause {
    /// Accept again at this instant (ms); `None`: not paused.
    until: Option<u64>,
    /// The next pause after an error (ms); 0 until the first error.
    next_ms: u64,
}

/// One worker's TCP connections.
pub struct TcpConns {
    slots: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    gate: Arc<TcpGate>,
    /// Accept back-off per listener index.
    pauses: Vec<AcceptPause>,
    /// When an accept error was last logged (at most one line per [`ACCEPT_WARN_EVERY`]).
    accept_warned_ms: Option<u64>,
    limits: TcpLimits,
    /// Counters since start.
    pub events: TcpEvents,
}

impl TcpConns {
    /// No connections yet; `gate` holds the process-wide caps (shared by every worker).
    pub fn new(limits: TcpLimits, gate: Arc<TcpGate>) -> Self {
        TcpConns {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            gate,
            pauses: Vec::new(),
            accept_warned_ms: None,
            limits,
            events: TcpEvents::default(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// No open connections.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    fn id(&self, slot: usize) -> u64 {
        (u64::from(self.gens.get(slot).copied().unwrap_or(0)) << 32) | slot as u64
    }

    fn slot_of(&self, id: u64) -> Option<usize> {
        let slot = (id & 0xffff_ffff) as usize;
        let generation = (id >> 32) as u32;
        match self.slots.get(slot) {
            Some(Some(c)) if c.generation == generation => Some(slot),
            _ => None,
        }
    }

    fn add(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        local: usize,
        now: u64,
    ) -> Result<usize, AddError> {
        let admission = match self.gate.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                match why {
                    Refused::Global => self.events.refused_global += 1,
                    Refused::PerPeer => self.events.refused_per_peer += 1,
                }
                reset(&stream);
                return Err(AddError::Refused);
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        if registry
            .register(
                &mut stream,
                Token(CONN_BASE + slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(slot);
            return Err(AddError::Io);
        }
        let generation = self.gens.get(slot).copied().unwrap_or(0).wrapping_add(1);
        if let Some(g) = self.gens.get_mut(slot) {
            *g = generation;
        }
        let _ = stream.set_nodelay(true);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(Conn {
                stream,
                peer,
                local,
                rbuf: Vec::with_capacity(4096),
                wbuf: Vec::new(),
                framer: StreamFramer::new(),
                last_ms: now,
                msg_start_ms: None,
                generation,
                want_write: true,
                _admission: admission,
            });
        }
        self.by_peer.insert(peer, slot);
        Ok(slot)
    }

    /// Accept the pending connections on `listener` (listener index `local`), up to
    /// [`ACCEPT_BATCH`]. Does nothing while the listener is paused after an accept error; when
    /// it stops before "nothing pending" (an error, a full batch) the listener is due for
    /// [`TcpConns::retry_accepts`].
    pub fn accept_all(
        &mut self,
        registry: &Registry,
        listener: &TcpListener,
        local: usize,
        now: u64,
    ) {
        if self.pause_of(local).until.is_some_and(|t| now < t) {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(p) = self.pauses.get_mut(local) {
                        *p = AcceptPause::default();
                    }
                    if self.add(registry, stream, peer, local, now).is_ok() {
                        self.events.accepted += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(p) = self.pauses.get_mut(local) {
                        p.until = None;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The peer gave up before we accepted: nothing wrong with the listener.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                    self.events.accept_errors += 1;
                }
                Err(e) => {
                    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or
                    // anything else: retrying at once would spin, so pause this listener.
                    self.events.accept_errors += 1;
                    let p = self.pause_of(local);
                    let pause = p.next_ms.clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
                    if self
                        .accept_warned_ms
                        .is_none_or(|t| now.saturating_sub(t) >= ACCEPT_WARN_EVERY)
                    {
                        self.accept_warned_ms = Some(now);
                        tracing::warn!(
                            listener = local,
                            error = %e,
                            pause_ms = pause,
                            accept_errors = self.events.accept_errors,
                            "TCP accept failed; pausing this listener, then retrying"
                        );
                    }
                    if let Some(p) = self.pauses.get_mut(local) {
                        p.until = Some(now.saturating_add(pause));
                        p.next_ms = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    }
                    return;
                }
            }
        }
        // A full batch: more may be pending, and the poll will not say so again.
        if let Some(p) = self.pauses.get_mut(local) {
            p.until = Some(now);
        }
    }

    /// The pause state of listener `local` (created on first use).
    fn pause_of(&mut self, local: usize) -> AcceptPause {
        if self.pauses.len() <= local {
            self.pauses.resize(local + 1, AcceptPause::default());
        }
        self.pauses.get(local).copied().unwrap_or_default()
    }

    /// Milliseconds until a listener is due for [`TcpConns::retry_accepts`] (`u64::MAX`: none
    /// is), for the worker's poll timeout.
    pub fn accept_retry_in(&self, now: u64) -> u64 {
        self.pauses
            .iter()
            .filter_map(|p| p.until)
            .map(|t| t.saturating_sub(now))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Accept again on every listener whose pause is over (or whose last batch was full).
    /// `listeners` are the worker's (listener index, listener) pairs.
    pub fn retry_accepts(
        &mut self,
        registry: &Registry,
        listeners: &[(usize, TcpListener)],
        now: u64,
    ) {
        for (local, l) in listeners {
            if self
                .pauses
                .get(*local)
                .and_then(|p| p.until)
                .is_some_and(|t| now >= t)
            {
                self.accept_all(registry, l, *local, now);
            }
        }
    }

    /// Close a connection (its admission is given back).
    pub fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut c) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
            if self.by_peer.get(&c.peer) == Some(&slot) {
                self.by_peer.remove(&c.peer);
            }
            self.free.push(slot);
            self.events.closed += 1;
        }
    }

    /// Close a connection with a reset (no FIN handshake, no TIME_WAIT kept here): for peers
    /// that broke a limit.
    fn abort(&mut self, registry: &Registry, slot: usize) {
        if let Some(Some(c)) = self.slots.get(slot) {
            reset(&c.stream);
        }
        self.close(registry, slot);
    }

    /// The connection behind a mio token.
    pub fn slot_for_token(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(CONN_BASE)
    }

    /// Read what is available and hand every complete message to `on_msg(bytes, peer,
    /// local, conn_id)`. Closes the connection on EOF, errors, framing errors or overflow.
    /// Only the bytes this read brought are scanned (the framer resumes).
    pub fn on_readable(
        &mut self,
        registry: &Registry,
        slot: usize,
        now: u64,
        mut on_msg: impl FnMut(&[u8], SocketAddr, usize, u64),
    ) {
        let id = self.id(slot);
        let max = self.limits.max_buffer;
        let mut close = false;
        let Some(Some(c)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => {
                    if c.rbuf.len() + n > max {
                        close = true;
                        break;
                    }
                    c.rbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        let mut pos = 0;
        let mut pong = false;
        while pos < c.rbuf.len() {
            let rest = c.rbuf.get(pos..).unwrap_or(&[]);
            match c.framer.advance(rest) {
                Ok(Frame::Complete(len)) => {
                    on_msg(rest.get(..len).unwrap_or(&[]), c.peer, c.local, id);
                    pos += len.max(1);
                    c.last_ms = now;
                }
                Ok(Frame::KeepAlive(n)) => {
                    if n >= 4 {
                        pong = true;
                    }
                    pos += n.max(1);
                    c.last_ms = now;
                }
                Ok(Frame::Partial) => break,
                Err(_) => {
                    self.events.framing_errors += 1;
                    close = true;
                    break;
                }
            }
        }
        c.rbuf.drain(..pos.min(c.rbuf.len()));
        // The message clock starts with the first byte of a message and stops when it is
        // complete; a message that just began (even after one that completed) starts now.
        if c.rbuf.is_empty() {
            c.msg_start_ms = None;
        } else if pos > 0 || c.msg_start_ms.is_none() {
            c.msg_start_ms = Some(now);
        }
        if pong {
            c.wbuf.extend_from_slice(b"\r\n");
        }
        if close {
            self.close(registry, slot);
        } else if pong {
            self.flush(registry, slot);
        }
    }

    /// Queue `bytes` for `conn` (if still open) or for the peer `dst` (reusing or opening a
    /// connection). False when it cannot be sent.
    pub fn send(
        &mut self,
        registry: &Registry,
        conn: Option<u64>,
        dst: SocketAddr,
        local: usize,
        bytes: &[u8],
        now: u64,
    ) -> bool {
        let slot = match conn
            .and_then(|id| self.slot_of(id))
            .or_else(|| self.by_peer.get(&dst).copied())
        {
            Some(s) => s,
            None => {
                let Ok(stream) = TcpStream::connect(dst) else {
                    return false;
                };
                match self.add(registry, stream, dst, local, now) {
                    Ok(s) => {
                        self.events.connected += 1;
                        s
                    }
                    Err(AddError::Refused | AddError::Io) => return false,
                }
            }
        };
        let max = self.limits.max_buffer;
        let Some(Some(c)) = self.slots.get_mut(slot) else {
            return false;
        };
        if c.wbuf.len() + bytes.len() > max {
            self.close(registry, slot);
            return false;
        }
        c.wbuf.extend_from_slice(bytes);
        c.last_ms = now;
        self.flush(registry, slot);
        true
    }

    /// Write as much of the pending output as the socket takes.
    pub fn flush(&mut self, registry: &Registry, slot: usize) {
        let mut close = false;
        if let Some(Some(c)) = self.slots.get_mut(slot) {
            let mut off = 0;
            while off < c.wbuf.len() {
                match c.stream.write(c.wbuf.get(off..).unwrap_or(&[])) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            c.wbuf.drain(..off.min(c.wbuf.len()));
            c.want_write = !c.wbuf.is_empty();
        }
        if close {
            self.close(registry, slot);
        }
    }

    /// Close connections idle (between messages) for longer than the idle timeout, and
    /// reset those whose incomplete message has been arriving for longer than the message
    /// timeout (counted in [`TcpEvents::message_timeouts`]). No allocation.
    pub fn sweep_idle(&mut self, registry: &Registry, now: u64) {
        let (idle, message) = (self.limits.idle_ms, self.limits.message_ms);
        for slot in 0..self.slots.len() {
            let Some(Some(c)) = self.slots.get(slot) else {
                continue;
            };
            match c.msg_start_ms {
                Some(t) if now.saturating_sub(t) > message => {
                    self.events.message_timeouts += 1;
                    self.abort(registry, slot);
                }
                Some(_) => {}
                None if now.saturating_sub(c.last_ms) > idle => self.close(registry, slot),
                None => {}
            }
        }
    }
}

/// Make closing `stream` send a reset (SO_LINGER 0): for a connection refused or cut for
/// abuse, so neither side keeps it in TIME_WAIT.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    const LISTENER: Token = Token(1);

    /// A worker's TCP side on a loopback listener, driven with explicit `now` values.
    struct Rig {
        poll: Poll,
        listener: TcpListener,
        tcp: TcpConns,
        got: Vec<Vec<u8>>,
    }

    impl Rig {
        fn new(limits: TcpLimits) -> Rig {
            let poll = Poll::new().unwrap();
            let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std_l.set_nonblocking(true).unwrap();
            let mut listener = TcpListener::from_std(std_l);
            poll.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)
                .unwrap();
            Rig {
                poll,
                listener,
                tcp: TcpConns::new(limits, limits.gate()),
                got: Vec::new(),
            }
        }

        fn connect(&self) -> std::net::TcpStream {
            let c = std::net::TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c
        }

        /// Handle what the poll reports within 200 ms, as the worker does, at time `now`.
        fn pump(&mut self, now: u64) {
            let mut events = Events::with_capacity(64);
            self.poll
                .poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.tcp
                        .accept_all(self.poll.registry(), &self.listener, 0, now);
                } else if let Some(slot) = self.tcp.slot_for_token(ev.token()) {
                    let got = &mut self.got;
                    self.tcp
                        .on_readable(self.poll.registry(), slot, now, |b, _, _, _| {
                            got.push(b.to_vec());
                        });
                }
            }
        }
    }

    fn limits() -> TcpLimits {
        TcpLimits {
            idle_ms: 60_000,
            message_ms: 3_000,
            max_conns: 8,
            max_per_peer: 8,
            max_buffer: 64 * 1024,
        }
    }

    /// The client side sees the connection closed (EOF or reset).
    fn closed(c: &mut std::net::TcpStream) -> bool {
        let mut b = [0u8; 64];
        loop {
            match c.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    const OPTIONS: &[u8] =
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n";

    #[test]
    fn a_trickling_message_is_reset_at_its_deadline_not_at_each_byte() {
        let mut r = Rig::new(limits());
        let mut c = r.connect();
        r.pump(1000);
        assert_eq!(r.tcp.len(), 1);
        // The first byte at t=1000 starts the message clock; more bytes do not restart it.
        c.write_all(&OPTIONS[..10]).unwrap();
        r.pump(1000);
        for (i, t) in [2000u64, 3000, 3900].into_iter().enumerate() {
            c.write_all(&OPTIONS[10 + i..11 + i]).unwrap();
            r.pump(t);
            r.tcp.sweep_idle(r.poll.registry(), t);
            assert_eq!(r.tcp.len(), 1, "open at {t}: within 3 s of the first byte");
        }
        r.tcp.sweep_idle(r.poll.registry(), 4001);
        assert_eq!(r.tcp.len(), 0);
        assert_eq!(r.tcp.events.message_timeouts, 1);
        assert!(r.got.is_empty());
        assert!(closed(&mut c), "the client sees the reset");
    }

    #[test]
    fn between_messages_only_the_idle_timeout_applies() {
        let mut r = Rig::new(limits());
        let mut c = r.connect();
        r.pump(0);
        // A message in two pieces 2 s apart is fine (under the 3 s deadline).
        c.write_all(&OPTIONS[..20]).unwrap();
        r.pump(1000);
        c.write_all(&OPTIONS[20..]).unwrap();
        r.pump(3000);
        assert_eq!(r.got, vec![OPTIONS.to_vec()]);
        // Then silence: far past the message deadline, within the idle timeout.
        r.tcp.sweep_idle(r.poll.registry(), 50_000);
        assert_eq!(r.tcp.len(), 1);
        // Keep-alive pings count as traffic and are answered.
        c.write_all(b"\r\n\r\n").unwrap();
        r.pump(60_000);
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
        r.tcp.sweep_idle(r.poll.registry(), 119_000);
        assert_eq!(r.tcp.len(), 1);
        r.tcp.sweep_idle(r.poll.registry(), 120_001);
        assert_eq!(r.tcp.len(), 0);
        assert_eq!(
            r.tcp.events.message_timeouts, 0,
            "an idle close is not a deadline"
        );
        assert!(closed(&mut c));
    }

    #[test]
    fn pipelined_messages_then_a_partial_one_start_its_clock_at_that_read() {
        let mut r = Rig::new(limits());
        let mut c = r.connect();
        r.pump(0);
        c.write_all(&OPTIONS[..5]).unwrap();
        r.pump(1000);
        let mut rest = OPTIONS[5..].to_vec();
        rest.extend_from_slice(OPTIONS);
        rest.extend_from_slice(&OPTIONS[..7]);
        c.write_all(&rest).unwrap();
        r.pump(3500);
        assert_eq!(r.got.len(), 2);
        // The third message began at 3500: its deadline is 6500, not 4000.
        r.tcp.sweep_idle(r.poll.registry(), 6000);
        assert_eq!(r.tcp.len(), 1);
        r.tcp.sweep_idle(r.poll.registry(), 6501);
        assert_eq!((r.tcp.len(), r.tcp.events.message_timeouts), (0, 1));
    }

    #[test]
    fn connections_over_the_caps_are_reset_and_counted() {
        let mut r = Rig::new(TcpLimits {
            max_conns: 2,
            ..limits()
        });
        let mut cs: Vec<_> = (0..4).map(|_| r.connect()).collect();
        for t in 0..5 {
            r.pump(t);
        }
        assert_eq!(r.tcp.len(), 2);
        assert_eq!((r.tcp.events.accepted, r.tcp.events.refused_global), (2, 2));
        let mut refused = 0;
        for c in &mut cs {
            c.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            refused += usize::from(closed(c));
        }
        assert_eq!(refused, 2);
        // Closing one gives its place back (to any worker: the gate is shared).
        let open: Vec<usize> = (0..r.tcp.slots.len())
            .filter(|&s| matches!(r.tcp.slots.get(s), Some(Some(_))))
            .collect();
        r.tcp.close(r.poll.registry(), open[0]);
        assert_eq!(r.tcp.gate.open(), 1);
        let _c = r.connect();
        r.pump(10);
        assert_eq!((r.tcp.len(), r.tcp.events.refused_global), (2, 2));
    }
}
