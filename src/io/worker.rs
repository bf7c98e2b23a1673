//! One worker thread: pinned to a core, owns its SO_REUSEPORT sockets and a mio loop that
//! drains sockets in batches, runs the engine, sends in batches, fires timers and executes
//! commands (hand-offs from other workers, terminations from management).
//!
//! Invariants: the loop never blocks anywhere but `poll`; the poll timeout is the engine's
//! next timer deadline rounded up to a [`TIMER_GRID_MS`] grid (capped at 100 ms so a stop
//! request is seen quickly), so a timer fires at most one grid step late and never early;
//! buffers are reused across iterations.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};

use super::tcp::{TcpConns, TcpGate, TcpLimits};
use super::udp::{RecvBatch, send_output};
use crate::engine::{Command, Engine, Inbound, Output, Shared};
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
}

/// Run the worker loop until `stop` is set.
pub fn run(spec: WorkerSpec, shared: Arc<Shared>, clock: Clock, stop: Arc<AtomicBool>) {
    if let Some(core) = spec.core {
        core_affinity::set_for_current(core);
    }
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
    };
    let mut engine = Engine::with_seed(shared.clone(), index, clock.now_ms(), os_seed(index));
    let stats = shared.worker_stats.get(index).cloned();
    let mut tcp = TcpConns::new(tcp_limits, tcp_gate);
    let mut events = Events::with_capacity(256);
    let mut batch = RecvBatch::default();
    let mut out = Output::with_capacity(1 << 20, 1024);
    let mut last_sweep = clock.now_ms();
    let mut tcp_seen = super::tcp::TcpEvents::default();
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_ms();
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
                        engine.note_queue_delay(wall.saturating_sub(rx) / 1000);
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
                        deliver(&mut engine, &shared, stats.as_deref(), inb, &mut out);
                    }
                    let t1 = Instant::now();
                    flush(
                        &shared,
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
                        deliver(&mut engine, &shared, stats.as_deref(), inb, &mut out);
                    });
                    flush(
                        &shared,
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
        // Commands: hand-offs and terminations.
        let now = clock.now_ms();
        for _ in 0..4096 {
            let Ok(cmd) = commands.try_recv() else { break };
            engine.handle_command(now, clock.now_us(), cmd, &mut out);
        }
        engine.handle_timeout(now, &mut out);
        flush(
            &shared,
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
    }
    let now = clock.now_ms();
    engine.shutdown(now, &mut out);
    flush(
        &shared,
        &mut out,
        &socks,
        &mut tcp,
        poll.registry(),
        now,
        stats.as_deref(),
    );
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
) {
    // A bug must not take the worker down with it: the packet is dropped, counted and logged,
    // and the worker goes on (the engine never panics on input by design; this is a last
    // line of defence, free on the normal path).
    let (nbuf, ntx, ncmd) = (out.buf.len(), out.tx.len(), out.commands.len());
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.handle_datagram(inb, out);
    }));
    if done.is_err() {
        // Keep what earlier packets of the batch produced; forget this one's partial output.
        out.buf.truncate(nbuf);
        out.tx.truncate(ntx);
        out.commands.truncate(ncmd);
        out.handoff = None;
        if let Some(s) = stats {
            s.inc(Counter::Dropped);
        }
        tracing::error!(src = %inb.src, "internal error while handling a packet; dropped");
        return;
    }
    if let Some(w) = out.handoff.take()
        && !handoff(shared, engine.worker(), w, &inb)
        && let Some(s) = stats
    {
        s.inc(Counter::Dropped);
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
    for (i, (_, sock)) in socks.socks.iter().enumerate().rev() {
        let (main, private) = if i < socks.nmain {
            (i, false)
        } else {
            (i - socks.nmain, true)
        };
        n_udp += send_output(sock, out, |t| {
            let is_req = socks.has_private && !out.bytes(t).starts_with(b"SIP/2.0 ");
            socks.udp_for.get(t.local).copied().unwrap_or(0) == main && is_req == private
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
mod tests {
    use super::*;

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
