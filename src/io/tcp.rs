//! TCP connections of one worker: accept, Content-Length framing, CRLF keep-alive pong
//! (RFC 5626), outbound connections to `transport=tcp` targets with reuse, idle timeout and
//! limits (total, per peer IP, buffer size) so a bad peer cannot exhaust memory.
//!
//! Invariants: a framing error or a buffer over the limit closes the connection; a
//! connection id is `generation << 32 | slot`, so a stale id never reaches a new connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::wire::{self, Frame};

/// First mio token used for connections.
pub const CONN_BASE: usize = 1 << 20;

/// Limits for TCP.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Close connections idle this long (ms).
    pub idle_ms: u64,
    /// Connections per worker.
    pub max_conns: usize,
    /// Connections per peer IP per worker.
    pub max_per_peer: u32,
    /// Largest read or write buffer (bytes).
    pub max_buffer: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            idle_ms: 600_000,
            max_conns: 4096,
            max_per_peer: 256,
            max_buffer: 1 << 20,
        }
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last_ms: u64,
    generation: u32,
    want_write: bool,
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
}

/// One worker's TCP connections.
pub struct TcpConns {
    slots: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, u32>,
    limits: TcpLimits,
    /// Counters since start.
    pub events: TcpEvents,
}

impl TcpConns {
    /// No connections yet.
    pub fn new(limits: TcpLimits) -> Self {
        TcpConns {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            per_ip: HashMap::new(),
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
    ) -> io::Result<usize> {
        let n = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if self.by_peer.len() >= self.limits.max_conns || n >= self.limits.max_per_peer {
            return Err(io::Error::other("tcp connection limit"));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        let generation = self.gens.get(slot).copied().unwrap_or(0).wrapping_add(1);
        if let Some(g) = self.gens.get_mut(slot) {
            *g = generation;
        }
        registry.register(
            &mut stream,
            Token(CONN_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let _ = stream.set_nodelay(true);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(Conn {
                stream,
                peer,
                local,
                rbuf: Vec::with_capacity(4096),
                wbuf: Vec::new(),
                last_ms: now,
                generation,
                want_write: true,
            });
        }
        self.by_peer.insert(peer, slot);
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        Ok(slot)
    }

    /// Accept every pending connection on `listener` (listener index `local`).
    pub fn accept_all(
        &mut self,
        registry: &Registry,
        listener: &TcpListener,
        local: usize,
        now: u64,
    ) {
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.add(registry, stream, peer, local, now).is_ok() {
                        self.events.accepted += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// Close a connection.
    pub fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut c) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
            if self.by_peer.get(&c.peer) == Some(&slot) {
                self.by_peer.remove(&c.peer);
            }
            if let Some(n) = self.per_ip.get_mut(&c.peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&c.peer.ip());
                }
            }
            self.free.push(slot);
            self.events.closed += 1;
        }
    }

    /// The connection behind a mio token.
    pub fn slot_for_token(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(CONN_BASE)
    }

    /// Read what is available and hand every complete message to `on_msg(bytes, peer,
    /// local, conn_id)`. Closes the connection on EOF, errors, framing errors or overflow.
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
        c.last_ms = now;
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
            match wire::frame_stream(rest) {
                Ok(Frame::Complete(len)) => {
                    on_msg(rest.get(..len).unwrap_or(&[]), c.peer, c.local, id);
                    pos += len.max(1);
                }
                Ok(Frame::KeepAlive(n)) => {
                    if n >= 4 {
                        pong = true;
                    }
                    pos += n.max(1);
                }
                Ok(Frame::Partial) => break,
                Err(_) => {
                    self.events.framing_errors += 1;
                    close = true;
                    break;
                }
            }
        }
        if let Some(Some(c)) = self.slots.get_mut(slot) {
            c.rbuf.drain(..pos.min(c.rbuf.len()));
            if pong {
                c.wbuf.extend_from_slice(b"\r\n");
            }
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
                    Err(_) => return false,
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

    /// Close connections idle for longer than the limit.
    pub fn sweep_idle(&mut self, registry: &Registry, now: u64) {
        let idle = self.limits.idle_ms;
        let stale: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| now.saturating_sub(c.last_ms) > idle)
                    .map(|_| i)
            })
            .collect();
        for s in stale {
            self.close(registry, s);
        }
    }
}
