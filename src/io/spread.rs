//! Adaptive spreading: how many workers the reuseport BPF program hands new datagrams to.
//!
//! Spreading every datagram over all workers costs CPU when one worker would do: on the 2-vCPU
//! dev box at 6000 calls/s, 2 workers fed at random spent 123–129 µs of CPU per call and 1
//! worker 101–106 µs (more sleeps and cross-CPU wake-ups per datagram with 2; at 2000 calls/s
//! the two were within noise). So new datagrams go to the first `active` workers only, and
//! `active` grows when those are busy.
//!
//! A supervisor thread samples each worker thread's CPU clock (`pthread_getcpuclockid`, user +
//! system time, no cost to the worker) every [`PERIOD`], applies [`decide`] and re-attaches the
//! program (`random % active`) to every UDP reuseport group when `active` changes.
//!
//! Invariants:
//! - `1 <= active <= workers` at all times; only datagrams arriving on the shared listen
//!   sockets are steered. Private sockets (responses to a worker's own transactions), TCP and
//!   hand-offs are untouched, so a change of `active` never strands a transaction: requests
//!   that land on another worker are handled (dialogs are shared) or handed off, as with
//!   random spreading.
//! - [`decide`] is pure and has hysteresis: it grows when the active workers average more
//!   than `up` of a core (`core.spread_busy`, default [`UP`]), and shrinks only when the
//!   total would fit in one worker fewer at under `up / 2` each, so it cannot flap between
//!   two neighbouring values.
//! - CPU time alone misses a worker that is behind because it waits for its core (another
//!   process runs there): its clock shows it half idle while datagrams queue. So the
//!   controller also grows when an active worker's receive batches came back full
//!   ([`BACKLOG`] or more times in a period: a backlog of a whole batch waited in its
//!   socket), and after any growth it does not shrink for [`HOLD`] periods.
//! - A failed re-attach leaves the previous program in place (logged once per failure).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::socket;
use crate::engine::Shared;

/// How often the worker CPU clocks are sampled.
pub const PERIOD: Duration = Duration::from_millis(250);
/// Default `up`: grow when the active workers use more than this fraction of a core each
/// (`core.spread_busy`; one worker at 6000 calls/s used ~65% of a core on the dev box).
pub const UP: f64 = 0.8;
/// Full receive batches of one active worker in one period that count as a backlog (one
/// alone can be a single scheduling hiccup; an overloaded worker makes dozens).
pub const BACKLOG: u64 = 4;
/// Periods, counting the one that grew, during which the controller does not shrink after a
/// growth (5 s at [`PERIOD`]).
pub const HOLD: u32 = 20;

/// The next number of active workers, given the current one, the maximum, each worker's CPU
/// use over the last period (fraction of one core, all workers, active or not) and the `up`
/// threshold. It shrinks when the total would use less than `up / 2` per remaining worker.
pub fn decide(active: usize, max: usize, busy: &[f64], up: f64) -> usize {
    let max = max.max(1);
    let active = active.clamp(1, max);
    let total: f64 = busy.iter().copied().filter(|b| b.is_finite()).sum();
    if total / active as f64 > up && active < max {
        active + 1
    } else if active > 1 && total < up / 2.0 * (active - 1) as f64 {
        active - 1
    } else {
        active
    }
}

/// The control loop's state, fed with CPU clock readings (sans-IO, so it is unit-tested).
#[derive(Debug)]
pub struct Controller {
    /// Workers currently fed.
    pub active: usize,
    max: usize,
    up: f64,
    last: Vec<Option<u64>>,
    last_full: Vec<u64>,
    hold: u32,
    /// Each worker's CPU use over the last step (fraction of one core).
    pub busy: Vec<f64>,
}

impl Controller {
    /// Starts with one active worker of `max`; `up` as in [`decide`].
    pub fn new(max: usize, up: f64) -> Self {
        let max = max.max(1);
        Controller {
            active: 1,
            max,
            up,
            last: vec![None; max],
            last_full: vec![0; max],
            hold: 0,
            busy: vec![0.0; max],
        }
    }

    /// One sample: each worker's CPU clock in ns (`None` = unreadable), its count of full
    /// receive batches so far (missing = 0) and the wall time since the previous sample.
    /// Returns the new active count when it changes.
    pub fn step(&mut self, cpu_ns: &[Option<u64>], full: &[u64], wall_ns: u64) -> Option<usize> {
        for (i, (b, l)) in self.busy.iter_mut().zip(self.last.iter_mut()).enumerate() {
            let c = cpu_ns.get(i).copied().flatten();
            *b = match (c, *l) {
                (Some(c), Some(p)) if wall_ns > 0 => c.saturating_sub(p) as f64 / wall_ns as f64,
                _ => 0.0,
            };
            *l = c;
        }
        let mut backlog = false;
        for (i, l) in self.last_full.iter_mut().enumerate() {
            let f = full.get(i).copied().unwrap_or(0);
            // A counter reset (stats.reset_statistics) reads as no backlog, never as a huge one.
            if i < self.active && f.saturating_sub(*l) >= BACKLOG {
                backlog = true;
            }
            *l = f;
        }
        let mut next = decide(self.active, self.max, &self.busy, self.up);
        if backlog && self.active < self.max {
            next = next.max(self.active + 1);
        }
        if next > self.active {
            self.hold = HOLD;
        } else if next < self.active && self.hold > 0 {
            next = self.active;
        }
        self.hold = self.hold.saturating_sub(1);
        (next != self.active).then(|| {
            self.active = next;
            next
        })
    }
}

/// How datagrams on the shared listen sockets are spread over the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpreadMode {
    /// Over as many workers as the load needs (see the module docs).
    #[default]
    Adaptive,
    /// Always over every worker, at random.
    All,
}

/// One CPU clock per worker thread.
struct Clocks(Vec<libc::clockid_t>);

impl Clocks {
    /// CPU time of worker `i` in ns, or `None` if its clock cannot be read.
    fn read(&self, i: usize) -> Option<u64> {
        let id = *self.0.get(i)?;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; `id` came from pthread_getcpuclockid.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

/// Starts the supervisor thread. `socks` holds one socket of each UDP reuseport group (their
/// programs currently feed worker 0 only), `threads` the worker threads' pthread handles,
/// `up` the growth threshold (see [`decide`]);
/// the active count is published in `shared.active_workers`. When a worker clock cannot be
/// read or the thread cannot start, the groups are spread over all workers instead.
pub fn start(
    socks: Vec<std::net::UdpSocket>,
    threads: &[libc::pthread_t],
    up: f64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let all = |socks: &[std::net::UdpSocket]| {
        for s in socks {
            let _ = socket::spread_over(s, threads.len() as u32);
        }
        shared
            .active_workers
            .store(threads.len(), Ordering::Relaxed);
    };
    let mut ids = Vec::with_capacity(threads.len());
    for t in threads {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `t` is a live, joinable thread (the caller holds its JoinHandle); `id` is a
        // valid out-pointer. Later reads of an exited thread's clock fail with EINVAL.
        if unsafe { libc::pthread_getcpuclockid(*t, &mut id) } != 0 {
            tracing::warn!("cannot read worker CPU clocks; spreading over all workers");
            all(&socks);
            return None;
        }
        ids.push(id);
    }
    let clocks = Clocks(ids);
    let max = threads.len();
    let attach = |socks: &[std::net::UdpSocket], n: usize| {
        for s in socks {
            if let Err(e) = socket::spread_over(s, n as u32) {
                tracing::warn!(error = %e, active = n, "reuseport BPF not re-attached");
                return false;
            }
        }
        true
    };
    shared.active_workers.store(1, Ordering::Relaxed);
    // Shared with the thread so the fallback below can still reach the groups.
    let socks = Arc::new(socks);
    let (sh, thread_socks) = (shared.clone(), socks.clone());
    let spawned = std::thread::Builder::new()
        .name("sipedge-spread".into())
        .spawn(move || {
            let mut ctl = Controller::new(max, up);
            let mut t_last = Instant::now();
            let mut cpu = vec![None; max];
            let mut full = vec![0u64; max];
            let read_full = |full: &mut [u64]| {
                for (i, f) in full.iter_mut().enumerate() {
                    *f = sh
                        .worker_stats
                        .get(i)
                        .map_or(0, |s| s.get(crate::stats::Counter::FullBatches));
                }
            };
            for (i, c) in cpu.iter_mut().enumerate() {
                *c = clocks.read(i);
            }
            read_full(&mut full);
            ctl.step(&cpu, &full, 0);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(PERIOD);
                let now = Instant::now();
                let wall = now.duration_since(t_last).as_nanos() as u64;
                t_last = now;
                for (i, c) in cpu.iter_mut().enumerate() {
                    *c = clocks.read(i);
                }
                read_full(&mut full);
                let n = ctl.active;
                if let Some(next) = ctl.step(&cpu, &full, wall) {
                    if attach(&thread_socks, next) {
                        tracing::debug!(from = n, to = next, busy = ?ctl.busy, "active workers changed");
                        sh.active_workers.store(next, Ordering::Relaxed);
                    } else {
                        ctl.active = n;
                    }
                }
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the spreader; spreading over all workers");
            all(&socks);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A threshold for the tests, independent of the default.
    const T: f64 = 0.6;

    #[test]
    fn grows_when_the_active_workers_are_busy() {
        assert_eq!(decide(1, 2, &[0.7, 0.0], T), 2);
        assert_eq!(
            decide(1, 2, &[0.7, 0.0], UP),
            1,
            "0.7 is under the default 0.8"
        );
        assert_eq!(decide(1, 2, &[0.85, 0.0], UP), 2);
        assert_eq!(decide(2, 4, &[0.7, 0.6, 0.0, 0.0], T), 3);
        assert_eq!(decide(2, 2, &[0.9, 0.9], T), 2, "never above the maximum");
        assert_eq!(
            decide(1, 2, &[0.05, 0.0], 0.01),
            2,
            "a low threshold grows early"
        );
    }

    #[test]
    fn shrinks_only_when_the_load_fits_in_fewer() {
        assert_eq!(decide(2, 2, &[0.1, 0.1], UP), 1);
        assert_eq!(
            decide(2, 2, &[0.2, 0.2], UP),
            2,
            "0.4 total does not fit under 0.3"
        );
        assert_eq!(decide(3, 4, &[0.2, 0.2, 0.1, 0.0], UP), 2);
        assert_eq!(decide(1, 2, &[0.0, 0.0], UP), 1, "never below one");
    }

    #[test]
    fn no_flapping_between_neighbours() {
        // Any load that makes 1 grow to 2 (total > up) keeps 2 (total >= up / 2).
        for th in [0.01, 0.3, UP, 1.0] {
            for milli in 0..=2000 {
                let total = milli as f64 / 1000.0;
                let half = [total / 2.0, total / 2.0];
                if decide(1, 2, &[total, 0.0], th) == 2 {
                    assert_eq!(decide(2, 2, &half, th), 2, "total {total} up {th}");
                }
                if decide(2, 2, &half, th) == 1 {
                    assert_eq!(decide(1, 2, &[total, 0.0], th), 1, "total {total} up {th}");
                }
            }
        }
    }

    #[test]
    fn controller_follows_cpu_clocks() {
        let ms = 1_000_000u64;
        let mut c = Controller::new(2, T);
        let none = [0, 0];
        assert_eq!(
            c.step(&[Some(0), Some(0)], &none, 0),
            None,
            "first sample only primes"
        );
        // worker 0 used 200 of 250 ms: grow to 2.
        assert_eq!(c.step(&[Some(200 * ms), Some(0)], &none, 250 * ms), Some(2));
        assert!((c.busy[0] - 0.8).abs() < 1e-9);
        // both busy: stay.
        assert_eq!(
            c.step(&[Some(350 * ms), Some(150 * ms)], &none, 250 * ms),
            None
        );
        // idle (an unreadable clock counts as idle): held at 2 until HOLD periods have passed
        // since the growth (two of them above), then 1.
        let mut t = 360 * ms;
        for _ in 2..HOLD {
            assert_eq!(c.step(&[Some(t), None], &none, 250 * ms), None);
            t += ms;
        }
        assert_eq!(c.step(&[Some(t), None], &none, 250 * ms), Some(1));
        assert_eq!(c.active, 1);
        // a clock going backwards is not negative load.
        assert_eq!(c.step(&[Some(0), Some(0)], &none, 250 * ms), None);
    }

    #[test]
    fn a_backlog_grows_even_when_the_cpu_clock_looks_idle() {
        let ms = 1_000_000u64;
        let mut c = Controller::new(2, UP);
        c.step(&[Some(0), Some(0)], &[0, 0], 0);
        // Worker 0 got only 40% of its core (it waited for it) but its batches came back full.
        assert_eq!(
            c.step(&[Some(100 * ms), Some(0)], &[BACKLOG - 1, 0], 250 * ms),
            None,
            "fewer than BACKLOG full batches is a hiccup"
        );
        assert_eq!(
            c.step(&[Some(200 * ms), Some(0)], &[2 * BACKLOG, 0], 250 * ms),
            Some(2)
        );
        // An inactive worker's backlog (its private socket) is not a reason to grow; at the
        // maximum there is nothing to grow to.
        let mut d = Controller::new(3, UP);
        d.step(&[Some(0); 3], &[0; 3], 0);
        assert_eq!(d.step(&[Some(0); 3], &[0, 99, 0], 250 * ms), None);
        assert_eq!(
            c.step(&[Some(300 * ms), Some(0)], &[99, 99], 250 * ms),
            None
        );
        // A counter reset reads as no backlog.
        assert_eq!(c.step(&[Some(300 * ms), Some(0)], &[0, 0], 250 * ms), None);
    }

    #[test]
    fn clamps_bad_input() {
        assert_eq!(decide(0, 0, &[], T), 1);
        assert_eq!(decide(9, 2, &[0.0, 0.0], T), 1);
        assert_eq!(decide(1, 2, &[f64::NAN, 0.1], T), 1);
    }
}
