//! SIPp interop: real SIP traffic on 127.0.0.1 through the `sipedge` binary, checked both
//! end to end (SIPp's call counters) and through the management API (dialog counters).
//!
//! The `direct_*` tests run the same scenario pairs UAC → UAS with no proxy: they prove the
//! scenarios and the harness, so a failure of a proxy test points at the proxy.
//! Every test bounds its waits (see `common`), runs on its own ports and scratch dir, and
//! kills its SIPp and proxy processes on the way out, pass or fail.
//!
//! Needs `sipp` (`apt-get install sip-tester`); `SIPEDGE_SKIP_SIPP=1` skips when missing.
mod common;

use std::thread;
use std::time::Duration;

use common::proxy::{DialogCounters, Proxy};
use common::sipp::{BASIC, CANCEL, CallRun, REJECT_486, SippReport, Transport, sipp_available};
use common::{TempDir, now};

/// Proxy flags every proxy test appends to the fixed command line.
const PROXY_ARGS: &[&str] = &["--log", "warn"];

/// Runs `run` and asserts every call succeeded on the UAC and completed on the UAS.
fn run_ok(name: &str, run: &CallRun) -> SippReport {
    let dir = TempDir::new(name);
    let report = run.run(&dir);
    report.assert_all_ok(u64::from(run.calls));
    let uas_ok = report.uas.as_ref().map_or(0, |s| s.successful);
    assert_eq!(
        uas_ok,
        u64::from(run.calls),
        "UAS completed {uas_ok} of {} calls\n{}",
        run.calls,
        report.errors
    );
    report
}

/// Polls `stats.fetch` until `active_dialogs` is 0 (dialogs may linger briefly after the
/// final BYE/ACK), at most 5 s; returns the last counters.
fn settled_counters(proxy: &Proxy) -> DialogCounters {
    let deadline = now() + Duration::from_secs(5);
    loop {
        let c = proxy.dialog_counters();
        if c.active == 0 || now() >= deadline {
            return c;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- direct (no proxy)

#[test]
fn direct_basic_udp() {
    if sipp_available() {
        run_ok("direct_basic_udp", &CallRun::new(BASIC, 200).rate(100));
    }
}

#[test]
fn direct_basic_tcp() {
    if sipp_available() {
        let run = CallRun::new(BASIC, 100).rate(100).transport(Transport::Tcp);
        run_ok("direct_basic_tcp", &run);
    }
}

#[test]
fn direct_basic_with_hold() {
    if sipp_available() {
        let t0 = now();
        run_ok(
            "direct_hold",
            &CallRun::new(BASIC, 20).rate(20).hold_ms(1000),
        );
        // 20 calls at 20 cps, each held 1 s: the run cannot be shorter than ~2 s.
        assert!(
            t0.elapsed() >= Duration::from_millis(1800),
            "hold was not applied"
        );
    }
}

#[test]
fn direct_reject_486_udp() {
    if sipp_available() {
        run_ok("direct_486_udp", &CallRun::new(REJECT_486, 50).rate(100));
    }
}

#[test]
fn direct_reject_486_tcp() {
    if sipp_available() {
        let run = CallRun::new(REJECT_486, 50).transport(Transport::Tcp);
        run_ok("direct_486_tcp", &run);
    }
}

#[test]
fn direct_cancel_after_180_udp() {
    if sipp_available() {
        run_ok("direct_cancel_udp", &CallRun::new(CANCEL, 50).rate(100));
    }
}

#[test]
fn direct_cancel_after_180_tcp() {
    if sipp_available() {
        let run = CallRun::new(CANCEL, 50).transport(Transport::Tcp);
        run_ok("direct_cancel_tcp", &run);
    }
}

#[test]
fn direct_load_2k_udp() {
    if sipp_available() {
        run_ok("direct_load_udp", &CallRun::new(BASIC, 2000).rate(500));
    }
}

/// The harness must report failures, not only successes: a UAS that rejects every call
/// (486) under a UAC that expects 200 gives 0 successful and all calls failed.
#[test]
fn direct_mismatch_is_reported_as_failure() {
    if !sipp_available() {
        return;
    }
    let dir = TempDir::new("direct_mismatch");
    let run = CallRun {
        scenario: common::sipp::Scenario {
            uac: BASIC.uac,
            uas: REJECT_486.uas,
        },
        ..CallRun::new(BASIC, 10)
    };
    let report = run.run(&dir);
    let s = report.uac();
    assert_eq!((s.successful, s.failed), (0, 10), "{report:?}");
    assert_eq!(
        s.unexpected, 10,
        "486 where 200 is expected is unexpected: {report:?}"
    );
    assert_eq!(report.uac_exit, Some(1));
}

// ---------------------------------------------------------------- through the proxy

#[test]
fn basic_calls_udp() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    run_ok(
        "basic_udp",
        &CallRun::new(BASIC, 200).rate(100).via(proxy.sip_addr()),
    );
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "dialogs left active after all BYEs: {c:?}");
    assert!(
        c.processed >= 200,
        "processed_dialogs {} < 200",
        c.processed
    );
}

#[test]
fn reject_486() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    run_ok(
        "reject_486",
        &CallRun::new(REJECT_486, 50).via(proxy.sip_addr()),
    );
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "rejected dialogs left active: {c:?}");
    assert!(c.failed >= 50, "failed_dialogs {} < 50", c.failed);
}

#[test]
fn cancel_after_180() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    run_ok(
        "cancel_180",
        &CallRun::new(CANCEL, 50).via(proxy.sip_addr()),
    );
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "cancelled dialogs left active: {c:?}");
}

#[test]
fn basic_calls_tcp() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    let run = CallRun::new(BASIC, 100)
        .transport(Transport::Tcp)
        .via(proxy.sip_addr());
    run_ok("basic_tcp", &run);
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "dialogs left active after all BYEs: {c:?}");
    assert!(
        c.processed >= 100,
        "processed_dialogs {} < 100",
        c.processed
    );
}

#[test]
fn dialogs_visible_during_hold() {
    if !sipp_available() {
        return;
    }
    let (rate, calls, hold_ms) = (100u32, 500u32, 5000u32);
    let proxy = Proxy::start(PROXY_ARGS);
    let dir = TempDir::new("hold");
    let run = CallRun::new(BASIC, calls)
        .rate(rate)
        .hold_ms(hold_ms)
        .via(proxy.sip_addr());
    let t0 = now();
    let calls_run = run.start(&dir);
    thread::sleep(Duration::from_secs(3));
    let elapsed_ms = t0.elapsed().as_millis() as u64;
    let active = proxy.active_dialogs();
    // No call has ended yet (hold 5 s), so every call started so far is active:
    // rate × min(elapsed, hold), minus the SIPp start-up delay.
    let expected = u64::from(rate) * elapsed_ms.min(u64::from(hold_ms)) / 1000;
    let report = calls_run.wait();
    report.assert_all_ok(u64::from(calls));
    assert!(
        active.all > 0 && active.all * 4 >= expected * 3 && active.all <= expected + 50,
        "dlg.stats_active all={} 3 s into a {rate} cps × {hold_ms} ms run, expected ~{expected}: \
         {active:?}",
        active.all
    );
    let deadline = now() + Duration::from_secs(5);
    let mut after = proxy.active_dialogs();
    while after.all != 0 && now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = proxy.active_dialogs();
    }
    assert_eq!(after.all, 0, "dialogs left after the run: {after:?}");
}

#[test]
fn load_10k_udp() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    run_ok(
        "load_udp",
        &CallRun::new(BASIC, 10_000).rate(500).via(proxy.sip_addr()),
    );
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "dialogs left active: {c:?}");
    assert!(
        c.processed >= 10_000,
        "processed_dialogs {} < 10000",
        c.processed
    );
}

#[test]
fn load_10k_tcp() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(PROXY_ARGS);
    let run = CallRun::new(BASIC, 10_000)
        .rate(500)
        .transport(Transport::Tcp)
        .via(proxy.sip_addr());
    run_ok("load_tcp", &run);
    let c = settled_counters(&proxy);
    assert_eq!(c.active, 0, "dialogs left active: {c:?}");
    assert!(
        c.processed >= 10_000,
        "processed_dialogs {} < 10000",
        c.processed
    );
}
