//! Steady state allocates nothing: after a warm-up, thousands of calls of every direct
//! scenario go through the UAC and UAS state machines with zero heap allocations (counted by
//! a global allocator wrapper).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use loadgen::outbox::Outbox;
use loadgen::scenario::{Mix, Rng};
use loadgen::uac::{Uac, UacConfig};
use loadgen::uas::{Uas, UasConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_calls_do_not_allocate() {
    let uac_addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    let uas_addr: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let mut uac = Uac::new(UacConfig {
        target: uas_addr,
        ruri: format!("sip:service@{uas_addr}"),
        local: vec![uac_addr],
        invite_timeout_us: 32_000_000,
        max_concurrent: 1000,
        run_tag: 1,
        reliable: false,
    });
    let mut uas = Uas::new(UasConfig {
        local: vec![uas_addr],
        linger_us: 1_000_000,
        max_call_us: 2_000_000,
        ..UasConfig::default()
    });
    let mix: Mix = "basic=40,reject=10,cancel=10,fork=10,reinvite=10,options=10,nobye=10"
        .parse()
        .unwrap();
    let mut rng = Rng::new(5);
    let (mut a, mut b) = (Outbox::with_capacity(64), Outbox::with_capacity(64));
    let mut now = 0u64;
    let mut run = |calls: u64, uac: &mut Uac, uas: &mut Uas| {
        for _ in 0..calls {
            now += 10_000;
            uac.handle_timeout(now, &mut a);
            uas.handle_timeout(now, &mut a);
            let scen = mix.pick(rng.next_u64());
            uac.start_call(now, now, scen, 0, &mut a).unwrap();
            while !a.is_empty() {
                for t in &a.items {
                    let bytes = a.bytes(t);
                    if t.dst == uas_addr {
                        uas.handle(now, 0, uac_addr, bytes, &mut b);
                    } else {
                        uac.handle(now, 0, uas_addr, bytes, &mut b);
                    }
                }
                a.clear();
                std::mem::swap(&mut a, &mut b);
            }
        }
    };
    run(20_000, &mut uac, &mut uas); // warm-up: slabs, maps, heaps, buffers reach their size
    let before = ALLOCS.load(Ordering::Relaxed);
    let ok_before = uac.stats.c.ok;
    run(5000, &mut uac, &mut uas);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(uac.stats.c.ok - ok_before, 5000, "{:?}", uac.stats.c);
    assert_eq!(uac.stats.c.failed_total(), 0);
    assert_eq!(allocs, 0, "heap allocations in steady state");
}
