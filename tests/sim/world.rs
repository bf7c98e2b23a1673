//! One run: the proxy, the hosts and the network, stepped in virtual time until quiescence.
//!
//! Invariants:
//! - One thread, one [`SimRng`], one event at a time in a fixed priority at equal times
//!   (proxy commands and timers, then datagrams, then host timers, then planned actions), so
//!   a seed replays exactly.
//! - Quiescence: nothing is left to happen except UAS timers at least `FAR_US` ahead (the
//!   `max_call_us` of calls a UAS still holds). The loop is bounded in events and virtual
//!   time; a run that hits a bound is not quiescent, and the invariants say so.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use loadgen::outbox::Outbox;
use loadgen::uac::CallOutcome;
use sipedge::dialog::{DlgState, Field, Side};
use sipedge::engine::Command;

use crate::endpoints::{Agent, Host};
use crate::net::Net;
use crate::plan::{Action, Setup, SimConfig};
use crate::proxy::Proxy;
use crate::rng::SimRng;

/// Timers this far ahead do not count as pending (µs).
pub const FAR_US: u64 = 3_600_000_000;
/// Virtual time a run may take after its last planned action (µs).
const LIMIT_AFTER_PLAN_US: u64 = 2 * 3_600_000_000;
/// Events a run may take.
const MAX_EVENTS: u64 = 20_000_000;

/// A `Command::Terminate` the run sent.
#[derive(Clone, Debug)]
pub struct Termination {
    /// When (µs).
    pub at: u64,
    /// The dialog's state when the command was queued.
    pub state: DlgState,
}

/// One run.
pub struct World {
    /// The seed.
    pub seed: u64,
    /// Its configuration.
    pub cfg: SimConfig,
    /// What the seed drew.
    pub setup: Setup,
    /// The one randomness source.
    pub rng: SimRng,
    /// Virtual time, µs.
    pub now: u64,
    /// The network.
    pub net: Net,
    /// The proxy.
    pub proxy: Proxy,
    /// UACs first (index = `Action::Call::uac`), then UASes.
    pub hosts: Vec<Host>,
    by_addr: HashMap<SocketAddr, usize>,
    next_action: usize,
    /// Terminations sent, by Call-ID.
    pub terminated: BTreeMap<String, Termination>,
    /// Every UAC call's outcome (after [`World::run`]).
    pub outcomes: Vec<CallOutcome>,
    /// Events handled.
    pub events: u64,
    /// Whether the run reached quiescence.
    pub quiet: bool,
    /// Things that must never happen outside the proxy (datagrams to unknown hosts).
    pub anomalies: Vec<String>,
    /// The first moment a wheel entry outlived everything it could guard.
    pub timer_leak: Option<String>,
    /// Per worker: the most wheel entries seen live after any event.
    pub peak_timers: Vec<usize>,
    /// Print every delivered datagram (`SIM_TRACE=1`).
    pub trace: bool,
    outbox: Outbox,
    sent: Vec<(SocketAddr, Vec<u8>)>,
}

impl World {
    /// Set up run `seed` of `cfg`.
    pub fn new(cfg: SimConfig, seed: u64) -> World {
        let mut rng = SimRng::new(seed);
        let setup = Setup::draw(&cfg, &mut rng);
        let proxy = Proxy::new(
            setup.proxy,
            setup.workers,
            setup.settings.clone(),
            setup.boot,
        );
        let trace = std::env::var_os("SIM_TRACE").is_some();
        let mut net = Net::new(cfg.link);
        net.trace = trace;
        let mut hosts = Vec::new();
        for (i, (a, ruri)) in setup.uacs.iter().enumerate() {
            // Distinct run tags: loadgen's Call-IDs are unique per UAC only.
            let tag = setup.run_tag.wrapping_add(i as u32);
            hosts.push(Host::uac(*a, setup.proxy, ruri.clone(), tag));
        }
        for (i, u) in setup.uases.iter().enumerate() {
            let mut h = Host::uas(u.addr, u.send_100, u.hang_up_us, i as u32);
            if let Some((v, at)) = setup.vanish
                && v == i
            {
                h.vanish_at = Some(at);
                net.vanish(u.addr, at);
            }
            hosts.push(h);
        }
        let workers = setup.workers;
        let by_addr = hosts.iter().enumerate().map(|(i, h)| (h.addr, i)).collect();
        World {
            seed,
            cfg,
            setup,
            rng,
            now: 0,
            net,
            proxy,
            hosts,
            by_addr,
            next_action: 0,
            terminated: BTreeMap::new(),
            outcomes: Vec::new(),
            events: 0,
            quiet: false,
            anomalies: Vec::new(),
            peak_timers: vec![0; workers],
            timer_leak: None,
            trace,
            outbox: Outbox::with_capacity(64),
            sent: Vec::new(),
        }
    }

    /// Step until quiescence (or a bound), then collect the UACs' outcomes.
    pub fn run(&mut self) {
        let plan_end = self.setup.actions.last().map_or(0, |(t, _)| *t);
        let limit = plan_end + LIMIT_AFTER_PLAN_US;
        loop {
            let Some(t) = self.next_event() else {
                self.quiet = true;
                break;
            };
            if t >= self.now.saturating_add(FAR_US) && self.next_action >= self.setup.actions.len()
            {
                self.quiet = true;
                break;
            }
            if t > limit || self.events >= MAX_EVENTS {
                break;
            }
            self.now = self.now.max(t);
            self.events += 1;
            self.step();
            for (p, e) in self.peak_timers.iter_mut().zip(&self.proxy.engines) {
                *p = (*p).max(e.pending_timers());
            }
            self.check_idle_timers();
        }
        for h in &mut self.hosts {
            if let Some(u) = h.as_uac() {
                self.outcomes.extend(u.take_outcomes());
            }
        }
    }

    /// Whenever nothing is left for a timer to guard (no dialog, transaction, generated
    /// request or queued command), no worker may hold a wheel entry: the first time one does
    /// is recorded in [`World::timer_leak`].
    fn check_idle_timers(&mut self) {
        let p = &self.proxy;
        if self.timer_leak.is_some()
            || p.queued() != 0
            || !p.shared.table.is_empty()
            || p.engines
                .iter()
                .any(|e| e.txn_count() != 0 || e.generated_in_flight() != 0)
        {
            return;
        }
        let live: Vec<usize> = p.engines.iter().map(|e| e.pending_timers()).collect();
        if live.iter().any(|&n| n != 0) {
            self.timer_leak = Some(format!(
                "at {} ms nothing is left to guard, yet the workers hold wheel entries {live:?}",
                self.now / 1000
            ));
        }
    }

    /// Plan another wave of traffic (same hosts, same proxy), starting a second from now;
    /// [`World::run`] runs it.
    pub fn add_wave(&mut self) {
        let timeout = self.setup.settings.default_timeout;
        let start = self.now + 1_000_000;
        let wave = crate::plan::traffic(&self.cfg, &mut self.rng, timeout, start);
        self.setup.actions.extend(wave);
        self.quiet = false;
    }

    /// Earliest pending event.
    fn next_event(&self) -> Option<u64> {
        let hosts = self.hosts.iter().filter_map(|h| h.next_at(self.now));
        let action = self.setup.actions.get(self.next_action).map(|(t, _)| *t);
        [self.proxy.next_at(), self.net.next_at(), action]
            .into_iter()
            .flatten()
            .chain(hosts)
            .min()
    }

    /// Handle one event due at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        if self.proxy.step(now, &mut self.rng, &mut self.sent) {
            self.send_proxy_output();
            return;
        }
        if let Some(d) = self.net.pop_due(now) {
            if self.trace {
                trace(now, d.src, d.dst, &d.bytes, "");
            }
            if d.dst == self.proxy.addr {
                self.proxy
                    .receive(now, &mut self.rng, d.src, &d.bytes, &mut self.sent);
                self.send_proxy_output();
            } else if let Some(&i) = self.by_addr.get(&d.dst) {
                let h = &mut self.hosts[i];
                h.receive(now, d.src, &d.bytes, &mut self.outbox);
                h.flush(now, &mut self.rng, &mut self.net, &mut self.outbox);
            } else {
                self.anomalies.push(format!(
                    "datagram to unknown host {} from {}: {}",
                    d.dst,
                    d.src,
                    first_line(&d.bytes)
                ));
            }
            return;
        }
        for h in &mut self.hosts {
            if h.next_at(now).is_some_and(|t| t <= now) {
                h.timeout(now, &mut self.outbox);
                h.flush(now, &mut self.rng, &mut self.net, &mut self.outbox);
                return;
            }
        }
        if let Some(&(at, action)) = self.setup.actions.get(self.next_action)
            && at <= now
        {
            self.next_action += 1;
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Call { uac, scen, hold_us } => {
                let h = &mut self.hosts[uac];
                if let Agent::Uac(u) = &mut h.agent
                    && u.start_call(now, now, scen, hold_us, &mut self.outbox)
                        .is_err()
                {
                    self.anomalies
                        .push(format!("UAC {} refused a call", h.addr));
                }
                h.flush(now, &mut self.rng, &mut self.net, &mut self.outbox);
            }
            Action::Terminate => {
                let mut live = Vec::new();
                self.proxy.shared.table.for_each(|id, d| {
                    if d.state() != DlgState::Deleted {
                        let cid = String::from_utf8_lossy(d.strs.get(Field::CallId)).into_owned();
                        live.push((*id, d.state(), cid));
                    }
                });
                live.sort_by_key(|(id, _, _)| (id.h_entry, id.h_id));
                if live.is_empty() {
                    return;
                }
                let (id, state, cid) = live.swap_remove(self.rng.index(live.len()));
                self.terminated.insert(cid, Termination { at: now, state });
                let cmd = Command::Terminate {
                    id,
                    side: Side::All,
                    reason: "SIP;cause=200;text=\"sim\"".into(),
                    extra_hdrs: String::new(),
                };
                self.proxy.enqueue(now, &mut self.rng, id.worker(), cmd);
            }
        }
    }

    fn send_proxy_output(&mut self) {
        let from = self.proxy.addr;
        for (dst, bytes) in self.sent.drain(..) {
            self.net.send(self.now, &mut self.rng, from, dst, &bytes);
        }
    }
}

/// The start line of a message.
pub fn first_line(b: &[u8]) -> String {
    let end = b
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One line per datagram: time, addresses, start line, Call-ID, CSeq; `what` marks a loss.
pub fn trace(now: u64, src: SocketAddr, dst: SocketAddr, b: &[u8], what: &str) {
    let text = String::from_utf8_lossy(b);
    let call_id = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Call-ID: ")
                .or_else(|| l.strip_prefix("i: "))
        })
        .unwrap_or("");
    let cseq = text
        .lines()
        .find_map(|l| l.strip_prefix("CSeq: "))
        .unwrap_or("");
    println!(
        "{:>10.3} ms {what:4} {src} -> {dst} {} [{call_id}] [{cseq}]",
        now as f64 / 1000.0,
        first_line(b)
    );
}
