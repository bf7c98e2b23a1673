//! The virtual network: one-way links per (source, destination) with seeded loss,
//! duplication, reordering and delay, and a priority queue of datagrams in flight.
//!
//! Invariants:
//! - Sans-IO: no sockets, no clock. Time is virtual, in µs, passed in by the caller.
//! - Every datagram is either delivered exactly at its arrival time, dropped by the link
//!   (loss), or dropped at arrival because its destination vanished (blackhole); each fate
//!   is counted, so `sent + duplicated == delivered + lost + blackholed + in_flight()`.
//! - Datagrams due at the same instant leave the queue in the order they were sent (a
//!   sequence number breaks ties), so a run is a pure function of its seed.
//! - A link's base delay is drawn once, on its first use; reordering is an extra random delay
//!   on some datagrams, so a later datagram can overtake an earlier one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;

use crate::rng::SimRng;

/// How links behave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkProfile {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (the copy has its own delay).
    pub dup: f64,
    /// Probability that a datagram gets an extra delay of up to `reorder_us`.
    pub reorder: f64,
    /// Largest extra delay of a reordered datagram, µs.
    pub reorder_us: u64,
    /// A link's base one-way delay is drawn from this range once, µs.
    pub delay_us: (u64, u64),
    /// Every datagram gets up to this much jitter on top of the base delay, µs.
    pub jitter_us: u64,
}

impl LinkProfile {
    /// No loss, no duplication, no reordering beyond jitter.
    pub const CLEAN: LinkProfile = LinkProfile {
        loss: 0.0,
        dup: 0.0,
        reorder: 0.0,
        reorder_us: 0,
        delay_us: (500, 10_000),
        jitter_us: 200,
    };
}

/// One datagram.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Payload.
    pub bytes: Vec<u8>,
}

/// What happened to the datagrams so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Dropped by a link.
    pub lost: u64,
    /// Dropped at arrival: the destination had vanished.
    pub blackholed: u64,
    /// Handed to their destination.
    pub delivered: u64,
}

/// The network.
#[derive(Debug)]
pub struct Net {
    profile: LinkProfile,
    links: HashMap<(SocketAddr, SocketAddr), u64>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    in_flight: BTreeMap<u64, Datagram>,
    seq: u64,
    /// Hosts that vanished, and since when (µs): nothing reaches them from then on.
    vanished: Vec<(SocketAddr, u64)>,
    /// Counters.
    pub stats: NetStats,
    /// Print every datagram a link loses (`SIM_TRACE=1`).
    pub trace: bool,
}

impl Net {
    /// A network whose links all follow `profile`.
    pub fn new(profile: LinkProfile) -> Net {
        Net {
            profile,
            links: HashMap::new(),
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            vanished: Vec::new(),
            stats: NetStats::default(),
            trace: false,
        }
    }

    /// Send `bytes` from `src` to `dst` at `now`.
    pub fn send(
        &mut self,
        now: u64,
        rng: &mut SimRng,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) {
        self.stats.sent += 1;
        if rng.chance(self.profile.loss) {
            self.stats.lost += 1;
            if self.trace {
                crate::world::trace(now, src, dst, bytes, "LOST");
            }
            return;
        }
        let copies = if rng.chance(self.profile.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let p = self.profile;
        let base = *self
            .links
            .entry((src, dst))
            .or_insert_with(|| rng.range(p.delay_us.0, p.delay_us.1));
        for _ in 0..copies {
            let mut at = now + base + rng.range(0, p.jitter_us);
            if rng.chance(p.reorder) {
                at += rng.range(0, p.reorder_us);
            }
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq)));
            self.in_flight.insert(
                self.seq,
                Datagram {
                    src,
                    dst,
                    bytes: bytes.to_vec(),
                },
            );
        }
    }

    /// Arrival time of the next datagram.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The next datagram due at `now`, if any; one whose destination vanished is dropped
    /// (counted) and the next one tried.
    pub fn pop_due(&mut self, now: u64) -> Option<Datagram> {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > now {
                return None;
            }
            self.queue.pop();
            let d = self.in_flight.remove(&seq)?;
            if self.is_vanished(d.dst, at) {
                self.stats.blackholed += 1;
                if self.trace {
                    crate::world::trace(at, d.src, d.dst, &d.bytes, "VOID");
                }
                continue;
            }
            self.stats.delivered += 1;
            return Some(d);
        }
        None
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// From `at` on, `host` neither receives nor sends.
    pub fn vanish(&mut self, host: SocketAddr, at: u64) {
        self.vanished.push((host, at));
    }

    /// Whether `host` has vanished by `now`.
    pub fn is_vanished(&self, host: SocketAddr, now: u64) -> bool {
        self.vanished.iter().any(|&(h, at)| h == host && now >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_datagram_is_accounted_for() {
        let mut rng = SimRng::new(3);
        let p = LinkProfile {
            loss: 0.2,
            dup: 0.2,
            reorder: 0.5,
            reorder_us: 50_000,
            ..LinkProfile::CLEAN
        };
        let mut net = Net::new(p);
        let (x, y) = (a("10.0.0.1:5060"), a("10.0.0.2:5060"));
        for i in 0..1000u64 {
            net.send(i * 100, &mut rng, x, y, &i.to_le_bytes());
        }
        net.vanish(y, 60_000);
        let mut last = 0;
        let mut order = Vec::new();
        while let Some(at) = net.next_at() {
            assert!(at >= last, "the queue is in time order");
            last = at;
            if let Some(d) = net.pop_due(at) {
                order.push(u64::from_le_bytes(d.bytes[..8].try_into().unwrap()));
            }
        }
        let s = net.stats;
        assert_eq!(s.sent + s.duplicated, s.delivered + s.lost + s.blackholed);
        assert!(
            s.lost > 100 && s.duplicated > 100 && s.blackholed > 0,
            "{s:?}"
        );
        assert!(
            order.windows(2).any(|w| w[1] < w[0]),
            "some datagrams were reordered"
        );
        assert_eq!(net.in_flight(), 0);
    }
}
