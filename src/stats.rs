//! Per-worker counters and latency recorders, and the management-side view of them.
//!
//! Owns [`WorkerStats`] (relaxed atomic counters, one `Arc` per worker, written only by its
//! worker and read by management), [`LatencyRecorder`] (hdrhistogram recorders owned by one
//! worker thread, no lock), and [`LatencyHub`] (the management side that merges flushed
//! histograms on read into a [`LatencySnapshot`]).
//!
//! ## Invariants
//! - Every packet-path operation (`inc`, `add`, `inc_parse_error`, `inc_reply`, `record`) is
//!   O(1), allocation-free and cannot panic: indices out of range fold into an "other" slot.
//! - Each `WorkerStats` has exactly one writer, its worker: increments are relaxed
//!   load + store, not locked RMW (measured in `benches/stats.rs`). Management only reads.
//! - Counters are monotonic (Prometheus counters); [`WorkerStats::reset`] only moves a
//!   management-side baseline, so it cannot lose or race with increments.
//! - A worker flushes its histograms at most once per [`FLUSH_INTERVAL_MS`]. Flushing swaps in an
//!   emptied set recycled by the hub, so steady state allocates nothing; if no recycled set is
//!   available one set is allocated, i.e. at most one allocation per flush.
//! - The flush channel is bounded: when management does not read, workers keep accumulating
//!   locally instead of queueing memory.
//! - Sans-IO: no clock is read here; `now_ms` is an argument.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

/// A packet-path counter. The discriminant indexes the counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Counter {
    /// UDP datagrams received.
    PacketsInUdp,
    /// TCP messages received.
    PacketsInTcp,
    /// UDP datagrams sent.
    PacketsOutUdp,
    /// TCP messages sent.
    PacketsOutTcp,
    /// SIP requests received.
    RequestsIn,
    /// SIP responses received.
    ResponsesIn,
    /// Retransmissions absorbed (not forwarded again).
    RetransAbsorbed,
    /// Retransmissions we sent (Timer A etc.).
    RetransSent,
    /// Packets dropped (any reason other than a parse error).
    Dropped,
    /// TCP connections accepted.
    TcpAccepted,
    /// TCP connections we opened.
    TcpConnected,
    /// TCP connections closed.
    TcpClosed,
    /// Requests forwarded downstream.
    Forwarded,
    /// Responses relayed upstream.
    Relayed,
    /// Packets handed to the worker that owns their transaction.
    HandoffIn,
    /// Responses whose top Via is not ours (dropped).
    NotOurs,
    /// CANCELs that match no INVITE transaction, live or recently ended (dropped).
    CancelUnmatched,
    /// In-dialog requests whose did did not match Call-ID and tags (routed, dialog untouched).
    DialogMismatch,
    /// ACKs of non-2xx finals absorbed.
    AckAbsorbed,
    /// Late or duplicate responses absorbed.
    Absorbed,
    /// BYEs generated (termination, expiry).
    ByeSent,
    /// INVITE branches given up by Timer B or C.
    TxnTimeout,
    /// UDP receive batches that came back full: at least a batch of datagrams had queued in
    /// the socket, so the worker is behind (busy, or waiting for its core).
    FullBatches,
    /// Cross-worker commands that could not be queued (the target's queue was full).
    CommandsDropped,
    /// Requests the proxy originated (BYE, REFER) that got a final response.
    GeneratedAnswered,
    /// Requests the proxy originated that got no final response before Timer F.
    GeneratedTimedOut,
    /// Out-of-dialog requests refused because their source is banned (`[flood]`).
    RefusedBanned,
    /// Out-of-dialog requests refused because their source went over `per_source_rps`.
    RefusedSourceRate,
    /// Out-of-dialog requests refused by a rate pipe (`[[flood.pipe]]`).
    RefusedPipe,
    /// Initial requests refused by a per-profile call rate (`limit` with `rate`).
    RefusedProfileRate,
    /// Requests dropped by a rule's `drop` action.
    RefusedPolicyDrop,
    /// New INVITEs refused at the `[limits] max_transactions` cap.
    RefusedTxnCap,
    /// New INVITEs refused at the `[limits] max_request_memory` cap.
    RefusedMemoryCap,
    /// New INVITEs refused while the worker was overloaded (`[overload]`).
    RefusedOverload,
    /// Sources banned by flood control.
    FloodBans,
    /// Requests admitted uncounted because the per-source table was crowded.
    FloodUntracked,
    /// INVITE transactions created (live = opened - closed).
    TxnsOpened,
    /// INVITE transactions freed.
    TxnsClosed,
    /// Bytes of requests taken into transactions (held = held - released).
    TxnBytesHeld,
    /// Bytes of requests released by freed transactions.
    TxnBytesReleased,
    /// TCP connections refused (reset at once) because `tcp_max_connections` were open.
    TcpRefusedGlobal,
    /// TCP connections refused (reset at once) because `tcp_max_per_peer` were open from the
    /// peer's address.
    TcpRefusedPerPeer,
    /// TCP connections reset because a message was not complete `tcp_message_timeout` after
    /// its first byte (slowloris).
    TcpMessageTimeouts,
    /// Errors from accepting TCP connections (e.g. out of descriptors); the listener pauses.
    TcpAcceptErrors,
    /// Panics caught in this worker while it handled one packet, hand-off, timer or command
    /// (the worker went on without it).
    WorkerPanics,
    /// Transactions (INVITE and generated requests) lost when this worker died and was
    /// replaced: counted by the replacement.
    TxnsLost,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: usize = 46;
    /// All counters in index order.
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::PacketsInUdp,
        Counter::PacketsInTcp,
        Counter::PacketsOutUdp,
        Counter::PacketsOutTcp,
        Counter::RequestsIn,
        Counter::ResponsesIn,
        Counter::RetransAbsorbed,
        Counter::RetransSent,
        Counter::Dropped,
        Counter::TcpAccepted,
        Counter::TcpConnected,
        Counter::TcpClosed,
        Counter::Forwarded,
        Counter::Relayed,
        Counter::HandoffIn,
        Counter::NotOurs,
        Counter::CancelUnmatched,
        Counter::DialogMismatch,
        Counter::AckAbsorbed,
        Counter::Absorbed,
        Counter::ByeSent,
        Counter::TxnTimeout,
        Counter::FullBatches,
        Counter::CommandsDropped,
        Counter::GeneratedAnswered,
        Counter::GeneratedTimedOut,
        Counter::RefusedBanned,
        Counter::RefusedSourceRate,
        Counter::RefusedPipe,
        Counter::RefusedProfileRate,
        Counter::RefusedPolicyDrop,
        Counter::RefusedTxnCap,
        Counter::RefusedMemoryCap,
        Counter::RefusedOverload,
        Counter::FloodBans,
        Counter::FloodUntracked,
        Counter::TxnsOpened,
        Counter::TxnsClosed,
        Counter::TxnBytesHeld,
        Counter::TxnBytesReleased,
        Counter::TcpRefusedGlobal,
        Counter::TcpRefusedPerPeer,
        Counter::TcpMessageTimeouts,
        Counter::TcpAcceptErrors,
        Counter::WorkerPanics,
        Counter::TxnsLost,
    ];

    /// Stable snake_case name used in `stats.*` RPCs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsInUdp => "packets_in_udp",
            Counter::PacketsInTcp => "packets_in_tcp",
            Counter::PacketsOutUdp => "packets_out_udp",
            Counter::PacketsOutTcp => "packets_out_tcp",
            Counter::RequestsIn => "requests_in",
            Counter::ResponsesIn => "responses_in",
            Counter::RetransAbsorbed => "retransmissions_absorbed",
            Counter::RetransSent => "retransmissions_sent",
            Counter::Dropped => "dropped",
            Counter::TcpAccepted => "tcp_accepted",
            Counter::TcpConnected => "tcp_connected",
            Counter::TcpClosed => "tcp_closed",
            Counter::Forwarded => "forwarded",
            Counter::Relayed => "relayed",
            Counter::HandoffIn => "handoff_in",
            Counter::NotOurs => "not_ours",
            Counter::CancelUnmatched => "cancels_unmatched",
            Counter::DialogMismatch => "dialog_mismatch",
            Counter::AckAbsorbed => "ack_absorbed",
            Counter::Absorbed => "absorbed",
            Counter::ByeSent => "bye_sent",
            Counter::TxnTimeout => "txn_timeout",
            Counter::FullBatches => "udp_full_batches",
            Counter::CommandsDropped => "commands_dropped",
            Counter::GeneratedAnswered => "generated_answered",
            Counter::GeneratedTimedOut => "generated_timed_out",
            Counter::RefusedBanned => "refused_banned",
            Counter::RefusedSourceRate => "refused_source_rate",
            Counter::RefusedPipe => "refused_pipe",
            Counter::RefusedProfileRate => "refused_profile_rate",
            Counter::RefusedPolicyDrop => "refused_policy_drop",
            Counter::RefusedTxnCap => "refused_transactions",
            Counter::RefusedMemoryCap => "refused_request_memory",
            Counter::RefusedOverload => "refused_overload",
            Counter::FloodBans => "flood_bans",
            Counter::FloodUntracked => "flood_untracked",
            Counter::TxnsOpened => "transactions_opened",
            Counter::TxnsClosed => "transactions_closed",
            Counter::TxnBytesHeld => "transaction_bytes_held",
            Counter::TxnBytesReleased => "transaction_bytes_released",
            Counter::TcpRefusedGlobal => "tcp_refused_global",
            Counter::TcpRefusedPerPeer => "tcp_refused_per_peer",
            Counter::TcpMessageTimeouts => "tcp_message_timeouts",
            Counter::TcpAcceptErrors => "tcp_accept_errors",
            Counter::WorkerPanics => "worker_panics",
            Counter::TxnsLost => "transactions_lost",
        }
    }
}

/// Number of parse-error slots; the last one is "other".
pub const PARSE_ERROR_SLOTS: usize = 32;

/// Reply codes counted individually; everything else is counted as "other".
pub const REPLY_CODES: [u16; 18] = [
    100, 180, 200, 400, 403, 404, 408, 416, 420, 480, 481, 482, 483, 486, 487, 500, 503, 505,
];

/// Labels of the reply slots, in slot order ("other" last).
pub const REPLY_LABELS: [&str; REPLY_SLOTS] = [
    "100", "180", "200", "400", "403", "404", "408", "416", "420", "480", "481", "482", "483",
    "486", "487", "500", "503", "505", "other",
];

const REPLY_SLOTS: usize = REPLY_CODES.len() + 1;

/// Slot index of a reply code (O(1), a jump table); unknown codes map to the "other" slot.
#[inline]
pub const fn reply_slot(code: u16) -> usize {
    match code {
        100 => 0,
        180 => 1,
        200 => 2,
        400 => 3,
        403 => 4,
        404 => 5,
        408 => 6,
        416 => 7,
        420 => 8,
        480 => 9,
        481 => 10,
        482 => 11,
        483 => 12,
        486 => 13,
        487 => 14,
        500 => 15,
        503 => 16,
        505 => 17,
        _ => REPLY_SLOTS - 1,
    }
}

const PARSE_BASE: usize = Counter::COUNT;
const REPLY_BASE: usize = PARSE_BASE + PARSE_ERROR_SLOTS;
const CELLS: usize = REPLY_BASE + REPLY_SLOTS;

/// One worker's counters. Shared as `Arc<WorkerStats>` between the worker (the only writer)
/// and management (reader). The cells are cache-padded so workers never false-share.
///
/// Single writer: increments are a relaxed load + store (no locked read-modify-write), so
/// they must only be made by the owning worker thread. Management never writes the cells:
/// [`WorkerStats::reset`] records a baseline that snapshots subtract.
pub struct WorkerStats {
    worker: usize,
    parse_error_names: &'static [&'static str],
    cells: CachePadded<[AtomicU64; CELLS]>,
    baseline: [AtomicU64; CELLS],
    health: WorkerHealth,
}

/// Liveness of one worker: written by `io` (the worker loop and the supervisor that restarts a
/// dead worker), read by management (`/health`, metrics). Not reset by `reset`.
#[derive(Debug)]
pub struct WorkerHealth {
    alive: AtomicBool,
    restarts: AtomicU64,
    beat_ms: AtomicU64,
}

impl Default for WorkerHealth {
    fn default() -> Self {
        WorkerHealth {
            alive: AtomicBool::new(true),
            restarts: AtomicU64::new(0),
            beat_ms: AtomicU64::new(0),
        }
    }
}

impl WorkerHealth {
    /// Whether the worker thread is running (true from construction until it dies).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
    /// Mark the worker running or dead.
    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }
    /// How many times the worker was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    /// Count one restart.
    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    /// Monotonic milliseconds of the worker's last loop turn (0 = never).
    pub fn beat_ms(&self) -> u64 {
        self.beat_ms.load(Ordering::Relaxed)
    }
    /// Record a loop turn at `now_ms`.
    pub fn beat(&self, now_ms: u64) {
        self.beat_ms.store(now_ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerStats")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// Plain values of one worker's counters, taken by management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Worker index.
    pub worker: usize,
    /// Counter values in [`Counter::ALL`] order.
    pub counters: [u64; Counter::COUNT],
    /// Parse errors by kind name (registered names, then "other").
    pub parse_errors: Vec<(&'static str, u64)>,
    /// Generated replies by code label ([`REPLY_LABELS`] order).
    pub replies: [u64; REPLY_SLOTS],
}

impl WorkerSnapshot {
    /// Value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }
}

impl WorkerStats {
    /// New zeroed counters for worker `worker`. `parse_error_names[i]` names parse-error kind
    /// `i`; at most `PARSE_ERROR_SLOTS - 1` names are used, later kinds count as "other".
    pub fn new(worker: usize, parse_error_names: &'static [&'static str]) -> Self {
        let keep = parse_error_names.len().min(PARSE_ERROR_SLOTS - 1);
        WorkerStats {
            worker,
            parse_error_names: parse_error_names.get(..keep).unwrap_or(&[]),
            cells: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            baseline: std::array::from_fn(|_| AtomicU64::new(0)),
            health: WorkerHealth::default(),
        }
    }

    /// The worker's liveness record.
    pub fn health(&self) -> &WorkerHealth {
        &self.health
    }

    /// Worker index given at construction.
    pub fn worker(&self) -> usize {
        self.worker
    }

    #[inline]
    fn bump(&self, idx: usize, n: u64) {
        if let Some(cell) = self.cells.get(idx) {
            // Single writer (the owning worker): no locked RMW needed.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    fn value(&self, idx: usize) -> u64 {
        let raw = self.cells.get(idx).map_or(0, |a| a.load(Ordering::Relaxed));
        let base = self
            .baseline
            .get(idx)
            .map_or(0, |a| a.load(Ordering::Relaxed));
        raw.wrapping_sub(base)
    }

    /// Increment a counter by one. Owning worker only.
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.bump(c as usize, 1);
    }

    /// Add `n` to a counter. Owning worker only.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.bump(c as usize, n);
    }

    /// Current value of a counter (since the last reset).
    pub fn get(&self, c: Counter) -> u64 {
        self.value(c as usize)
    }

    /// Count a parse error of kind `kind` (an index into the names given to [`Self::new`]);
    /// unknown kinds count as "other". Owning worker only.
    #[inline]
    pub fn inc_parse_error(&self, kind: usize) {
        let slot = if kind < self.parse_error_names.len() {
            kind
        } else {
            PARSE_ERROR_SLOTS - 1
        };
        self.bump(PARSE_BASE + slot, 1);
    }

    /// Count a reply we generated locally with status `code`. Owning worker only.
    #[inline]
    pub fn inc_reply(&self, code: u16) {
        self.bump(REPLY_BASE + reply_slot(code), 1);
    }

    /// Take a plain copy of all values (management side; allocates).
    pub fn snapshot(&self) -> WorkerSnapshot {
        let mut parse_errors: Vec<(&'static str, u64)> = self
            .parse_error_names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, self.value(PARSE_BASE + i)))
            .collect();
        parse_errors.push(("other", self.value(PARSE_BASE + PARSE_ERROR_SLOTS - 1)));
        WorkerSnapshot {
            worker: self.worker,
            counters: std::array::from_fn(|i| self.value(i)),
            parse_errors,
            replies: std::array::from_fn(|i| self.value(REPLY_BASE + i)),
        }
    }

    /// Zero every counter as seen by [`Self::get`]/[`Self::snapshot`]
    /// (`stats.reset_statistics`). Management side; never races with the writer.
    pub fn reset(&self) {
        for (cell, base) in self.cells.iter().zip(self.baseline.iter()) {
            base.store(cell.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Sum of several workers' snapshots (same parse-error names assumed; matched by name).
pub fn sum_snapshots(snaps: &[WorkerSnapshot]) -> WorkerSnapshot {
    let mut total = WorkerSnapshot {
        worker: usize::MAX,
        counters: [0; Counter::COUNT],
        parse_errors: Vec::new(),
        replies: [0; REPLY_SLOTS],
    };
    for s in snaps {
        for (t, v) in total.counters.iter_mut().zip(s.counters.iter()) {
            *t += v;
        }
        for (t, v) in total.replies.iter_mut().zip(s.replies.iter()) {
            *t += v;
        }
        for (name, v) in &s.parse_errors {
            match total.parse_errors.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += v,
                None => total.parse_errors.push((name, *v)),
            }
        }
    }
    total
}

/// How often a worker hands its histograms to management.
pub const FLUSH_INTERVAL_MS: u64 = 1_000;
/// Highest recordable latency in µs (60 s); larger values are clamped.
pub const LATENCY_MAX_US: u64 = 60_000_000;
const SIGFIG: u8 = 3;

/// A latency metric recorded per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum LatencyMetric {
    /// Processing time of one packet, µs.
    Packet,
    /// INVITE received → first provisional response forwarded, µs.
    InviteToProvisional,
    /// INVITE received → final response forwarded, µs.
    InviteToFinal,
    /// One flush of a worker's output (`sendmmsg` and TCP writes), µs. Part of `Packet`; on
    /// loopback it includes delivery to the receiver and whatever softirq work the kernel
    /// runs in the sender's context, so it separates kernel time from proxy work.
    Send,
}

impl LatencyMetric {
    /// Number of metrics.
    pub const COUNT: usize = 4;
    /// All metrics in index order.
    pub const ALL: [LatencyMetric; LatencyMetric::COUNT] = [
        LatencyMetric::Packet,
        LatencyMetric::InviteToProvisional,
        LatencyMetric::InviteToFinal,
        LatencyMetric::Send,
    ];

    /// Stable name used in `stats.latency` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            LatencyMetric::Packet => "packet_processing",
            LatencyMetric::InviteToProvisional => "invite_to_provisional",
            LatencyMetric::InviteToFinal => "invite_to_final",
            LatencyMetric::Send => "send",
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (checked by a unit test); failure is impossible.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGFIG).expect("constant histogram bounds")
}

/// One histogram per [`LatencyMetric`], all with the same bounds.
#[derive(Debug, Clone)]
pub struct LatencySet {
    hists: [Histogram<u64>; LatencyMetric::COUNT],
}

impl Default for LatencySet {
    fn default() -> Self {
        LatencySet {
            hists: std::array::from_fn(|_| new_histogram()),
        }
    }
}

impl LatencySet {
    /// The histogram of one metric.
    pub fn get(&self, m: LatencyMetric) -> &Histogram<u64> {
        // `m as usize < COUNT` by construction of the enum.
        &self.hists[m as usize]
    }

    /// Record one value (µs); clamps to [`LATENCY_MAX_US`]. O(1), no allocation.
    #[inline]
    pub fn record(&mut self, m: LatencyMetric, us: u64) {
        if let Some(h) = self.hists.get_mut(m as usize) {
            h.saturating_record(us);
        }
    }

    /// Add every count of `other` into `self`.
    pub fn merge(&mut self, other: &LatencySet) {
        for (a, b) in self.hists.iter_mut().zip(other.hists.iter()) {
            // Same bounds on both sides, so `add` cannot fail.
            let _ = a.add(b);
        }
    }

    fn reset(&mut self) {
        for h in &mut self.hists {
            h.reset();
        }
    }

    fn is_empty(&self) -> bool {
        self.hists.iter().all(|h| h.is_empty())
    }
}

/// Percentiles of one metric, in µs, as returned by `stats.latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Largest value seen.
    pub max: u64,
    /// Number of values.
    pub count: u64,
}

/// Merged latency histograms of all workers since start (or the last reset).
#[derive(Debug, Clone, Default)]
pub struct LatencySnapshot {
    /// The merged histograms.
    pub set: LatencySet,
}

impl LatencySnapshot {
    /// Percentile summary of one metric.
    pub fn summary(&self, m: LatencyMetric) -> LatencySummary {
        let h = self.set.get(m);
        let q = |x: f64| h.value_at_quantile(x);
        LatencySummary {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// Worker-side latency recorder. Owned by one worker thread; recording takes `&mut self`.
#[derive(Debug)]
pub struct LatencyRecorder {
    local: LatencySet,
    tx: Sender<LatencySet>,
    spares: Receiver<LatencySet>,
    next_flush_ms: u64,
}

impl LatencyRecorder {
    /// Record one latency value in µs. O(1), allocation-free.
    #[inline]
    pub fn record(&mut self, m: LatencyMetric, us: u64) {
        self.local.record(m, us);
    }

    /// Flush to management if [`FLUSH_INTERVAL_MS`] has passed since the last flush.
    /// Returns true when a set was handed over.
    #[inline]
    pub fn maybe_flush(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_flush_ms {
            return false;
        }
        self.next_flush_ms = now_ms.saturating_add(FLUSH_INTERVAL_MS);
        self.flush()
    }

    /// Hand the local histograms to management now (e.g. at shutdown). Returns true when a
    /// set was handed over; false when there was nothing to send, the channel was full, or no
    /// emptied set is back from management yet (values keep accumulating locally: the
    /// worker never allocates a set).
    pub fn flush(&mut self) -> bool {
        if self.local.is_empty() || self.tx.is_full() {
            return false;
        }
        let Ok(fresh) = self.spares.try_recv() else {
            return false;
        };
        let full = std::mem::replace(&mut self.local, fresh);
        match self.tx.try_send(full) {
            Ok(()) => true,
            Err(TrySendError::Full(full) | TrySendError::Disconnected(full)) => {
                // Keep accumulating locally; the unused fresh set is simply dropped.
                self.local = full;
                false
            }
        }
    }
}

/// Management side of the latency histograms: hands out recorders and merges their flushes.
#[derive(Debug)]
pub struct LatencyHub {
    tx: Sender<LatencySet>,
    rx: Receiver<LatencySet>,
    spare_tx: Sender<LatencySet>,
    spare_rx: Receiver<LatencySet>,
    total: Mutex<LatencySet>,
}

impl Default for LatencyHub {
    fn default() -> Self {
        Self::new(64)
    }
}

impl LatencyHub {
    /// A hub whose flush queue holds at most `queue` pending sets (across all workers).
    pub fn new(queue: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(queue.max(1));
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(queue.max(1));
        LatencyHub {
            tx,
            rx,
            spare_tx,
            spare_rx,
            total: Mutex::new(LatencySet::default()),
        }
    }

    /// A recorder for one worker; its first flush happens at `now_ms + FLUSH_INTERVAL_MS`.
    /// Tops the spare queue up to its capacity here, off the packet path, so flushes only
    /// swap in sets allocated now or recycled by [`LatencyHub::snapshot`].
    pub fn recorder(&self, now_ms: u64) -> LatencyRecorder {
        while !self.spare_tx.is_full() {
            if self.spare_tx.try_send(LatencySet::default()).is_err() {
                break;
            }
        }
        LatencyRecorder {
            local: LatencySet::default(),
            tx: self.tx.clone(),
            spares: self.spare_rx.clone(),
            next_flush_ms: now_ms.saturating_add(FLUSH_INTERVAL_MS),
        }
    }

    /// Merge every pending flush and return the totals since start (or the last reset).
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = match self.total.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Ok(mut set) = self.rx.try_recv() {
            total.merge(&set);
            set.reset();
            // Recycle; if the spare queue is full the set is dropped.
            let _ = self.spare_tx.try_send(set);
        }
        LatencySnapshot { set: total.clone() }
    }

    /// Forget everything merged so far (pending flushes are discarded too).
    pub fn reset(&self) {
        let _ = self.snapshot();
        if let Ok(mut g) = self.total.lock() {
            g.reset();
        }
    }
}

/// Counters of the dialog store's writer (`io::persist`): written by the writer thread (and,
/// for `dropped`, by the workers' observer), read by management. All relaxed atomics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Whether a store is configured (metrics show these counters only then).
    pub enabled: AtomicBool,
    /// Records written (upserts).
    pub written: AtomicU64,
    /// Records deleted.
    pub deleted: AtomicU64,
    /// Committed batches.
    pub flushes: AtomicU64,
    /// Failed write attempts (a batch that failed and is retried counts once per attempt).
    pub errors: AtomicU64,
    /// Write attempts that retried a batch after a failure.
    pub retries: AtomicU64,
    /// Changes dropped because the queue or the retained batch was full.
    pub dropped: AtomicU64,
    /// 1 while writes are failing (from the first failure until a batch is written again).
    pub failing: AtomicU64,
    /// Dialogs whose change waits to be written (the retained batch).
    pub pending: AtomicU64,
}

/// Plain values of [`StoreStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Records written.
    pub written: u64,
    /// Records deleted.
    pub deleted: u64,
    /// Committed batches.
    pub flushes: u64,
    /// Failed write attempts.
    pub errors: u64,
    /// Retried write attempts.
    pub retries: u64,
    /// Changes dropped.
    pub dropped: u64,
    /// Whether writes are failing now.
    pub failing: bool,
    /// Dialogs waiting to be written.
    pub pending: u64,
}

impl StoreStats {
    /// The values now, or `None` when no store is configured.
    pub fn snapshot(&self) -> Option<StoreSnapshot> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.enabled.load(Ordering::Relaxed).then(|| StoreSnapshot {
            written: r(&self.written),
            deleted: r(&self.deleted),
            flushes: r(&self.flushes),
            errors: r(&self.errors),
            retries: r(&self.retries),
            dropped: r(&self.dropped),
            failing: r(&self.failing) != 0,
            pending: r(&self.pending),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static KINDS: &[&str] = &["bad_start_line", "bad_header"];

    #[test]
    fn counters_parse_errors_and_replies_fold_unknowns_into_other() {
        let w = WorkerStats::new(3, KINDS);
        w.inc(Counter::PacketsInUdp);
        w.add(Counter::Forwarded, 2);
        w.inc_parse_error(1);
        w.inc_parse_error(99); // unknown kind -> other
        w.inc_reply(486);
        w.inc_reply(299); // not in the fixed set -> other
        let s = w.snapshot();
        assert_eq!((s.worker, s.get(Counter::PacketsInUdp)), (3, 1));
        assert_eq!(s.get(Counter::Forwarded), 2);
        let expect = vec![("bad_start_line", 0), ("bad_header", 1), ("other", 1)];
        assert_eq!(s.parse_errors, expect);
        assert_eq!(s.replies[reply_slot(486)], 1);
        assert_eq!(s.replies[REPLY_SLOTS - 1], 1);
        assert_eq!(REPLY_LABELS[reply_slot(486)], "486");
        for (i, c) in REPLY_CODES.iter().enumerate() {
            assert_eq!(reply_slot(*c), i);
        }
        let total = sum_snapshots(&[s.clone(), s]);
        assert_eq!(total.get(Counter::Forwarded), 4);
        assert_eq!(total.parse_errors[1], ("bad_header", 2));
        w.reset();
        assert_eq!(w.get(Counter::Forwarded), 0);
        w.inc_reply(486);
        let s = w.snapshot();
        assert_eq!((s.replies[reply_slot(486)], s.parse_errors[1].1), (1, 0));
    }

    #[test]
    fn recorder_flushes_once_per_interval_and_hub_merges() {
        let hub = LatencyHub::new(4);
        let mut a = hub.recorder(0);
        let mut b = hub.recorder(0);
        for us in 1..=100 {
            a.record(LatencyMetric::Packet, us);
        }
        b.record(LatencyMetric::InviteToFinal, LATENCY_MAX_US * 10); // clamped
        assert!(!a.maybe_flush(999), "too early");
        assert!(a.maybe_flush(1000));
        assert!(!a.maybe_flush(1500), "at most one flush per interval");
        assert!(b.maybe_flush(1000));
        let snap = hub.snapshot();
        let p = snap.summary(LatencyMetric::Packet);
        assert_eq!((p.count, p.p50, p.max), (100, 50, 100));
        let f = snap.summary(LatencyMetric::InviteToFinal);
        assert_eq!(f.count, 1);
        assert!(f.max >= LATENCY_MAX_US);
        // The flushed set came back emptied and is reused by the next flush.
        a.record(LatencyMetric::Packet, 7);
        assert!(a.maybe_flush(2000));
        assert_eq!(hub.snapshot().summary(LatencyMetric::Packet).count, 101);
        hub.reset();
        assert_eq!(hub.snapshot().summary(LatencyMetric::Packet).count, 0);
    }

    #[test]
    fn full_queue_keeps_values_local_instead_of_losing_them() {
        let hub = LatencyHub::new(1);
        let mut r = hub.recorder(0);
        r.record(LatencyMetric::Packet, 5);
        assert!(r.flush());
        r.record(LatencyMetric::Packet, 6);
        assert!(!r.flush(), "queue full: keep accumulating");
        assert_eq!(hub.snapshot().summary(LatencyMetric::Packet).count, 1);
        assert!(r.flush());
        assert_eq!(hub.snapshot().summary(LatencyMetric::Packet).count, 2);
    }

    #[test]
    fn flushes_circulate_sets_made_at_recorder_creation() {
        let hub = LatencyHub::new(3);
        let mut r = hub.recorder(0);
        assert_eq!(hub.spare_rx.len(), 3, "spares made off the packet path");
        let _second = hub.recorder(0);
        assert_eq!(hub.spare_rx.len(), 3, "topped up to capacity, not beyond");
        r.record(LatencyMetric::Packet, 1);
        assert!(r.flush());
        assert_eq!(
            (hub.spare_rx.len(), hub.rx.len()),
            (2, 1),
            "a spare swapped in"
        );
        assert_eq!(hub.snapshot().summary(LatencyMetric::Packet).count, 1);
        assert_eq!(
            (hub.spare_rx.len(), hub.rx.len()),
            (3, 0),
            "merged set recycled"
        );
    }
}
