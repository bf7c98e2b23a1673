//! The `(Call-ID, From-tag)` secondary index of the dialog table: a keyed 64-bit hash of the
//! pair mapped to the `DialogId` that holds it, in 64 lock-striped std hash maps.
//!
//! # Invariants
//! - Keys are already keyed hashes (the table's per-table seed), so the maps hash them with
//!   [`PassThrough`]. Bits 32..38 pick the stripe; the maps use the low bits for the bucket and
//!   the top 7 for their control bytes, so neither loses entropy to the striping.
//! - Entries are stored inline (16 bytes plus a control byte per bucket): no heap block per
//!   dialog, unlike a lock-free map that boxes every entry. A stripe's lock is held for one
//!   probe or one insert/remove only, never across a call into other code.
//! - [`CallIndex::remove_if_is`] removes an entry only while it still maps to the given id, so
//!   a dialog that took the key over later keeps it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use super::super::id::DialogId;

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

const STRIPES: usize = 64;

type Stripe = HashMap<u64, DialogId, BuildHasherDefault<PassThrough>>;

/// `hash(Call-ID, From-tag) -> DialogId`, lock-striped.
pub(super) struct CallIndex {
    stripes: Box<[CachePadded<Mutex<Stripe>>]>,
}

impl CallIndex {
    /// An empty index sized for about `cap` entries.
    pub(super) fn with_capacity(cap: usize) -> Self {
        let per = cap.div_ceil(STRIPES);
        let stripes = (0..STRIPES)
            .map(|_| {
                CachePadded::new(Mutex::new(Stripe::with_capacity_and_hasher(
                    per,
                    BuildHasherDefault::default(),
                )))
            })
            .collect();
        CallIndex { stripes }
    }

    fn stripe(&self, key: u64) -> Option<MutexGuard<'_, Stripe>> {
        let i = (key >> 32) as usize % STRIPES;
        // An insert or remove cannot leave a map half-edited when it panics (it only panics
        // on allocation failure, which aborts), so a poisoned stripe is still consistent.
        let m = self.stripes.get(i)?;
        Some(m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Maps `key` to `id`, replacing whatever it mapped to.
    pub(super) fn insert(&self, key: u64, id: DialogId) {
        if let Some(mut s) = self.stripe(key) {
            s.insert(key, id);
        }
    }

    /// The id `key` maps to.
    pub(super) fn get(&self, key: u64) -> Option<DialogId> {
        self.stripe(key)?.get(&key).copied()
    }

    /// Removes `key` only if it still maps to `id`.
    pub(super) fn remove_if_is(&self, key: u64, id: DialogId) {
        if let Some(mut s) = self.stripe(key)
            && s.get(&key) == Some(&id)
        {
            s.remove(&key);
        }
    }

    /// Number of entries (sums the stripes; tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
