//! Packet-path cost of per-worker statistics, each next to a naive baseline in the same run:
//! - latency recording (`LatencyRecorder::record`, hdrhistogram) vs a plain `Vec<u64>` push;
//! - counter increment (`WorkerStats::inc`, single-writer relaxed load+store) vs a
//!   `Mutex<[u64; N]>` increment, with locked `fetch_add` as a reference;
//! - the management side: merging one flush per worker into a snapshot (not per packet).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipedge::stats::{Counter, LatencyHub, LatencyMetric, WorkerStats};

const N: usize = 4096;

fn values() -> Vec<u64> {
    // Deterministic spread from 20 µs to ~20 ms (LCG), like real processing times.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..N)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            20 + (x >> 33) % 20_000
        })
        .collect()
}

fn latency(c: &mut Criterion) {
    let vals = values();
    let mut g = c.benchmark_group("latency_record");
    g.throughput(Throughput::Elements(N as u64));
    let hub = LatencyHub::new(4);
    let mut rec = hub.recorder(0);
    g.bench_function("hdr_recorder", |b| {
        b.iter(|| {
            for v in &vals {
                rec.record(LatencyMetric::Packet, black_box(*v));
            }
        })
    });
    let mut baseline: Vec<u64> = Vec::with_capacity(N);
    g.bench_function("baseline_vec_push", |b| {
        b.iter(|| {
            baseline.clear();
            for v in &vals {
                baseline.push(black_box(*v));
            }
            black_box(&baseline);
        })
    });
    g.finish();
}

fn counters(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_inc");
    g.throughput(Throughput::Elements(N as u64));
    let w = WorkerStats::new(0, &["bad"]);
    g.bench_function("worker_stats_relaxed_atomic", |b| {
        b.iter(|| {
            for i in 0..N {
                w.inc(black_box(Counter::PacketsInUdp));
                w.inc_reply(black_box(if i & 1 == 0 { 200 } else { 487 }));
            }
        })
    });
    let rmw = [AtomicU64::new(0), AtomicU64::new(0)];
    g.bench_function("reference_atomic_fetch_add", |b| {
        b.iter(|| {
            for i in 0..N {
                rmw[black_box(0)].fetch_add(1, Ordering::Relaxed);
                rmw[black_box(i & 1)].fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let naive = Mutex::new([0u64; Counter::COUNT + 19]);
    g.bench_function("baseline_mutex_array", |b| {
        b.iter(|| {
            for i in 0..N {
                let mut a = naive.lock().unwrap();
                a[black_box(Counter::PacketsInUdp as usize)] += 1;
                a[Counter::COUNT + black_box(if i & 1 == 0 { 2 } else { 14 })] += 1;
            }
        })
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    let vals = values();
    let hub = LatencyHub::new(16);
    let mut recs: Vec<_> = (0..4).map(|_| hub.recorder(0)).collect();
    c.bench_function("mgmt_snapshot_merge_4_workers", |b| {
        b.iter(|| {
            for r in &mut recs {
                for v in vals.iter().take(64) {
                    r.record(LatencyMetric::Packet, *v);
                }
                r.flush();
            }
            black_box(hub.snapshot().summary(LatencyMetric::Packet))
        })
    });
}

criterion_group!(benches, latency, counters, merge);
criterion_main!(benches);
