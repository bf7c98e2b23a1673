//! Lock-free maps shared by all workers: the generic [`ConcurrentMap`] and the
//! [`DialogTable`] built on it. The ONLY module in the crate that imports papaya.
//!
//! # Invariants
//! - Every method pins exactly one papaya guard (per map touched) for the duration of the call
//!   and returns owned values (clones of `Arc`s or `Copy` values), so no guard escapes and a
//!   caller never holds epoch reclamation back across packets.
//! - Values are immutable once published; what changes about a dialog lives in atomics inside
//!   `V`. Counters are `AtomicI64` values bumped in place; remove-at-zero first CAS-marks the
//!   counter dead (`0 -> DEAD`), so a racing increment either wins before the mark (and the
//!   remove is skipped) or sees the mark, removes the dead entry and inserts a fresh one:
//!   no lost update and no zero entry left behind.
//! - The `(Call-ID, From-tag)` index stores no strings: its key is a 64-bit hash of the pair,
//!   keyed by a per-table random seed (std `RandomState`), and its value the `DialogId`. A
//!   lookup verifies the candidate record's own Call-ID and From-tag ([`CallIdentity`]) and
//!   answers `None` on a mismatch, so a hash collision can hide a dialog from the index (the
//!   newer insert wins, as for equal keys) but never return a wrong one. Neither inserts nor
//!   lookups allocate a key.
//! - Paging (`collect_page`, `page`) walks the map in its internal order; under concurrent
//!   changes an entry may be seen twice or missed across pages (management use only).

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub use papaya::Equivalent;

use super::id::DialogId;

/// A lock-free hash map (papaya) with owned-value accessors and atomic counter helpers.
/// `S` builds the hasher (std's keyed SipHash unless the keys are already keyed hashes).
pub struct ConcurrentMap<K, V, S = RandomState> {
    inner: papaya::HashMap<K, V, S>,
}

impl<K: Hash + Eq, V, S: BuildHasher> std::fmt::Debug for ConcurrentMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentMap")
            .field("len", &self.inner.len())
            .finish()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> Default for ConcurrentMap<K, V, S> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<K: Hash + Eq, V> ConcurrentMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> ConcurrentMap<K, V, S> {
    /// An empty map sized for `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            inner: papaya::HashMap::with_capacity_and_hasher(cap, S::default()),
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> ConcurrentMap<K, V, S> {
    /// Number of entries (approximate while other threads write).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// True when `key` is present.
    pub fn contains_key<Q: Equivalent<K> + Hash + ?Sized>(&self, key: &Q) -> bool {
        self.inner.pin().contains_key(key)
    }

    /// Runs `f` on the value of `key` under the guard, without cloning it.
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        self.inner.pin().get(key).map(f)
    }

    /// Calls `f` on every entry (a weakly consistent walk).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for (k, v) in self.inner.pin().iter() {
            f(k, v);
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.inner.pin().clear();
    }
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher> ConcurrentMap<K, V, S> {
    /// A clone of the value of `key`.
    pub fn get<Q: Equivalent<K> + Hash + ?Sized>(&self, key: &Q) -> Option<V> {
        self.inner.pin().get(key).cloned()
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.inner.pin().insert(key, value).cloned()
    }

    /// Inserts only if absent; `Err(existing)` otherwise.
    pub fn try_insert(&self, key: K, value: V) -> Result<(), V> {
        match self.inner.pin().try_insert(key, value) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.current.clone()),
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Equivalent<K> + Hash + ?Sized>(&self, key: &Q) -> Option<V> {
        self.inner.pin().remove(key).cloned()
    }

    /// Removes `key` only if `pred` holds for its current value (atomically).
    pub fn remove_if<Q>(&self, key: &Q, mut pred: impl FnMut(&V) -> bool) -> Option<V>
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        match self.inner.pin().remove_if(key, |_, v| pred(v)) {
            Ok(Some((_, v))) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> ConcurrentMap<K, V, S> {
    /// Up to `count` entries after skipping `start`, in the map's internal order.
    pub fn collect_page(&self, start: usize, count: usize) -> Vec<(K, V)> {
        self.inner
            .pin()
            .iter()
            .skip(start)
            .take(count)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Result of a bounded increment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounded {
    /// Incremented; the new count.
    Admitted(i64),
    /// The count was already at or above the bound; nothing changed.
    Full(i64),
}

/// Marks a counter that reached zero and is being removed; never incremented again.
const DEAD: i64 = i64::MIN;

impl<K: Hash + Eq, S: BuildHasher> ConcurrentMap<K, AtomicI64, S> {
    /// Adds one to the counter of `key`, inserting it at 1 (with a key from `make_key`, the only
    /// allocation, called again only if an insert race is lost) if absent. Returns the new count.
    ///
    /// Steady state is one lookup plus one CAS on the counter: no entry is rewritten, so
    /// nothing is allocated or retired. A counter marked dead by a concurrent remove-at-zero
    /// is removed (helping that remover) and a fresh one inserted, so no increment is lost.
    pub fn counter_incr<Q>(&self, key: &Q, make_key: impl Fn() -> K) -> i64
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        match self.counter_incr_below(key, i64::MAX, make_key) {
            Bounded::Admitted(n) | Bounded::Full(n) => n,
        }
    }

    /// Adds one to the counter of `key` only while it is below `max` (absent counts as 0, and
    /// a refused key is not inserted). The check and the increment are one CAS.
    pub fn counter_incr_below<Q>(&self, key: &Q, max: i64, make_key: impl Fn() -> K) -> Bounded
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        let map = self.inner.pin();
        loop {
            if let Some(c) = map.get(key) {
                let mut cur = c.load(Ordering::Acquire);
                while cur != DEAD {
                    if cur >= max {
                        return Bounded::Full(cur);
                    }
                    match c.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return Bounded::Admitted(cur + 1),
                        Err(seen) => cur = seen,
                    }
                }
                // Dead: help its remover, then insert a fresh counter.
                let _ = map.remove_if(key, |_, v| v.load(Ordering::Acquire) == DEAD);
                continue;
            }
            if max <= 0 {
                return Bounded::Full(0);
            }
            // A lost insert race drops our key; `make_key` builds another if we retry.
            if map.try_insert(make_key(), AtomicI64::new(1)).is_ok() {
                return Bounded::Admitted(1);
            }
        }
    }

    /// Subtracts one from the counter of `key` and removes it when it reaches zero. Returns
    /// the new count, or `None` if the key is absent (nothing changed).
    pub fn counter_decr_remove_at_zero<Q>(&self, key: &Q) -> Option<i64>
    where
        Q: Equivalent<K> + Hash + ?Sized,
    {
        let map = self.inner.pin();
        let c = map.get(key)?;
        let mut cur = c.load(Ordering::Acquire);
        loop {
            if cur == DEAD || cur <= 0 {
                return None;
            }
            match c.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        if cur == 1
            && c.compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let _ = map.remove_if(key, |_, v| v.load(Ordering::Acquire) == DEAD);
        }
        Some(cur - 1)
    }

    /// The counter of `key` (0 if absent or being removed).
    pub fn counter_get<Q: Equivalent<K> + Hash + ?Sized>(&self, key: &Q) -> i64 {
        match self.inner.pin().get(key) {
            Some(c) => c.load(Ordering::Acquire).max(0),
            None => 0,
        }
    }
}

/// What the table needs to read from a dialog value to verify an index hit: the Call-ID and
/// From-tag of the dialog's creating request (the same bytes given to [`DialogTable::insert`]).
pub trait CallIdentity {
    /// Call-ID bytes.
    fn call_id(&self) -> &[u8];
    /// From-tag bytes.
    fn ftag(&self) -> &[u8];
}

/// A hasher for keys that already are keyed 64-bit hashes: passes `write_u64` through.
#[derive(Default, Clone, Copy, Debug)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; fold anything else in so it still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The shared dialog table: `DialogId -> Arc<V>` plus a `hash(Call-ID, From-tag) -> DialogId`
/// index for spiral detection and lookup by Call-ID.
///
/// `V` is the dialog record (owned by `dialog::record`); the table reads only its
/// [`CallIdentity`] to verify index hits. The two maps are updated one after the other, so a
/// concurrent reader may briefly see a dialog by id but not yet by Call-ID (or the reverse on
/// removal).
pub struct DialogTable<V> {
    by_id: ConcurrentMap<DialogId, Arc<V>>,
    by_call: ConcurrentMap<u64, DialogId, BuildHasherDefault<PassThrough>>,
    seed: RandomState,
}

impl<V> std::fmt::Debug for DialogTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogTable")
            .field("len", &self.by_id.len())
            .finish()
    }
}

impl<V> Default for DialogTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> DialogTable<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty table sized for `cap` dialogs.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            by_id: ConcurrentMap::with_capacity(cap),
            by_call: ConcurrentMap::with_capacity(cap),
            seed: RandomState::new(),
        }
    }

    /// The index key of `(call_id, from_tag)`: length-prefixed, so no concatenation aliases.
    fn call_hash(&self, call_id: &[u8], from_tag: &[u8]) -> u64 {
        self.seed.hash_one((call_id, from_tag))
    }

    /// Publishes a dialog; `call_id` and `from_tag` must be `v`'s own [`CallIdentity`].
    /// Allocates nothing for the index key. If another dialog holds the same
    /// `(call_id, from_tag)` (or, rarely, the same hash), the index now points at `id`.
    /// Returns the previous record under `id`, if any.
    pub fn insert(
        &self,
        id: DialogId,
        v: Arc<V>,
        call_id: &[u8],
        from_tag: &[u8],
    ) -> Option<Arc<V>> {
        let prev = self.by_id.insert(id, v);
        self.by_call.insert(self.call_hash(call_id, from_tag), id);
        prev
    }

    /// The record of `id`.
    pub fn get(&self, id: DialogId) -> Option<Arc<V>> {
        self.by_id.get(&id)
    }

    /// Removes `id` and its index entry (only if the index still points at `id`). The index
    /// entry goes first, so an index entry whose record is missing is one being published
    /// ([`DialogTable::claim`] relies on it).
    pub fn remove(&self, id: DialogId, call_id: &[u8], from_tag: &[u8]) -> Option<Arc<V>> {
        self.by_call
            .remove_if(&self.call_hash(call_id, from_tag), |d| *d == id);
        self.by_id.remove(&id)
    }

    /// Number of dialogs.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Up to `count` dialogs after skipping `start` (management listing).
    pub fn page(&self, start: usize, count: usize) -> Vec<(DialogId, Arc<V>)> {
        self.by_id.collect_page(start, count)
    }

    /// Calls `f` on every dialog (management, shutdown).
    pub fn for_each(&self, f: impl FnMut(&DialogId, &Arc<V>)) {
        self.by_id.for_each(f);
    }
}

impl<V: CallIdentity> DialogTable<V> {
    /// The dialog created by `(call_id, from_tag)`, without allocating. The candidate's own
    /// Call-ID and From-tag are compared, so a hash collision answers `None`, never a stranger.
    pub fn find_by_callid_ftag(&self, call_id: &[u8], from_tag: &[u8]) -> Option<DialogId> {
        let id = self.by_call.get(&self.call_hash(call_id, from_tag))?;
        self.by_id
            .with(&id, |v| v.call_id() == call_id && v.ftag() == from_tag)
            .filter(|&ok| ok)
            .map(|_| id)
    }

    /// Publishes a dialog only if no live dialog holds `(call_id, from_tag)`: the index entry
    /// is claimed first, atomically, so of two workers that create a dialog for one INVITE at
    /// the same instant (the request and its retransmission) exactly one wins. `Err(holder)`
    /// names the dialog that holds the pair: one `live` says is live, or one being published
    /// right now. A holder that is not live (an ended dialog, or a hash collision) is replaced.
    pub fn claim(
        &self,
        id: DialogId,
        v: Arc<V>,
        call_id: &[u8],
        from_tag: &[u8],
        live: impl Fn(&V) -> bool,
    ) -> Result<(), DialogId> {
        let key = self.call_hash(call_id, from_tag);
        for _ in 0..4 {
            let holder = match self.by_call.try_insert(key, id) {
                Ok(()) => {
                    self.by_id.insert(id, v);
                    return Ok(());
                }
                Err(holder) if holder == id => {
                    self.by_id.insert(id, v);
                    return Ok(());
                }
                Err(holder) => holder,
            };
            let taken = self.by_id.with(&holder, |rec| {
                rec.call_id() == call_id && rec.ftag() == from_tag && live(rec)
            });
            if taken.unwrap_or(true) {
                return Err(holder);
            }
            let _ = self.by_call.remove_if(&key, |d| *d == holder);
        }
        Err(id)
    }

    /// Every dialog with this Call-ID (a full scan: management only).
    pub fn find_by_callid(&self, call_id: &[u8]) -> Vec<DialogId> {
        let mut out = Vec::new();
        self.by_id.for_each(|id, v| {
            if v.call_id() == call_id {
                out.push(*id);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn did(n: u32) -> DialogId {
        DialogId::new(1, n, n)
    }

    /// A test record that knows its own `(Call-ID, From-tag)`.
    #[derive(Debug, PartialEq)]
    struct Rec {
        call: Vec<u8>,
        tag: Vec<u8>,
        v: u16,
    }

    impl CallIdentity for Rec {
        fn call_id(&self) -> &[u8] {
            &self.call
        }
        fn ftag(&self) -> &[u8] {
            &self.tag
        }
    }

    fn rec(call: &[u8], tag: &[u8], v: u16) -> Arc<Rec> {
        Arc::new(Rec {
            call: call.to_vec(),
            tag: tag.to_vec(),
            v,
        })
    }

    fn put(t: &DialogTable<Rec>, n: u32, call: &[u8], tag: &[u8]) -> Option<u16> {
        t.insert(did(n), rec(call, tag, n as u16), call, tag)
            .map(|r| r.v)
    }

    #[test]
    fn table_basic_and_index() {
        let t: DialogTable<Rec> = DialogTable::new();
        assert!(put(&t, 1, b"call-1", b"ft1").is_none());
        put(&t, 2, b"call-1", b"ft2");
        put(&t, 3, b"call-2", b"ft1");
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(did(2)).map(|r| r.v), Some(2));
        assert_eq!(t.find_by_callid_ftag(b"call-1", b"ft2"), Some(did(2)));
        assert_eq!(t.find_by_callid_ftag(b"call-1", b"ft3"), None);
        assert_eq!(
            t.find_by_callid_ftag(b"call-1ft", b"2"),
            None,
            "no concatenation aliasing"
        );
        let mut same = t.find_by_callid(b"call-1");
        same.sort_by_key(|d| d.h_id);
        assert_eq!(same, vec![did(1), did(2)]);
        // A newer dialog took over the index; removing the old one must keep it.
        put(&t, 4, b"call-2", b"ft1");
        assert_eq!(t.remove(did(3), b"call-2", b"ft1").map(|r| r.v), Some(3));
        assert_eq!(t.find_by_callid_ftag(b"call-2", b"ft1"), Some(did(4)));
        assert_eq!(t.remove(did(3), b"call-2", b"ft1"), None);
        let mut all: Vec<u32> = (0..4)
            .flat_map(|p| t.page(p, 1))
            .map(|(d, _)| d.h_id)
            .collect();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 4]);
        assert!(t.page(3, 10).is_empty());
        // Removing the index owner leaves no stale entry behind.
        assert!(t.remove(did(4), b"call-2", b"ft1").is_some());
        assert_eq!(t.find_by_callid_ftag(b"call-2", b"ft1"), None);
    }

    #[test]
    fn index_hit_is_verified_against_the_record() {
        // An index entry whose record does not carry the probed strings (what a 64-bit hash
        // collision looks like) is not a match.
        let t: DialogTable<Rec> = DialogTable::new();
        t.insert(did(1), rec(b"real-call", b"real-tag", 1), b"probe", b"tag");
        assert_eq!(t.find_by_callid_ftag(b"probe", b"tag"), None);
        assert_eq!(t.find_by_callid(b"real-call"), vec![did(1)]);
        // The key is keyed per table: two tables hash the same pair differently.
        let u: DialogTable<Rec> = DialogTable::new();
        assert_ne!(t.call_hash(b"c", b"t"), u.call_hash(b"c", b"t"));
    }

    #[test]
    fn counters_and_bounds() {
        let m: ConcurrentMap<Box<[u8]>, AtomicI64> = ConcurrentMap::new();
        let key = |k: &'static [u8]| move || Box::<[u8]>::from(k);
        assert_eq!(m.counter_incr(b"a".as_slice(), key(b"a")), 1);
        assert_eq!(m.counter_incr(b"a".as_slice(), key(b"a")), 2);
        assert_eq!(m.counter_get(b"a".as_slice()), 2);
        assert_eq!(
            m.counter_incr_below(b"a".as_slice(), 3, key(b"a")),
            Bounded::Admitted(3)
        );
        assert_eq!(
            m.counter_incr_below(b"a".as_slice(), 3, key(b"a")),
            Bounded::Full(3)
        );
        assert_eq!(
            m.counter_incr_below(b"b".as_slice(), 0, key(b"b")),
            Bounded::Full(0)
        );
        assert!(
            !m.contains_key(b"b".as_slice()),
            "a refused bound inserts nothing"
        );
        for want in [2, 1, 0] {
            assert_eq!(m.counter_decr_remove_at_zero(b"a".as_slice()), Some(want));
        }
        assert_eq!(m.counter_decr_remove_at_zero(b"a".as_slice()), None);
        assert_eq!(m.counter_get(b"a".as_slice()), 0);
        assert!(m.is_empty());
    }

    #[test]
    fn concurrent_increment_decrement_no_lost_update() {
        let m: Arc<ConcurrentMap<u8, AtomicI64>> = Arc::new(ConcurrentMap::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let mut held = [0i64; 3];
                    for i in 0..200_000u32 {
                        let k = ((i + t) % 3) as u8;
                        m.counter_incr(&k, || k);
                        held[k as usize] += 1;
                        if i % 3 != 2 {
                            let j = ((i * 7 + t) % 3) as u8;
                            if held[j as usize] > 0 && m.counter_decr_remove_at_zero(&j).is_some() {
                                held[j as usize] -= 1;
                            }
                        }
                    }
                    held
                })
            })
            .collect();
        let mut held = [0i64; 3];
        for t in threads {
            let h = t.join().unwrap_or_default();
            for (a, b) in held.iter_mut().zip(h) {
                *a += b;
            }
        }
        for k in 0..3u8 {
            assert_eq!(m.counter_get(&k), held[k as usize], "key {k}");
            for _ in 0..held[k as usize] {
                assert!(m.counter_decr_remove_at_zero(&k).is_some());
            }
        }
        assert!(m.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Get(u8),
        Remove(u8),
        Find(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Op::Insert(k % 32, v)),
            any::<u8>().prop_map(|k| Op::Get(k % 32)),
            any::<u8>().prop_map(|k| Op::Remove(k % 32)),
            any::<u8>().prop_map(|k| Op::Find(k % 32)),
        ]
    }

    fn call_of(k: u8) -> (Vec<u8>, Vec<u8>) {
        (
            format!("c{}", k % 8).into_bytes(),
            format!("t{k}").into_bytes(),
        )
    }

    proptest! {
        #[test]
        fn differential_against_std_hashmap(ops in proptest::collection::vec(op(), 1..300)) {
            let t: DialogTable<Rec> = DialogTable::new();
            let mut model: HashMap<DialogId, u16> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let (c, f) = call_of(k);
                        let got = t.insert(did(k.into()), rec(&c, &f, v), &c, &f).map(|a| a.v);
                        prop_assert_eq!(got, model.insert(did(k.into()), v));
                    }
                    Op::Get(k) => prop_assert_eq!(t.get(did(k.into())).map(|a| a.v), model.get(&did(k.into())).copied()),
                    Op::Remove(k) => {
                        let (c, f) = call_of(k);
                        prop_assert_eq!(t.remove(did(k.into()), &c, &f).map(|a| a.v), model.remove(&did(k.into())));
                    }
                    Op::Find(k) => {
                        let (c, f) = call_of(k);
                        let want = model.contains_key(&did(k.into())).then(|| did(k.into()));
                        prop_assert_eq!(t.find_by_callid_ftag(&c, &f), want);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
        }
    }
}
