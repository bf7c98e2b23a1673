//! What must hold when a run is quiescent. Every check returns its violations as text (never
//! panics), so a sweep can list every failing seed.
//!
//! Checked for every run:
//! - quiescence: nothing in flight, no command queued, every engine's `poll_timeout()` is
//!   `None`, `txn_count()`, `pending_timers()` and `generated_in_flight()` are 0, the dialog
//!   table is empty;
//! - no wheel entry outlives what it guards: whenever no dialog, transaction, generated
//!   request or command is left, no worker holds a wheel entry (checked after every event);
//! - no slab grows without bound: each worker's timer slab (its high-water mark) stays
//!   within a small slack of the most entries seen live between events;
//! - statistics add up: `processed == expired + failed + ended normally` (the observer's
//!   `Terminated` events), each counter equals the observer's count, `active == early == 0`;
//! - per Call-ID, the proxy created one dialog, fired exactly one end event and removed it
//!   once (so every dialog it confirmed has ended);
//! - profile counts are back at 0 and hold no values;
//! - nothing is half-open: no UAC call is in progress, and no UAS host that did not vanish
//!   holds a call (early, unacknowledged, confirmed or lingering);
//! - every call the UACs started has exactly one outcome, and their counters agree;
//! - a call the UAC completed as an answered call was answered at the proxy, and every
//!   dialog at the proxy belongs to a call a UAC started;
//! - no anomaly (unparsable or non-UDP output, hand-off to itself, datagram to nowhere).
//!
//! At 0% loss (`SimConfig::lossless`), also per Call-ID: the proxy's view equals the UAC's
//! (see [`compare_call`]), and the UASes counted no failure.

use std::collections::BTreeMap;

use loadgen::scenario::Scenario;
use loadgen::stats::{FAIL_REASONS, FailReason};
use loadgen::uac::CallOutcome;
use sipedge::dialog::{DlgState, EndReason};

use crate::endpoints::Agent;
use crate::ledger::DialogLog;
use crate::proxy::{PROFILE_CALLEE, PROFILE_CALLS};
use crate::world::{Termination, World};

/// Wheel entries one engine call may hold at once beyond what is live between events (a
/// call inserts new timers before it cancels old ones).
const SLAB_SLACK: usize = 32;

/// Scenarios in which the UAS answers 2xx.
fn answered_scenario(s: Scenario) -> bool {
    matches!(
        s,
        Scenario::Basic | Scenario::Fork | Scenario::Nobye | Scenario::Reinvite
    )
}

/// Every violation of `w`, empty when the run is good.
pub fn check(w: &World) -> Vec<String> {
    let mut v = Vec::new();
    quiescence(w, &mut v);
    statistics(w, &mut v);
    profiles(w, &mut v);
    half_open(w, &mut v);
    calls(w, &mut v);
    for a in w.proxy.anomalies.iter().chain(&w.anomalies) {
        v.push(format!("anomaly: {a}"));
    }
    v
}

fn quiescence(w: &World, v: &mut Vec<String>) {
    if !w.quiet {
        v.push(format!(
            "no quiescence after {} events at {} ms",
            w.events,
            w.now / 1000
        ));
    }
    if let Some(leak) = &w.timer_leak {
        v.push(leak.clone());
    }
    if w.net.in_flight() != 0 {
        v.push(format!("{} datagrams still in flight", w.net.in_flight()));
    }
    if w.proxy.queued() != 0 {
        v.push(format!("{} commands still queued", w.proxy.queued()));
    }
    for (i, e) in w.proxy.engines.iter().enumerate() {
        if let Some(t) = e.poll_timeout() {
            v.push(format!("worker {i}: a timer is still due at {t} ms"));
        }
        let (txns, timers, gen_) = (e.txn_count(), e.pending_timers(), e.generated_in_flight());
        if txns != 0 || timers != 0 || gen_ != 0 {
            v.push(format!(
                "worker {i}: {txns} transactions, {timers} wheel entries, {gen_} generated \
                 requests left"
            ));
        }
    }
    for (i, (e, peak)) in w.proxy.engines.iter().zip(&w.peak_timers).enumerate() {
        if e.timer_slab() > peak + SLAB_SLACK {
            v.push(format!(
                "worker {i}: the timer slab has {} nodes, but at most {peak} entries were live \
                 between events: freed nodes are not reused",
                e.timer_slab()
            ));
        }
    }
    let left = w.proxy.shared.table.len();
    if left != 0 {
        let mut ids = Vec::new();
        w.proxy.shared.table.for_each(|_, d| {
            ids.push(format!(
                "{} ({})",
                String::from_utf8_lossy(d.strs.get(sipedge::dialog::Field::CallId)),
                d.state().name()
            ));
        });
        v.push(format!("{left} dialogs left in the table: {ids:?}"));
    }
}

fn statistics(w: &World, v: &mut Vec<String>) {
    let s = w.proxy.shared.stats.snapshot();
    let t = w.proxy.ledger.totals();
    if s.active_dialogs != 0 || s.early_dialogs != 0 {
        v.push(format!(
            "gauges not back at 0: active {}, early {}",
            s.active_dialogs, s.early_dialogs
        ));
    }
    if s.processed_dialogs != s.expired_dialogs + s.failed_dialogs + t.terminated {
        v.push(format!(
            "processed {} != expired {} + failed {} + ended normally {}",
            s.processed_dialogs, s.expired_dialogs, s.failed_dialogs, t.terminated
        ));
    }
    let pairs = [
        ("processed/created", s.processed_dialogs, t.created),
        ("failed", s.failed_dialogs, t.failed),
        ("expired", s.expired_dialogs, t.expired),
        ("created/destroyed", t.created, t.destroyed),
    ];
    for (what, a, b) in pairs {
        if a != b {
            v.push(format!("{what}: statistics say {a}, events say {b}"));
        }
    }
    for (cid, log) in w.proxy.ledger.calls() {
        if log.created != 1 || log.ends.len() != 1 || log.destroyed != 1 {
            v.push(format!(
                "{cid}: created {}, end events {:?}, destroyed {}; events {:?}",
                log.created, log.ends, log.destroyed, log.events
            ));
        }
    }
}

fn profiles(w: &World, v: &mut Vec<String>) {
    let p = w.proxy.shared.profiles.load();
    for name in [PROFILE_CALLS, PROFILE_CALLEE] {
        let Some(idx) = p.index(name) else {
            v.push(format!("profile {name} missing"));
            continue;
        };
        let (size, raw, values) = (p.size(idx, None), p.raw_total(idx), p.value_count(idx));
        if size != 0 || raw != 0 || values != 0 {
            v.push(format!(
                "profile {name}: size {size}, raw total {raw}, {values} values left"
            ));
        }
    }
}

fn half_open(w: &World, v: &mut Vec<String>) {
    for h in &w.hosts {
        if h.vanish_at.is_some() {
            continue;
        }
        match &h.agent {
            Agent::Uac(u) if u.active() != 0 => {
                v.push(format!(
                    "UAC {}: {} calls still in progress",
                    h.addr,
                    u.active()
                ));
            }
            Agent::Uas(u) if u.active() != 0 => {
                v.push(format!(
                    "UAS {}: calls still held: {:?}",
                    h.addr,
                    u.held_calls()
                ));
            }
            _ => {}
        }
    }
}

fn calls(w: &World, v: &mut Vec<String>) {
    let ledger = w.proxy.ledger.calls();
    let mut seen = BTreeMap::new();
    let mut started = 0u64;
    let mut finished = 0u64;
    for h in &w.hosts {
        if let Agent::Uac(u) = &h.agent {
            started += u.stats.c.started;
            finished += u.stats.c.ok + u.stats.c.failed.iter().sum::<u64>();
        }
    }
    if started != w.outcomes.len() as u64 || finished != started {
        v.push(format!(
            "UACs started {started} calls, finished {finished}, logged {}",
            w.outcomes.len()
        ));
    }
    for o in &w.outcomes {
        if seen.insert(o.call_id.as_str(), ()).is_some() {
            v.push(format!("{}: two outcomes", o.call_id));
        }
        let log = ledger.get(&o.call_id);
        if o.fail.is_none() && answered_scenario(o.scenario) && !log.is_some_and(|l| l.answered) {
            v.push(format!(
                "{} ({}): the UAC completed it, the proxy never saw it answered: {log:?}",
                o.call_id, o.scenario
            ));
        }
        if w.cfg.lossless
            && let Err(e) = compare_call(o, log, w.terminated.get(&o.call_id))
        {
            v.push(format!("{} ({}): {e}", o.call_id, o.scenario));
        }
    }
    for cid in ledger.keys() {
        if !seen.contains_key(cid.as_str()) {
            v.push(format!("{cid}: a dialog at the proxy that no UAC started"));
        }
    }
    if w.cfg.lossless {
        for h in &w.hosts {
            if let Agent::Uas(u) = &h.agent {
                let failed: Vec<(&str, u64)> = FAIL_REASONS
                    .iter()
                    .map(|r| (r.name(), u.stats.c.failed[*r as usize]))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                if !failed.is_empty() {
                    v.push(format!("UAS {}: failures at 0% loss: {failed:?}", h.addr));
                }
            }
        }
    }
}

/// At 0% loss, the proxy's view of one call against the UAC's. `terminated` is set when the
/// run sent `Command::Terminate` for it; the proxy ended it that way only if its end reason
/// says `Terminated`.
pub fn compare_call(
    o: &CallOutcome,
    log: Option<&DialogLog>,
    terminated: Option<&Termination>,
) -> Result<(), String> {
    if o.scenario == Scenario::Options {
        return match (o.fail, log) {
            (None, None) => Ok(()),
            _ => Err(format!("OPTIONS: UAC {:?}, proxy {log:?}", o.fail)),
        };
    }
    let Some(log) = log else {
        return Err(format!("UAC {:?}, the proxy has no dialog", o.fail));
    };
    let Some(end) = log.end() else {
        return Err(format!("the proxy's end events: {:?}", log.ends));
    };
    let by_us = terminated.is_some() && end == EndReason::Terminated;
    let ok = match (o.scenario, o.fail) {
        // A termination may cross the caller's own BYE: both ends saw the call end.
        (Scenario::Basic | Scenario::Fork | Scenario::Reinvite, None) => {
            log.answered && (end == EndReason::ByeCaller || by_us)
        }
        // The proxy's timeout or the callee's BYE ends it, after the UAC's hold.
        (Scenario::Nobye, None) => {
            log.answered && (matches!(end, EndReason::Expired | EndReason::ByeCallee) || by_us)
        }
        (Scenario::Reject, None) => !log.answered && end == EndReason::Failed,
        (Scenario::Cancel, None) => !log.answered && (end == EndReason::Cancelled || by_us),
        (Scenario::Noanswer, None) => !log.answered && (end == EndReason::Failed || by_us),
        // A BYE reached a call the UAC was holding: the proxy's, or the callee's (`nobye`).
        (s, Some(FailReason::PeerBye)) => {
            log.answered && (by_us || (s == Scenario::Nobye && end == EndReason::ByeCallee))
        }
        // The proxy's final response to a terminated early dialog (bye_early_code).
        (_, Some(FailReason::UnexpectedStatus)) => {
            by_us && terminated.is_some_and(|t| t.state <= DlgState::ConfirmedNa)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let t = terminated.map_or("no".to_string(), |t| {
            format!("at {} ms in state {}", t.at / 1000, t.state.name())
        });
        Err(format!(
            "UAC {:?}, proxy answered={} end={end:?}, terminated by the run: {t}",
            o.fail, log.answered
        ))
    }
}
