//! The proxy under test: N engine workers sharing one `Shared`, driven the way `src/io` drives
//! them, in virtual time.
//!
//! Invariants:
//! - Each datagram to the proxy goes to a worker picked at random (SO_REUSEPORT with a random
//!   BPF program); the pick comes from the run's one [`SimRng`].
//! - `Output.handoff` and `Output.commands` are never handled inline: a hand-off becomes a
//!   `Command::Packet` in a buffer from the sender's pool (as `io` does) and every command
//!   joins its worker's FIFO queue, delivered after a random wake-up delay on a later step.
//! - Every message the engines send must parse with `sipedge::wire::parse` and go over UDP;
//!   anything else is recorded in [`Proxy::anomalies`], which the invariants require empty.
//! - The policy tracks every initial INVITE in two profiles (`calls`, and `callee` with the
//!   R-URI host as value) and routes R-URI users `par`/`ser` to the target groups of those
//!   names, so profile counts and forking are part of every run.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use sipedge::dialog::DlgEvent;
use sipedge::dialog::profile::Profiles;
use sipedge::engine::{Command, Engine, Inbound, LocalAddrs, Output, Settings, Shared};
use sipedge::policy::{DialogOps, Policy, RequestView, Verdict};
use sipedge::wire::Transport;

use crate::ledger::Ledger;
use crate::rng::SimRng;

/// Largest wake-up delay of a queued command, µs.
const WAKE_MAX_US: u64 = 2_000;

/// Profile without values: every tracked call.
pub const PROFILE_CALLS: &str = "calls";
/// Profile with values: the R-URI host.
pub const PROFILE_CALLEE: &str = "callee";

/// The simulation's policy (see the module invariants).
struct SimPolicy;

impl Policy for SimPolicy {
    fn on_request<'a>(
        &'a self,
        req: &dyn RequestView,
        ops: &mut dyn DialogOps,
        _scratch: &mut Vec<u8>,
    ) -> Verdict<'a> {
        if req.method() == b"INVITE" && req.is_initial() {
            ops.set_profile(PROFILE_CALLS, None);
            ops.set_profile(PROFILE_CALLEE, Some(req.ruri_host()));
            match req.ruri_user() {
                b"par" => ops.route_to_group("par"),
                b"ser" => ops.route_to_group("ser"),
                _ => {}
            }
        }
        Verdict::Continue
    }
}

/// A deliberate fault in the driver (not the engine), to prove the invariants can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Lose every cross-worker command and hand-off instead of queueing it.
    DropCommands,
    /// Lose only `Command::Retime` (a dialog that ended off its timer worker keeps its
    /// wheel entry until the old deadline).
    DropRetime,
}

/// What the proxy was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Datagrams received.
    pub datagrams: u64,
    /// Of those, handed off to another worker.
    pub handoffs: u64,
    /// Commands delivered (hand-offs included).
    pub commands: u64,
    /// Timer calls.
    pub timer_calls: u64,
    /// Messages sent.
    pub sent: u64,
}

/// The proxy and its workers.
pub struct Proxy {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// What the workers share.
    pub shared: Arc<Shared>,
    /// The workers (index = worker number).
    pub engines: Vec<Engine>,
    /// The recorded dialog events.
    pub ledger: Arc<Ledger>,
    /// Per-worker command queues: (ready at µs, command), FIFO.
    queues: Vec<VecDeque<(u64, Command)>>,
    out: Output,
    /// Counters.
    pub counts: ProxyCounts,
    /// Things the engines did that they must never do (unparsable output, ...).
    pub anomalies: Vec<String>,
    /// A driver fault to inject (tests of the invariants only).
    pub sabotage: Option<Sabotage>,
}

impl Proxy {
    /// `workers` engines on `addr` with these settings; the boot epoch seeds the engines'
    /// own randomness.
    pub fn new(addr: SocketAddr, workers: usize, settings: Settings, boot: u32) -> Proxy {
        let locals = LocalAddrs::new(&[(Transport::Udp, addr)], None);
        let profiles = Profiles::new(&[PROFILE_CALLS], &[PROFILE_CALLEE]).unwrap();
        let shared = Shared::new(workers, locals, settings, profiles, 1, boot);
        shared
            .policy
            .store(Arc::new(Some(Arc::new(SimPolicy) as Arc<dyn Policy>)));
        let ledger = Arc::new(Ledger::default());
        shared.callbacks.register(DlgEvent::ALL, ledger.clone());
        let engines = (0..workers)
            .map(|w| Engine::new(shared.clone(), w, 0))
            .collect();
        Proxy {
            addr,
            shared,
            engines,
            ledger,
            queues: (0..workers).map(|_| VecDeque::new()).collect(),
            out: Output::with_capacity(1 << 16, 64),
            counts: ProxyCounts::default(),
            anomalies: Vec::new(),
            sabotage: None,
        }
    }

    /// A datagram from `src` arrives at `now` (µs): a random worker takes it. What the
    /// proxy sends is appended to `sent`.
    pub fn receive(
        &mut self,
        now: u64,
        rng: &mut SimRng,
        src: SocketAddr,
        bytes: &[u8],
        sent: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        self.counts.datagrams += 1;
        let w = rng.index(self.engines.len());
        self.out.clear();
        let inb = Inbound {
            now_ms: now / 1000,
            now_us: now,
            src,
            local: 0,
            transport: Transport::Udp,
            conn: None,
            bytes,
        };
        self.engines[w].handle_datagram(inb, &mut self.out);
        if let Some(to) = self.out.handoff.take() {
            if to == w || to >= self.engines.len() {
                self.anomalies
                    .push(format!("worker {w} handed a packet off to worker {to}"));
            } else {
                self.counts.handoffs += 1;
                let cmd = Command::Packet {
                    src,
                    local: 0,
                    transport: Transport::Udp,
                    conn: None,
                    bytes: self.shared.handoff_buffer(w, bytes),
                    from: w,
                };
                self.enqueue(now, rng, to, cmd);
            }
        }
        self.collect(now, rng, sent);
    }

    /// Queue `cmd` for worker `w` (as `io` does for the engines' commands, and management for
    /// `dlg.end_dlg`); it is delivered after a random wake-up delay, in FIFO order per worker.
    pub fn enqueue(&mut self, now: u64, rng: &mut SimRng, w: usize, cmd: Command) {
        match (self.sabotage, &cmd) {
            (Some(Sabotage::DropCommands), _)
            | (Some(Sabotage::DropRetime), Command::Retime(_)) => {
                return;
            }
            _ => {}
        }
        let Some(q) = self.queues.get_mut(w) else {
            self.anomalies
                .push(format!("command for worker {w}, which does not exist"));
            return;
        };
        let at = (now + rng.range(0, WAKE_MAX_US)).max(q.back().map_or(0, |(t, _)| *t));
        q.push_back((at, cmd));
    }

    /// When the proxy next has work: a timer or a queued command (µs).
    pub fn next_at(&self) -> Option<u64> {
        let timers = self
            .engines
            .iter()
            .filter_map(|e| e.poll_timeout())
            .map(|ms| ms * 1000);
        let cmds = self
            .queues
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t));
        timers.chain(cmds).min()
    }

    /// Do one piece of work due at `now`: the first ready command (lowest worker first), else
    /// every due timer. Returns false when nothing was due.
    pub fn step(
        &mut self,
        now: u64,
        rng: &mut SimRng,
        sent: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) -> bool {
        for w in 0..self.queues.len() {
            if self.queues[w].front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, cmd)) = self.queues[w].pop_front() else {
                    continue;
                };
                self.counts.commands += 1;
                self.out.clear();
                self.engines[w].handle_command(now / 1000, now, cmd, &mut self.out);
                if self.out.handoff.take().is_some() {
                    self.anomalies
                        .push(format!("worker {w} handed off a handed-off packet"));
                }
                self.collect(now, rng, sent);
                return true;
            }
        }
        let mut any = false;
        for w in 0..self.engines.len() {
            if self.engines[w]
                .poll_timeout()
                .is_some_and(|ms| ms * 1000 <= now)
            {
                any = true;
                self.counts.timer_calls += 1;
                self.out.clear();
                self.engines[w].handle_timeout(now / 1000, &mut self.out);
                self.collect(now, rng, sent);
            }
        }
        any
    }

    /// Commands queued, not yet delivered.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Take the output of the last engine call: transmits into `sent`, commands into the
    /// queues.
    fn collect(&mut self, now: u64, rng: &mut SimRng, sent: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let cmds: Vec<(usize, Command)> = self.out.commands.drain(..).collect();
        for (w, cmd) in cmds {
            self.enqueue(now, rng, w, cmd);
        }
        for t in &self.out.tx {
            let bytes = self.out.bytes(t);
            if t.transport != Transport::Udp {
                self.anomalies
                    .push(format!("sent over {:?} to {}", t.transport, t.dst));
            }
            if sipedge::wire::parse(bytes).is_err() {
                self.anomalies.push(format!(
                    "sent an unparsable message to {}:\n{}",
                    t.dst,
                    String::from_utf8_lossy(bytes)
                ));
            }
            self.counts.sent += 1;
            sent.push((t.dst, bytes.to_vec()));
        }
    }
}
