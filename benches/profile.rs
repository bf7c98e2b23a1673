//! Profile counters: `size()` and set/unset under 2-thread contention, against a
//! `Mutex<HashMap<Vec<u8>, i64>>` baseline in the same run.
//!
//! "contended" runs 2 threads that each do `OPS` set+unset pairs on 4 shared hot values
//! (each pair on a fresh dialog, so it includes the membership list and value allocation the
//! baseline does not do); "counter" runs the same pattern on the bare counter map.

#![allow(clippy::disallowed_methods)] // benches measure wall time with Instant::now

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipedge::dialog::profile::{Memberships, ProfileIdx, Profiles};
use sipedge::dialog::table::ConcurrentMap;

const OPS: u64 = 20_000;
const VALUES: [&[u8]; 4] = [b"carrier-a", b"carrier-b", b"carrier-c", b"carrier-d"];

/// Naive baseline: one lock around a per-value map, remove at zero.
#[derive(Default)]
struct Naive {
    map: Mutex<HashMap<Vec<u8>, i64>>,
}

impl Naive {
    fn add(&self, v: &[u8]) {
        if let Ok(mut m) = self.map.lock() {
            *m.entry(v.to_vec()).or_insert(0) += 1;
        }
    }
    fn sub(&self, v: &[u8]) {
        let Ok(mut m) = self.map.lock() else { return };
        let zero = m.get_mut(v).map(|c| {
            *c -= 1;
            *c == 0
        });
        if zero == Some(true) {
            m.remove(v);
        }
    }
    fn size(&self, v: &[u8]) -> i64 {
        self.map
            .lock()
            .map(|m| m.get(v).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn two_threads(iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let work = &work;
            s.spawn(move || {
                for _ in 0..iters {
                    work(t);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let profiles = Profiles::new(&["inbound"], &["trunk"]).unwrap_or_default();
    let trunk = profiles.index("trunk").unwrap_or(ProfileIdx(u16::MAX));
    let held: Vec<Memberships> = (0..1000).map(|_| Memberships::new()).collect();
    let naive = Naive::default();
    for (i, d) in held.iter().enumerate() {
        let v = VALUES[i % VALUES.len()];
        let _ = profiles.set(d, trunk, Some(v));
        naive.add(v);
    }

    let mut g = c.benchmark_group("profile");
    g.throughput(Throughput::Elements(1));
    g.bench_function("size/profiles", |b| {
        b.iter(|| profiles.size(trunk, Some(black_box(VALUES[1]))))
    });
    g.bench_function("size/mutex_hashmap", |b| {
        b.iter(|| naive.size(black_box(VALUES[1])))
    });

    g.throughput(Throughput::Elements(2 * OPS));
    g.sample_size(10);
    g.bench_function("set_unset_2threads/profiles", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                for i in 0..OPS {
                    let v = VALUES[((i + t) % 4) as usize];
                    let d = Memberships::new();
                    let _ = profiles.set(&d, trunk, Some(v));
                    let _ = profiles.unset(&d, trunk, Some(v));
                }
            })
        })
    });
    g.bench_function("set_unset_2threads/mutex_hashmap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                for i in 0..OPS {
                    let v = VALUES[((i + t) % 4) as usize];
                    let d = Memberships::new(); // same per-dialog allocation as above
                    naive.add(v);
                    naive.sub(v);
                    black_box(&d);
                }
            })
        })
    });
    // The counter structure alone (no membership bookkeeping), same contention pattern.
    let counters: ConcurrentMap<Arc<[u8]>, AtomicI64> = ConcurrentMap::new();
    let keys: Vec<Arc<[u8]>> = VALUES.iter().map(|v| Arc::from(*v)).collect();
    for k in &keys {
        counters.counter_incr(&**k, || Arc::clone(k));
    }
    g.bench_function("counter_incr_decr_2threads/concurrent_map", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                for i in 0..OPS {
                    if let Some(k) = keys.get(((i + t) % 4) as usize) {
                        counters.counter_incr(&**k, || Arc::clone(k));
                        counters.counter_decr_remove_at_zero(&**k);
                    }
                }
            })
        })
    });
    g.bench_function("counter_incr_decr_2threads/mutex_hashmap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                for i in 0..OPS {
                    let v = VALUES[((i + t) % 4) as usize];
                    naive.add(v);
                    naive.sub(v);
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
