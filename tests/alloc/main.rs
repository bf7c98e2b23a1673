//! Heap measurements, in a test binary of their own (`cargo test --test alloc`): a binary has
//! one `#[global_allocator]`, and the one here counts for every test of this binary.
//!
//! [`Counting`] keeps two counts:
//! - allocations (alloc, alloc_zeroed, realloc) made by the current thread while [`count`]
//!   runs, in thread-locals, so other threads never disturb them (`alloc_parse`,
//!   `engine_alloc`);
//! - live heap bytes of the whole process ([`live_bytes`]), which every thread moves
//!   (`dialog_memory`, `profile_stress`).
//!
//! So that a process-wide measurement sees only its own test, every test of this binary starts
//! with `let _serial = crate::serial();`: the tests run one at a time whatever
//! `--test-threads` says (they take a few seconds in all). The rest of the integration tests
//! are in the `it` binary (`tests/it/`).

#[path = "../flows/mod.rs"]
#[allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is a failure
mod flows;

mod alloc_parse;
mod dialog_memory;
mod engine_alloc;
mod profile_stress;
mod txn_memory;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The global allocator of this binary: forwards to `System` and counts.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// Live heap bytes of the process (allocated minus freed since start).
static LIVE: AtomicI64 = AtomicI64::new(0);

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

fn bytes(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// only touches an atomic and `Cell`s in const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        LIVE.fetch_add(bytes(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        LIVE.fetch_add(bytes(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        LIVE.fetch_add(bytes(new_size) - bytes(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(bytes(layout.size()), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` through the methods above, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the number of allocations this thread made in it.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, COUNT.with(Cell::get))
}

/// Live heap bytes of the whole process right now.
pub fn live_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Held by every test of this binary for its whole run, so no two run at the same time (a
/// failed test poisons nothing: the next one still gets the lock).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}
