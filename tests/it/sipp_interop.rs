//! SIPp interop: real SIP traffic on 127.0.0.1 through the `sipedge` binary, checked both
//! end to end (SIPp's call counters) and through the management API (dialog counters).
//!
//! The `direct_*` tests run the same scenario pairs UAC → UAS with no proxy: they prove the
//! scenarios and the harness, so a failure of a proxy test points at the proxy. They test
//! SIPp against itself, not sipedge, so they are `#[ignore]`d: run them after changing a
//! scenario or the harness (`cargo test --test it sipp_interop::direct_ -- --ignored`).
//! Every test bounds its waits (see `common`), runs on its own ports and scratch dir, and
//! kills its SIPp and proxy processes on the way out, pass or fail.
//!
//! Needs `sipp` (`apt-get install sip-tester`); `SIPEDGE_SKIP_SIPP=1` skips when missing.
use crate::common;

use std::thread;
use std::time::Duration;

use common::mgmt::{ActiveDialogs, DialogCounters, MgmtClient};
use common::proxy::Proxy;
use common::sipp::{
    BASIC, CANCEL, CallRun, REJECT_486, SippReport, Transport, scenario_dir, sipp_available,
};
use common::{TempDir, free_udp_port, now, spawn_guarded};
use serde_json::{Value, json};

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

/// Path of `tests/sipp/caller-profile.toml` (profile "caller" = From user on each INVITE).
fn caller_profile_config() -> String {
    scenario_dir()
        .join("caller-profile.toml")
        .to_string_lossy()
        .into_owned()
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
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_basic_udp() {
    if sipp_available() {
        run_ok("direct_basic_udp", &CallRun::new(BASIC, 200).rate(100));
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_basic_tcp() {
    if sipp_available() {
        let run = CallRun::new(BASIC, 100).rate(100).transport(Transport::Tcp);
        run_ok("direct_basic_tcp", &run);
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
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
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_reject_486_udp() {
    if sipp_available() {
        run_ok("direct_486_udp", &CallRun::new(REJECT_486, 50).rate(100));
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_reject_486_tcp() {
    if sipp_available() {
        let run = CallRun::new(REJECT_486, 50).transport(Transport::Tcp);
        run_ok("direct_486_tcp", &run);
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_cancel_after_180_udp() {
    if sipp_available() {
        run_ok("direct_cancel_udp", &CallRun::new(CANCEL, 50).rate(100));
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_cancel_after_180_tcp() {
    if sipp_available() {
        let run = CallRun::new(CANCEL, 50).transport(Transport::Tcp);
        run_ok("direct_cancel_tcp", &run);
    }
}

#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
fn direct_load_2k_udp() {
    if sipp_available() {
        run_ok("direct_load_udp", &CallRun::new(BASIC, 2000).rate(500));
    }
}

/// The harness must report failures, not only successes: a UAS that rejects every call
/// (486) under a UAC that expects 200 gives 0 successful and all calls failed.
#[test]
#[ignore = "SIPp against itself: a check of the harness, not of sipedge"]
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

// ---------------------------------------------------------------- harness self-tests

/// Answers like the proxy's management API is specified to, checking each request.
fn fake_mgmt(req: &Value) -> Value {
    assert_eq!(req["jsonrpc"], "2.0", "not JSON-RPC 2.0: {req}");
    let result = match req["method"].as_str() {
        Some("dlg.stats_active") => {
            json!({"starting": 1, "connecting": 2, "answering": 0, "ongoing": "4", "all": 7})
        }
        Some("stats.fetch") => json!({
            "core:rcv_requests": 9, "dialog:active_dialogs": 3,
            "dialog:processed_dialogs": 250, "dialog:failed_dialogs": 50
        }),
        Some("dlg.profile_get_size") if req["params"] == json!(["caller", "sip:a@b"]) => {
            json!({"size": 2})
        }
        _ => {
            let err = json!({"code": -32601, "message": "Method not found"});
            return json!({"jsonrpc": "2.0", "error": err, "id": req["id"]});
        }
    };
    json!({"jsonrpc": "2.0", "result": result, "id": req["id"]})
}

#[test]
fn harness_mgmt_client_against_fake_server() {
    let port = free_udp_port();
    let server = match tiny_http::Server::http(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => panic!("fake mgmt server: {e}"),
    };
    let served = thread::spawn(move || {
        let mut n = 0;
        // Bounded: stops after 2 s without a request.
        while let Ok(Some(mut rq)) = server.recv_timeout(Duration::from_secs(2)) {
            let mut body = String::new();
            let _ = rq.as_reader().read_to_string(&mut body);
            let answer = match rq.url() {
                "/health" => "ok".to_owned(),
                "/jsonrpc" => {
                    fake_mgmt(&serde_json::from_str(&body).unwrap_or(Value::Null)).to_string()
                }
                _ => String::new(),
            };
            let code = if answer.is_empty() { 404 } else { 200 };
            let _ = rq.respond(tiny_http::Response::from_string(answer).with_status_code(code));
            n += 1;
        }
        n
    });
    let m = MgmtClient::new(port);
    assert!(m.health());
    let active = m.active_dialogs();
    let want = ActiveDialogs {
        starting: 1,
        connecting: 2,
        answering: 0,
        ongoing: 4,
        all: 7,
    };
    assert_eq!(active, want);
    let c = m.dialog_counters();
    assert_eq!((c.active, c.processed, c.failed), (3, 250, 50));
    assert_eq!(m.profile_size("caller", Some("sip:a@b")), 2);
    let err = m.try_rpc("no.such.method", Value::Null);
    assert!(err.as_ref().is_err_and(|e| e.contains("-32601")), "{err:?}");
    assert!(
        MgmtClient::new(free_udp_port())
            .try_rpc("stats.fetch", Value::Null)
            .is_err()
    );
    assert_eq!(served.join().unwrap_or(0), 5, "requests served");
}

#[test]
fn harness_caller_profile_config_is_valid() {
    let text = std::fs::read_to_string(caller_profile_config()).unwrap_or_default();
    let parsed = sipedge::config::Config::from_toml_str(&text);
    assert!(parsed.is_ok(), "tests/sipp/caller-profile.toml: {parsed:?}");
}

#[test]
fn harness_child_guard_kills_on_drop() {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30");
    let guard = match spawn_guarded(&mut cmd, "sleep") {
        Ok(g) => g,
        Err(e) => panic!("spawn sleep: {e}"),
    };
    let proc_dir = format!("/proc/{}", guard.id());
    assert!(std::path::Path::new(&proc_dir).exists());
    let t0 = now();
    drop(guard);
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "child survived its guard"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "SIGTERM should end sleep at once"
    );
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
    let config = caller_profile_config();
    let proxy = Proxy::start(&["--log", "warn", "--config", &config]);
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
    // SIPp's first call has From user "caller1"; it is on hold now, the profile counts it once.
    let caller1 = proxy.profile_size("caller", Some("caller1"));
    let nobody = proxy.profile_size("caller", Some("nobody"));
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
    assert_eq!(
        (caller1, nobody),
        (1, 0),
        "profile caller sizes for caller1, nobody"
    );
    let deadline = now() + Duration::from_secs(5);
    let mut after = proxy.active_dialogs();
    while after.all != 0 && now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = proxy.active_dialogs();
    }
    assert_eq!(after.all, 0, "dialogs left after the run: {after:?}");
    let caller1_after = proxy.profile_size("caller", Some("caller1"));
    assert_eq!(caller1_after, 0, "profile membership not released");
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
