//! Latency histograms and counters recorded by the UAC and UAS state machines.
//!
//! Invariants:
//! - All latencies are µs from the *intended* send time of the request (open loop), so a
//!   stalled peer or a late generator shows up instead of being omitted.
//! - One `Stats` per worker thread, merged with [`Stats::add`] only for reporting.
//! - Recording never allocates (histograms are pre-sized; values beyond range saturate).

use hdrhistogram::Histogram;

/// Latency metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// INVITE sent → first 100 Trying.
    Invite100,
    /// INVITE → first 180.
    Invite180,
    /// INVITE → 200 OK.
    Invite200,
    /// BYE → 200 OK.
    Bye200,
    /// Call intended start → the final response that completes setup (200 for INVITE calls,
    /// 486/487/408 for reject/cancel/noanswer, 200 for OPTIONS).
    Setup,
    /// The generator's own lag: call intended start → the loop actually started it. Not a
    /// latency of the system under test; it tells how much of the others is the generator's.
    StartLag,
    /// INVITE actually handed to the socket layer → 200 OK: `invite_200` minus this call's
    /// start lag. Service time only (it omits queueing behind a late generator), so use it to
    /// split a tail between generator and proxy, never as the headline figure.
    Invite200Sent,
}

/// All metrics in index order.
pub const METRICS: [Metric; 7] = [
    Metric::Invite100,
    Metric::Invite180,
    Metric::Invite200,
    Metric::Bye200,
    Metric::Setup,
    Metric::StartLag,
    Metric::Invite200Sent,
];

impl Metric {
    /// Short name used in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Invite100 => "invite_100",
            Metric::Invite180 => "invite_180",
            Metric::Invite200 => "invite_200",
            Metric::Bye200 => "bye_200",
            Metric::Setup => "setup",
            Metric::StartLag => "start_lag",
            Metric::Invite200Sent => "invite_200_sent",
        }
    }
}

/// Why a call (or UAS transaction) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No final response to INVITE within the timeout (Timer B).
    InviteTimeout,
    /// No final response to BYE/CANCEL/OPTIONS within Timer F.
    NonInviteTimeout,
    /// A final response the scenario did not expect.
    UnexpectedStatus,
    /// UAS: no ACK for its final response (Timer H).
    NoAck,
    /// UAS: request for an unknown dialog (481 sent).
    UnknownDialog,
    /// UAC: the peer (or a proxy) sent BYE during the call.
    PeerBye,
}

/// All reasons in index order.
pub const FAIL_REASONS: [FailReason; 6] = [
    FailReason::InviteTimeout,
    FailReason::NonInviteTimeout,
    FailReason::UnexpectedStatus,
    FailReason::NoAck,
    FailReason::UnknownDialog,
    FailReason::PeerBye,
];

impl FailReason {
    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FailReason::InviteTimeout => "invite_timeout",
            FailReason::NonInviteTimeout => "non_invite_timeout",
            FailReason::UnexpectedStatus => "unexpected_status",
            FailReason::NoAck => "uas_no_ack",
            FailReason::UnknownDialog => "uas_unknown_dialog",
            FailReason::PeerBye => "peer_bye",
        }
    }
}

/// Event counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Calls started by the UAC.
    pub started: u64,
    /// Calls completed as the scenario expects.
    pub ok: u64,
    /// Failed calls by [`FailReason`] index.
    pub failed: [u64; 6],
    /// UAC retransmissions (timer-driven requests and ACKs re-sent for repeated 2xx).
    pub retrans: u64,
    /// UAS retransmissions (Timer G and answers to repeated requests).
    pub uas_retrans: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received.
    pub recv: u64,
    /// Datagrams that did not parse or matched no call.
    pub stray: u64,
    /// Calls started more than 10 ms after their intended time.
    pub behind: u64,
    /// Calls the UAS accepted (new INVITEs and OPTIONS).
    pub uas_calls: u64,
    /// UAS calls that ended normally (BYE, ACK of a final non-2xx, OPTIONS answered).
    pub uas_ok: u64,
    /// BYEs the UAC received (answered 200), e.g. from a proxy's dialog timeout.
    pub peer_byes: u64,
}

impl Counters {
    /// Total failed calls.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
    fn add(&mut self, o: &Counters) {
        self.started += o.started;
        self.ok += o.ok;
        for (a, b) in self.failed.iter_mut().zip(o.failed.iter()) {
            *a += b;
        }
        self.retrans += o.retrans;
        self.uas_retrans += o.uas_retrans;
        self.sent += o.sent;
        self.recv += o.recv;
        self.stray += o.stray;
        self.behind += o.behind;
        self.uas_calls += o.uas_calls;
        self.uas_ok += o.uas_ok;
        self.peer_byes += o.peer_byes;
    }
}

/// Histograms plus counters.
#[derive(Clone, Debug)]
pub struct Stats {
    /// One histogram per [`Metric`], µs.
    pub hist: [Histogram<u64>; METRICS.len()],
    /// Counters.
    pub c: Counters,
    /// Worst lateness of a call start behind schedule, µs.
    pub max_behind_us: u64,
}

/// Highest trackable latency: one hour in µs.
pub const MAX_US: u64 = 3_600_000_000;

// 1 µs .. 1 h at 3 significant digits; the bounds are constants that hdrhistogram accepts
// (low >= 1, high >= 2*low, sigfig <= 5), so this cannot fail. Not on the packet path.
#[allow(clippy::expect_used)]
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: std::array::from_fn(|_| new_hist()),
            c: Counters::default(),
            max_behind_us: 0,
        }
    }
}

impl Stats {
    /// Records one latency sample.
    pub fn record(&mut self, m: Metric, us: u64) {
        if let Some(h) = self.hist.get_mut(m as usize) {
            h.saturating_record(us.max(1));
        }
    }
    /// Counts one failure.
    pub fn fail(&mut self, r: FailReason) {
        if let Some(c) = self.c.failed.get_mut(r as usize) {
            *c += 1;
        }
    }
    /// The histogram of a metric.
    pub fn hist(&self, m: Metric) -> &Histogram<u64> {
        // METRICS covers every index of the array.
        &self.hist[m as usize]
    }
    /// Adds another worker's stats into this one.
    pub fn add(&mut self, o: &Stats) {
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            let _ = a.add(b);
        }
        self.c.add(&o.c);
        self.max_behind_us = self.max_behind_us.max(o.max_behind_us);
    }
    /// Clears everything, keeping allocations.
    pub fn reset(&mut self) {
        for h in &mut self.hist {
            h.reset();
        }
        self.c = Counters::default();
        self.max_behind_us = 0;
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn add_merges_histograms_and_counters() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.record(Metric::Setup, 100);
        b.record(Metric::Setup, 300);
        b.fail(FailReason::NoAck);
        b.c.ok = 2;
        a.add(&b);
        assert_eq!(a.hist(Metric::Setup).len(), 2);
        assert_eq!(a.hist(Metric::Setup).max(), 300);
        assert_eq!(a.c.failed_total(), 1);
        assert_eq!(a.c.ok, 2);
        a.reset();
        assert_eq!(a.hist(Metric::Setup).len(), 0);
    }
}
