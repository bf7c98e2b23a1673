//! Prometheus text exposition (`GET /metrics`) rendered from backend snapshots.
//!
//! Owns the metric names and [`render`]. One scrape takes one snapshot of every source
//! (dialog stats, profiles, worker counters, merged latency histograms) into a
//! [`MetricsSnapshot`], which is encoded with `prometheus-client`'s Prometheus text (0.0.4)
//! encoder through a [`Collector`].
//!
//! ## Invariants
//! - Counters are monotonic and carry the `_total` suffix (prometheus-client convention);
//!   gauges do not.
//! - Profile sizes are capped to the backend's [`MgmtBackend::metrics_top_n`] largest values
//!   per profile (`[mgmt] metrics_top_n`) to bound cardinality; it is read at every scrape, so
//!   a reload applies to the next one.
//! - Latency histograms use the fixed µs bucket bounds [`LATENCY_BUCKETS_US`], derived from
//!   the hdr histogram counts: an hdr bin is counted in the first bucket whose bound is at or
//!   above the bin's lowest value (error below the hdr precision, 0.1%). `_sum` is the hdr
//!   mean × count (hdr keeps no exact sum).
//! - The management listener's own counters ([`LISTENER`]) are process-wide atomics written by
//!   the listener (`io::mgmt_http`) and read at every scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::model::DialogStats;
use crate::stats::{
    Counter, LatencyMetric, LatencySnapshot, REPLY_LABELS, StoreSnapshot, WorkerSnapshot,
    sum_snapshots,
};

/// Content type of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (µs) of the latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Everything one scrape shows, taken once from the backend.
#[derive(Debug)]
pub struct MetricsSnapshot {
    dialogs: DialogStats,
    profiles: Vec<(String, Option<String>, u64)>,
    workers: Vec<WorkerSnapshot>,
    active_workers: Option<usize>,
    latency: LatencySnapshot,
    listener: [u64; 6],
    /// Per worker: (index, alive, restarts).
    health: Vec<(usize, bool, u64)>,
    store: Option<StoreSnapshot>,
}

impl MetricsSnapshot {
    /// Take a snapshot of every source.
    pub fn collect(b: &dyn MgmtBackend) -> Self {
        let workers = b.workers();
        MetricsSnapshot {
            dialogs: b.dialog_stats(),
            profiles: b.profile_top_values(b.metrics_top_n()),
            health: workers
                .iter()
                .map(|w| (w.worker(), w.health().is_alive(), w.health().restarts()))
                .collect(),
            workers: workers.iter().map(|w| w.snapshot()).collect(),
            active_workers: b.active_workers(),
            latency: b.latency(),
            listener: LISTENER.snapshot(),
            store: b.store_stats(),
        }
    }
}

/// Render the Prometheus text for one scrape.
pub fn render(b: &dyn MgmtBackend) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(MetricsSnapshot::collect(b)));
    let mut s = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::prometheus_text::encode(&mut s, &reg).is_err() {
        s.clear();
    }
    s
}

type Enc<'a, 'b> = &'a mut DescriptorEncoder<'b>;

fn gauge(enc: Enc<'_, '_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter(enc: Enc<'_, '_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

/// A per-worker counter family: one series per worker (plus extra labels).
fn worker_counter(
    enc: Enc<'_, '_>,
    name: &str,
    help: &str,
    series: &[(Vec<(&'static str, String)>, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
    }
    Ok(())
}

impl MetricsSnapshot {
    fn per_worker(&self, c: Counter) -> Vec<(Vec<(&'static str, String)>, u64)> {
        self.workers
            .iter()
            .map(|w| (vec![("worker", w.worker.to_string())], w.get(c)))
            .collect()
    }

    fn encode_workers(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        let by_transport = |udp: Counter, tcp: Counter| {
            let mut v = Vec::new();
            for w in &self.workers {
                for (t, c) in [("udp", udp), ("tcp", tcp)] {
                    v.push((
                        vec![
                            ("worker", w.worker.to_string()),
                            ("transport", t.to_owned()),
                        ],
                        w.get(c),
                    ));
                }
            }
            v
        };
        let packets_in = by_transport(Counter::PacketsInUdp, Counter::PacketsInTcp);
        worker_counter(enc, "sipedge_packets_in", "Packets received", &packets_in)?;
        let packets_out = by_transport(Counter::PacketsOutUdp, Counter::PacketsOutTcp);
        worker_counter(enc, "sipedge_packets_out", "Packets sent", &packets_out)?;
        let simple: [(&str, &str, Counter); 14] = [
            (
                "sipedge_generated_answered",
                "Requests the proxy originated (BYE, CANCEL, REFER) that got a final response",
                Counter::GeneratedAnswered,
            ),
            (
                "sipedge_generated_timed_out",
                "Requests the proxy originated that got no final response (Timer F, or Timer B for a bridge INVITE)",
                Counter::GeneratedTimedOut,
            ),
            (
                "sipedge_responses_absorbed",
                "Late or duplicate responses that ended at the proxy",
                Counter::Absorbed,
            ),
            (
                "sipedge_responses_not_ours",
                "Responses whose top Via is not ours (dropped)",
                Counter::NotOurs,
            ),
            (
                "sipedge_cancels_unmatched",
                "CANCELs that matched no INVITE transaction (dropped)",
                Counter::CancelUnmatched,
            ),
            (
                "sipedge_requests_in",
                "SIP requests received",
                Counter::RequestsIn,
            ),
            (
                "sipedge_responses_in",
                "SIP responses received",
                Counter::ResponsesIn,
            ),
            (
                "sipedge_retransmissions_absorbed",
                "Retransmissions absorbed",
                Counter::RetransAbsorbed,
            ),
            (
                "sipedge_retransmissions_sent",
                "Retransmissions sent",
                Counter::RetransSent,
            ),
            ("sipedge_dropped", "Packets dropped", Counter::Dropped),
            (
                "sipedge_udp_full_batches",
                "UDP receive batches that came back full (a backlog waited in the socket)",
                Counter::FullBatches,
            ),
            (
                "sipedge_tcp_accepted",
                "TCP connections accepted",
                Counter::TcpAccepted,
            ),
            (
                "sipedge_tcp_connected",
                "TCP connections opened",
                Counter::TcpConnected,
            ),
            (
                "sipedge_tcp_closed",
                "TCP connections closed",
                Counter::TcpClosed,
            ),
        ];
        for (name, help, c) in simple {
            worker_counter(enc, name, help, &self.per_worker(c))?;
        }
        let tcp_limits: [(&str, &str, Counter); 4] = [
            (
                "sipedge_tcp_refused_global",
                "TCP connections refused: tcp_max_connections open (whole process)",
                Counter::TcpRefusedGlobal,
            ),
            (
                "sipedge_tcp_refused_per_peer",
                "TCP connections refused: tcp_max_per_peer open from the peer (whole process)",
                Counter::TcpRefusedPerPeer,
            ),
            (
                "sipedge_tcp_message_timeouts",
                "TCP connections reset: a message incomplete after tcp_message_timeout",
                Counter::TcpMessageTimeouts,
            ),
            (
                "sipedge_tcp_accept_errors",
                "TCP accept errors (the listener pauses, then retries)",
                Counter::TcpAcceptErrors,
            ),
        ];
        for (name, help, c) in tcp_limits {
            worker_counter(enc, name, help, &self.per_worker(c))?;
        }
        let mut m = enc.encode_descriptor(
            "sipedge_tcp_connections_open",
            "TCP connections currently open",
            None,
            MetricType::Gauge,
        )?;
        for w in &self.workers {
            let open = (w.get(Counter::TcpAccepted) + w.get(Counter::TcpConnected))
                .saturating_sub(w.get(Counter::TcpClosed));
            m.encode_family(&vec![("worker", w.worker.to_string())])?
                .encode_gauge(&open)?;
        }
        let total = sum_snapshots(&self.workers);
        let mut m = enc.encode_descriptor(
            "sipedge_parse_errors",
            "Messages rejected by the parser, by kind",
            None,
            MetricType::Counter,
        )?;
        for (kind, v) in &total.parse_errors {
            m.encode_family(&vec![("kind", *kind)])?
                .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
        }
        let mut m = enc.encode_descriptor(
            "sipedge_replies_generated",
            "Replies generated locally, by status code",
            None,
            MetricType::Counter,
        )?;
        for (code, v) in REPLY_LABELS.iter().zip(total.replies.iter()) {
            m.encode_family(&vec![("code", *code)])?
                .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
        }
        self.encode_defences(enc)?;
        self.encode_worker_safety(enc)
    }

    /// Flood control, admission caps and overload: refusals by reason, bans, and the
    /// transactions (and request bytes) each worker holds.
    fn encode_defences(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        let reasons = [
            ("banned", Counter::RefusedBanned),
            ("source_rate", Counter::RefusedSourceRate),
            ("pipe", Counter::RefusedPipe),
            ("profile_rate", Counter::RefusedProfileRate),
            ("policy_drop", Counter::RefusedPolicyDrop),
            ("transactions", Counter::RefusedTxnCap),
            ("request_memory", Counter::RefusedMemoryCap),
            ("overload", Counter::RefusedOverload),
        ];
        let mut m = enc.encode_descriptor(
            "sipedge_refused",
            "Requests refused (dropped or answered 503) by flood control, caps or overload, by reason",
            None,
            MetricType::Counter,
        )?;
        let total = sum_snapshots(&self.workers);
        for (reason, c) in reasons {
            m.encode_family(&vec![("reason", reason)])?
                .encode_counter::<NoLabelSet, u64, u64>(&total.get(c), None)?;
        }
        let simple = [
            (
                "sipedge_flood_bans",
                "Sources banned by flood control",
                Counter::FloodBans,
            ),
            (
                "sipedge_flood_untracked",
                "Requests admitted uncounted because the per-source table was crowded",
                Counter::FloodUntracked,
            ),
        ];
        for (name, help, c) in simple {
            worker_counter(enc, name, help, &self.per_worker(c))?;
        }
        let gauges = [
            (
                "sipedge_transactions",
                "INVITE transactions live",
                Counter::TxnsOpened,
                Counter::TxnsClosed,
            ),
            (
                "sipedge_transaction_bytes",
                "Bytes of requests held by live INVITE transactions",
                Counter::TxnBytesHeld,
                Counter::TxnBytesReleased,
            ),
        ];
        for (name, help, up, down) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for w in &self.workers {
                let v = w.get(up).saturating_sub(w.get(down));
                m.encode_family(&vec![("worker", w.worker.to_string())])?
                    .encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    /// Panics caught, liveness, restarts and transactions lost, per worker.
    fn encode_worker_safety(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        worker_counter(
            enc,
            "sipedge_worker_panics",
            "Panics caught while a worker handled one packet, hand-off, timer or command",
            &self.per_worker(Counter::WorkerPanics),
        )?;
        worker_counter(
            enc,
            "sipedge_worker_transactions_lost",
            "Transactions lost when a worker died and was replaced",
            &self.per_worker(Counter::TxnsLost),
        )?;
        let mut m = enc.encode_descriptor(
            "sipedge_worker_alive",
            "1 while the worker thread runs, 0 from its death until its replacement runs",
            None,
            MetricType::Gauge,
        )?;
        for (w, alive, _) in &self.health {
            m.encode_family(&vec![("worker", w.to_string())])?
                .encode_gauge(&u64::from(*alive))?;
        }
        let restarts: Vec<_> = self
            .health
            .iter()
            .map(|(w, _, r)| (vec![("worker", w.to_string())], *r))
            .collect();
        worker_counter(
            enc,
            "sipedge_worker_restarts",
            "Times the worker died and was restarted",
            &restarts,
        )
    }

    /// The dialog store's writer, when a store is configured.
    fn encode_store(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        let Some(s) = &self.store else {
            return Ok(());
        };
        let counters = [
            (
                "sipedge_dialog_db_written",
                "Dialog records written",
                s.written,
            ),
            (
                "sipedge_dialog_db_deleted",
                "Dialog records deleted",
                s.deleted,
            ),
            (
                "sipedge_dialog_db_write_failures",
                "Failed dialog store write attempts (disk full, I/O error)",
                s.errors,
            ),
            (
                "sipedge_dialog_db_write_retries",
                "Dialog store writes retried after a failure",
                s.retries,
            ),
            (
                "sipedge_dialog_db_dropped",
                "Dialog changes not stored because the queue or the retained batch was full",
                s.dropped,
            ),
        ];
        for (name, help, v) in counters {
            counter(enc, name, help, v)?;
        }
        gauge(
            enc,
            "sipedge_dialog_db_failing",
            "1 while dialog store writes are failing",
            u64::from(s.failing),
        )?;
        gauge(
            enc,
            "sipedge_dialog_db_pending",
            "Dialogs whose change waits to be written to the store",
            s.pending,
        )
    }

    fn encode_latency(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        for metric in LatencyMetric::ALL {
            let h = self.latency.set.get(metric);
            let mut counts = [0u64; LATENCY_BUCKETS_US.len()];
            for v in h.iter_recorded() {
                let value = h.lowest_equivalent(v.value_iterated_to());
                if let Some(i) = LATENCY_BUCKETS_US.iter().position(|le| value <= *le)
                    && let Some(c) = counts.get_mut(i)
                {
                    *c += v.count_since_last_iteration();
                }
            }
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .zip(counts)
                .map(|(le, n)| (*le as f64, n))
                .collect();
            let sum = h.mean() * h.len() as f64;
            let name = format!("sipedge_{}_latency_us", metric.name());
            let help = format!("Latency of {} in microseconds", metric.name());
            enc.encode_descriptor(&name, &help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)?;
        }
        Ok(())
    }
}

impl Collector for MetricsSnapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut enc;
        let d = &self.dialogs;
        if let Some(n) = self.active_workers {
            gauge(
                e,
                "sipedge_workers_active",
                "Workers the listen sockets currently feed (adaptive spreading)",
                n as u64,
            )?;
        }
        gauge(
            e,
            "sipedge_dialog_active_dialogs",
            "Active dialogs",
            d.active_dialogs,
        )?;
        gauge(
            e,
            "sipedge_dialog_early_dialogs",
            "Early dialogs",
            d.early_dialogs,
        )?;
        counter(
            e,
            "sipedge_dialog_processed_dialogs",
            "Dialogs processed",
            d.processed_dialogs,
        )?;
        counter(
            e,
            "sipedge_dialog_expired_dialogs",
            "Dialogs expired",
            d.expired_dialogs,
        )?;
        counter(
            e,
            "sipedge_dialog_failed_dialogs",
            "Dialogs failed",
            d.failed_dialogs,
        )?;
        let mut m = e.encode_descriptor(
            "sipedge_profile_size",
            "Dialogs per profile value (top values per profile)",
            None,
            MetricType::Gauge,
        )?;
        for (profile, value, n) in &self.profiles {
            let labels = vec![
                ("profile", profile.as_str()),
                ("value", value.as_deref().unwrap_or("")),
            ];
            m.encode_family(&labels)?.encode_gauge(n)?;
        }
        self.encode_workers(e)?;
        self.encode_store(e)?;
        self.encode_latency(e)?;
        self.encode_listener(e)
    }
}

/// Counters of the management listener (HTTP on TCP and the UNIX socket), process-wide.
#[derive(Debug)]
pub struct ListenerCounters {
    accepted: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_total: AtomicU64,
    accept_errors: AtomicU64,
    timeouts: AtomicU64,
    open: AtomicU64,
}

/// What happened to one management connection, as counted by [`ListenerCounters::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerEvent {
    /// A connection was accepted and is being served (opens one).
    Accepted,
    /// Closed at accept: its client address had `max_connections_per_ip` open.
    RefusedPerIp,
    /// Closed at accept: `max_connections` were open.
    RefusedTotal,
    /// `accept` failed (e.g. EMFILE: out of descriptors); the listener backed off and went on.
    AcceptError,
    /// Closed by a timeout (request head, idle keep-alive, body, or no progress).
    Timeout,
    /// A served connection ended (closes one).
    Closed,
}

/// The management listener's counters.
pub static LISTENER: ListenerCounters = ListenerCounters {
    accepted: AtomicU64::new(0),
    refused_per_ip: AtomicU64::new(0),
    refused_total: AtomicU64::new(0),
    accept_errors: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    open: AtomicU64::new(0),
};

impl ListenerCounters {
    /// Count one event.
    pub fn count(&self, e: ListenerEvent) {
        let cell = match e {
            ListenerEvent::Accepted => {
                self.open.fetch_add(1, Ordering::Relaxed);
                &self.accepted
            }
            ListenerEvent::RefusedPerIp => &self.refused_per_ip,
            ListenerEvent::RefusedTotal => &self.refused_total,
            ListenerEvent::AcceptError => &self.accept_errors,
            ListenerEvent::Timeout => &self.timeouts,
            ListenerEvent::Closed => &self.open,
        };
        if e == ListenerEvent::Closed {
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        } else {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Accept errors so far.
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }

    /// `[accepted, refused_per_ip, refused_total, accept_errors, timeouts, open]`.
    fn snapshot(&self) -> [u64; 6] {
        [
            &self.accepted,
            &self.refused_per_ip,
            &self.refused_total,
            &self.accept_errors,
            &self.timeouts,
            &self.open,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

impl MetricsSnapshot {
    fn encode_listener(&self, enc: Enc<'_, '_>) -> std::fmt::Result {
        let [accepted, per_ip, total, errors, timeouts, open] = self.listener;
        counter(
            enc,
            "sipedge_mgmt_connections_accepted",
            "Management connections accepted and served",
            accepted,
        )?;
        let mut m = enc.encode_descriptor(
            "sipedge_mgmt_connections_refused",
            "Management connections closed at accept by a connection cap",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in [("per_ip", per_ip), ("total", total)] {
            m.encode_family(&vec![("reason", reason)])?
                .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
        }
        counter(
            enc,
            "sipedge_mgmt_accept_errors",
            "Management accept failures (e.g. out of descriptors); the listener backs off and goes on",
            errors,
        )?;
        counter(
            enc,
            "sipedge_mgmt_timeouts",
            "Management connections closed by a timeout (request head, idle keep-alive, body, no progress)",
            timeouts,
        )?;
        gauge(
            enc,
            "sipedge_mgmt_connections_open",
            "Management connections open now",
            open,
        )
    }
}
