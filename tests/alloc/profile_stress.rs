//! Stress and memory checks for the shared maps behind dialog profiles and the dialog table.
//!
//! - `million_ops_return_to_zero`: 1,000,000 profile operations (set, limited set, unset,
//!   dialog end, racing double release) across 4 threads; afterwards every counter is 0 and
//!   the per-value map is empty.
//! - `interleavings_match_recount` (proptest): random set/unset/end sequences on 2-4 threads
//!   sharing 6 dialogs; the counters equal a recount of the memberships, then drain to 0.
//! - `table_bytes_per_entry` (ignored, run with `--ignored --nocapture`): bytes per dialog of
//!   a 1,000,000-entry `DialogTable`, measured with the binary's counting global allocator
//!   (`crate::live_bytes`).
//!
//! Every test holds `crate::serial()` (this binary's process-wide measurements must not see
//! the allocations of these stress tests).

use std::collections::HashMap;
use std::sync::Arc;

use sipedge::dialog::id::DialogId;
use sipedge::dialog::profile::{Memberships, ProfileIdx, Profiles};
use sipedge::dialog::table::DialogTable;

use proptest::prelude::*;

use crate::live_bytes;

/// Tiny xorshift so the test is deterministic per thread without extra dependencies.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 250_000;

#[test]
fn million_ops_return_to_zero() {
    let _serial = crate::serial();
    let profiles = Arc::new(Profiles::new(&["inbound"], &["caller", "trunk"]).unwrap_or_default());
    let idx = |n: &str| profiles.index(n).unwrap_or(ProfileIdx(u16::MAX));
    let (inb, caller, trunk) = (idx("inbound"), idx("caller"), idx("trunk"));
    // Dialogs shared by all threads, so releases race sets and each other.
    let shared: Arc<Vec<Memberships>> = Arc::new((0..64).map(|_| Memberships::new()).collect());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, shared) = (Arc::clone(&profiles), Arc::clone(&shared));
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
                let mut own: Vec<Memberships> = (0..32).map(|_| Memberships::new()).collect();
                let mut value = [0u8; 12];
                for i in 0..OPS_PER_THREAD {
                    let r = rng(&mut seed);
                    let slot = (r >> 8) as usize % own.len();
                    let d = if r & 1 == 0 {
                        own.get(slot)
                    } else {
                        shared.get(slot)
                    };
                    let Some(d) = d else { continue };
                    // Hot values shared by all threads, or unique ones that must not pile up.
                    let v: &[u8] = if r & 2 == 0 {
                        &b"hot0hot1hot2hot3"[(r as usize >> 20) % 4 * 4..][..4]
                    } else {
                        value[..4].copy_from_slice(&(t as u32).to_be_bytes());
                        value[4..].copy_from_slice(&(i as u64).to_be_bytes());
                        &value
                    };
                    match (r >> 4) % 8 {
                        0 | 1 => drop(p.set(d, inb, None)),
                        2 | 3 => drop(p.set(d, caller, Some(v))),
                        4 => drop(p.try_set_with_limit(d, trunk, Some(v), 5)),
                        5 => drop(p.unset(d, caller, Some(v))),
                        6 => drop(p.unset(d, inb, None)),
                        _ => {
                            if r & 1 == 0 {
                                // End an own dialog and start a fresh one in its place.
                                if let Some(old) = own.get_mut(slot) {
                                    old.release_all();
                                    *old = Memberships::new();
                                }
                            } else {
                                d.release_all();
                            }
                        }
                    }
                }
                for d in &own {
                    d.release_all();
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
    for d in shared.iter() {
        d.release_all();
    }
    for i in [inb, caller, trunk] {
        assert_eq!(profiles.raw_total(i), 0, "{:?}", profiles.name(i));
        assert_eq!(profiles.value_count(i), 0, "{:?}", profiles.name(i));
    }
    assert_eq!(profiles.size(caller, Some(b"hot0")), 0);
}

#[test]
#[ignore = "memory report; run with --ignored --nocapture"]
fn table_bytes_per_entry() {
    let _serial = crate::serial();
    const N: u32 = 1_000_000;
    let before = live_bytes();
    let table: DialogTable<[u64; 4]> = DialogTable::new();
    let mut call_id = *b"00000000@host.example";
    for i in 0..N {
        call_id[..8].copy_from_slice(format!("{i:08x}").as_bytes());
        table.insert(
            DialogId::new(0, i, i),
            Arc::new([0; 4]),
            &call_id,
            b"ftag1234",
        );
    }
    let after = live_bytes();
    let per = (after - before) as f64 / f64::from(N);
    println!(
        "DialogTable: {N} entries, {} bytes live, {per:.1} bytes/entry (value 32 B in Arc, Call-ID 21 B, tag 8 B)",
        after - before
    );
    assert_eq!(table.len(), N as usize);
    assert!(per < 1024.0);
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8, u8),
    Unset(usize, u8, u8),
    End(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..6, 0u8..2, 0u8..3).prop_map(|(d, p, v)| Op::Set(d, p, v)),
        2 => (0usize..6, 0u8..2, 0u8..3).prop_map(|(d, p, v)| Op::Unset(d, p, v)),
        1 => (0usize..6).prop_map(Op::End),
    ]
}

#[test]
fn interleavings_match_recount() {
    let _serial = crate::serial();
    interleavings_match_recount_cases();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The property of `interleavings_match_recount` (run by it, under `crate::serial()`).
    fn interleavings_match_recount_cases(threads in proptest::collection::vec(proptest::collection::vec(op(), 0..60), 2..=4)) {
        let p = Profiles::new(&["inbound"], &["caller"]).unwrap_or_default();
        let inb = p.index("inbound").unwrap_or(ProfileIdx(u16::MAX));
        let caller = p.index("caller").unwrap_or(ProfileIdx(u16::MAX));
        let dialogs: Vec<Memberships> = (0..6).map(|_| Memberships::new()).collect();
        let vals: [&[u8]; 3] = [b"a", b"b", b"c"];
        std::thread::scope(|s| {
            for ops in &threads {
                let (p, dialogs) = (&p, &dialogs);
                s.spawn(move || {
                    for op in ops {
                        let (d, pi, v) = match *op {
                            Op::Set(d, pi, v) | Op::Unset(d, pi, v) => (d, pi, v),
                            Op::End(d) => { dialogs[d].release_all(); continue; }
                        };
                        let (idx, val) = if pi == 0 { (inb, None) } else { (caller, Some(vals[v as usize])) };
                        if matches!(op, Op::Set(..)) {
                            let _ = p.set(&dialogs[d], idx, val);
                        } else {
                            let _ = p.unset(&dialogs[d], idx, val);
                        }
                    }
                });
            }
        });
        let mut recount: HashMap<(String, Option<Vec<u8>>), u64> = HashMap::new();
        let mut totals: HashMap<String, u64> = HashMap::new();
        for d in &dialogs {
            d.for_each(|name, v| {
                *recount.entry((name.to_owned(), v.map(<[u8]>::to_vec))).or_default() += 1;
                *totals.entry(name.to_owned()).or_default() += 1;
            });
        }
        prop_assert_eq!(p.size(inb, None), totals.get("inbound").copied().unwrap_or(0));
        prop_assert_eq!(p.size(caller, None), totals.get("caller").copied().unwrap_or(0));
        for v in vals {
            let want = recount.get(&("caller".to_owned(), Some(v.to_vec()))).copied().unwrap_or(0);
            prop_assert_eq!(p.size(caller, Some(v)), want);
        }
        drop(dialogs);
        prop_assert_eq!((p.raw_total(inb), p.raw_total(caller)), (0, 0));
        prop_assert_eq!(p.value_count(caller), 0);
    }
}
