//! A rate as a generic cell rate algorithm (GCRA, the token bucket written as one timestamp),
//! and a lock-free cell that applies it.
//!
//! ## Invariants
//! - A cell is one `AtomicU64` (the theoretical arrival time, µs): admitting is a load and a
//!   compare-and-swap, no lock, no allocation, and it cannot panic (saturating arithmetic).
//! - `burst` requests pass at once from an idle cell, then one per `1 / per_sec`.
//! - Sans-IO: `now_us` is an argument; a clock that goes backwards only makes the cell
//!   stricter until it catches up.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rate: `per_sec` requests per second with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Time one request uses up, µs (`1_000_000 / per_sec`, at least 1).
    interval_us: u64,
    /// How far ahead of now the cell may run: `(burst - 1) * interval_us`.
    tolerance_us: u64,
}

impl Rate {
    /// `per_sec` requests per second with bursts of `burst` (0 is read as 1). `None` when
    /// `per_sec` is 0, which means "no limit".
    pub fn new(per_sec: u32, burst: u32) -> Option<Rate> {
        if per_sec == 0 {
            return None;
        }
        let interval_us = (1_000_000 / u64::from(per_sec)).max(1);
        let tolerance_us = interval_us.saturating_mul(u64::from(burst.max(1)) - 1);
        Some(Rate {
            interval_us,
            tolerance_us,
        })
    }

    /// Time one request uses up, µs.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// Whether a cell whose theoretical arrival time is `tat` is idle at `now_us` (its bucket
    /// is full again, so forgetting it changes nothing).
    pub fn idle(tat: u64, now_us: u64) -> bool {
        tat <= now_us
    }
}

/// One lock-free GCRA cell (a global or per-method pipe, or a slot of a keyed table).
#[derive(Debug, Default)]
pub struct Gcra {
    tat: AtomicU64,
}

impl Gcra {
    /// Admit one request at `now_us` under `rate`: `true` if it conforms (the cell advances),
    /// `false` if it is over the rate (the cell is unchanged).
    #[inline]
    pub fn admit(&self, rate: &Rate, now_us: u64) -> bool {
        admit(&self.tat, rate, now_us)
    }

    /// Start over (the cell is idle).
    pub fn reset(&self) {
        self.tat.store(0, Ordering::Relaxed);
    }
}

/// [`Gcra::admit`] on a bare timestamp cell (keyed tables keep theirs inline).
#[inline]
pub(crate) fn admit(tat: &AtomicU64, rate: &Rate, now_us: u64) -> bool {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let t = cur.max(now_us);
        if t - now_us > rate.tolerance_us {
            return false;
        }
        match tat.compare_exchange_weak(
            cur,
            t.saturating_add(rate.interval_us),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let r = Rate::new(10, 5).unwrap();
        let c = Gcra::default();
        let t0 = 1_000_000_000;
        // Five at once, the sixth is over.
        assert_eq!((0..6).filter(|_| c.admit(&r, t0)).count(), 5);
        // One more every 100 ms.
        assert!(!c.admit(&r, t0 + 50_000));
        assert!(c.admit(&r, t0 + 100_000));
        assert!(!c.admit(&r, t0 + 150_000));
        // After a long pause the whole burst is back, not more.
        let t1 = t0 + 10_000_000;
        assert_eq!((0..10).filter(|_| c.admit(&r, t1)).count(), 5);
    }

    #[test]
    fn zero_rate_is_unlimited_and_burst_zero_is_one() {
        assert!(Rate::new(0, 10).is_none());
        let r = Rate::new(1, 0).unwrap();
        let c = Gcra::default();
        assert!(c.admit(&r, 5_000_000));
        assert!(!c.admit(&r, 5_000_001));
        assert!(c.admit(&r, 6_000_000));
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let r = Rate::new(u32::MAX, u32::MAX).unwrap();
        let c = Gcra::default();
        for now in [0, 1, u64::MAX - 1, u64::MAX, 0] {
            let _ = c.admit(&r, now);
        }
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_burst() {
        let r = Rate::new(1, 1000).unwrap();
        let c = std::sync::Arc::new(Gcra::default());
        let now = 10_000_000_000;
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).filter(|_| c.admit(&r, now)).count())
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
