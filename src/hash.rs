//! The one non-cryptographic hash of the packet path: transaction index tags
//! (`txn::recent::key`), loop-detection and stateless branch hashes (`txn::branch::hash`), and
//! keyed flood counters (`flood::key_of_bytes`).
//!
//! Invariants: deterministic for the same input and seed (in every process and version built
//! from this code); reads eight bytes per step with no allocation and no panic; parts are
//! delimited by their lengths, so `("ab", "c")` and `("a", "bc")` hash differently. It is
//! not collision-resistant against chosen input, and nothing here relies on it being so: every
//! table that uses it verifies the full key or tolerates a shared slot.

/// Odd 64-bit multiplier (2^64 / golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(29)
}

/// A 64-bit hash of the byte strings `parts`, started from `seed`.
#[inline]
pub fn hash64(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed ^ K;
    for p in parts {
        let mut words = p.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = mix(h, u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        let mut b = [0u8; 8];
        if let Some(dst) = b.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        h = mix(h, u64::from_le_bytes(b));
        h = mix(h, p.len() as u64);
    }
    // Final avalanche (MurmurHash3's fmix64), so every input bit reaches the low bits that
    // index tables.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_delimited_and_seeded() {
        assert_ne!(hash64(0, &[b"ab", b"c"]), hash64(0, &[b"a", b"bc"]));
        assert_ne!(hash64(0, &[b"abc"]), hash64(0, &[b"abc", b""]));
        assert_ne!(hash64(0, &[b"abcdefgh"]), hash64(0, &[b"abcdefgh\0"]));
        assert_ne!(hash64(0, &[b"x"]), hash64(1, &[b"x"]));
        assert_eq!(
            hash64(7, &[b"same", b"input"]),
            hash64(7, &[b"same", b"input"])
        );
    }

    #[test]
    fn low_bits_spread_over_similar_keys() {
        // Branches that differ in one trailing digit must land in many different slots of
        // a 1024-slot table.
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let k = format!("z9hG4bK-call-{i}");
            seen.insert(hash64(0, &[k.as_bytes()]) & 1023);
        }
        assert!(seen.len() > 550, "only {} of 1024 slots used", seen.len());
    }
}
