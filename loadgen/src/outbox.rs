//! Output and timer plumbing shared by the UAC and UAS state machines.
//!
//! Invariants:
//! - [`Outbox`] holds datagrams back to back in one reused byte buffer; `clear` keeps the
//!   capacity, so steady-state sending allocates nothing.
//! - [`Timers`] is a min-heap of `(deadline, slot, seq)`. A slot's current timer is the entry
//!   whose `seq` equals the slot's own sequence number; older entries are skipped lazily when
//!   they surface (no removal, no search).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

/// One datagram to send: `buf[start..start+len]` from local socket `sock` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Index of the local socket to send from.
    pub sock: u16,
    /// Offset into [`Outbox::buf`].
    pub start: u32,
    /// Length in bytes.
    pub len: u32,
}

/// Datagrams produced by one `handle`/`handle_timeout` round, owned and reused by the caller.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Concatenated datagram bytes.
    pub buf: Vec<u8>,
    /// The datagrams.
    pub items: Vec<Transmit>,
}

impl Outbox {
    /// An empty outbox with room for a batch.
    pub fn with_capacity(datagrams: usize) -> Outbox {
        Outbox {
            buf: Vec::with_capacity(datagrams * 1024),
            items: Vec::with_capacity(datagrams),
        }
    }
    /// Appends a datagram built by `f` into the buffer.
    pub fn push_with(&mut self, sock: u16, dst: SocketAddr, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        let len = self.buf.len() - start;
        self.items.push(Transmit {
            dst,
            sock,
            start: start as u32,
            len: len as u32,
        });
    }
    /// Appends a copy of `bytes`.
    pub fn push(&mut self, sock: u16, dst: SocketAddr, bytes: &[u8]) {
        self.push_with(sock, dst, |b| b.extend_from_slice(bytes));
    }
    /// The bytes of one datagram.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        let s = t.start as usize;
        self.buf.get(s..s + t.len as usize).unwrap_or(&[])
    }
    /// Forgets all datagrams, keeping capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Lazy-deletion timer heap keyed by slot.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl Timers {
    /// Arms `(deadline, slot, seq)`; earlier entries of the slot become stale when the slot's
    /// seq moves on.
    pub fn arm(&mut self, deadline_us: u64, slot: u32, seq: u32) {
        self.heap.push(Reverse((deadline_us, slot, seq)));
    }
    /// Earliest deadline (possibly of a stale entry; firing it early is harmless).
    pub fn peek(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }
    /// Pops the earliest entry due at `now_us`.
    pub fn pop_due(&mut self, now_us: u64) -> Option<(u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((d, _, _))) if *d <= now_us => {
                self.heap.pop().map(|Reverse((_, slot, seq))| (slot, seq))
            }
            _ => None,
        }
    }
    /// Number of entries (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }
    /// True when no entries.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// RFC 3261 timer constants in µs.
pub mod rfc {
    /// T1: RTT estimate.
    pub const T1: u64 = 500_000;
    /// T2: maximum non-INVITE retransmit interval.
    pub const T2: u64 = 4_000_000;
    /// Timer B / F / H: 64*T1.
    pub const TXN_TIMEOUT: u64 = 64 * T1;
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keeps_datagrams_apart() {
        let mut o = Outbox::with_capacity(4);
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        o.push(0, a, b"one");
        o.push_with(1, a, |b| b.extend_from_slice(b"second"));
        assert_eq!(o.len(), 2);
        assert_eq!(o.bytes(&o.items[0]), b"one");
        assert_eq!(o.bytes(&o.items[1]), b"second");
        assert_eq!(o.items[1].sock, 1);
        o.clear();
        assert!(o.is_empty());
    }

    #[test]
    fn timers_pop_in_order() {
        let mut t = Timers::default();
        t.arm(30, 1, 0);
        t.arm(10, 2, 0);
        t.arm(20, 3, 5);
        assert_eq!(t.peek(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((2, 0)));
        assert_eq!(t.pop_due(25), Some((3, 5)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.len(), 1);
    }
}
