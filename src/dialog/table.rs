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
//! - Lookups never allocate: the `(Call-ID, From-tag)` index is probed with a borrowed
//!   [`CallKeyRef`] whose hash and equality agree with the owned [`CallKey`].
//! - Paging (`collect_page`, `page`) walks the map in its internal order; under concurrent
//!   changes an entry may be seen twice or missed across pages (management use only).

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub use papaya::Equivalent;

use super::id::DialogId;

/// A lock-free hash map (papaya) with owned-value accessors and atomic counter helpers.
pub struct ConcurrentMap<K, V> {
    inner: papaya::HashMap<K, V>,
}

impl<K: Hash + Eq, V> std::fmt::Debug for ConcurrentMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentMap")
            .field("len", &self.inner.len())
            .finish()
    }
}

impl<K: Hash + Eq, V> Default for ConcurrentMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> ConcurrentMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            inner: papaya::HashMap::new(),
        }
    }

    /// An empty map sized for `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            inner: papaya::HashMap::with_capacity(cap),
        }
    }

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

impl<K: Hash + Eq, V: Clone> ConcurrentMap<K, V> {
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

impl<K: Hash + Eq + Clone, V: Clone> ConcurrentMap<K, V> {
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

impl<K: Hash + Eq> ConcurrentMap<K, AtomicI64> {
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

/// Owned secondary-index key: `(Call-ID, From-tag)` of the dialog's creating request.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CallKey {
    /// Call-ID bytes.
    pub call_id: Box<[u8]>,
    /// From-tag bytes.
    pub from_tag: Box<[u8]>,
}

/// Borrowed form of [`CallKey`] for allocation-free lookups (same `Hash` as the owned key:
/// both hash the two byte slices in field order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CallKeyRef<'a> {
    /// Call-ID bytes.
    pub call_id: &'a [u8],
    /// From-tag bytes.
    pub from_tag: &'a [u8],
}

impl Equivalent<CallKey> for CallKeyRef<'_> {
    fn equivalent(&self, key: &CallKey) -> bool {
        *self.call_id == *key.call_id && *self.from_tag == *key.from_tag
    }
}

/// The shared dialog table: `DialogId -> Arc<V>` plus a `(Call-ID, From-tag) -> DialogId`
/// index for spiral detection and lookup by Call-ID.
///
/// `V` is the dialog record (owned by `dialog::record`); the table never looks inside it.
/// The two maps are updated one after the other, so a concurrent reader may briefly see a
/// dialog by id but not yet by Call-ID (or the reverse on removal).
pub struct DialogTable<V> {
    by_id: ConcurrentMap<DialogId, Arc<V>>,
    by_call: ConcurrentMap<CallKey, DialogId>,
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
        }
    }

    /// Publishes a dialog. Allocates the index key (once per dialog). If another dialog holds
    /// the same `(call_id, from_tag)`, the index now points at `id`. Returns the previous
    /// record under `id`, if any.
    pub fn insert(
        &self,
        id: DialogId,
        v: Arc<V>,
        call_id: &[u8],
        from_tag: &[u8],
    ) -> Option<Arc<V>> {
        let prev = self.by_id.insert(id, v);
        let key = CallKey {
            call_id: call_id.into(),
            from_tag: from_tag.into(),
        };
        self.by_call.insert(key, id);
        prev
    }

    /// The record of `id`.
    pub fn get(&self, id: DialogId) -> Option<Arc<V>> {
        self.by_id.get(&id)
    }

    /// Removes `id` and its index entry (only if the index still points at `id`).
    pub fn remove(&self, id: DialogId, call_id: &[u8], from_tag: &[u8]) -> Option<Arc<V>> {
        let removed = self.by_id.remove(&id);
        self.by_call
            .remove_if(&CallKeyRef { call_id, from_tag }, |d| *d == id);
        removed
    }

    /// The dialog created by `(call_id, from_tag)`, without allocating.
    pub fn find_by_callid_ftag(&self, call_id: &[u8], from_tag: &[u8]) -> Option<DialogId> {
        self.by_call.get(&CallKeyRef { call_id, from_tag })
    }

    /// Every dialog with this Call-ID (a full scan: management only).
    pub fn find_by_callid(&self, call_id: &[u8]) -> Vec<DialogId> {
        let mut out = Vec::new();
        self.by_call.for_each(|k, id| {
            if *k.call_id == *call_id {
                out.push(*id);
            }
        });
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn did(n: u32) -> DialogId {
        DialogId::new(1, n, n)
    }

    #[test]
    fn table_basic_and_index() {
        let t: DialogTable<&str> = DialogTable::new();
        assert!(t.insert(did(1), Arc::new("a"), b"call-1", b"ft1").is_none());
        t.insert(did(2), Arc::new("b"), b"call-1", b"ft2");
        t.insert(did(3), Arc::new("c"), b"call-2", b"ft1");
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(did(2)).as_deref(), Some(&"b"));
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
        t.insert(did(4), Arc::new("d"), b"call-2", b"ft1");
        assert_eq!(t.remove(did(3), b"call-2", b"ft1").as_deref(), Some(&"c"));
        assert_eq!(t.find_by_callid_ftag(b"call-2", b"ft1"), Some(did(4)));
        assert_eq!(t.remove(did(3), b"call-2", b"ft1"), None);
        let mut all: Vec<u32> = (0..4)
            .flat_map(|p| t.page(p, 1))
            .map(|(d, _)| d.h_id)
            .collect();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 4]);
        assert!(t.page(3, 10).is_empty());
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
            let t: DialogTable<u16> = DialogTable::new();
            let mut model: HashMap<DialogId, u16> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let (c, f) = call_of(k);
                        let got = t.insert(did(k.into()), Arc::new(v), &c, &f).map(|a| *a);
                        prop_assert_eq!(got, model.insert(did(k.into()), v));
                    }
                    Op::Get(k) => prop_assert_eq!(t.get(did(k.into())).map(|a| *a), model.get(&did(k.into())).copied()),
                    Op::Remove(k) => {
                        let (c, f) = call_of(k);
                        prop_assert_eq!(t.remove(did(k.into()), &c, &f).map(|a| *a), model.remove(&did(k.into())));
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
