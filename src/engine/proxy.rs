//! The per-worker [`Engine`]: entry points and the state it owns (timer wheel, INVITE
//! transactions, scratch buffers).
//!
//! Invariant: an `Engine` is only ever used by its own worker (`&mut self`); everything it
//! shares with other workers is in [`Shared`].

use std::sync::Arc;

use super::timers::TimerItem;
use super::{Command, Inbound, Output, Shared};
use crate::stats::{Counter, LatencyMetric, LatencyRecorder, WorkerStats};
use crate::timer::Wheel;
use crate::txn::TxnTable;
use crate::wire::{self, Transport};

/// Prefix of the To-tags of replies generated without a transaction.
pub(crate) const LOCAL_TAG_PREFIX: &[u8] = b"sx";
const LOCAL_TAG_PREFIX_BUF: &[u8; 10] = b"sx00000000";

/// One worker's proxy engine.
pub struct Engine {
    /// Index of this worker.
    pub(crate) worker: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) wheel: Wheel<TimerItem>,
    pub(crate) txns: TxnTable,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) expired: Vec<(u64, TimerItem)>,
    /// Scratch for building messages before they are copied into an output.
    pub(crate) scratch: Vec<u8>,
    /// A second scratch buffer.
    pub(crate) scratch2: Vec<u8>,
    /// xorshift state for tags.
    pub(crate) rng: u64,
    /// Round-robin position for target groups.
    pub(crate) rr_pos: usize,
    /// Latency recorder of this worker (flushed to management about once a second).
    pub(crate) latency: LatencyRecorder,
    /// Time of the packet or timer being handled, in µs (latency only).
    pub(crate) now_us: u64,
    /// Malformed-packet warnings: when the current one-second window started, and how many
    /// were suppressed in it.
    pub(crate) warn_window: (u64, u64),
    /// Calls this worker originates for `dlg_bridge`.
    pub(crate) bridges: Vec<Option<super::bridge::BridgeCall>>,
    /// Generation counter of bridge slots.
    pub(crate) bridge_gen: u32,
    /// Dialog id generator of this worker.
    pub(crate) didgen: crate::dialog::id::DidGen,
    /// Requests this worker originated, in flight (BYE, REFER, CANCEL).
    pub(crate) generated: super::generated::GeneratedTable,
    /// Header spans of received messages with more than `wire::INLINE_HEADERS` header lines:
    /// grown once, then reused (no allocation per packet).
    pub(crate) header_spill: crate::wire::HeaderSpill,
    /// Overload control: this worker refuses new INVITEs (see `gate.rs`).
    pub(crate) overloaded: bool,
    /// Overload control: since when the queueing delay has been above the bound, ms.
    pub(crate) over_since_ms: Option<u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker", &self.worker)
            .field("txns", &self.txns.len())
            .field("timers", &self.wheel.len())
            .finish()
    }
}

impl Engine {
    /// The engine of worker `worker`, starting at engine time `now_ms`, with its randomness
    /// (tags, branches) derived from the boot tag and the worker: a given `Shared` replays
    /// exactly (tests, the simulation). `io` uses [`Engine::with_seed`] with OS randomness.
    pub fn new(shared: Arc<Shared>, worker: usize, now_ms: u64) -> Engine {
        let seed =
            ((shared.boot as u64) << 32) ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Engine::with_seed(shared, worker, now_ms, seed)
    }

    /// [`Engine::new`] with an injected random seed for tags and branches.
    pub fn with_seed(shared: Arc<Shared>, worker: usize, now_ms: u64, seed: u64) -> Engine {
        let stats = shared
            .worker_stats
            .get(worker)
            .cloned()
            .unwrap_or_else(|| Arc::new(WorkerStats::new(worker, crate::wire::KINDS)));
        let boot = shared.boot;
        let latency = shared.latency.recorder(now_ms);
        let mut engine = Engine {
            worker,
            shared,
            wheel: Wheel::with_capacity(now_ms, 4096),
            txns: TxnTable::default(),
            stats,
            expired: Vec::with_capacity(256),
            scratch: Vec::with_capacity(8192),
            scratch2: Vec::with_capacity(8192),
            rng: seed | 1,
            rr_pos: 0,
            latency,
            warn_window: (0, 0),
            now_us: now_ms * 1000,
            bridges: Vec::new(),
            bridge_gen: 0,
            didgen: crate::dialog::id::DidGen::new(worker, boot),
            generated: Default::default(),
            header_spill: crate::wire::HeaderSpill::new(),
            overloaded: false,
            over_since_ms: None,
        };
        engine.adopt_loaded();
        engine
    }

    /// Take over the dialogs loaded from the store (`loaded_boot` set) that this worker owns
    /// — those it created before the restart, and, on worker 0, those whose creating worker
    /// no longer exists: arm their expiry timers, and keep this worker's new ids above
    /// theirs. Called by [`Engine::new`]; cheap on an empty table.
    pub fn adopt_loaded(&mut self) {
        let workers = self.shared.workers;
        let mut arm = Vec::new();
        let mut max_h_id = None;
        self.shared.table.for_each(|id, d| {
            if d.loaded_boot().is_none() {
                return;
            }
            let owner = crate::dialog::id::worker_of(*id);
            if owner == self.worker {
                max_h_id = max_h_id.max(Some(id.h_id));
            }
            if owner == self.worker || (owner >= workers && self.worker == 0) {
                arm.push((
                    d.deadline_ms.load(std::sync::atomic::Ordering::Acquire),
                    d.clone(),
                ));
            }
        });
        for (at, d) in arm {
            self.arm_dialog_timer(&d, at);
        }
        if let Some(h) = max_h_id {
            self.didgen.advance_past(h);
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Live INVITE transactions owned by this worker.
    pub fn txn_count(&self) -> usize {
        self.txns.len()
    }

    /// Handle one received message (a UDP datagram or a framed TCP message).
    pub fn handle_datagram(&mut self, inb: Inbound<'_>, out: &mut Output) {
        self.now_us = inb.now_us;
        if self.banned_early(&inb) {
            return;
        }
        let mut spill = std::mem::take(&mut self.header_spill);
        let parsed = match inb.transport {
            Transport::Udp => wire::parse_with(inb.bytes, &mut spill),
            Transport::Tcp => {
                wire::parse_stream_message_with(inb.bytes, inb.bytes.len(), &mut spill)
            }
        };
        match parsed {
            Ok(msg) if msg.is_request() => self.on_request(&inb, &msg, out),
            Ok(msg) => self.on_response(&inb, &msg, out),
            Err(e) => self.on_parse_error(&inb, e, out),
        }
        self.header_spill = spill;
    }

    /// Fire every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64, out: &mut Output) {
        self.now_us = now_ms * 1000;
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.wheel.poll(now_ms, &mut expired);
        for (_, item) in expired.drain(..) {
            self.on_timer(now_ms, item, out);
        }
        self.expired = expired;
    }

    /// When [`Engine::handle_timeout`] should be called next (engine ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    /// Handle a command from another thread.
    pub fn handle_command(&mut self, now_ms: u64, now_us: u64, cmd: Command, out: &mut Output) {
        match cmd {
            Command::Terminate {
                id,
                side,
                reason,
                extra_hdrs,
            } => {
                if let Some(d) = self.shared.table.get(id) {
                    self.terminate(
                        now_ms,
                        &d,
                        side,
                        reason.as_bytes(),
                        extra_hdrs.as_bytes(),
                        out,
                    );
                }
            }
            Command::Refer { id, side, address } => {
                if let Some(d) = self.shared.table.get(id) {
                    self.refer(now_ms, &d, side, &address, out);
                }
            }
            Command::Bridge { from, to, op } => {
                if let Err(e) = self.start_bridge(now_ms, &from, &to, op.as_deref(), out) {
                    tracing::warn!(error = %e, "dlg_bridge not started");
                }
            }
            Command::Rearm(id) => {
                if let Some(d) = self.shared.table.get(id) {
                    self.retime_local(&d);
                }
            }
            Command::Retime(d) => self.retime_local(&d),
            Command::Packet {
                src,
                local,
                transport,
                conn,
                bytes,
                from,
            } => {
                self.stats.inc(Counter::HandoffIn);
                let inb = Inbound {
                    now_ms,
                    now_us,
                    src,
                    local,
                    transport,
                    conn,
                    bytes: &bytes,
                };
                self.handle_datagram(inb, out);
                // A handed-off packet is never handed off again.
                out.handoff = None;
                self.shared.recycle(from, bytes);
            }
        }
    }

    /// Record the processing time of one packet (µs), from receive to hand-off to send.
    pub fn record_packet_us(&mut self, us: u64) {
        self.latency.record(LatencyMetric::Packet, us);
    }

    /// Record how long one flush of the output (the send syscalls) took, µs.
    pub fn record_send_us(&mut self, us: u64) {
        self.latency.record(LatencyMetric::Send, us);
    }

    /// Hand this worker's histograms to management if a second has passed.
    pub fn flush_latency(&mut self, now_ms: u64) {
        self.latency.maybe_flush(now_ms);
    }

    /// Log a malformed packet, at most once per second per worker (the rest are counted in
    /// the parse-error statistics and summarised in the next warning).
    pub(crate) fn warn_malformed(
        &mut self,
        inb: &Inbound<'_>,
        e: crate::wire::ParseError,
        call_id: Option<&[u8]>,
    ) {
        let (start, suppressed) = self.warn_window;
        if inb.now_ms < start.saturating_add(1000) && start != 0 {
            self.warn_window.1 = suppressed + 1;
            return;
        }
        self.warn_window = (inb.now_ms.max(1), 0);
        let call_id = call_id.map(String::from_utf8_lossy);
        tracing::warn!(
            src = %inb.src,
            kind = e.kind(),
            status = e.status(),
            call_id = call_id.as_deref().unwrap_or(""),
            suppressed,
            "malformed SIP message"
        );
    }

    /// The To-tag of a reply we generate for `msg` without a transaction (policy replies,
    /// 404/503 for unroutable requests): derived from Call-ID and From-tag, so the ACK of such a
    /// reply is recognised and absorbed without state (like Kamailio's `sl`).
    pub(crate) fn local_tag(&self, msg: &crate::wire::ValidRequest<'_, '_>) -> [u8; 10] {
        self.local_tag_of(msg.call_id(), msg.from_tag_or_empty())
    }

    /// [`Engine::local_tag`] from the Call-ID and From-tag (empty when absent), for a reply to
    /// a request refused before validation (flood control) too.
    pub(crate) fn local_tag_of(&self, call_id: &[u8], ftag: &[u8]) -> [u8; 10] {
        let boot = self.shared.boot.to_le_bytes();
        let mut h = crate::txn::branch::hash(&[call_id, ftag, &boot]);
        let mut t = *LOCAL_TAG_PREFIX_BUF;
        for c in t.iter_mut().skip(LOCAL_TAG_PREFIX.len()) {
            *c = b"0123456789abcdef"[(h & 15) as usize];
            h >>= 4;
        }
        t
    }

    /// Next pseudo-random number (tags, branch salts). Not cryptographic.
    pub(crate) fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// 8 random lowercase hex characters (To-tags we generate).
    pub(crate) fn new_tag(&mut self) -> [u8; 8] {
        let mut v = self.next_rand();
        let mut t = [0u8; 8];
        for c in t.iter_mut() {
            *c = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
        }
        t
    }

    /// Shutdown: end every dialog this worker owns (state `Deleted`, reason `shutdown`, stats
    /// and profile releases applied once, callbacks fired) and drop its transactions. No BYE
    /// is sent: the calls themselves continue without the proxy's tracking.
    pub fn shutdown(&mut self, now_ms: u64, out: &mut Output) {
        let mut mine = Vec::new();
        self.shared.table.for_each(|id, d| {
            if crate::dialog::id::worker_of(*id) == self.worker {
                mine.push(d.clone());
            }
        });
        for d in mine {
            self.end_dialog(
                now_ms,
                &d,
                crate::dialog::EndReason::Shutdown,
                None,
                super::dialogs::Removal::Now,
                out,
            );
        }
        let slots: Vec<u32> = self.txns.slots().collect();
        for s in slots {
            if let Some(mut t) = self.remove_txn(s) {
                for k in t.take_keys() {
                    self.wheel.cancel(k);
                }
            }
        }
    }
}
