//! A fixed-size, lock-free table of rate cells keyed by a 128-bit key (a source address, or a
//! hash of a profile and its value), each with a ban deadline.
//!
//! ## Invariants
//! - Allocated once ([`KeyedTable::new`]); a lookup probes at most [`PROBE`] slots with
//!   atomic loads and at most a few compare-and-swaps: no lock, no allocation, no panic.
//! - A slot is reused only when it is idle: its bucket is full again and it has no ban in
//!   force. So an entry is freed by time alone; nothing has to remove it.
//! - When every probed slot belongs to another active key, the request is *untracked*: it is
//!   admitted and counted by the caller (fail open), never charged to a stranger's bucket.
//! - Races are benign and bounded: two threads that claim slots for the same new key at the
//!   same instant may count it in two slots for one bucket period, and a slot reused at the
//!   instant its old owner arrives may hand that owner a fresh bucket. Neither can ban a key
//!   that did not exceed its rate by itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::gcra::{self, Rate};

/// Slots probed per lookup.
pub const PROBE: usize = 8;

/// Outcome of counting one request against its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Within the rate.
    Admit,
    /// Over the rate.
    Over,
    /// No slot free near the key's place: admitted without counting.
    Untracked,
}

#[derive(Debug, Default)]
struct Slot {
    /// Non-zero tag of the owning key (0 = never used).
    tag: AtomicU64,
    /// The key, low and high halves (to tell keys with one tag apart, and to list bans).
    lo: AtomicU64,
    hi: AtomicU64,
    /// GCRA theoretical arrival time, µs.
    tat: AtomicU64,
    /// Banned until this time, ms (0 or past = not banned).
    ban_until_ms: AtomicU64,
}

impl Slot {
    fn holds(&self, tag: u64, key: u128) -> bool {
        self.tag.load(Relaxed) == tag
            && self.lo.load(Relaxed) == key as u64
            && self.hi.load(Relaxed) == (key >> 64) as u64
    }

    fn key(&self) -> u128 {
        u128::from(self.hi.load(Relaxed)) << 64 | u128::from(self.lo.load(Relaxed))
    }
}

/// The table. Memory: 40 bytes per slot, fixed at construction.
#[derive(Debug)]
pub struct KeyedTable {
    slots: Box<[Slot]>,
    mask: usize,
    /// No ban ends after this time (ms): while `now` is past it, [`KeyedTable::banned`] answers
    /// without probing.
    horizon_ms: AtomicU64,
}

/// A key's non-zero 64-bit tag (a multiply-xorshift mix of both halves).
#[inline]
fn tag_of(key: u128) -> u64 {
    let mut h = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) | 1
}

impl KeyedTable {
    /// A table of at least `slots` slots (rounded up to a power of two, at least [`PROBE`]).
    pub fn new(slots: usize) -> KeyedTable {
        let n = slots.max(PROBE).next_power_of_two();
        KeyedTable {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            horizon_ms: AtomicU64::new(0),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn probe(&self, tag: u64) -> impl Iterator<Item = &Slot> {
        let start = tag as usize;
        (0..PROBE).filter_map(move |i| self.slots.get((start.wrapping_add(i)) & self.mask))
    }

    #[inline]
    fn find(&self, tag: u64, key: u128) -> Option<&Slot> {
        self.probe(tag).find(|s| s.holds(tag, key))
    }

    /// Count one request of `key` at `now_us` against `rate`.
    #[inline]
    pub fn check(&self, key: u128, rate: &Rate, now_us: u64) -> Check {
        let tag = tag_of(key);
        if let Some(s) = self.find(tag, key) {
            return if gcra::admit(&s.tat, rate, now_us) {
                Check::Admit
            } else {
                Check::Over
            };
        }
        let now_ms = now_us / 1000;
        for s in self.probe(tag) {
            let old = s.tag.load(Relaxed);
            let idle = old == 0
                || (Rate::idle(s.tat.load(Relaxed), now_us)
                    && s.ban_until_ms.load(Relaxed) <= now_ms);
            if !idle {
                continue;
            }
            if s.tag.compare_exchange(old, tag, Relaxed, Relaxed).is_ok() {
                s.lo.store(key as u64, Relaxed);
                s.hi.store((key >> 64) as u64, Relaxed);
                s.ban_until_ms.store(0, Relaxed);
                s.tat.store(0, Relaxed);
                return if gcra::admit(&s.tat, rate, now_us) {
                    Check::Admit
                } else {
                    Check::Over
                };
            }
        }
        Check::Untracked
    }

    /// Ban `key` until `until_ms`. Returns `true` when this call started the ban (it was not
    /// banned at `now_ms`): the caller logs it once. `false` also when the key has no slot.
    pub fn ban(&self, key: u128, now_ms: u64, until_ms: u64) -> bool {
        let Some(s) = self.find(tag_of(key), key) else {
            return false;
        };
        self.horizon_ms.fetch_max(until_ms, Relaxed);
        let prev = s.ban_until_ms.swap(until_ms, Relaxed);
        prev <= now_ms
    }

    /// Whether `key` is banned at `now_ms`. O(1) and probe-free while no ban is in force.
    #[inline]
    pub fn banned(&self, key: u128, now_ms: u64) -> bool {
        if now_ms >= self.horizon_ms.load(Relaxed) {
            return false;
        }
        self.find(tag_of(key), key)
            .is_some_and(|s| s.ban_until_ms.load(Relaxed) > now_ms)
    }

    /// Lift the ban of `key`; `true` if it was banned.
    pub fn unban(&self, key: u128, now_ms: u64) -> bool {
        self.find(tag_of(key), key)
            .is_some_and(|s| s.ban_until_ms.swap(0, Relaxed) > now_ms)
    }

    /// Every key banned at `now_ms`, with the end of its ban (ms). Management only: walks the
    /// whole table.
    pub fn bans(&self, now_ms: u64) -> Vec<(u128, u64)> {
        if now_ms >= self.horizon_ms.load(Relaxed) {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter_map(|s| {
                let until = s.ban_until_ms.load(Relaxed);
                let key = s.key();
                (until > now_ms && s.tag.load(Relaxed) == tag_of(key)).then_some((key, until))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn keys_have_their_own_buckets() {
        let t = KeyedTable::new(64);
        let r = Rate::new(1, 2).unwrap();
        let now = 100 * S;
        assert_eq!(t.check(1, &r, now), Check::Admit);
        assert_eq!(t.check(1, &r, now), Check::Admit);
        assert_eq!(t.check(1, &r, now), Check::Over);
        assert_eq!(t.check(2, &r, now), Check::Admit);
        assert_eq!(t.check(1, &r, now + S), Check::Admit);
    }

    #[test]
    fn a_ban_expires_and_is_started_once() {
        let t = KeyedTable::new(64);
        let r = Rate::new(1, 1).unwrap();
        let now_ms = 5_000;
        assert!(!t.banned(7, now_ms));
        t.check(7, &r, now_ms * 1000);
        assert!(t.ban(7, now_ms, now_ms + 1000));
        assert!(!t.ban(7, now_ms + 1, now_ms + 1000));
        assert!(t.banned(7, now_ms + 999));
        assert!(!t.banned(8, now_ms + 999));
        assert_eq!(t.bans(now_ms), vec![(7, now_ms + 1000)]);
        assert!(!t.banned(7, now_ms + 1000));
        assert!(t.bans(now_ms + 1000).is_empty());
    }

    #[test]
    fn unban_lifts_a_ban() {
        let t = KeyedTable::new(64);
        let r = Rate::new(1, 1).unwrap();
        t.check(u128::MAX, &r, 0);
        assert!(t.ban(u128::MAX, 0, 60_000));
        assert!(t.unban(u128::MAX, 1));
        assert!(!t.banned(u128::MAX, 2));
        assert!(!t.unban(u128::MAX, 3));
    }

    #[test]
    fn a_full_neighbourhood_is_untracked_then_freed_by_time() {
        // 8 slots: every key probes all of them.
        let t = KeyedTable::new(1);
        assert_eq!(t.capacity(), PROBE);
        let r = Rate::new(1, 1).unwrap();
        let now = 10 * S;
        for k in 0..PROBE as u128 {
            assert_eq!(t.check(k, &r, now), Check::Admit);
        }
        assert_eq!(t.check(99, &r, now), Check::Untracked);
        // A second later every bucket is full again: the slots are free for others.
        assert_eq!(t.check(99, &r, now + S), Check::Admit);
    }

    #[test]
    fn a_banned_slot_is_not_reused() {
        let t = KeyedTable::new(1);
        let r = Rate::new(1, 1).unwrap();
        for k in 0..PROBE as u128 {
            t.check(k, &r, 0);
            t.ban(k, 0, 3_600_000);
        }
        assert_eq!(t.check(99, &r, 60 * S), Check::Untracked);
        assert!(t.banned(3, 60_000));
    }
}
