//! Live heap bytes per confirmed dialog, measured on ONE sans-IO engine in virtual time.
//!
//! Drives `N` calls (INVITE → 180 → 200 → ACK, no BYE) through the engine with the test
//! harness in `tests/flows` (no sockets, no clock), then advances virtual time past the 5 s
//! transaction linger so only the confirmed dialogs remain (table entry + record + timer
//! entry). A counting global allocator gives the live heap bytes before and after; the
//! process RSS (VmRSS) delta is printed beside it. Target: ≤ 1 KiB per dialog.
//!
//! Calls are set up in batches of 1000 (10k cps of virtual time), each followed by 6 s of
//! virtual time so its INVITE transactions linger out, as in a proxy whose in-flight
//! transactions are bounded by rate × linger while held calls pile up. So the figure is
//! what each held dialog costs (record, strings, table entries and capacity, timer node),
//! not the high-water capacity of the transaction slab. `burst` sets all N calls up before
//! any linger ends (the slab grows to N transactions, ~360 B each, and stays that size).
//!
//! Invariants: the harness's message log is cleared after every call, so the only heap that
//! grows with N is the engine's; the run fails (exit 1) if the table does not hold exactly N
//! confirmed dialogs at the end.
//!
//! Usage: `cargo run --release --example dialog_memory -- 1000000 [burst]`
//!
//! Measured (30000 dialogs, release, 5 heap blocks per dialog): batches 665 B live heap /
//! 758 B RSS per dialog; burst 1161 B / 1363 B. Before the layout work of issue 8 (9 blocks):
//! batches 895 B / 1029 B, burst 1352 B / 1622 B.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/flows/mod.rs"]
mod flows;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use flows::*;
use sipedge::dialog::profile::Memberships;
use sipedge::dialog::{CalleeLeg, Dialog, DlgState, Socket, Strs};
use sipedge::engine::Settings;

/// Counts live heap bytes and allocation calls, process-wide.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BLOCKS: AtomicI64 = AtomicI64::new(0);

fn grow(by: i64) {
    BLOCKS.fetch_add(1, Ordering::Relaxed);
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size() as i64);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(new_size as i64 - layout.size() as i64);
            BLOCKS.fetch_sub(1, Ordering::Relaxed); // same block, resized
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// VmRSS of this process in KiB (0 when /proc is not there).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// One call set-up: INVITE → 180 → 200 → ACK; the dialog stays confirmed.
fn setup_call(net: &mut Net, i: u64) {
    let call = format!("mem-{i}");
    let inv = invite(
        &call,
        &format!("f{i}"),
        &format!("b{i}"),
        "sip:bob@10.0.0.2:5060",
    );
    let s = net.send(UAC, &inv);
    let fwd = one(&s, "INVITE", |m| m.is("INVITE")).clone();
    let tag = format!("t{i}");
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some(&tag), UAS1));
    let s = net.send(UAS1, &reply(&fwd, 200, "OK", Some(&tag), UAS1));
    let ok = one(&s, "200", |m| m.code() == 200).clone();
    net.send(UAC, &caller_req(&ok, "ACK", 1, &format!("a{i}")));
    net.log.clear();
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // Virtual call rate: 10 calls per virtual ms (10k cps), so 1M calls take 100 s of virtual
    // time, well inside the 12 h default dialog timeout.
    const PER_MS: u64 = 10;
    let burst = std::env::args().nth(2).is_some_and(|a| a == "burst");
    let batch = if burst { n.max(1) } else { 1000 };

    let mut net = Net::build(Settings::default(), 1, false);
    // Warm-up: first-use growth of scratch buffers, then let it linger out.
    for i in 0..100 {
        setup_call(&mut net, u64::MAX - i);
    }
    net.advance(10_000);
    let warm = net.dialogs() as u64;

    let heap0 = LIVE.load(Ordering::Relaxed);
    let blocks0 = BLOCKS.load(Ordering::Relaxed);
    let rss0 = rss_kib();
    let allocs0 = ALLOCS.load(Ordering::Relaxed);
    PEAK.store(heap0, Ordering::Relaxed);
    for i in 0..n {
        setup_call(&mut net, i);
        if i % PER_MS == PER_MS - 1 {
            net.advance(1);
        }
        if i % batch == batch - 1 && i + 1 < n {
            net.advance(6_000);
        }
    }
    let heap_setup = LIVE.load(Ordering::Relaxed);
    // Past the 5 s linger (and the 32 s Timer B horizon): only dialogs remain.
    net.advance(40_000);
    let heap1 = LIVE.load(Ordering::Relaxed);
    let blocks1 = BLOCKS.load(Ordering::Relaxed);
    let rss1 = rss_kib();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;

    let dialogs = net.dialogs() as u64 - warm;
    let confirmed = (0..n.min(1000))
        .filter(|i| net.state_of(&format!("mem-{i}")) == Some(DlgState::Confirmed))
        .count();
    let per = |bytes: i64| bytes as f64 / n.max(1) as f64;
    println!("| metric | value |");
    println!("|---|---:|");
    println!("| calls set up (INVITE/180/200/ACK) | {n} |");
    println!(
        "| set-up mode | {} |",
        if burst {
            "burst (all transactions live at once)".to_string()
        } else {
            format!("batches of {batch}, each lingered out")
        }
    );
    println!("| dialogs in table at end | {dialogs} |");
    println!(
        "| confirmed (first {} checked) | {confirmed} |",
        n.min(1000)
    );
    println!(
        "| live heap per dialog, transactions lingering | {:.0} B |",
        per(heap_setup - heap0)
    );
    println!(
        "| **live heap per dialog, dialogs only** | **{:.0} B** |",
        per(heap1 - heap0)
    );
    println!(
        "| live heap blocks per dialog | {:.2} |",
        (blocks1 - blocks0) as f64 / n.max(1) as f64
    );
    println!(
        "| peak heap per dialog | {:.0} B |",
        per(PEAK.load(Ordering::Relaxed) - heap0)
    );
    println!(
        "| RSS delta per dialog | {:.0} B |",
        per((rss1 as i64 - rss0 as i64) * 1024)
    );
    println!(
        "| heap allocations per call (incl. test harness strings) | {:.1} |",
        allocs as f64 / n.max(1) as f64
    );
    println!(
        "| live heap total / RSS total | {:.1} MiB / {:.1} MiB |",
        heap1 as f64 / 1048576.0,
        rss1 as f64 / 1024.0
    );
    // Where the bytes are: inline record sizes and the two string arenas' average heap bytes.
    let (mut strs, mut callee, mut seen) = (0usize, 0usize, 0usize);
    net.shared.table.for_each(|_, d| {
        strs += d.strs.heap_len();
        callee += d.callee.get().map_or(0, |c| c.heap_len());
        seen += 1;
    });
    let avg = |b: usize| b as f64 / seen.max(1) as f64;
    println!(
        "| size_of Dialog / Strs / CalleeLeg / Socket / Memberships | {} / {} / {} / {} / {} B |",
        size_of::<Dialog>(),
        size_of::<Strs>(),
        size_of::<CalleeLeg>(),
        size_of::<Socket>(),
        size_of::<Memberships>()
    );
    println!(
        "| arena heap per dialog: caller strings / callee strings | {:.0} B / {:.0} B |",
        avg(strs),
        avg(callee)
    );
    if dialogs != n || confirmed as u64 != n.min(1000) {
        eprintln!("dialog_memory: expected {n} confirmed dialogs, table has {dialogs}");
        std::process::exit(1);
    }
}
