//! The supervisor: binds every worker's sockets, builds the shared state, starts the pinned
//! worker threads, and stops them.
//!
//! Invariants: all sockets are bound before any worker starts, so a bind error is reported
//! once, cleanly, and nothing is left running; stopping sets one flag and wakes every worker,
//! and `join` returns when all have exited. Before anything is bound, every listen address
//! with a fixed port is claimed ([`socket::claim`]): if another process already serves it, the
//! start fails with [`RunError::InUse`] instead of silently sharing the address's traffic
//! through SO_REUSEPORT, unless [`RunConfig::allow_shared_port`] says sharing is wanted.
//! First of all the open-file limit is set ([`RunConfig::max_open_files`], logged; a failure
//! is logged, not fatal), and one [`super::tcp::TcpGate`] is shared by every worker so the TCP
//! connection caps hold for the process.
//!
//! A supervisor thread (`Supervisor`) joins each worker thread when it ends. A worker that
//! died (`worker::WorkerExit::Died`, or a thread that panicked outright) is reported: its
//! `WorkerHealth` goes dead, one error line names it, and a replacement starts on the same
//! index with duplicates of the same sockets, the same command queue and the same shared
//! state; it takes the dead worker's dialogs over (`Engine::take_over`) and counts the
//! transactions lost. The replacement's `WorkerHealth` counts the restart and goes alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::{Poll, Token, Waker};

use super::socket;
pub use super::spread::SpreadMode;
use super::tcp::TcpLimits;
use super::worker::{self, Clock, WorkerExit, WorkerSpec};
use crate::dialog::profile::Profiles;
use crate::engine::{Command, LocalAddrs, Settings, Shared};
use crate::wire::Transport;

/// What the supervisor needs to start the proxy.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Listen addresses.
    pub listen: Vec<(Transport, SocketAddr)>,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Host to advertise in Via/Record-Route instead of the bound IP.
    pub advertise: Option<String>,
    /// Engine settings.
    pub settings: Settings,
    /// Profiles.
    pub profiles_no_value: Vec<String>,
    /// Profiles with values.
    pub profiles_with_value: Vec<String>,
    /// Node id.
    pub node_id: u16,
    /// TCP limits.
    pub tcp: TcpLimits,
    /// Pin workers to cores.
    pub pin: bool,
    /// Store dialogs in this file and load them at start (None = off).
    pub persist: Option<super::persist::PersistConfig>,
    /// How datagrams on the shared listen sockets are spread over the workers.
    pub spread: SpreadMode,
    /// Adaptive spreading's growth threshold (fraction of a core per active worker).
    pub spread_busy: f64,
    /// UDP requests leave from a private socket per worker (`core.private_send_sockets`);
    /// `false`: from the listen socket.
    pub private_send_sockets: bool,
    /// Soft open-file limit (RLIMIT_NOFILE) to set at start; 0 = the hard limit
    /// (`core.max_open_files`).
    pub max_open_files: u64,
    /// Start even when another process already serves a listen address, and share its
    /// traffic through SO_REUSEPORT (`sipedge run --allow-shared-port`; e.g. a hand-over
    /// between two instances). `false`: refuse to start.
    pub allow_shared_port: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            listen: vec![
                (Transport::Udp, SocketAddr::from(([127, 0, 0, 1], 5060))),
                (Transport::Tcp, SocketAddr::from(([127, 0, 0, 1], 5060))),
            ],
            workers: 0,
            advertise: None,
            settings: Settings::default(),
            profiles_no_value: Vec::new(),
            profiles_with_value: Vec::new(),
            node_id: 1,
            tcp: TcpLimits::default(),
            pin: true,
            persist: None,
            spread: SpreadMode::default(),
            spread_busy: super::spread::UP,
            private_send_sockets: true,
            max_open_files: 0,
            allow_shared_port: false,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A socket could not be bound.
    #[error("cannot bind {transport}:{addr}: {source}")]
    Bind {
        /// Transport.
        transport: &'static str,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Another process already serves a listen address (and sharing was not allowed).
    #[error(
        "cannot bind {transport}:{addr}: it is already in use by another process (refusing \
         to share it through SO_REUSEPORT; --allow-shared-port starts anyway)"
    )]
    InUse {
        /// Transport.
        transport: &'static str,
        /// Address.
        addr: SocketAddr,
    },
    /// Some other start-up failure.
    #[error("{0}")]
    Other(String),
}

/// A running proxy.
pub struct Running {
    /// Shared state (dialogs, stats, settings).
    pub shared: Arc<Shared>,
    /// The addresses actually bound (port 0 resolved), in listener order.
    pub bound: Vec<(Transport, SocketAddr)>,
    /// The clock workers use.
    pub clock: Clock,
    stop: Arc<AtomicBool>,
    wakers: Vec<WakerSlot>,
    supervisor: Option<JoinHandle<()>>,
    spreader: Option<JoinHandle<()>>,
    /// The dialog store writer, when persistence is on.
    pub persist: Option<super::persist::PersistWriter>,
    /// This process's hold on its listen addresses (released with the `Running`).
    _claims: Vec<socket::AddrLock>,
}

impl Running {
    /// Ask every worker to stop. The dialog store is flushed and closed first, so the
    /// workers' shutdown (which ends every dialog) does not delete the stored records.
    pub fn stop(&self) {
        if let Some(p) = &self.persist {
            p.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            let _ = w.load().wake();
        }
    }
    /// Wait for every worker (and the supervisor) to exit.
    pub fn join(mut self) {
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
        if let Some(t) = self.spreader.take() {
            let _ = t.join();
        }
    }
}

/// Bind everything and start the workers.
pub fn start(cfg: &RunConfig) -> Result<Running, RunError> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let workers = if cfg.workers == 0 {
        cores.len().max(1)
    } else {
        cfg.workers
    }
    .min(crate::dialog::id::MAX_WORKERS);
    open_files_limit(cfg);
    let claims = claim_all(cfg)?;
    // Bind: the first socket of each address fixes the port (for port 0).
    let mut bound: Vec<(Transport, SocketAddr)> = Vec::new();
    // One socket per UDP reuseport group that starts on one worker (adaptive spreading).
    let mut group_socks: Vec<std::net::UdpSocket> = Vec::new();
    let mut udp: Vec<Vec<(usize, std::net::UdpSocket)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut tcp: Vec<Vec<(usize, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (li, &(t, addr)) in cfg.listen.iter().enumerate() {
        let mut addr = addr;
        for w in 0..workers {
            let err = |source| RunError::Bind {
                transport: t.as_str(),
                addr,
                source,
            };
            match t {
                Transport::Udp => {
                    let s = socket::udp(addr).map_err(err)?;
                    if w == 0 {
                        addr = s.local_addr().map_err(err)?;
                    }
                    if let Some(v) = udp.get_mut(w) {
                        v.push((li, s));
                    }
                }
                Transport::Tcp => {
                    let s = socket::tcp_listener(addr).map_err(err)?;
                    if w == 0 {
                        addr = s.local_addr().map_err(err)?;
                    }
                    if let Some(v) = tcp.get_mut(w) {
                        v.push((li, s));
                    }
                }
            }
        }
        bound.push((t, addr));
        // Spread datagrams from any single peer over the workers (adaptive: start with one;
        // the spreader grows it with the load).
        if t == Transport::Udp
            && let Some((_, s)) = udp.first().and_then(|v| v.last())
        {
            // Adaptive needs a handle on the group to re-attach later; without one, use all.
            let clone = (cfg.spread == SpreadMode::Adaptive && workers > 1)
                .then(|| s.try_clone().ok())
                .flatten();
            let n = if clone.is_some() { 1 } else { workers };
            if let Err(e) = socket::spread_over(s, n as u32) {
                tracing::warn!(error = %e, "reuseport BPF not attached; kernel hash spreads load");
            } else if let Some(c) = clone {
                group_socks.push(c);
            }
        }
    }
    // Each worker's private send socket per UDP listener (port chosen by the kernel).
    let mut udp_private: Vec<Vec<(usize, std::net::UdpSocket)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut private_ports: Vec<Vec<u16>> = vec![vec![0; bound.len()]; workers];
    for (w, socks) in udp.iter().enumerate().filter(|_| cfg.private_send_sockets) {
        for (li, _) in socks {
            let Some(&(_, addr)) = bound.get(*li) else {
                continue;
            };
            let any = SocketAddr::new(addr.ip(), 0);
            let err = |source| RunError::Bind {
                transport: "udp",
                addr: any,
                source,
            };
            let s = socket::udp_private(any).map_err(err)?;
            let port = s.local_addr().map_err(err)?.port();
            if let Some(p) = private_ports.get_mut(w).and_then(|v| v.get_mut(*li)) {
                *p = port;
            }
            if let Some(v) = udp_private.get_mut(w) {
                v.push((*li, s));
            }
        }
    }
    let mut locals = LocalAddrs::new(&bound, cfg.advertise.as_deref());
    locals.private_ports = private_ports;
    let clock = Clock::start();
    let boot_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let boot = crate::dialog::id::boot_tag(cfg.node_id, boot_time);
    let nv: Vec<&str> = cfg.profiles_no_value.iter().map(String::as_str).collect();
    let wv: Vec<&str> = cfg.profiles_with_value.iter().map(String::as_str).collect();
    let profiles =
        Profiles::new(&nv, &wv).map_err(|e| RunError::Other(format!("profiles: {e}")))?;
    let shared = Shared::new(
        workers,
        locals,
        cfg.settings.clone(),
        profiles,
        cfg.node_id,
        boot,
    );
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    shared
        .unix_base_ms
        .store(unix_now.saturating_sub(clock.now_ms()), Ordering::Relaxed);
    let mut polls = Vec::with_capacity(workers);
    let mut wakers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let p = Poll::new().map_err(|e| RunError::Other(format!("cannot create poll: {e}")))?;
        let w = Waker::new(p.registry(), Token(0))
            .map_err(|e| RunError::Other(format!("cannot create waker: {e}")))?;
        polls.push(p);
        wakers.push(Arc::new(ArcSwap::from_pointee(w)));
    }
    let wk = wakers.clone();
    let receivers = shared
        .make_queues(move |w| {
            let waker = wk.get(w).cloned();
            Box::new(move || {
                if let Some(x) = &waker {
                    let _ = x.load().wake();
                }
            })
        })
        .ok_or_else(|| RunError::Other("command queues already created".into()))?;
    // Loaded dialogs must be in the table before any worker runs (Engine::adopt_loaded).
    let persist = match &cfg.persist {
        Some(p) => {
            let (w, report) = super::persist::start(&shared, p, clock.now_ms())
                .map_err(|e| RunError::Other(e.to_string()))?;
            tracing::info!(
                db = %p.path.display(),
                loaded = report.loaded,
                expired = report.expired,
                corrupt = report.corrupt,
                "dialog db loaded"
            );
            Some(w)
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tcp_gate = cfg.tcp.gate();
    let (exit_tx, exits) = crossbeam_channel::unbounded();
    let mut kits = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (i, ((((poll, commands), (u, t)), up), waker)) in polls
        .into_iter()
        .zip(receivers)
        .zip(udp.into_iter().zip(tcp))
        .zip(udp_private)
        .zip(wakers.iter().cloned())
        .enumerate()
    {
        let kit = Kit {
            index: i,
            core: if cfg.pin {
                cores.get(i % cores.len().max(1)).copied()
            } else {
                None
            },
            udp: u,
            udp_private: up,
            tcp: t,
            commands,
            waker,
            tcp_limits: cfg.tcp,
            tcp_gate: tcp_gate.clone(),
        };
        let spec = kit
            .spec(poll, None)
            .map_err(|e| RunError::Other(format!("cannot start worker: {e}")))?;
        let h = spawn_worker(spec, &shared, clock, &stop, &exit_tx)
            .map_err(|e| RunError::Other(format!("cannot start worker: {e}")))?;
        threads.push(Some(h));
        kits.push(kit);
    }
    let spreader = if group_socks.is_empty() {
        None
    } else {
        use std::os::unix::thread::JoinHandleExt;
        let ids: Vec<libc::pthread_t> =
            threads.iter().flatten().map(|t| t.as_pthread_t()).collect();
        super::spread::start(
            group_socks,
            &ids,
            cfg.spread_busy,
            shared.clone(),
            stop.clone(),
        )
    };
    let sup = Supervisor {
        kits,
        threads,
        exits,
        exit_tx,
        shared: shared.clone(),
        clock,
        stop: stop.clone(),
        delay_extra: super::fault::Faults::from_env().restart_delay(),
    };
    let supervisor = std::thread::Builder::new()
        .name("sipedge-supervisor".into())
        .spawn(move || sup.run())
        .map_err(|e| RunError::Other(format!("cannot start the worker supervisor: {e}")))?;
    Ok(Running {
        shared,
        bound,
        clock,
        stop,
        wakers,
        supervisor: Some(supervisor),
        spreader,
        persist,
        _claims: claims,
    })
}

/// Sets the open-file limit (`core.max_open_files`, 0 = the hard limit) and logs the result;
/// a failure is logged and the start goes on with the limit there is.
fn open_files_limit(cfg: &RunConfig) {
    let soft = match socket::raise_open_files(cfg.max_open_files) {
        Ok(l) => {
            // Debug, not info: a start that fails right after (a port in use) says one line.
            tracing::debug!(
                before = l.before,
                soft = l.soft,
                hard = l.hard,
                "open-file limit (RLIMIT_NOFILE)"
            );
            l.soft
        }
        Err((e, l)) => {
            tracing::warn!(
                wanted = cfg.max_open_files,
                soft = l.soft,
                hard = l.hard,
                error = %e,
                "cannot set the open-file limit (RLIMIT_NOFILE); going on with the current one"
            );
            l.soft
        }
    };
    // Sockets, pollers, the store and management need some descriptors besides connections.
    let need = (cfg.tcp.max_conns as u64).saturating_add(256);
    if soft < need {
        tracing::warn!(
            open_files = soft,
            tcp_max_connections = cfg.tcp.max_conns,
            "the open-file limit is below tcp_max_connections + 256: accepts may fail (counted \
             as tcp_accept_errors) before the connection cap is reached"
        );
    }
}

/// Claims every listen address with a fixed port for this process, before any reuseport
/// socket is bound (see [`socket::claim`]); nothing when sharing is allowed.
fn claim_all(cfg: &RunConfig) -> Result<Vec<socket::AddrLock>, RunError> {
    let mut claims = Vec::new();
    if cfg.allow_shared_port {
        tracing::warn!("--allow-shared-port: listen addresses may be shared with other processes");
        return Ok(claims);
    }
    for (i, &(t, addr)) in cfg.listen.iter().enumerate() {
        // The same address listed twice is ours twice, not another process's.
        if cfg.listen.get(..i).is_some_and(|l| l.contains(&(t, addr))) {
            continue;
        }
        match socket::claim(t, addr) {
            Ok(lock) => claims.extend(lock),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(RunError::InUse {
                    transport: t.as_str(),
                    addr,
                });
            }
            Err(source) => {
                return Err(RunError::Bind {
                    transport: t.as_str(),
                    addr,
                    source,
                });
            }
        }
    }
    Ok(claims)
}

/// A worker's waker, replaced when the worker is (a new thread gets a new poll).
type WakerSlot = Arc<ArcSwap<Waker>>;

/// Shortest and longest wait before replacing a worker that died again soon after its last
/// replacement (doubling in between); the first death is replaced at once.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// A replacement that lived this long resets the back-off.
const RESTART_STABLE: Duration = Duration::from_secs(10);

/// What the supervisor keeps of one worker to start it again: its sockets (each worker thread
/// gets duplicates, so the kernel sockets, their place in the reuseport group and what is
/// queued in them outlive a dying thread), its command queue and its waker slot.
struct Kit {
    index: usize,
    core: Option<core_affinity::CoreId>,
    udp: Vec<(usize, std::net::UdpSocket)>,
    udp_private: Vec<(usize, std::net::UdpSocket)>,
    tcp: Vec<(usize, std::net::TcpListener)>,
    commands: Receiver<Command>,
    waker: WakerSlot,
    tcp_limits: TcpLimits,
    tcp_gate: std::sync::Arc<super::tcp_gate::TcpGate>,
}

impl Kit {
    /// A spec for a new worker thread on `poll` (whose waker is in the slot).
    fn spec(&self, poll: Poll, takeover: Option<u64>) -> std::io::Result<WorkerSpec> {
        let dup_udp = |v: &[(usize, std::net::UdpSocket)]| {
            v.iter()
                .map(|(l, s)| Ok((*l, s.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()
        };
        Ok(WorkerSpec {
            index: self.index,
            core: self.core,
            udp: dup_udp(&self.udp)?,
            udp_private: dup_udp(&self.udp_private)?,
            tcp: self
                .tcp
                .iter()
                .map(|(l, s)| Ok((*l, s.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()?,
            poll,
            commands: self.commands.clone(),
            tcp_limits: self.tcp_limits,
            tcp_gate: self.tcp_gate.clone(),
            takeover,
        })
    }

    /// A spec for a replacement: a new poll and waker (the slot is updated, so commands queued
    /// from now on wake the new thread).
    fn respawn_spec(&self, lost: u64) -> std::io::Result<WorkerSpec> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), Token(0))?;
        self.waker.store(Arc::new(waker));
        self.spec(poll, Some(lost))
    }
}

/// Tells the supervisor a worker thread ended, however it ended (sent on drop, so also while
/// a panic unwinds the thread).
struct ExitNotice(Sender<usize>, usize);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

fn spawn_worker(
    spec: WorkerSpec,
    shared: &Arc<Shared>,
    clock: Clock,
    stop: &Arc<AtomicBool>,
    exit_tx: &Sender<usize>,
) -> std::io::Result<JoinHandle<WorkerExit>> {
    let i = spec.index;
    let (sh, st, notice) = (shared.clone(), stop.clone(), ExitNotice(exit_tx.clone(), i));
    std::thread::Builder::new()
        .name(format!("sipedge-w{i}"))
        .spawn(move || {
            let _notice = notice;
            worker::run(spec, sh, clock, st)
        })
}

/// The thread that joins worker threads as they end and, unless the proxy is stopping,
/// reports a dead one (health, metrics, log) and starts a replacement on the same index.
///
/// Invariants: at most one thread runs per worker index; a death is always reported
/// (`WorkerHealth::set_alive(false)`) before its replacement starts, and the replacement marks
/// itself alive once its engine took the dialogs over; replacements of a worker that keeps
/// dying are spaced by [`RESTART_BACKOFF`]; on stop, every worker thread is joined.
struct Supervisor {
    kits: Vec<Kit>,
    threads: Vec<Option<JoinHandle<WorkerExit>>>,
    exits: Receiver<usize>,
    exit_tx: Sender<usize>,
    shared: Arc<Shared>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    /// Extra wait before a replacement (fault-injection tests only, `io::fault`).
    delay_extra: Option<Duration>,
}

/// A replacement waiting for its time.
struct Pending {
    index: usize,
    at: Instant,
    lost: u64,
}

impl Supervisor {
    fn run(mut self) {
        let n = self.kits.len();
        let mut backoff: Vec<(Option<Instant>, Duration)> = vec![(None, Duration::ZERO); n];
        let mut pending: Vec<Pending> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = pending
                .iter()
                .map(|p| p.at.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            match self.exits.recv_timeout(wait) {
                Ok(i) => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(lost) = self.reap(i) else { continue };
                    let Some((last, delay)) = backoff.get_mut(i) else {
                        continue;
                    };
                    *delay = match *last {
                        Some(t) if t.elapsed() < RESTART_STABLE => {
                            (*delay * 2).clamp(RESTART_BACKOFF.0, RESTART_BACKOFF.1)
                        }
                        _ => Duration::ZERO,
                    };
                    let wait = self.delay_extra.map_or(*delay, |d| d.max(*delay));
                    pending.push(Pending {
                        index: i,
                        at: Instant::now() + wait,
                        lost,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            let mut k = 0;
            while let Some(p) = pending.get(k) {
                if p.at > now {
                    k += 1;
                    continue;
                }
                let p = pending.swap_remove(k);
                match self.replace(p.index, p.lost) {
                    Ok(()) => {
                        if let Some(b) = backoff.get_mut(p.index) {
                            b.0 = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        tracing::error!(worker = p.index, error = %e, "cannot start a replacement worker; retrying in 1 s");
                        pending.push(Pending {
                            at: now + Duration::from_secs(1),
                            ..p
                        });
                    }
                }
            }
        }
        for t in self.threads.drain(..).flatten() {
            let _ = t.join();
        }
    }

    /// Join worker `i`'s thread after its exit notice. A death is reported; returns the
    /// transactions it lost (`Some`) when it needs a replacement.
    fn reap(&mut self, i: usize) -> Option<u64> {
        let handle = self.threads.get_mut(i)?.take()?;
        let (reason, lost) = match handle.join() {
            Ok(WorkerExit::Stopped) => return None,
            Ok(WorkerExit::Died { reason, lost }) => (reason, lost),
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                (format!("thread panicked: {msg}"), None)
            }
        };
        if let Some(s) = self.shared.worker_stats.get(i) {
            s.health().set_alive(false);
        }
        let lost_text = lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        tracing::error!(
            worker = i,
            reason = %reason,
            lost_transactions = %lost_text,
            "worker died; starting a replacement on the same sockets (its dialogs are kept)"
        );
        Some(lost.unwrap_or(0) as u64)
    }

    /// Start a replacement for worker `i`.
    fn replace(&mut self, i: usize, lost: u64) -> std::io::Result<()> {
        let kit = self
            .kits
            .get(i)
            .ok_or_else(|| std::io::Error::other("no such worker"))?;
        let spec = kit.respawn_spec(lost)?;
        let h = spawn_worker(spec, &self.shared, self.clock, &self.stop, &self.exit_tx)?;
        if let Some(s) = self.shared.worker_stats.get(i) {
            s.health().add_restart();
        }
        if let Some(t) = self.threads.get_mut(i) {
            *t = Some(h);
        }
        Ok(())
    }
}
