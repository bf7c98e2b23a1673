//! The dialog id (`did`): its layout, its generator and its ASCII cookie.
//!
//! Owns: how a did is built, which worker owns it, and how it travels in a Record-Route
//! `;did=` parameter and inside our Via branch.
//!
//! # Encoding
//! - [`DialogId`] is Kamailio's pair `h_entry h_id` (both `u32`, addressed in decimal by
//!   management commands).
//! - `h_entry` = `worker << 24 | slot`: the top [`WORKER_BITS`] bits name the worker that
//!   created the dialog (so any worker can hand a packet to the owner), the low 24 bits are a
//!   hash slot chosen by the caller (e.g. a Call-ID hash), which only spreads ids.
//! - `h_id` = a per-generator counter (wraps after 2^32 dialogs of one worker).
//! - `boot` = a 32-bit tag mixed from the node id and the boot time, both passed in by the
//!   caller (never read from the clock here). It is not part of the table key but travels in
//!   the cookie, so a did minted before a restart or on another node is rejected by comparing
//!   `boot` with the current one ([`boot_tag`]).
//! - Cookie = 24 lowercase hex chars: `boot` (8) `h_entry` (8) `h_id` (8). Valid in a URI
//!   parameter and in a Via branch. Decoding accepts upper or lower case and never panics.
//!
//! # Invariants
//! - `decode(encode(id, boot)) == Some((id, boot))` for every value.
//! - Neither direction allocates.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bits of `h_entry` that hold the creating worker's index.
pub const WORKER_BITS: u32 = 8;
/// Largest worker count a did can address.
pub const MAX_WORKERS: usize = 1 << WORKER_BITS;
/// Bits of `h_entry` left for the hash slot.
const SLOT_BITS: u32 = 32 - WORKER_BITS;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Length of the ASCII cookie.
pub const COOKIE_LEN: usize = 24;

/// A dialog's identity in the table (Kamailio's `h_entry`, `h_id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DialogId {
    /// Creating worker (top [`WORKER_BITS`]) and hash slot (low bits).
    pub h_entry: u32,
    /// Per-worker counter.
    pub h_id: u32,
}

impl DialogId {
    /// Builds a did from its parts; `worker` is truncated to [`WORKER_BITS`] and `slot` to the
    /// remaining bits.
    pub fn new(worker: usize, slot: u32, h_id: u32) -> Self {
        let worker = (worker as u32) & ((1 << WORKER_BITS) - 1);
        Self {
            h_entry: (worker << SLOT_BITS) | (slot & SLOT_MASK),
            h_id,
        }
    }

    /// The worker that created this dialog (owner of its timers).
    #[inline]
    pub fn worker(self) -> usize {
        worker_of(self)
    }

    /// Writes the 24-char cookie for this did and `boot` into `out`.
    pub fn encode(&self, boot: u32, out: &mut [u8; COOKIE_LEN]) {
        let words = [boot, self.h_entry, self.h_id];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            for (i, b) in chunk.iter_mut().enumerate() {
                let nibble = (word >> (28 - 4 * i as u32)) & 0xF;
                *b = HEX[nibble as usize & 0xF];
            }
        }
    }

    /// Parses a cookie written by [`encode`](Self::encode); `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<(DialogId, u32)> {
        if b.len() != COOKIE_LEN {
            return None;
        }
        let mut words = [0u32; 3];
        for (word, chunk) in words.iter_mut().zip(b.chunks_exact(8)) {
            for &c in chunk {
                *word = (*word << 4) | u32::from(unhex(c)?);
            }
        }
        let [boot, h_entry, h_id] = words;
        Some((DialogId { h_entry, h_id }, boot))
    }
}

/// The worker that created `did` (encoded in the top bits of `h_entry`).
#[inline]
pub fn worker_of(did: DialogId) -> usize {
    (did.h_entry >> SLOT_BITS) as usize
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Mixes a node id and a boot time (any unit, supplied by the caller) into a 32-bit boot tag.
/// Two boots collide with probability about 2^-32.
pub fn boot_tag(node_id: u16, boot_time: u64) -> u32 {
    // splitmix64 finaliser over the packed inputs.
    let mut z = (u64::from(node_id) << 48) ^ boot_time ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z ^ (z >> 32)) as u32
}

/// Mints dids for one worker. `&self` so it may also be shared; the counter is relaxed.
#[derive(Debug)]
pub struct DidGen {
    worker: usize,
    boot: u32,
    next: AtomicU32,
}

impl DidGen {
    /// A generator for `worker` (must be `< MAX_WORKERS`; higher bits are dropped) that stamps
    /// `boot` (see [`boot_tag`]) into cookies.
    pub fn new(worker: usize, boot: u32) -> Self {
        Self {
            worker: worker % MAX_WORKERS,
            boot,
            next: AtomicU32::new(1),
        }
    }

    /// The boot tag this generator writes into cookies.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// The worker this generator belongs to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// A fresh did; `slot` is any hash (e.g. of the Call-ID) to spread `h_entry`.
    pub fn next_id(&self, slot: u32) -> DialogId {
        let h_id = self.next.fetch_add(1, Ordering::Relaxed);
        DialogId::new(self.worker, slot, h_id)
    }

    /// Make sure later ids of this generator have `h_id` above `h_id` (dialogs loaded from
    /// the store keep their ids, so new ones must not reuse them).
    pub fn advance_past(&self, h_id: u32) {
        self.next
            .fetch_max(h_id.saturating_add(1), Ordering::Relaxed);
    }

    /// Decodes a cookie and accepts it only if it was minted under this generator's boot tag.
    pub fn decode_current(&self, b: &[u8]) -> Option<DialogId> {
        match DialogId::decode(b) {
            Some((id, boot)) if boot == self.boot => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_table() {
        let cases: [(u32, u32, u32, &[u8; COOKIE_LEN]); 4] = [
            (0, 0, 0, b"000000000000000000000000"),
            (u32::MAX, u32::MAX, u32::MAX, b"ffffffffffffffffffffffff"),
            (
                0x0123_4567,
                0x89ab_cdef,
                0x0000_0001,
                b"0123456789abcdef00000001",
            ),
            (0xdead_beef, 0x0100_0002, 42, b"deadbeef010000020000002a"),
        ];
        for (boot, h_entry, h_id, want) in cases {
            let mut out = [0u8; COOKIE_LEN];
            DialogId { h_entry, h_id }.encode(boot, &mut out);
            assert_eq!(&out, want);
            assert_eq!(
                DialogId::decode(want),
                Some((DialogId { h_entry, h_id }, boot))
            );
        }
        assert_eq!(
            DialogId::decode(b"DEADBEEF010000020000002A"),
            Some((DialogId::new(1, 2, 42), 0xdead_beef))
        );
    }

    #[test]
    fn decode_garbage_is_none() {
        let bad: [&[u8]; 7] = [
            b"",
            b"0",
            b"00000000000000000000000",
            b"0000000000000000000000000",
            b"00000000000000000000000g",
            b"z9hG4bK00000000000000000",
            b"0000000000 0000000000000",
        ];
        for b in bad {
            assert_eq!(DialogId::decode(b), None, "{:?}", b);
        }
    }

    #[test]
    fn worker_round_trip_and_generator() {
        for w in [0usize, 1, 7, 200, 255] {
            let id = DialogId::new(w, 0xFFFF_FFFF, 9);
            assert_eq!(worker_of(id), w);
            assert_eq!(id.h_entry & SLOT_MASK, SLOT_MASK);
        }
        let boot = boot_tag(3, 1_700_000_000);
        assert_ne!(boot, boot_tag(4, 1_700_000_000));
        assert_ne!(boot, boot_tag(3, 1_700_000_001));
        let g = DidGen::new(5, boot);
        let a = g.next_id(77);
        let b = g.next_id(77);
        assert_ne!(a, b);
        assert_eq!(a.worker(), 5);
        let mut c = [0u8; COOKIE_LEN];
        a.encode(g.boot(), &mut c);
        assert_eq!(g.decode_current(&c), Some(a));
        let other = DidGen::new(5, boot_tag(3, 1_700_000_999));
        assert_eq!(other.decode_current(&c), None);
        other.advance_past(41);
        other.advance_past(7);
        assert_eq!(other.next_id(0).h_id, 42);
    }

    proptest! {
        #[test]
        fn round_trip(boot: u32, h_entry: u32, h_id: u32) {
            let id = DialogId { h_entry, h_id };
            let mut out = [0u8; COOKIE_LEN];
            id.encode(boot, &mut out);
            prop_assert!(out.iter().all(|c| c.is_ascii_hexdigit()));
            prop_assert_eq!(DialogId::decode(&out), Some((id, boot)));
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let r = DialogId::decode(&b);
            if let Some((id, boot)) = r {
                let mut out = [0u8; COOKIE_LEN];
                id.encode(boot, &mut out);
                prop_assert_eq!(out.to_ascii_lowercase(), b.to_ascii_lowercase());
            }
        }
    }
}
