//! Timer wheel vs a `BinaryHeap` with lazy deletion, 1,000,000 timers, same run.
//!
//! Deadlines are spread over 3 minutes (typical dialog/transaction timeouts). "expire" polls
//! every 10 ms until all fired, like a worker loop; "expire_sorted" uses deadlines that rise
//! with insertion order (fixed timeout after arrival), the common case in a proxy.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sipedge::timer::{TimerKey, Wheel};

const N: usize = 1_000_000;
const SPREAD: u64 = 180_000;
const START: u64 = 1_000_000;

fn deadlines(seed: u64) -> Vec<u64> {
    let mut s = seed | 1;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            START + 1 + s % SPREAD
        })
        .collect()
}

/// Naive baseline: min-heap of `(deadline, id, generation)`; cancel/reset bump the id's
/// generation and stale heap entries are skipped when popped.
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    generation: Vec<u32>,
}

impl Heap {
    fn with_capacity(n: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(n),
            generation: Vec::with_capacity(n),
        }
    }
    fn insert(&mut self, deadline: u64) -> u32 {
        let id = self.generation.len() as u32;
        self.generation.push(0);
        self.heap.push(Reverse((deadline, id, 0)));
        id
    }
    fn reset(&mut self, id: u32, deadline: u64) {
        if let Some(g) = self.generation.get_mut(id as usize) {
            *g += 1;
            self.heap.push(Reverse((deadline, id, *g)));
        }
    }
    fn poll(&mut self, now: u64, out: &mut Vec<(u64, u32)>) {
        while let Some(&Reverse((d, id, g))) = self.heap.peek() {
            if d > now {
                break;
            }
            self.heap.pop();
            if self.generation.get(id as usize) == Some(&g) {
                out.push((d, id));
            }
        }
    }
}

fn filled_wheel(ds: &[u64]) -> (Wheel<u32>, Vec<TimerKey>) {
    let mut w = Wheel::with_capacity(START, N);
    let keys = ds
        .iter()
        .enumerate()
        .map(|(i, &d)| w.insert(d, i as u32))
        .collect();
    (w, keys)
}

fn filled_heap(ds: &[u64]) -> Heap {
    let mut h = Heap::with_capacity(N * 2);
    for &d in ds {
        h.insert(d);
    }
    h
}

fn bench(c: &mut Criterion) {
    let ds = deadlines(42);
    let later = deadlines(7);
    let mut g = c.benchmark_group("timer_1M");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));

    g.bench_function("insert/wheel", |b| {
        b.iter_batched_ref(
            || Wheel::<u32>::with_capacity(START, N),
            |w| {
                for (i, &d) in ds.iter().enumerate() {
                    black_box(w.insert(d, i as u32));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("insert/heap", |b| {
        b.iter_batched_ref(
            || Heap::with_capacity(N),
            |h| {
                for &d in &ds {
                    black_box(h.insert(d));
                }
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("reset/wheel", |b| {
        b.iter_batched_ref(
            || filled_wheel(&ds),
            |(w, keys)| {
                for (k, &d) in keys.iter().zip(&later) {
                    black_box(w.reset(*k, d + SPREAD));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("reset/heap", |b| {
        b.iter_batched_ref(
            || filled_heap(&ds),
            |h| {
                for (id, &d) in later.iter().enumerate() {
                    h.reset(id as u32, d + SPREAD);
                }
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("expire/wheel", |b| {
        b.iter_batched_ref(
            || (filled_wheel(&ds).0, Vec::with_capacity(N)),
            |(w, out)| {
                let mut now = START;
                while !w.is_empty() {
                    now += 10;
                    w.poll(now, out);
                }
                black_box(out.len());
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("expire/heap", |b| {
        b.iter_batched_ref(
            || (filled_heap(&ds), Vec::with_capacity(N)),
            |(h, out)| {
                let mut now = START;
                while !h.heap.is_empty() {
                    now += 10;
                    h.poll(now, out);
                }
                black_box(out.len());
            },
            BatchSize::LargeInput,
        )
    });
    // Steady state of a proxy: deadline = insertion time + fixed timeout, so deadlines rise
    // with insertion order (slot lists then walk the slab mostly in memory order).
    let sorted: Vec<u64> = (0..N as u64)
        .map(|i| START + 1 + i * SPREAD / N as u64)
        .collect();
    g.bench_function("expire_sorted/wheel", |b| {
        b.iter_batched_ref(
            || (filled_wheel(&sorted).0, Vec::with_capacity(N)),
            |(w, out)| {
                let mut now = START;
                while !w.is_empty() {
                    now += 10;
                    w.poll(now, out);
                }
                black_box(out.len());
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("expire_sorted/heap", |b| {
        b.iter_batched_ref(
            || (filled_heap(&sorted), Vec::with_capacity(N)),
            |(h, out)| {
                let mut now = START;
                while !h.heap.is_empty() {
                    now += 10;
                    h.poll(now, out);
                }
                black_box(out.len());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
