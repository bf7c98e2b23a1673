//! One worker thread: pinned to a core, owns its SO_REUSEPORT sockets and a mio loop that
//! drains sockets in batches, runs the engine, sends in batches, fires timers and executes
//! commands (hand-offs from other workers, terminations from management).
//!
//! Invariants: the loop never blocks anywhere but `poll`; the poll timeout is the engine's
//! next timer deadline rounded up to a [`TIMER_GRID_MS`] grid (capped at 100 ms so a stop
//! request is seen quickly), so a timer fires at most one grid step late and never early;
//! buffers are reused across iterations.
//!
//! # Panic isolation
//! Every engine entry point runs under `catch_unwind`: each received message, each hand-off
//! and command, each timer. A panic there drops that one item (its partial output is rolled
//! back, see `Mark`), counts `worker_panics`, logs one line naming the worker and the item,
//! and the worker goes on. What is assumed: Rust memory safety holds through a panic, so the
//! engine can only be left *logically* half-updated, and only in state of the item being
//! handled: one transaction (its own timers B/C/linger still end it), one dialog (its wheel
//! entry still expires it; a dialog whose end was cut short is removed when that entry
//! fires), the Output (rolled back), the header spill or the timer list (taken out while in
//! use; a new empty one replaces a lost one). The wheel, the transaction table and the dialog
//! table never panic mid-update by construction. Shared state is atomics and lock-free maps,
//! so nothing is poisoned.
//!
//! A worker *dies* when a panic escapes those points (the rest of the loop: I/O, flushing) or
//! when more than [`MAX_PANICS_PER_SEC`] are caught within a second (a loop suggests broken
//! state). It then returns [`WorkerExit::Died`] with the number of transactions in flight,
//! without `Engine::shutdown` (its calls go on); its sockets stay open (the supervisor,
//! `io::run`, holds duplicates) and a replacement on the same index takes its dialogs over.
//! The loop records a heartbeat every turn (`WorkerHealth::beat`).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};

use super::fault::{Fault, Faults};
use super::tcp::{TcpConns, TcpGate, TcpLimits};
use super::udp::{RecvBatch, SendBatch};
use crate::engine::{Command, Engine, Inbound, Output, Shared, TimerItem};
use crate::stats::Counter;
use crate::wire::Transport;

/// The worker's clock: milliseconds since the process-wide base instant.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }
    /// Microseconds since start.
    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
    /// Milliseconds since start.
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }
}

const WAKER: Token = Token(0);

/// Timer-only wake-ups are aligned to this grid (ms). Transaction and dialog timers are
/// hundreds of ms or more (T1 = 500 ms), so firing up to one grid step late is harmless,
/// while waking for every 1 ms slot of lingering transactions cost ~900 wake-ups/s (about 3 %
/// of a core on the 2-vCPU dev box) for 5 s after every burst. Timers also fire on every
/// loop pass that packets cause, so under load this changes nothing.
pub const TIMER_GRID_MS: u64 = 10;

/// The instant (ms) a worker sleeping for `deadline` wakes: the deadline rounded up to the
/// [`TIMER_GRID_MS`] grid.
pub fn timer_wake_at(deadline: u64) -> u64 {
    deadline
        .div_ceil(TIMER_GRID_MS)
        .saturating_mul(TIMER_GRID_MS)
}

const UDP_BASE: usize = 1;
const TCPL_BASE: usize = 1 << 16;

/// Everything a worker thread needs, prepared by the supervisor.
pub struct WorkerSpec {
    /// Worker index.
    pub index: usize,
    /// Core to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// UDP sockets: (listener index, socket).
    pub udp: Vec<(usize, UdpSocket)>,
    /// This worker's private UDP sockets, one per entry of `udp` and in the same order: the
    /// requests it sends leave from them and carry their port in our Via, so the responses come
    /// straight back to this worker (no hand-off for the transactions it owns).
    pub udp_private: Vec<(usize, UdpSocket)>,
    /// TCP listeners: (listener index, listener).
    pub tcp: Vec<(usize, TcpListener)>,
    /// The worker's poll (its waker is registered already).
    pub poll: Poll,
    /// Commands for this worker.
    pub commands: Receiver<Command>,
    /// TCP limits.
    pub tcp_limits: TcpLimits,
    /// The process-wide TCP connection caps, shared by every worker.
    pub tcp_gate: Arc<TcpGate>,
    /// `Some(lost)` when this worker replaces a dead one: take its dialogs over
    /// ([`Engine::take_over`]) and count the `lost` transactions that died with it.
    pub takeover: Option<u64>,
}

/// How a worker thread ended.
#[derive(Debug)]
pub enum WorkerExit {
    /// `stop` was set: it shut down (its dialogs ended with reason `shutdown`).
    Stopped,
    /// It died: a panic outside the isolation points, or a panic loop. Its dialogs stay in
    /// the table for a replacement to take over.
    Died {
        /// What happened.
        reason: String,
        /// Transactions in flight that died with its engine, when it could tell.
        lost: Option<usize>,
    },
}

/// Run the worker loop until `stop` is set, or until it dies (see the module docs).
pub fn run(
    spec: WorkerSpec,
    shared: Arc<Shared>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> WorkerExit {
    if let Some(core) = spec.core {
        core_affinity::set_for_current(core);
    }
    let index = spec.index;
    let stats = shared.worker_stats.get(index).cloned();
    // Building the engine walks the table (loaded dialogs, a takeover): isolated too.
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut engine = Engine::with_seed(shared.clone(), index, clock.now_ms(), os_seed(index));
        if let Some(lost) = spec.takeover {
            let rearmed = engine.take_over();
            if let Some(s) = &stats {
                s.add(Counter::TxnsLost, lost);
            }
            tracing::warn!(
                worker = index,
                rearmed_dialog_timers = rearmed,
                lost_transactions = lost,
                "worker restarted: its dialogs were taken over, its transactions are lost"
            );
        }
        engine
    }));
    let mut engine = match built {
        Ok(e) => e,
        Err(p) => {
            return WorkerExit::Died {
                reason: format!("panic while starting: {}", panic_message(&*p)),
                lost: None,
            };
        }
    };
    if let Some(s) = &stats {
        s.health().beat(clock.now_ms());
        s.health().set_alive(true);
    }
    let mut iso = Isolation {
        guard: PanicGuard::new(index),
        faults: Faults::from_env(),
        die: false,
        panic_dialog_timer: false,
    };
    // The loop, with everything it may leave half-done, is isolated as a whole: a panic in it
    // (outside the per-message, per-timer and per-command isolation) ends the worker.
    let ended = std::panic::catch_unwind(AssertUnwindSafe(|| {
        serve(spec, &shared, clock, &stop, &mut engine, &mut iso)
    }));
    let reason = match ended {
        Ok(None) => return WorkerExit::Stopped,
        Ok(Some(reason)) => reason,
        Err(p) => format!("panic: {}", panic_message(&*p)),
    };
    // Dead: no shutdown (its calls go on; a replacement takes its dialogs over). Reading the
    // count is safe whatever the panic left half-done.
    WorkerExit::Died {
        reason,
        lost: Some(engine.in_flight()),
    }
}

/// The loop of [`run`] on `engine` until `stop` is set (then the engine's shutdown: `None`),
/// or until the worker must give up (`Some(why)`).
fn serve(
    spec: WorkerSpec,
    shared: &Arc<Shared>,
    clock: Clock,
    stop: &AtomicBool,
    engine: &mut Engine,
    iso: &mut Isolation,
) -> Option<String> {
    let WorkerSpec {
        index,
        udp,
        udp_private,
        tcp,
        mut poll,
        commands,
        tcp_limits,
        tcp_gate,
        ..
    } = spec;
    let nmain = udp.len();
    let has_private = udp_private.len() == nmain;
    let mut udp: Vec<(usize, mio::net::UdpSocket)> = udp
        .into_iter()
        .chain(udp_private)
        .map(|(l, s)| (l, mio::net::UdpSocket::from_std(s)))
        .collect();
    let mut tcpl: Vec<(usize, mio::net::TcpListener)> = tcp
        .into_iter()
        .map(|(l, s)| (l, mio::net::TcpListener::from_std(s)))
        .collect();
    for (i, (_, s)) in udp.iter_mut().enumerate() {
        if poll
            .registry()
            .register(s, Token(UDP_BASE + i), Interest::READABLE)
            .is_err()
        {
            tracing::error!(worker = index, "cannot register UDP socket");
        }
    }
    for (i, (_, s)) in tcpl.iter_mut().enumerate() {
        if poll
            .registry()
            .register(s, Token(TCPL_BASE + i), Interest::READABLE)
            .is_err()
        {
            tracing::error!(worker = index, "cannot register TCP listener");
        }
    }
    // Which UDP socket sends for each listener index: the same listener, else the first
    // UDP socket of the same address family, else the first.
    let nlisteners = shared.locals.listeners.len();
    let udp_for: Vec<usize> = (0..nlisteners)
        .map(|l| {
            let fam = shared.locals.listeners.get(l).map(|x| x.addr.is_ipv4());
            udp.iter()
                .position(|(li, _)| *li == l)
                .or_else(|| {
                    udp.iter().position(|(li, _)| {
                        shared.locals.listeners.get(*li).map(|x| x.addr.is_ipv4()) == fam
                    })
                })
                .unwrap_or(0)
        })
        .collect();
    let socks = UdpSockets {
        socks: udp,
        udp_for,
        nmain,
        has_private,
        tx: std::cell::RefCell::new(SendBatch::default()),
    };
    let stats = shared.worker_stats.get(index).cloned();
    let mut tcp = TcpConns::new(tcp_limits, tcp_gate);
    let mut events = Events::with_capacity(256);
    let mut batch = RecvBatch::default();
    let mut out = Output::with_capacity(1 << 20, 1024);
    let mut last_sweep = clock.now_ms();
    let mut tcp_seen = super::tcp::TcpEvents::default();
    let mut due: Vec<(u64, TimerItem)> = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_ms();
        if let Some(s) = &stats {
            s.health().beat(now);
        }
        let timeout = engine
            .poll_timeout()
            .map(|d| timer_wake_at(d).saturating_sub(now))
            .unwrap_or(100)
            .min(100)
            .min(tcp.accept_retry_in(now));
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(timeout)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::error!(worker = index, error = %e, "poll failed");
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t == WAKER.0 {
                continue;
            } else if (UDP_BASE..TCPL_BASE).contains(&t) {
                let i = t - UDP_BASE;
                let Some((local, sock)) = socks.socks.get(i) else {
                    continue;
                };
                let local = *local;
                // Drain until WouldBlock, flushing after each batch.
                for _ in 0..64 {
                    match batch.recv(sock) {
                        Ok(n) => {
                            if n >= super::udp::BATCH
                                && let Some(s) = &stats
                            {
                                s.inc(Counter::FullBatches);
                            }
                        }
                        Err(_) => break,
                    }
                    let t0 = Instant::now();
                    let now_us = clock.now_us();
                    let now = now_us / 1000;
                    if let Some(rx) = batch.first_rx_ns() {
                        // Overload control: how long the oldest datagram waited in the socket.
                        let wall = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64);
                        engine.note_queue_delay(now, wall.saturating_sub(rx) / 1000);
                    }
                    for k in 0..batch.len() {
                        let Some((src, bytes)) = batch.get(k) else {
                            continue;
                        };
                        if let Some(s) = &stats {
                            s.inc(Counter::PacketsInUdp);
                        }
                        let inb = Inbound {
                            now_ms: now,
                            now_us,
                            src,
                            local,
                            transport: Transport::Udp,
                            conn: None,
                            bytes,
                        };
                        deliver(engine, shared, stats.as_deref(), inb, &mut out, iso);
                    }
                    let t1 = Instant::now();
                    flush(
                        shared,
                        &mut out,
                        &socks,
                        &mut tcp,
                        poll.registry(),
                        now,
                        stats.as_deref(),
                    );
                    // Every packet of the batch waited from receive until this send.
                    let t2 = Instant::now();
                    engine.record_send_us(t2.duration_since(t1).as_micros() as u64);
                    let us = t2.duration_since(t0).as_micros() as u64;
                    for _ in 0..batch.len() {
                        engine.record_packet_us(us);
                    }
                    if batch.len() < super::udp::BATCH {
                        break;
                    }
                }
            } else if t >= super::tcp::CONN_BASE {
                let Some(slot) = tcp.slot_for_token(ev.token()) else {
                    continue;
                };
                let now = clock.now_ms();
                if ev.is_writable() {
                    tcp.flush(poll.registry(), slot);
                }
                if ev.is_readable() || ev.is_read_closed() {
                    tcp.on_readable(poll.registry(), slot, now, |bytes, peer, local, conn| {
                        if let Some(s) = &stats {
                            s.inc(Counter::PacketsInTcp);
                        }
                        let inb = Inbound {
                            now_ms: now,
                            now_us: clock.now_us(),
                            src: peer,
                            local,
                            transport: Transport::Tcp,
                            conn: Some(conn),
                            bytes,
                        };
                        deliver(engine, shared, stats.as_deref(), inb, &mut out, iso);
                    });
                    flush(
                        shared,
                        &mut out,
                        &socks,
                        &mut tcp,
                        poll.registry(),
                        now,
                        stats.as_deref(),
                    );
                }
            } else if t >= TCPL_BASE
                && let Some((local, l)) = tcpl.get(t - TCPL_BASE)
            {
                tcp.accept_all(poll.registry(), l, *local, clock.now_ms());
            }
        }
        // Listeners paused after an accept error, or left with a full batch, accept again.
        tcp.retry_accepts(poll.registry(), &tcpl, clock.now_ms());
        // Commands: hand-offs and terminations, then timers; each one isolated.
        let now = clock.now_ms();
        for _ in 0..4096 {
            let Ok(cmd) = commands.try_recv() else { break };
            run_command(
                engine,
                now,
                clock.now_us(),
                cmd,
                &mut out,
                stats.as_deref(),
                iso,
            );
        }
        fire_timers(engine, now, &mut due, &mut out, stats.as_deref(), iso);
        flush(
            shared,
            &mut out,
            &socks,
            &mut tcp,
            poll.registry(),
            now,
            stats.as_deref(),
        );
        if now.saturating_sub(last_sweep) >= 1000 {
            last_sweep = now;
            tcp.sweep_idle(poll.registry(), now);
            if let Some(s) = &stats {
                let e = tcp.events;
                s.add(Counter::TcpAccepted, e.accepted - tcp_seen.accepted);
                s.add(Counter::TcpConnected, e.connected - tcp_seen.connected);
                s.add(Counter::TcpClosed, e.closed - tcp_seen.closed);
                s.add(
                    Counter::TcpRefusedGlobal,
                    e.refused_global - tcp_seen.refused_global,
                );
                s.add(
                    Counter::TcpRefusedPerPeer,
                    e.refused_per_peer - tcp_seen.refused_per_peer,
                );
                s.add(
                    Counter::TcpMessageTimeouts,
                    e.message_timeouts - tcp_seen.message_timeouts,
                );
                s.add(
                    Counter::TcpAcceptErrors,
                    e.accept_errors - tcp_seen.accept_errors,
                );
                tcp_seen = e;
            }
            engine.flush_latency(now);
        }
        if let Some(reason) = iso.guard.gave_up.take() {
            return Some(reason);
        }
        if iso.die {
            // Fault injection (`io::fault`): a panic outside every isolation point.
            panic!("fault injection: worker {index} dies");
        }
    }
    let now = clock.now_ms();
    engine.shutdown(now, &mut out);
    flush(
        shared,
        &mut out,
        &socks,
        &mut tcp,
        poll.registry(),
        now,
        stats.as_deref(),
    );
    None
}

/// Fire the timers due at `now`, each one isolated; a dialog whose timer panicked is armed
/// again [`DIALOG_TIMER_RETRY_MS`] later.
fn fire_timers(
    engine: &mut Engine,
    now: u64,
    due: &mut Vec<(u64, TimerItem)>,
    out: &mut Output,
    stats: Option<&crate::stats::WorkerStats>,
    iso: &mut Isolation,
) {
    engine.take_due_timers(now, due);
    for (_, item) in due.drain(..) {
        let mark = Mark::of(out);
        let inject = iso.panic_dialog_timer && matches!(item, TimerItem::Dialog(_));
        iso.panic_dialog_timer &= !inject;
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if inject {
                panic!("fault injection: panic in a dialog timer");
            }
            engine.fire_timer(now, item, out);
        }));
        if let Err(p) = done {
            mark.rollback(out);
            iso.caught(now, stats, Handling::Timer(item), &*p);
            // The dialog's one entry was spent: give it another, or it never expires.
            if let TimerItem::Dialog(id) = item {
                engine.rearm_after_panic(id, now.saturating_add(DIALOG_TIMER_RETRY_MS));
            }
        }
    }
}

/// Send everything in `out` and clear it.
/// A worker's UDP sockets and which one sends for each listener.
struct UdpSockets {
    /// Shared listening sockets (`..nmain`), then the private send sockets.
    socks: Vec<(usize, mio::net::UdpSocket)>,
    /// Listener index → index of its shared socket.
    udp_for: Vec<usize>,
    /// Number of shared sockets.
    nmain: usize,
    /// Whether every shared socket has a private twin.
    has_private: bool,
    /// Preallocated `sendmmsg` buffers (a cell: `flush` runs while a socket is borrowed).
    tx: std::cell::RefCell<SendBatch>,
}

/// A random seed for worker `index`'s tags and branches: 8 bytes of `/dev/urandom`, or, if
/// that cannot be read, the time and the process and worker ids mixed.
fn os_seed(index: usize) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b) | 1;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ u64::from(std::process::id()).rotate_left(32)
        ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        | 1
}

/// Run the engine on one message and pass it on when it belongs to another worker.
fn deliver(
    engine: &mut Engine,
    shared: &Shared,
    stats: Option<&crate::stats::WorkerStats>,
    inb: Inbound<'_>,
    out: &mut Output,
    iso: &mut Isolation,
) {
    // A bug must not take the worker down with it: the packet is dropped, counted and logged,
    // and the worker goes on (the engine never panics on input by design; this is a last
    // line of defence, free on the normal path).
    let fault = iso.faults.check(inb.bytes);
    let mark = Mark::of(out);
    let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine.handle_datagram(inb, out);
        if fault == Some(Fault::Panic) {
            panic!("fault injection: panic while handling a packet");
        }
    }));
    iso.injected(fault);
    if let Err(p) = done {
        // Keep what earlier packets of the batch produced; forget this one's partial output.
        mark.rollback(out);
        if let Some(s) = stats {
            s.inc(Counter::Dropped);
        }
        let what = Handling::Packet {
            src: inb.src,
            transport: inb.transport,
        };
        iso.caught(inb.now_ms, stats, what, &*p);
        return;
    }
    if let Some(w) = out.handoff.take()
        && !handoff(shared, engine.worker(), w, &inb)
        && let Some(s) = stats
    {
        s.inc(Counter::Dropped);
    }
}

/// Run one command (a hand-off, a termination, a re-time ...) in isolation, like [`deliver`].
fn run_command(
    engine: &mut Engine,
    now: u64,
    now_us: u64,
    cmd: Command,
    out: &mut Output,
    stats: Option<&crate::stats::WorkerStats>,
    iso: &mut Isolation,
) {
    let (what, fault) = match &cmd {
        Command::Packet {
            src, from, bytes, ..
        } => (
            Handling::Handoff {
                src: *src,
                from: *from,
            },
            iso.faults.check(bytes),
        ),
        Command::Terminate { .. } => (Handling::Command("terminate"), None),
        Command::Refer { .. } => (Handling::Command("refer"), None),
        Command::Bridge { .. } => (Handling::Command("bridge"), None),
        Command::Rearm(_) => (Handling::Command("rearm"), None),
        Command::Retime(_) => (Handling::Command("retime"), None),
    };
    let mark = Mark::of(out);
    let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine.handle_command(now, now_us, cmd, out);
        if fault == Some(Fault::Panic) {
            panic!("fault injection: panic while handling a hand-off");
        }
    }));
    iso.injected(fault);
    if let Err(p) = done {
        // A hand-off's buffer is dropped instead of going back to its pool (it is refilled).
        mark.rollback(out);
        if let Some(s) = stats
            && matches!(what, Handling::Handoff { .. })
        {
            s.inc(Counter::Dropped);
        }
        iso.caught(now, stats, what, &*p);
    }
}

/// After a panic in a dialog's timer, the dialog's entry is armed again this much later (ms),
/// so it still expires; a dialog whose timer keeps panicking costs one panic per interval.
pub const DIALOG_TIMER_RETRY_MS: u64 = 1000;

/// Panics per second beyond which a worker gives up and dies (to be replaced with a fresh
/// engine): a loop of panics suggests state a panic left broken, not one bad message.
pub const MAX_PANICS_PER_SEC: u64 = 100;

/// What a worker was doing when a panic was caught (for the log line).
#[derive(Clone, Copy, Debug)]
enum Handling {
    /// A message received from `src`.
    Packet {
        src: SocketAddr,
        transport: Transport,
    },
    /// A message from `src` handed off by worker `from`.
    Handoff { src: SocketAddr, from: usize },
    /// A timer.
    Timer(TimerItem),
    /// A command from another worker or management.
    Command(&'static str),
}

impl std::fmt::Display for Handling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handling::Packet { src, transport } => {
                write!(f, "packet from {}:{src}", transport.as_str())
            }
            Handling::Handoff { src, from } => {
                write!(f, "packet from {src} handed off by worker {from}")
            }
            Handling::Timer(item) => write!(f, "timer {item:?}"),
            Handling::Command(c) => write!(f, "command {c}"),
        }
    }
}

/// Counts the panics caught in one worker and decides when it must give up.
struct PanicGuard {
    worker: usize,
    /// Start of the current one-second window (ms) and panics in it.
    window: (u64, u64),
    /// Set once the worker has to die: why.
    gave_up: Option<String>,
}

impl PanicGuard {
    fn new(worker: usize) -> PanicGuard {
        PanicGuard {
            worker,
            window: (0, 0),
            gave_up: None,
        }
    }
}

/// What the isolation points of a worker share.
struct Isolation {
    guard: PanicGuard,
    /// Fault injection (`io::fault`; off in production).
    faults: Faults,
    /// Injected: die at the end of this loop turn.
    die: bool,
    /// Injected: panic in the next dialog timer.
    panic_dialog_timer: bool,
}

impl Isolation {
    /// Note a fault a message asked for (`io::fault`) that acts later.
    fn injected(&mut self, fault: Option<Fault>) {
        match fault {
            Some(Fault::Die) => self.die = true,
            Some(Fault::PanicDialogTimer) => self.panic_dialog_timer = true,
            _ => {}
        }
    }

    /// A panic was caught while handling `what`: count it, log it once, and give up after
    /// more than [`MAX_PANICS_PER_SEC`] within a second.
    fn caught(
        &mut self,
        now: u64,
        stats: Option<&crate::stats::WorkerStats>,
        what: Handling,
        payload: &(dyn std::any::Any + Send),
    ) {
        if let Some(s) = stats {
            s.inc(Counter::WorkerPanics);
        }
        let g = &mut self.guard;
        tracing::error!(
            worker = g.worker,
            handling = %what,
            panic = panic_message(payload),
            "internal error (panic) while handling one item; it was dropped and the worker goes on"
        );
        if now >= g.window.0.saturating_add(1000) || g.window.1 == 0 {
            g.window = (now, 0);
        }
        g.window.1 += 1;
        if g.window.1 > MAX_PANICS_PER_SEC && g.gave_up.is_none() {
            g.gave_up = Some(format!(
                "{} panics within one second (more than {MAX_PANICS_PER_SEC})",
                g.window.1
            ));
        }
    }
}

/// The text of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Lengths of an [`Output`] before one isolated call, to drop what a panicking call added.
struct Mark {
    buf: usize,
    tx: usize,
    commands: usize,
}

impl Mark {
    fn of(out: &Output) -> Mark {
        Mark {
            buf: out.buf.len(),
            tx: out.tx.len(),
            commands: out.commands.len(),
        }
    }
    fn rollback(self, out: &mut Output) {
        out.buf.truncate(self.buf);
        out.tx.truncate(self.tx);
        out.commands.truncate(self.commands);
        out.handoff = None;
    }
}

fn flush(
    shared: &Shared,
    out: &mut Output,
    socks: &UdpSockets,
    tcp: &mut TcpConns,
    registry: &mio::Registry,
    now: u64,
    stats: Option<&crate::stats::WorkerStats>,
) {
    if !out.commands.is_empty() {
        deliver_commands(shared, out, stats);
    }
    if out.tx.is_empty() {
        out.clear();
        return;
    }
    let mut n_udp = 0usize;
    // Requests leave from the private socket (responses come back to this worker),
    // responses from the shared listening socket (RFC 3581 symmetric response). The private
    // sockets go first (reverse order): an INVITE's forwarded copy then leaves before its
    // 100 Trying, so the next hop does not wait for the 100's loopback delivery.
    let UdpSockets {
        socks,
        udp_for,
        nmain,
        has_private,
        tx,
    } = socks;
    let mut tx = tx.borrow_mut();
    for (i, (_, sock)) in socks.iter().enumerate().rev() {
        let (main, private) = if i < *nmain {
            (i, false)
        } else {
            (i - *nmain, true)
        };
        n_udp += tx.send(sock, out, |t| {
            let is_req = *has_private && !out.bytes(t).starts_with(b"SIP/2.0 ");
            udp_for.get(t.local).copied().unwrap_or(0) == main && is_req == private
        });
    }
    let mut n_tcp = 0usize;
    for t in out.tx.iter().filter(|t| t.transport == Transport::Tcp) {
        if tcp.send(registry, t.conn, t.dst, t.local, out.bytes(t), now) {
            n_tcp += 1;
        }
    }
    if let Some(s) = stats {
        s.add(Counter::PacketsOutUdp, n_udp as u64);
        s.add(Counter::PacketsOutTcp, n_tcp as u64);
    }
    out.clear();
}

/// Queue the commands the engine emitted for other workers, then wake each worker that got an
/// urgent one ([`Command::wants_wake`]) once. A command whose queue is full is counted and
/// logged, never silently lost.
fn deliver_commands(shared: &Shared, out: &mut Output, stats: Option<&crate::stats::WorkerStats>) {
    let mut woken = [0u64; crate::dialog::id::MAX_WORKERS / 64];
    for (w, cmd) in out.commands.drain(..) {
        let wake = cmd.wants_wake();
        if shared.queue(w, cmd) {
            if wake && let Some(bits) = woken.get_mut(w / 64) {
                *bits |= 1 << (w % 64);
            }
        } else {
            if let Some(s) = stats {
                s.inc(Counter::CommandsDropped);
            }
            tracing::warn!(
                worker = w,
                "command for another worker dropped: its queue is full"
            );
        }
    }
    for (i, bits) in woken.iter().enumerate() {
        let mut b = *bits;
        while b != 0 {
            let j = b.trailing_zeros() as usize;
            b &= b - 1;
            shared.wake(i * 64 + j);
        }
    }
}

/// Queue a packet for the worker that owns its transaction, in a buffer from worker `from`'s
/// hand-off pool (no allocation in the steady state). Returns false (the caller counts a drop)
/// when that worker's queue is full.
fn handoff(shared: &Shared, from: usize, w: usize, inb: &Inbound<'_>) -> bool {
    let cmd = Command::Packet {
        src: inb.src,
        local: inb.local,
        transport: inb.transport,
        conn: inb.conn,
        bytes: shared.handoff_buffer(from, inb.bytes),
        from,
    };
    shared.send(w, cmd)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::dialog::id::DialogId;
    use crate::dialog::profile::Profiles;
    use crate::engine::{LocalAddrs, Settings};

    fn engine() -> (Arc<Shared>, Engine) {
        let bound = [(Transport::Udp, "127.0.0.1:5060".parse().unwrap())];
        let s = Shared::new(
            2,
            LocalAddrs::new(&bound, None),
            Settings::default(),
            Profiles::new(&[], &[]).unwrap(),
            1,
            1,
        );
        let e = Engine::new(s.clone(), 1, 0);
        (s, e)
    }

    fn isolation(worker: usize) -> Isolation {
        Isolation {
            guard: PanicGuard::new(worker),
            faults: Faults::armed(),
            die: false,
            panic_dialog_timer: false,
        }
    }

    #[test]
    fn a_panic_in_a_hand_off_drops_it_counts_it_and_keeps_earlier_output() {
        let (s, mut e) = engine();
        let stats = s.worker_stats.get(1).cloned().unwrap();
        let mut iso = isolation(1);
        let mut out = Output::with_capacity(1 << 16, 16);
        let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let opt = |fault: &str| {
            format!(
                "OPTIONS sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK-h{fault}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: h-{fault}\r\n\
                 CSeq: 1 OPTIONS\r\nX-Sipedge-Fault: {fault}\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let packet = |bytes: Vec<u8>| Command::Packet {
            src,
            local: 0,
            transport: Transport::Udp,
            conn: None,
            bytes,
            from: 0,
        };
        // A healthy hand-off is forwarded.
        run_command(
            &mut e,
            10,
            10_000,
            packet(opt("none")),
            &mut out,
            Some(&stats),
            &mut iso,
        );
        let kept = out.tx.len();
        assert_eq!(kept, 1, "forwarded");
        // A hand-off whose handling panics: counted, its output dropped, the earlier kept.
        run_command(
            &mut e,
            10,
            10_000,
            packet(opt("panic")),
            &mut out,
            Some(&stats),
            &mut iso,
        );
        assert_eq!(out.tx.len(), kept);
        assert_eq!(stats.get(Counter::WorkerPanics), 1);
        assert_eq!(stats.get(Counter::Dropped), 1);
        assert!(iso.guard.gave_up.is_none());
        // Commands without a dialog are no-ops, not panics.
        let end = Command::Terminate {
            id: DialogId::new(1, 1, 1),
            side: crate::dialog::Side::All,
            reason: String::new(),
            extra_hdrs: String::new(),
        };
        run_command(&mut e, 10, 10_000, end, &mut out, Some(&stats), &mut iso);
        assert_eq!(stats.get(Counter::WorkerPanics), 1);
        // A marked hand-off can also ask for the worker's death (at the end of the turn).
        run_command(
            &mut e,
            10,
            10_000,
            packet(opt("die")),
            &mut out,
            Some(&stats),
            &mut iso,
        );
        assert!(iso.die);
    }

    #[test]
    fn more_than_the_limit_of_panics_in_a_second_gives_up() {
        let mut iso = isolation(0);
        let p: Box<dyn std::any::Any + Send> = Box::new("x");
        let what = Handling::Command("test");
        for i in 0..MAX_PANICS_PER_SEC {
            iso.caught(1_000 + i, None, what, &*p);
        }
        assert!(iso.guard.gave_up.is_none(), "at the limit");
        // A new second starts a new window.
        iso.caught(2_000, None, what, &*p);
        assert!(iso.guard.gave_up.is_none());
        for _ in 0..MAX_PANICS_PER_SEC {
            iso.caught(2_500, None, what, &*p);
        }
        assert!(
            iso.guard.gave_up.is_some(),
            "{} in one second",
            MAX_PANICS_PER_SEC + 1
        );
    }

    #[test]
    fn timer_wake_up_rounds_up_to_the_grid_never_early() {
        assert_eq!(timer_wake_at(0), 0);
        assert_eq!(timer_wake_at(1), TIMER_GRID_MS);
        assert_eq!(timer_wake_at(TIMER_GRID_MS), TIMER_GRID_MS);
        assert_eq!(timer_wake_at(TIMER_GRID_MS + 1), 2 * TIMER_GRID_MS);
        for d in [3u64, 99, 12_345, u64::MAX / 2] {
            let w = timer_wake_at(d);
            assert!(w >= d && w - d < TIMER_GRID_MS, "{d} -> {w}");
        }
        assert_eq!(timer_wake_at(u64::MAX), u64::MAX, "saturates");
    }
}
