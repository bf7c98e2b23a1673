//! Kamailio-style statistics: `stats.get_statistics`, `stats.fetch`, `stats.fetchn`,
//! `stats.reset_statistics`, and the `stats.latency` summary.
//!
//! Owns the flat list of `group:name = value` rows built from backend snapshots, and the
//! selector language: `all`, `group:` (a whole group), `group:name`, or a bare `name`
//! (searched in every group).
//!
//! Groups: `dialog` (Kamailio's dialog module names), `core` (per-worker counters summed),
//! `parse_errors` (by kind), `sl` (locally generated replies, `200_replies` ... `xxx_replies`).
//!
//! ## Invariants
//! - Every selector must match at least one statistic, else the call fails with 404 naming
//!   the selector.
//! - Worker counters are summed on read; workers are never paused.

use serde_json::{Map, Value};

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::protocol::{RpcError, write_value};
use crate::stats::{Counter, LatencyMetric, LatencySnapshot, REPLY_LABELS, sum_snapshots};

/// One statistic: group, name, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    /// Group (`dialog`, `core`, `parse_errors`, `sl`).
    pub group: &'static str,
    /// Name inside the group.
    pub name: String,
    /// Current value.
    pub value: u64,
}

/// Build every statistic row from the backend.
pub fn all_rows(b: &dyn MgmtBackend) -> Vec<StatRow> {
    let mut rows = Vec::with_capacity(64);
    let mut push = |group: &'static str, name: &str, value: u64| {
        rows.push(StatRow {
            group,
            name: name.to_owned(),
            value,
        });
    };
    let d = b.dialog_stats();
    push("dialog", "active_dialogs", d.active_dialogs);
    push("dialog", "early_dialogs", d.early_dialogs);
    push("dialog", "processed_dialogs", d.processed_dialogs);
    push("dialog", "expired_dialogs", d.expired_dialogs);
    push("dialog", "failed_dialogs", d.failed_dialogs);

    let snaps: Vec<_> = b.workers().iter().map(|w| w.snapshot()).collect();
    let total = sum_snapshots(&snaps);
    for c in Counter::ALL {
        push("core", c.name(), total.get(c));
    }
    let open = (total.get(Counter::TcpAccepted) + total.get(Counter::TcpConnected))
        .saturating_sub(total.get(Counter::TcpClosed));
    push("core", "tcp_connections_open", open);
    for (kind, v) in &total.parse_errors {
        push("parse_errors", kind, *v);
    }
    for (label, v) in REPLY_LABELS.iter().zip(total.replies.iter()) {
        let code = if *label == "other" { "xxx" } else { label };
        push("sl", &format!("{code}_replies"), *v);
    }
    rows
}

fn selected<'r>(rows: &'r [StatRow], selectors: &[String]) -> Result<Vec<&'r StatRow>, RpcError> {
    if selectors.is_empty() || selectors.iter().any(|s| s == "all") {
        return Ok(rows.iter().collect());
    }
    let mut picked: Vec<&StatRow> = Vec::new();
    for sel in selectors {
        if !rows.iter().any(|r| matches(r, sel)) {
            return Err(RpcError::new(404, format!("Statistic not found: {sel}")));
        }
        for r in rows.iter().filter(|r| matches(r, sel)) {
            if !picked.iter().any(|p| std::ptr::eq(*p, r)) {
                picked.push(r);
            }
        }
    }
    Ok(picked)
}

fn matches(r: &StatRow, sel: &str) -> bool {
    match sel.split_once(':') {
        Some((g, "")) => r.group == g,
        Some((g, n)) => r.group == g && r.name == n,
        None => r.name == sel,
    }
}

/// Run one of the `stats.*` selector methods.
pub fn call(
    method: &str,
    selectors: &[String],
    b: &dyn MgmtBackend,
    out: &mut Vec<u8>,
) -> Result<(), RpcError> {
    let rows = all_rows(b);
    let picked = selected(&rows, selectors)?;
    match method {
        "stats.get_statistics" => {
            let lines: Vec<String> = picked
                .iter()
                .map(|r| format!("{}:{} = {}", r.group, r.name, r.value))
                .collect();
            write_value(out, &lines);
        }
        "stats.fetch" | "stats.fetchn" => {
            let numeric = method == "stats.fetchn";
            let mut m = Map::new();
            for r in picked {
                let v = if numeric {
                    Value::from(r.value)
                } else {
                    Value::from(r.value.to_string())
                };
                m.insert(format!("{}.{}", r.group, r.name), v);
            }
            write_value(out, &m);
        }
        _ => {
            b.reset_stats();
            write_value(out, "Statistics reset");
        }
    }
    Ok(())
}

/// `stats.latency` result: `{metric: {p50, p90, p99, p99_9, p99_99, max, count}}` in µs.
pub fn latency_json(snap: &LatencySnapshot) -> Value {
    let mut m = Map::new();
    for metric in LatencyMetric::ALL {
        let v = serde_json::to_value(snap.summary(metric)).unwrap_or(Value::Null);
        m.insert(metric.name().to_owned(), v);
    }
    Value::Object(m)
}
