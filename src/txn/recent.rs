//! The INVITE server transactions of every worker, by their upstream key (top Via branch,
//! Call-ID, From-tag, CSeq number), shared: a retransmitted INVITE, its CANCEL or the ACK of a
//! non-2xx final finds its transaction from any worker, tracked or not, without the dialog
//! table. After a transaction is freed its entry stays as a tombstone for [`REMEMBER_MS`]
//! (RFC 6026's Accepted state without keeping the transaction): a UAC retransmits its INVITE
//! until a final reaches it or Timer B (64*T1) fires, so a retransmission can come long after
//! the transaction lingered, and is absorbed instead of forwarded again.
//!
//! ## Invariants
//! - Fixed size, allocated once: 24 bytes per slot (a 64-bit tag of the key, the location
//!   worker/slot/generation, and an expiry). Entries are freed by time: a tombstone expires,
//!   and a slot whose entry expired is reused.
//! - Lock-free: a lookup probes at most [`PROBE`] slots with atomic loads; inserting and
//!   finishing are a few atomic stores or compare-and-swaps. No allocation, no panic.
//! - Every hit is verified by its owner: the location names a worker, slot and generation, and
//!   the owning worker checks the transaction there (generation and branch) before trusting it.
//!   A stale or colliding entry therefore never touches another transaction.
//! - Lossy by design: when every probed slot is live, the entry that expires first is
//!   overwritten (a tombstone before a live transaction). Under more load than the table
//!   holds, a late retransmission may be forwarded again, as it was without this table.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots probed per operation.
pub const PROBE: usize = 8;
/// Default slots: 2^19 (12 MiB), about 250,000 entries at under half load: INVITE
/// transactions alive plus those freed within [`REMEMBER_MS`], i.e. ~6,000 INVITEs per second.
pub const DEFAULT_SLOTS: usize = 1 << 19;
/// How long a freed INVITE transaction is remembered, ms: Timer B (64*T1), the longest a UAC
/// retransmits, plus network delay.
pub const REMEMBER_MS: u64 = 64 * super::T1 + 4_000;

/// Where a live transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Owning worker.
    pub worker: u16,
    /// Slot in its table.
    pub slot: u32,
    /// Generation of the slot.
    pub generation: u32,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// A live transaction (to be verified by its worker).
    Live(Loc),
    /// A transaction freed less than [`REMEMBER_MS`] ago.
    Finished,
}

const NO_LOC: u64 = u64::MAX;
const LIVE: u64 = u64::MAX;

fn pack(l: Loc) -> u64 {
    // worker: 8 bits (MAX_WORKERS = 256), slot: 24 bits, generation: 32 bits.
    (u64::from(l.worker & 0xff) << 56)
        | (u64::from(l.slot & 0xff_ffff) << 32)
        | u64::from(l.generation)
}

fn unpack(v: u64) -> Loc {
    Loc {
        worker: (v >> 56) as u16,
        slot: ((v >> 32) & 0xff_ffff) as u32,
        generation: v as u32,
    }
}

#[derive(Debug, Default)]
struct Slot {
    tag: AtomicU64,
    loc: AtomicU64,
    /// `LIVE` while the transaction lives, else when the tombstone expires (ms).
    until_ms: AtomicU64,
}

/// The index.
#[derive(Debug)]
pub struct InviteIndex {
    slots: Box<[Slot]>,
    mask: usize,
}

impl Default for InviteIndex {
    fn default() -> Self {
        InviteIndex::new(DEFAULT_SLOTS)
    }
}

/// The key of an INVITE transaction: top Via branch, Call-ID, From-tag and CSeq number, as a
/// non-zero 64-bit tag ([`crate::hash::hash64`] of the parts). A CANCEL and the ACK of
/// a non-2xx final carry the same four values.
pub fn key(branch: &[u8], call_id: &[u8], from_tag: &[u8], cseq: u32) -> u64 {
    crate::hash::hash64(0, &[branch, call_id, from_tag, &cseq.to_le_bytes()]) | 1
}

impl InviteIndex {
    /// An index of at least `slots` slots (a power of two, at least [`PROBE`]).
    pub fn new(slots: usize) -> InviteIndex {
        let n = slots.max(PROBE).next_power_of_two();
        InviteIndex {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
        }
    }

    fn probe(&self, tag: u64) -> impl Iterator<Item = &Slot> {
        let start = tag as usize;
        (0..PROBE).filter_map(move |i| self.slots.get(start.wrapping_add(i) & self.mask))
    }

    /// A live transaction `tag` at `loc`, unless another live transaction holds `tag`
    /// (the same INVITE taken by two workers at once): then `Err(its location)`. The check and
    /// the insert are not one atomic step; two claims in the same microsecond can both win.
    pub fn claim(&self, tag: u64, loc: Loc, now_ms: u64) -> Result<(), Loc> {
        if let Some(Found::Live(other)) = self.lookup(tag, now_ms)
            && other != loc
        {
            return Err(other);
        }
        self.put(tag, pack(loc), LIVE, now_ms);
        Ok(())
    }

    /// The transaction `tag` at `loc` was freed at `now_ms`: its entry becomes a tombstone
    /// until `now_ms + REMEMBER_MS` (added if it was overwritten meanwhile).
    pub fn finish(&self, tag: u64, loc: Loc, now_ms: u64) {
        let until = now_ms.saturating_add(REMEMBER_MS);
        let packed = pack(loc);
        for s in self.probe(tag) {
            if s.tag.load(Relaxed) == tag && s.loc.load(Relaxed) == packed {
                s.loc.store(NO_LOC, Relaxed);
                s.until_ms.store(until, Relaxed);
                return;
            }
        }
        self.put(tag, NO_LOC, until, now_ms);
    }

    fn put(&self, tag: u64, loc: u64, until: u64, now_ms: u64) {
        let mut victim: Option<(&Slot, u64)> = None;
        for s in self.probe(tag) {
            let t = s.tag.load(Relaxed);
            let u = s.until_ms.load(Relaxed);
            if t == 0 || u <= now_ms {
                if s.tag.compare_exchange(t, tag, Relaxed, Relaxed).is_ok() {
                    s.loc.store(loc, Relaxed);
                    s.until_ms.store(until, Relaxed);
                    return;
                }
                continue;
            }
            if victim.is_none_or(|(_, vu)| u < vu) {
                victim = Some((s, u));
            }
        }
        if let Some((s, _)) = victim {
            s.tag.store(tag, Relaxed);
            s.loc.store(loc, Relaxed);
            s.until_ms.store(until, Relaxed);
        }
    }

    /// Transaction `tag`: live (where), recently finished, or unknown.
    pub fn lookup(&self, tag: u64, now_ms: u64) -> Option<Found> {
        for s in self.probe(tag) {
            if s.tag.load(Relaxed) != tag {
                continue;
            }
            let until = s.until_ms.load(Relaxed);
            let loc = s.loc.load(Relaxed);
            if until == LIVE && loc != NO_LOC {
                return Some(Found::Live(unpack(loc)));
            }
            if until > now_ms {
                return Some(Found::Finished);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Loc = Loc {
        worker: 3,
        slot: 77,
        generation: 9,
    };

    #[test]
    fn live_then_finished_then_forgotten() {
        let r = InviteIndex::new(64);
        let k = key(b"z9hG4bK1", b"call", b"ft", 1);
        assert_ne!(k, key(b"z9hG4bK1", b"call", b"ft", 2));
        assert_ne!(key(b"ab", b"c", b"", 1), key(b"a", b"bc", b"", 1));
        assert_eq!(r.lookup(k, 0), None);
        assert_eq!(r.claim(k, L, 0), Ok(()));
        assert_eq!(
            r.lookup(k, 1_000_000),
            Some(Found::Live(L)),
            "live never expires"
        );
        let other = Loc { worker: 1, ..L };
        assert_eq!(r.claim(k, other, 5), Err(L), "one INVITE, one transaction");
        r.finish(k, L, 2000);
        assert_eq!(r.lookup(k, 2000 + REMEMBER_MS - 1), Some(Found::Finished));
        assert_eq!(r.lookup(k, 2000 + REMEMBER_MS), None);
        assert_eq!(unpack(pack(L)), L);
    }

    #[test]
    fn a_full_neighbourhood_overwrites_the_entry_that_expires_first() {
        let r = InviteIndex::new(1);
        let keys: Vec<u64> = (0..PROBE as u32)
            .map(|i| key(b"b", b"c", b"f", i))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            r.claim(*k, L, 0).unwrap_or_else(|_| unreachable!());
            if i == 3 {
                r.finish(*k, L, 10);
            }
        }
        let new = key(b"b", b"c", b"f", 99);
        assert_eq!(r.claim(new, L, 20), Ok(()));
        assert_eq!(r.lookup(new, 21), Some(Found::Live(L)));
        assert_eq!(r.lookup(keys[3], 21), None, "the tombstone made room");
        assert!(
            keys.iter()
                .enumerate()
                .all(|(i, k)| i == 3 || r.lookup(*k, 21).is_some())
        );
    }
}
