//! What goes in and out of the engine for one call: an inbound packet and the caller-owned
//! output buffer that collects transmits.
//!
//! Invariant: `Output` is reused across calls; `clear()` keeps capacity, so a warmed-up worker
//! does not allocate here. Cross-worker commands are outputs too: the core only records them,
//! and `io` queues them and wakes their workers when a command asks for it.

use std::net::SocketAddr;

use super::Command;
use crate::wire::Transport;

/// One received message.
#[derive(Clone, Copy, Debug)]
pub struct Inbound<'a> {
    /// Current time in milliseconds (monotonic, from `io`).
    pub now_ms: u64,
    /// The same instant in microseconds (latency histograms only).
    pub now_us: u64,
    /// Where it came from.
    pub src: SocketAddr,
    /// Index of the listener it arrived on.
    pub local: usize,
    /// Transport it arrived over.
    pub transport: Transport,
    /// TCP connection id, when it came over TCP.
    pub conn: Option<u64>,
    /// The message bytes (one datagram or one framed TCP message).
    pub bytes: &'a [u8],
}

/// One message to send; its bytes are `Output::buf[start..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Transport to use.
    pub transport: Transport,
    /// Listener index to send from.
    pub local: usize,
    /// TCP connection to use, when known (responses go back over the request's connection).
    pub conn: Option<u64>,
    /// Start of the bytes in `Output::buf`.
    pub start: usize,
    /// End of the bytes in `Output::buf`.
    pub end: usize,
}

/// Caller-owned output of one engine call.
#[derive(Debug, Default)]
pub struct Output {
    /// Concatenated message bytes.
    pub buf: Vec<u8>,
    /// Messages to send, in order.
    pub tx: Vec<Transmit>,
    /// Set when the packet belongs to another worker's transaction: the caller hands the
    /// same bytes to that worker unchanged.
    pub handoff: Option<usize>,
    /// Commands for other workers: `io` queues each one for its worker and wakes it when the
    /// command wants it ([`Command::wants_wake`]). The
    /// core never touches a queue or a waker itself.
    pub commands: Vec<(usize, Command)>,
}

impl Output {
    /// An output with room for `cap` bytes and `n` transmits.
    pub fn with_capacity(cap: usize, n: usize) -> Self {
        Output {
            buf: Vec::with_capacity(cap),
            tx: Vec::with_capacity(n),
            handoff: None,
            commands: Vec::new(),
        }
    }

    /// Forget everything, keep capacity. Commands not taken by then are dropped: `io`
    /// delivers them before it clears.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.tx.clear();
        self.handoff = None;
        self.commands.clear();
    }

    /// Ask worker `w` to run `cmd`.
    pub(crate) fn command(&mut self, w: usize, cmd: Command) {
        self.commands.push((w, cmd));
    }

    /// The bytes of one transmit.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        self.buf.get(t.start..t.end).unwrap_or(&[])
    }

    /// Record that `buf[start..]` (written by the caller) is one message to `dst`.
    pub(crate) fn push_from(
        &mut self,
        start: usize,
        dst: SocketAddr,
        transport: Transport,
        local: usize,
        conn: Option<u64>,
    ) {
        let end = self.buf.len();
        if end > start {
            self.tx.push(Transmit {
                dst,
                transport,
                local,
                conn,
                start,
                end,
            });
        }
    }

    /// Copy `bytes` as one message to `dst`.
    pub(crate) fn push_bytes(
        &mut self,
        bytes: &[u8],
        dst: SocketAddr,
        transport: Transport,
        local: usize,
        conn: Option<u64>,
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.push_from(start, dst, transport, local, conn);
    }
}
