//! Lock-free maps shared by all workers: the generic [`ConcurrentMap`] and the
//! [`DialogTable`] built on it. The ONLY module in the crate that imports papaya.
//!
//! # Invariants
//! - Every method pins exactly one papaya guard (per map touched) for the duration of the call
//!   and returns owned values (clones of `Arc`s or `Copy` values), so no guard escapes and a
//!   caller never holds epoch reclamation back across packets.
//! - Values are immutable once published; what changes about a dialog lives in atomics inside
//!   `V`. Counter updates go through papaya's `compute`, which applies a read-modify-write
//!   atomically per key, so increments never race a remove-at-zero into a lost update.
//! - Lookups never allocate: the `(Call-ID, From-tag)` index is probed with a borrowed
//!   [`CallKeyRef`] whose hash and equality agree with the owned [`CallKey`].
//! - Paging (`collect_page`, `page`) walks the map in its internal order; under concurrent
//!   changes an entry may be seen twice or missed across pages (management use only).

use std::hash::Hash;
use std::sync::Arc;

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

impl<K: Hash + Eq> ConcurrentMap<K, i64> {
    /// Atomically adds `delta` to the counter of `key`, inserting it at `delta` if absent.
    /// Returns the new count.
    pub fn increment(&self, key: K, delta: i64) -> i64 {
        let map = self.inner.pin();
        *map.update_or_insert(key, |v| v + delta, delta)
    }

    /// Atomically increments `key` only while its count is below `max` (absent counts as 0).
    pub fn increment_below(&self, key: K, max: i64) -> Bounded {
        let map = self.inner.pin();
        let r = map.compute(key, |entry| {
            let cur = entry.map_or(0, |(_, v)| *v);
            if cur < max {
                papaya::Operation::Insert(cur + 1)
            } else {
                papaya::Operation::Abort(cur)
            }
        });
        match r {
            papaya::Compute::Inserted(_, v) => Bounded::Admitted(*v),
            papaya::Compute::Updated { new: (_, v), .. } => Bounded::Admitted(*v),
            papaya::Compute::Aborted(cur) => Bounded::Full(cur),
            papaya::Compute::Removed(_, _) => Bounded::Full(max),
        }
    }

    /// Atomically decrements `key` and removes it when the count reaches zero. Returns the
    /// new count, or `None` if the key was absent (nothing changed).
    pub fn decrement_remove_at_zero(&self, key: K) -> Option<i64> {
        let map = self.inner.pin();
        let r = map.compute(key, |entry| match entry {
            Some((_, &v)) if v <= 1 => papaya::Operation::Remove,
            Some((_, &v)) => papaya::Operation::Insert(v - 1),
            None => papaya::Operation::Abort(()),
        });
        match r {
            papaya::Compute::Updated { new: (_, v), .. } => Some(*v),
            papaya::Compute::Removed(_, v) => Some(*v - 1),
            papaya::Compute::Inserted(_, v) => Some(*v),
            papaya::Compute::Aborted(()) => None,
        }
    }

    /// The counter of `key` (0 if absent).
    pub fn count<Q: Equivalent<K> + Hash + ?Sized>(&self, key: &Q) -> i64 {
        self.inner.pin().get(key).copied().unwrap_or(0)
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
        let m: ConcurrentMap<Box<[u8]>, i64> = ConcurrentMap::new();
        assert_eq!(m.increment(b"a".as_slice().into(), 1), 1);
        assert_eq!(m.increment(b"a".as_slice().into(), 1), 2);
        assert_eq!(m.count(b"a".as_slice()), 2);
        assert_eq!(
            m.increment_below(b"a".as_slice().into(), 3),
            Bounded::Admitted(3)
        );
        assert_eq!(
            m.increment_below(b"a".as_slice().into(), 3),
            Bounded::Full(3)
        );
        assert_eq!(
            m.increment_below(b"b".as_slice().into(), 0),
            Bounded::Full(0)
        );
        assert!(
            !m.contains_key(b"b".as_slice()),
            "a refused bound inserts nothing"
        );
        for want in [2, 1, 0] {
            assert_eq!(
                m.decrement_remove_at_zero(b"a".as_slice().into()),
                Some(want)
            );
        }
        assert_eq!(m.decrement_remove_at_zero(b"a".as_slice().into()), None);
        assert!(m.is_empty());
    }

    #[test]
    fn concurrent_increment_decrement_no_lost_update() {
        let m: Arc<ConcurrentMap<u8, i64>> = Arc::new(ConcurrentMap::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let k = (i % 3) as u8;
                        m.increment(k, 1);
                        m.decrement_remove_at_zero(k);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert!(m.is_empty(), "left {:?}", m.collect_page(0, 10));
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
