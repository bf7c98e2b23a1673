//! Process-wide TCP connection caps, shared by every worker: connections in total
//! (`core.tcp_max_connections`) and per peer address (`core.tcp_max_per_peer`). Each worker
//! accepts on its own listener, so only a shared count makes the caps hold for the process.
//!
//! Invariants:
//! - Lock-free and allocation-free after construction: admitting is one compare-and-swap loop
//!   on the total and one on the peer's counter; releasing is one decrement of each.
//! - A count is only raised by a compare-and-swap from a value below its cap, so neither cap
//!   is ever exceeded, even by workers admitting at the same instant.
//! - Every admitted connection holds an [`Admission`]; dropping it (the connection closed, or
//!   its worker's state dropped, even while unwinding) gives both counts back, so they cannot
//!   leak.
//! - Peers are counted in a fixed table of [`PEER_BUCKETS`] counters indexed by a keyed hash
//!   of the address (a random key per process); an IPv6 peer is counted by its /64 (one
//!   subscriber's prefix: a host picks any address inside it for free), an IPv4-mapped IPv6
//!   address as the IPv4 address. Two peers whose hashes share a bucket share its cap: rare
//!   (1 in [`PEER_BUCKETS`] per pair of busy peers) and, with a secret key, not something a
//!   peer can aim at someone else.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Number of per-peer counters (a power of two): 256 KiB of `AtomicU32`.
pub const PEER_BUCKETS: usize = 1 << 16;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `core.tcp_max_connections` connections are open.
    Global,
    /// `core.tcp_max_per_peer` connections from this peer are open.
    PerPeer,
}

/// The shared counts and caps.
#[derive(Debug)]
pub struct TcpGate {
    max_total: usize,
    max_per_peer: u32,
    total: CachePadded<AtomicUsize>,
    per_peer: Box<[AtomicU32]>,
    key: RandomState,
}

/// One admitted connection's hold on the counts; released when dropped.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<TcpGate>,
    bucket: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(b) = self.gate.per_peer.get(self.bucket) {
            b.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Raise `a` by one unless it is at `max` already.
fn take(a: &AtomicUsize, max: usize) -> bool {
    a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < max).then_some(n + 1)
    })
    .is_ok()
}

impl TcpGate {
    /// Caps of `max_total` connections, `max_per_peer` per peer address.
    pub fn new(max_total: usize, max_per_peer: u32) -> TcpGate {
        TcpGate {
            max_total,
            max_per_peer,
            total: CachePadded::new(AtomicUsize::new(0)),
            per_peer: (0..PEER_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            key: RandomState::new(),
        }
    }

    /// The counter index of `ip`.
    fn bucket(&self, ip: IpAddr) -> usize {
        let key: u128 = match ip.to_canonical() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            // The /64, tagged so it cannot equal an IPv4 key.
            IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
        };
        (self.key.hash_one(key) as usize) & (PEER_BUCKETS - 1)
    }

    /// Admit one more connection from `ip`, or say which cap is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refused> {
        if !take(&self.total, self.max_total) {
            return Err(Refused::Global);
        }
        let bucket = self.bucket(ip);
        let peer_ok = self.per_peer.get(bucket).is_some_and(|b| {
            b.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_per_peer).then_some(n + 1)
            })
            .is_ok()
        });
        if !peer_ok {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerPeer);
        }
        Ok(Admission {
            gate: self.clone(),
            bucket,
        })
    }

    /// Connections open now (all workers).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `ip`'s counter (shared with peers that hash alike).
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.per_peer
            .get(self.bucket(ip))
            .map_or(0, |b| b.load(Ordering::Acquire))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
    }

    /// `n` IPv4 addresses whose counters are distinct under `g`'s key (the key is random, so
    /// the tests do not count on two given addresses never sharing one).
    fn distinct(g: &TcpGate, n: usize) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for d in 0..=255u8 {
            let ip = v4(d);
            if out.iter().all(|o| g.bucket(*o) != g.bucket(ip)) {
                out.push(ip);
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    #[test]
    fn caps_hold_and_drops_give_back() {
        let g = Arc::new(TcpGate::new(5, 3));
        let ip = distinct(&g, 3);
        let a: Vec<_> = (0..3).map(|_| g.admit(ip[0]).unwrap()).collect();
        assert_eq!(g.admit(ip[0]).unwrap_err(), Refused::PerPeer);
        let b: Vec<_> = (0..2).map(|_| g.admit(ip[1]).unwrap()).collect();
        assert_eq!(g.admit(ip[2]).unwrap_err(), Refused::Global);
        assert_eq!((g.open(), g.open_from(ip[0])), (5, 3));
        drop(a);
        assert_eq!((g.open(), g.open_from(ip[0])), (2, 0));
        let _c = g.admit(ip[0]).unwrap();
        drop(b);
        assert_eq!(g.open(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let g = Arc::new(TcpGate::new(100, 2));
        let a = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        let _x = g.admit(a(1)).unwrap();
        let _y = g.admit(a(2)).unwrap();
        assert_eq!(g.admit(a(3)).unwrap_err(), Refused::PerPeer);
        let g = Arc::new(TcpGate::new(100, 2));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped());
        let _m1 = g.admit(v4(9)).unwrap();
        let _m2 = g.admit(mapped).unwrap();
        assert_eq!(g.admit(v4(9)).unwrap_err(), Refused::PerPeer);
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_caps() {
        let g = Arc::new(TcpGate::new(64, 40));
        let ip = distinct(&g, 2);
        let held: Vec<Vec<Admission>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let (g, ip) = (g.clone(), ip.clone());
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|i| g.admit(ip[(t + i) % 2]).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let n: usize = held.iter().map(Vec::len).sum();
        assert_eq!(n, 64, "exactly the global cap is admitted");
        assert!(g.open_from(ip[0]) <= 40 && g.open_from(ip[1]) <= 40);
        assert_eq!(g.open(), 64);
        drop(held);
        assert_eq!(
            (g.open(), g.open_from(ip[0]), g.open_from(ip[1])),
            (0, 0, 0)
        );
    }
}
