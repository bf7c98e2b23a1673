//! The only part of loadgen that touches sockets, threads and the clock. This file owns the
//! run (workers, schedule split, progress, result) and the transport-independent worker
//! `Core`; `io/udp.rs` and `io/tcp.rs` own the sockets.
//!
//! Invariants:
//! - One worker thread per `--threads`; each owns its UAC sockets (ephemeral ports on
//!   `--local`), and in UAS mode one `SO_REUSEPORT` socket/listener on the listen address,
//!   plus its own [`Uac`]/[`Uas`] state machines. Nothing on the packet path is shared.
//! - UDP datagrams are received with `recvmmsg` and sent with `sendmmsg` in batches, from
//!   buffers allocated once per worker.
//! - Workers publish their stats into a per-worker mutex every 200 ms; the main thread merges
//!   them once per second for the progress line and once at the end.
//! - Sleeping uses `ppoll` with a nanosecond timeout and 1 µs timer slack, so the open-loop
//!   schedule is kept to within tens of µs when the machine keeps up.

#![allow(clippy::disallowed_methods)] // this module is loadgen's clock owner (see clippy.toml)

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::outbox::Outbox;
use crate::scenario::{HoldDist, Mix, Rng, Schedule};
use crate::stats::{Metric, Stats};
use crate::uac::{Uac, UacConfig};
use crate::uas::{Uas, UasConfig};

mod tcp;
mod udp;

use udp::{UdpWorker, udp_socket};

/// Datagrams per `recvmmsg`/`sendmmsg` batch, and the outbox size that triggers a flush.
pub(crate) const BATCH: usize = 64;

/// Which roles run in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Originate calls.
    Uac,
    /// Answer calls.
    Uas,
    /// Both, the UAC calling its own UAS through `--target`.
    Both,
}

/// Transport of SIP messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// UDP with RFC 3261 retransmissions, recvmmsg/sendmmsg batches.
    Udp,
    /// TCP: one connection per UAC socket, no request retransmissions.
    Tcp,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Roles.
    pub mode: Mode,
    /// Where the UAC sends initial requests.
    pub target: SocketAddr,
    /// Request-URI of initial requests.
    pub ruri: String,
    /// UAS listen address.
    pub listen: SocketAddr,
    /// Local IP of UAC sockets.
    pub local_ip: IpAddr,
    /// Calls per second.
    pub rate: f64,
    /// Number of calls (u64::MAX = unlimited).
    pub calls: u64,
    /// Stop starting calls after this long (UAS-only: run this long).
    pub duration: Option<Duration>,
    /// Mean hold time, µs.
    pub hold_us: u64,
    /// Hold-time distribution.
    pub hold_dist: HoldDist,
    /// Maximum calls in progress (whole process).
    pub max_concurrent: usize,
    /// Worker threads.
    pub threads: usize,
    /// UAC sockets (whole process).
    pub sockets: usize,
    /// Scenario mix.
    pub mix: Mix,
    /// INVITE final-response timeout, µs.
    pub invite_timeout_us: u64,
    /// UAS: send 100 Trying.
    pub uas_100: bool,
    /// Print the progress line every second.
    pub progress: bool,
    /// Seed for scenario picks and hold times.
    pub seed: u64,
    /// UDP or TCP.
    pub transport: Transport,
    /// `both` over UDP with several threads: thread `w` runs its UAS on the listen port + `w`
    /// and its UAC calls that port (the R-URI, and the target when it is the UAS), so every
    /// request of a call reaches the thread that owns the dialog whatever socket a proxy
    /// sends it from. With one shared `SO_REUSEPORT` port the kernel hashes by source
    /// address, and a proxy that sends ACK/BYE from another socket than the INVITE would
    /// land them on a thread that never saw the call.
    pub uas_port_per_thread: bool,
}

impl RunConfig {
    /// Thread `w`'s (UAS listen address, UAC target, R-URI).
    pub fn thread_addrs(&self, w: usize) -> Result<(SocketAddr, SocketAddr, String), IoError> {
        if !self.uas_port_per_thread || w == 0 {
            return Ok((self.listen, self.target, self.ruri.clone()));
        }
        let port = u16::try_from(w)
            .ok()
            .and_then(|w| self.listen.port().checked_add(w))
            .ok_or_else(|| {
                IoError::Config(format!(
                    "UAS port {} + thread {w} is past 65535",
                    self.listen.port()
                ))
            })?;
        let listen = SocketAddr::new(self.listen.ip(), port);
        let target = if self.target == self.listen {
            listen
        } else {
            self.target
        };
        Ok((listen, target, format!("sip:service@{listen}")))
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// UAC latencies and counters.
    pub uac: Stats,
    /// UAS counters.
    pub uas: Stats,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Process CPU time (user+system) during the run, seconds.
    pub cpu_s: f64,
    /// Offered rate, calls/s.
    pub offered_cps: f64,
}

/// Socket setup failures.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Creating, configuring or binding a socket failed.
    #[error("socket {addr}: {source}")]
    Socket {
        /// Address being bound.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Spawning a worker failed.
    #[error("spawning worker: {0}")]
    Spawn(std::io::Error),
    /// The options do not describe a runnable set-up.
    #[error("{0}")]
    Config(String),
}

/// State shared between the workers and the main thread.
pub(crate) struct Shared {
    t0: Instant,
    stop: Arc<AtomicBool>,
    uac_stats: Vec<Mutex<Stats>>,
    uas_stats: Vec<Mutex<Stats>>,
    active: Vec<AtomicU64>,
    uac_done: Vec<AtomicBool>,
}

/// Process CPU time (user + system) in seconds, from getrusage.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The transport-independent half of a worker: its state machines, its share of the
/// schedule, and stats publication.
pub(crate) struct Core {
    id: usize,
    uac: Option<(Uac, Schedule)>,
    uas: Option<Uas>,
    rng: Rng,
    next_publish: u64,
    stopping_at: Option<u64>,
}

pub(crate) fn now_us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

impl Core {
    /// Feeds one received message to the UAS (`to_uas`) or the UAC.
    pub(crate) fn handle(
        &mut self,
        now: u64,
        to_uas: bool,
        sock: u16,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut Outbox,
    ) {
        if to_uas {
            if let Some(uas) = self.uas.as_mut() {
                uas.handle(now, sock, src, bytes, out);
            }
        } else if let Some((uac, _)) = self.uac.as_mut() {
            uac.handle(now, sock, src, bytes, out);
        }
    }

    /// Starts due calls, runs timers and publishes stats. Returns when to wake next, or
    /// `None` when this worker is finished.
    pub(crate) fn tick(
        &mut self,
        cfg: &RunConfig,
        sh: &Shared,
        out: &mut Outbox,
        flush: &mut dyn FnMut(&mut Outbox),
    ) -> Option<u64> {
        let now = now_us(sh.t0);
        let stop = sh.stop.load(Ordering::Relaxed);
        let mut wake = u64::MAX;
        if let Some((uac, sched)) = self.uac.as_mut() {
            if stop && self.stopping_at.is_none() {
                self.stopping_at = Some(now);
                *sched = Schedule::new(1.0, 0, 0, 0);
            }
            let mut started = 0;
            while started < 256 {
                let Some(intended) = sched.pop_due(now) else {
                    break;
                };
                let scen = cfg.mix.pick(self.rng.next_u64());
                let hold = cfg.hold_dist.draw(cfg.hold_us, &mut self.rng);
                if uac.start_call(now, intended, scen, hold, out).is_err() {
                    sched.unpop();
                    break;
                }
                started += 1;
                if out.len() >= BATCH {
                    flush(out);
                }
            }
            uac.handle_timeout(now, out);
            if let Some(t) = sched.next_start() {
                wake = wake.min(t);
            }
            if let Some(t) = uac.poll_timeout() {
                wake = wake.min(t);
            }
            let drained = sched.next_start().is_none() && uac.active() == 0;
            let gave_up = self.stopping_at.is_some_and(|t| now > t + 35_000_000);
            if let Some(d) = sh.uac_done.get(self.id) {
                d.store(drained || gave_up, Ordering::Relaxed);
            }
        }
        if let Some(uas) = self.uas.as_mut() {
            uas.handle_timeout(now, out);
            if let Some(t) = uas.poll_timeout() {
                wake = wake.min(t);
            }
        }
        flush(out);
        if now >= self.next_publish {
            self.publish(sh);
            self.next_publish = now + 200_000;
        }
        let uac_done = sh
            .uac_done
            .get(self.id)
            .is_some_and(|d| d.load(Ordering::Relaxed));
        let end_us = cfg.duration.map(|d| d.as_micros() as u64);
        let finished = match cfg.mode {
            Mode::Uac => uac_done,
            Mode::Uas | Mode::Both => {
                stop || end_us.is_some_and(|e| cfg.mode == Mode::Uas && now >= e)
            }
        };
        if finished {
            self.publish(sh);
            return None;
        }
        Some(wake.min(self.next_publish))
    }

    fn publish(&mut self, sh: &Shared) {
        if let Some((uac, _)) = self.uac.as_mut() {
            if let Some(m) = sh.uac_stats.get(self.id)
                && let Ok(mut g) = m.lock()
            {
                g.add(&uac.stats);
                uac.stats.reset();
            }
            if let Some(a) = sh.active.get(self.id) {
                a.store(uac.active() as u64, Ordering::Relaxed);
            }
        }
        if let Some(uas) = self.uas.as_mut()
            && let Some(m) = sh.uas_stats.get(self.id)
            && let Ok(mut g) = m.lock()
        {
            g.add(&uas.stats);
            uas.stats.reset();
        }
    }
}

/// Sleeps in `ppoll` until `wake_us` (at most 50 ms) or until a descriptor is ready.
pub(crate) fn sleep_until(sh: &Shared, wake_us: u64, pfds: &mut [libc::pollfd]) {
    let d = wake_us.saturating_sub(now_us(sh.t0)).min(50_000);
    let ts = libc::timespec {
        tv_sec: (d / 1_000_000) as libc::time_t,
        tv_nsec: ((d % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: pfds is a valid array of pollfd of the given length; ts is valid.
    let r = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        // EINTR: look at every descriptor next time round.
        for p in pfds {
            p.revents = libc::POLLIN;
        }
    }
}

/// Sets 1 µs timer slack on the calling thread so short sleeps end on time.
pub(crate) fn tight_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
}

enum AnyWorker {
    Udp(UdpWorker),
    Tcp(tcp::TcpWorker),
}

fn drain(sh: &Shared, into_uac: &mut Stats, into_uas: &mut Stats) {
    for m in &sh.uac_stats {
        if let Ok(mut g) = m.lock() {
            into_uac.add(&g);
            g.reset();
        }
    }
    for m in &sh.uas_stats {
        if let Ok(mut g) = m.lock() {
            into_uas.add(&g);
            g.reset();
        }
    }
}

/// Runs the configured roles until done (UAC: all calls finished; UAS: duration or `stop`).
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> Result<RunResult, IoError> {
    let threads = cfg.threads.max(1);
    let with_uac = cfg.mode != Mode::Uas;
    let with_uas = cfg.mode != Mode::Uac;
    let sockets = cfg.sockets.max(threads);
    let mut workers = Vec::new();
    let run_tag = (std::process::id() << 8) ^ (Instant::now().elapsed().subsec_nanos());
    let t_start = Instant::now();
    let t0_us = 20_000; // let all workers get going before call 0
    let tcp = cfg.transport == Transport::Tcp;
    for w in 0..threads {
        let (listen, target, ruri) = cfg.thread_addrs(w)?;
        let n_uac = if with_uac {
            sockets / threads + usize::from(w < sockets % threads)
        } else {
            0
        };
        let mut udp_socks = Vec::new();
        let mut tcp_streams = Vec::new();
        // The listener comes first so that `both` can connect to itself.
        let listener = if tcp && with_uas {
            Some(tcp::listen(listen)?)
        } else {
            None
        };
        let mut local: Vec<SocketAddr> = Vec::new();
        for _ in 0..n_uac {
            if tcp {
                let st = tcp::connect(cfg.local_ip, target)?;
                local.push(st.local_addr().unwrap_or(listen));
                tcp_streams.push(st);
            } else {
                let so = udp_socket(SocketAddr::new(cfg.local_ip, 0), false)?;
                local.push(so.local_addr().unwrap_or(listen));
                udp_socks.push(so);
            }
        }
        let uas_sock = if with_uas {
            if !tcp {
                udp_socks.push(udp_socket(listen, true)?);
            }
            local.push(listen);
            Some(n_uac)
        } else {
            None
        };
        let uac = with_uac.then(|| {
            let per = |total: u64| {
                if total == u64::MAX {
                    u64::MAX
                } else {
                    total / threads as u64 + u64::from((w as u64) < total % threads as u64)
                }
            };
            let end = cfg
                .duration
                .map_or(u64::MAX, |d| t0_us + d.as_micros() as u64);
            let sched = Schedule::new(
                cfg.rate / threads as f64,
                t0_us + (w as f64 * 1e6 / cfg.rate) as u64,
                per(cfg.calls),
                end,
            );
            let ucfg = UacConfig {
                target,
                ruri,
                local: local.get(..n_uac).unwrap_or(&[]).to_vec(),
                invite_timeout_us: cfg.invite_timeout_us,
                max_concurrent: (cfg.max_concurrent / threads).max(1),
                run_tag: run_tag ^ w as u32,
                reliable: tcp,
            };
            (Uac::new(ucfg), sched)
        });
        let uas = with_uas.then(|| {
            Uas::new(UasConfig {
                local: if tcp { vec![listen] } else { local.clone() },
                send_100: cfg.uas_100,
                reliable: tcp,
                ..UasConfig::default()
            })
        });
        let core = Core {
            id: w,
            uac,
            uas,
            rng: Rng::new(cfg.seed.wrapping_add(w as u64 * 0x1234_5678_9abc)),
            next_publish: 0,
            stopping_at: None,
        };
        workers.push(if tcp {
            AnyWorker::Tcp(tcp::TcpWorker::new(core, tcp_streams, listener))
        } else {
            AnyWorker::Udp(UdpWorker {
                core,
                socks: udp_socks,
                uas_sock,
            })
        });
    }
    let sh = Arc::new(Shared {
        t0: t_start,
        stop: stop.clone(),
        uac_stats: (0..threads).map(|_| Mutex::new(Stats::default())).collect(),
        uas_stats: (0..threads).map(|_| Mutex::new(Stats::default())).collect(),
        active: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        uac_done: (0..threads).map(|_| AtomicBool::new(false)).collect(),
    });
    let cpu0 = cpu_seconds();
    let mut handles = Vec::new();
    for (i, wk) in workers.into_iter().enumerate() {
        let sh = sh.clone();
        let cfg = cfg.clone();
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || match wk {
                AnyWorker::Udp(w) => w.run(&cfg, &sh),
                AnyWorker::Tcp(w) => w.run(&cfg, &sh),
            })
            .map_err(IoError::Spawn)?;
        handles.push(h);
    }
    let mut res = RunResult {
        offered_cps: if with_uac { cfg.rate } else { 0.0 },
        ..RunResult::default()
    };
    let mut interval_uac = Stats::default();
    let mut interval_uas = Stats::default();
    let mut last = Instant::now();
    let end = cfg
        .duration
        .map(|d| t_start + d + Duration::from_micros(t0_us));
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let all_uac_done = with_uac && sh.uac_done.iter().all(|d| d.load(Ordering::Relaxed));
        if all_uac_done || (cfg.mode == Mode::Uas && end.is_some_and(|e| Instant::now() >= e)) {
            sh.stop.store(true, Ordering::Relaxed);
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let dt = last.elapsed().as_secs_f64();
            last = Instant::now();
            drain(&sh, &mut interval_uac, &mut interval_uas);
            let active: u64 = sh.active.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            res.uac.add(&interval_uac);
            res.uas.add(&interval_uas);
            if cfg.progress {
                progress_line(t_start, dt, active, &interval_uac, &interval_uas, &res);
            }
            interval_uac.reset();
            interval_uas.reset();
        }
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    for h in handles {
        let _ = h.join();
    }
    drain(&sh, &mut res.uac, &mut res.uas);
    res.elapsed_s = t_start.elapsed().as_secs_f64();
    res.cpu_s = cpu_seconds() - cpu0;
    Ok(res)
}

fn progress_line(t0: Instant, dt: f64, active: u64, iu: &Stats, is: &Stats, tot: &RunResult) {
    let setup = iu.hist(Metric::Setup);
    let mut line = format!(
        "[{:6.1}s] offered {:.0} cps, achieved {:.0} cps, active {}, completed {}, failed {}, retrans {}, setup p50 {} us p99 {} us",
        t0.elapsed().as_secs_f64(),
        iu.c.started as f64 / dt,
        iu.c.ok as f64 / dt,
        active,
        tot.uac.c.ok,
        tot.uac.c.failed_total() + tot.uas.c.failed_total(),
        tot.uac.c.retrans + tot.uas.c.uas_retrans,
        setup.value_at_quantile(0.5),
        setup.value_at_quantile(0.99),
    );
    if is.c.uas_calls > 0 {
        line.push_str(&format!(", uas {:.0} calls/s", is.c.uas_calls as f64 / dt));
    }
    if iu.c.behind > 0 {
        line.push_str(&format!(
            " WARNING: {} calls started >10 ms behind schedule (worst {} ms)",
            iu.c.behind,
            iu.max_behind_us / 1000
        ));
    }
    eprintln!("{line}");
}
