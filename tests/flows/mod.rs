//! Virtual-time call-flow harness for the sans-IO proxy engine.
//!
//! A [`Net`] owns one `Shared` and one or more `Engine`s, a virtual clock and a reused
//! `Output`. Tests push SIP text in ([`Net::send`]) and get back what the proxy put on the wire
//! as [`Sent`] (destination + text), step time with [`Net::advance`] (every timer deadline in
//! between fires, in order), and build UAC/UAS messages with the helpers below by copying
//! headers from what the proxy sent. No sockets, no sleeps.
//!
//! Invariants: every message the engine emits must parse with `sipedge::wire::parse` (checked
//! on every call); hand-offs between engines are delivered immediately, like the io layer does.
// Declared by the `it` and `alloc` test binaries and by two examples (`#[path]`); each uses a
// different subset of these helpers.
#![allow(dead_code)]

pub mod msg;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sipedge::dialog::callbacks::{DialogObserver, EventData};
use sipedge::dialog::profile::Profiles;
use sipedge::dialog::{DlgEvent, DlgState};
use sipedge::engine::{Engine, Inbound, LocalAddrs, Output, Settings, Shared};
use sipedge::wire::Transport;

pub use msg::*;

/// The proxy's address.
pub const PROXY: &str = "127.0.0.1:5060";
/// The caller (UAC).
pub const UAC: &str = "10.0.0.1:5060";
/// Callees (UAS) for forking.
pub const UAS1: &str = "10.0.0.2:5060";
/// Second callee.
pub const UAS2: &str = "10.0.0.3:5060";
/// Third callee.
pub const UAS3: &str = "10.0.0.4:5060";

/// Parse a socket address literal.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The default `[flood]` parameters with the virtual net's peers (10.0.0.0/8) trusted like
/// loopback: flows send thousands of requests from one address at one virtual instant. The
/// flood tests set their own.
pub fn trusting_test_peers() -> Arc<sipedge::flood::FloodParams> {
    let mut c = sipedge::config::Config::default();
    c.flood
        .trusted
        .push(sipedge::policy::spec::Cidr("10.0.0.0/8".parse().unwrap()));
    Settings::from_config(&c).flood
}

/// One event seen by the recording observer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    /// Event kind.
    pub event: DlgEvent,
    /// Dialog id (hash).
    pub id: String,
    /// Response code, when any.
    pub code: u16,
}

/// Records every dialog event.
#[derive(Default)]
pub struct Recorder {
    /// Events in order.
    pub events: Mutex<Vec<Ev>>,
}

impl DialogObserver for Recorder {
    fn on_event(&self, ev: &EventData<'_>) {
        self.events.lock().unwrap().push(Ev {
            event: ev.event,
            id: format!("{:?}", ev.dialog.id),
            code: ev.code,
        });
    }
}

impl Recorder {
    /// How many times `event` fired.
    pub fn count(&self, event: DlgEvent) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event == event)
            .count()
    }
    /// Events of kind `event` by dialog id.
    pub fn ids(&self, event: DlgEvent) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event == event)
            .map(|e| e.id.clone())
            .collect()
    }
}

/// A virtual network around the proxy engines.
pub struct Net {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Engines (worker index = position).
    pub engines: Vec<Engine>,
    /// Virtual time (ms).
    pub now: u64,
    /// Reused output buffer.
    pub out: Output,
    /// Event recorder (registered for every event).
    pub rec: Arc<Recorder>,
    /// Everything sent so far, in order.
    pub log: Vec<Sent>,
    /// Cross-worker commands the engines emitted, not yet delivered.
    pub commands: std::collections::VecDeque<(usize, sipedge::engine::Command)>,
    /// Commands delivered so far.
    pub commands_delivered: usize,
}

impl Net {
    /// One worker, default settings.
    pub fn new() -> Net {
        Net::with(Settings::default(), 1)
    }

    /// `workers` engines with these settings; a profile `caller` with values exists.
    pub fn with(settings: Settings, workers: usize) -> Net {
        Net::build(settings, workers, true)
    }

    /// Like [`Net::with`]; `record` = false registers no observer (allocation tests).
    pub fn build(mut settings: Settings, workers: usize, record: bool) -> Net {
        settings.flood = trusting_test_peers();
        let locals = LocalAddrs::new(&[(Transport::Udp, sa(PROXY))], None);
        let profiles = Profiles::new(&["calls"], &["caller"]).unwrap();
        let shared = Shared::new(workers, locals, settings, profiles, 1, 0xB007);
        let rec = Arc::new(Recorder::default());
        if record {
            shared.callbacks.register(DlgEvent::ALL, rec.clone());
        }
        let engines = (0..workers)
            .map(|w| Engine::new(shared.clone(), w, 0))
            .collect();
        Net {
            shared,
            engines,
            now: 0,
            out: Output::with_capacity(1 << 16, 64),
            rec,
            log: Vec::new(),
            commands: Default::default(),
            commands_delivered: 0,
        }
    }

    /// Change settings.
    pub fn settings(&self, f: impl FnOnce(&mut Settings)) {
        let mut s = (**self.shared.settings.load()).clone();
        f(&mut s);
        self.shared.settings.store(Arc::new(s));
    }

    /// Make `targets` (addresses like [`UAS1`]) the default target group, forked by `mode`
    /// over `transport`.
    pub fn default_group(
        &self,
        mode: sipedge::engine::ForkMode,
        transport: Transport,
        targets: &[&str],
    ) {
        self.settings(|s| {
            s.groups = vec![sipedge::engine::TargetGroup {
                name: "g".into(),
                mode,
                targets: targets
                    .iter()
                    .map(|a| sipedge::dialog::Socket {
                        addr: sa(a),
                        transport,
                        local: 0,
                        conn: None,
                    })
                    .collect(),
            }];
            s.default_group = Some(0);
        });
    }

    /// Deliver `text` from `src` to worker 0.
    pub fn send(&mut self, src: &str, text: &str) -> Vec<Sent> {
        self.send_to(0, src, text)
    }

    /// Deliver `text` from `src` to worker `w` (hand-offs are followed).
    pub fn send_to(&mut self, w: usize, src: &str, text: &str) -> Vec<Sent> {
        self.send_bytes(w, sa(src), text.as_bytes())
    }

    /// Deliver raw bytes.
    pub fn send_bytes(&mut self, w: usize, src: SocketAddr, bytes: &[u8]) -> Vec<Sent> {
        let mut worker = w;
        let mut result = Vec::new();
        for _ in 0..4 {
            self.out.clear();
            let inb = self.inbound(src, bytes);
            self.engines[worker].handle_datagram(inb, &mut self.out);
            result.extend(self.collect());
            match self.out.handoff {
                Some(next) if next != worker => worker = next,
                _ => break,
            }
        }
        result.extend(self.run_commands());
        result
    }

    /// Deliver the queued cross-worker commands (and those they cause) to their workers, as
    /// `io` does after each batch.
    pub fn run_commands(&mut self) -> Vec<Sent> {
        let mut result = Vec::new();
        for _ in 0..10_000 {
            let Some((w, cmd)) = self.commands.pop_front() else {
                break;
            };
            self.out.clear();
            let now = self.now;
            self.engines[w].handle_command(now, now * 1000, cmd, &mut self.out);
            self.commands_delivered += 1;
            result.extend(self.collect());
        }
        result
    }

    /// Live wheel entries over all workers.
    pub fn pending_timers(&self) -> usize {
        self.engines.iter().map(|e| e.pending_timers()).sum()
    }

    /// A UDP datagram from `src` on listener 0 at the current virtual time.
    pub fn inbound<'b>(&self, src: SocketAddr, bytes: &'b [u8]) -> Inbound<'b> {
        Inbound {
            now_ms: self.now,
            now_us: self.now * 1000,
            src,
            local: 0,
            transport: Transport::Udp,
            conn: None,
            bytes,
        }
    }

    fn collect(&mut self) -> Vec<Sent> {
        self.commands.extend(self.out.commands.drain(..));
        let mut v = Vec::new();
        for t in &self.out.tx {
            let bytes = self.out.bytes(t);
            assert!(
                sipedge::wire::parse(bytes).is_ok(),
                "engine sent an unparsable message:\n{}",
                String::from_utf8_lossy(bytes)
            );
            v.push(Sent {
                dst: t.dst,
                text: String::from_utf8_lossy(bytes).into_owned(),
            });
        }
        self.log.extend(v.iter().cloned());
        v
    }

    /// Advance the clock by `ms`, firing every timer due on the way, in deadline order.
    pub fn advance(&mut self, ms: u64) -> Vec<Sent> {
        let end = self.now + ms;
        let mut result = Vec::new();
        loop {
            let next = self
                .engines
                .iter()
                .filter_map(|e| e.poll_timeout())
                .min()
                .filter(|&t| t <= end);
            let Some(t) = next else {
                break;
            };
            self.now = self.now.max(t);
            for i in 0..self.engines.len() {
                if self.engines[i]
                    .poll_timeout()
                    .is_some_and(|d| d <= self.now)
                {
                    self.out.clear();
                    self.engines[i].handle_timeout(self.now, &mut self.out);
                    result.extend(self.collect());
                }
            }
            result.extend(self.run_commands());
        }
        self.now = end;
        for i in 0..self.engines.len() {
            self.out.clear();
            self.engines[i].handle_timeout(self.now, &mut self.out);
            result.extend(self.collect());
        }
        result.extend(self.run_commands());
        result
    }

    /// Stats snapshot.
    pub fn stats(&self) -> sipedge::dialog::DialogStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// State of the only dialog with this Call-ID, if still in the table.
    pub fn state_of(&self, call_id: &str) -> Option<DlgState> {
        let ids = self.shared.table.find_by_callid(call_id.as_bytes());
        let id = ids.first()?;
        self.shared.table.get(*id).map(|d| d.state())
    }

    /// Dialogs in the table.
    pub fn dialogs(&self) -> usize {
        self.shared.table.len()
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

/// Only the messages sent to `dst`.
pub fn to<'a>(sent: &'a [Sent], dst: &str) -> Vec<&'a Sent> {
    let d = sa(dst);
    sent.iter().filter(|s| s.dst == d).collect()
}

/// The single message in `sent` matching `pred`; panics with the list otherwise.
pub fn one<'a>(sent: &'a [Sent], what: &str, pred: impl Fn(&Sent) -> bool) -> &'a Sent {
    let m: Vec<&Sent> = sent.iter().filter(|s| pred(s)).collect();
    assert_eq!(
        m.len(),
        1,
        "expected one {what}, got {}: {sent:#?}",
        m.len()
    );
    m[0]
}
