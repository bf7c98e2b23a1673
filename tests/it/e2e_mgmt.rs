//! End-to-end acceptance of management and the command line with the real `sipedge` binary:
//! Kamailio-style `dlg.*` RPCs against live SIPp calls on hold, termination of live calls
//! (`dlg.end_dlg`, `dlg.terminate_dlg`, BYE to both SIPps), `/metrics`, `sipedge ctl`, and
//! the one-line errors of `run` and `check-config`.
//!
//! Every test runs on fresh 127.0.0.1 ports in its own scratch dir, bounds every wait and
//! kills its processes on the way out. Needs `sipp` (`apt-get install sip-tester`) except
//! `cli_errors_are_one_clear_line`; `SIPEDGE_SKIP_SIPP=1` skips the SIPp tests when missing.
use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::agent::{UacRun, Uas};
use common::proxy::Proxy;
use common::sipp::{BASIC, CallRun, scenario_dir, sipp_available};
use common::{TempDir, free_port_pair, free_udp_port, now, spawn_guarded};
use serde_json::{Value, json};

/// Polls until `cond` holds (every 50 ms, at most `max`); returns whether it did.
fn wait_until(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now() + max;
    loop {
        if cond() {
            return true;
        }
        if now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The entries of a dialog list result (panics if it is not an array).
fn entries(v: &Value) -> Vec<Value> {
    match v.as_array() {
        Some(a) => a.clone(),
        None => panic!("expected a JSON array of dialogs, got {v}"),
    }
}

/// A string field (`""` when absent), nested paths like `["caller", "tag"]`.
fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// The user part of a SIP URI (`sip:caller1@1.2.3.4:5` → `caller1`).
fn uri_user(uri: &str) -> &str {
    let rest = uri.trim_start_matches('<');
    let rest = rest.strip_prefix("sip:").unwrap_or(rest);
    rest.split('@').next().unwrap_or_default()
}

/// Output of one finished `sipedge` command.
struct CliOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sipedge ARGS` with stdout/stderr to files in `dir`, killed after `max`.
fn sipedge(dir: &TempDir, tag: &str, args: &[&str], max: Duration) -> CliOutput {
    let (out_path, err_path) = (
        dir.join(&format!("{tag}.out")),
        dir.join(&format!("{tag}.err")),
    );
    let file = |p: &Path| match std::fs::File::create(p) {
        Ok(f) => Stdio::from(f),
        Err(e) => panic!("cannot create {}: {e}", p.display()),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path));
    let mut child = match spawn_guarded(&mut cmd, tag) {
        Ok(c) => c,
        Err(e) => panic!("cannot spawn sipedge: {e}"),
    };
    let status = child.wait_timeout(max);
    assert!(
        status.is_some(),
        "`sipedge {args:?}` still running after {max:?}"
    );
    CliOutput {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
    }
}

/// Asserts `text` is exactly one non-empty line (a trailing newline allowed).
fn assert_one_line(what: &str, text: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line, got {text:?}");
}

fn caller_profile_config() -> String {
    scenario_dir()
        .join("caller-profile.toml")
        .to_string_lossy()
        .into_owned()
}

/// During a 5 s hold, the dialog list RPCs show each live call with Kamailio's fields.
#[test]
fn dlg_list_and_ctx_show_live_calls() {
    if !sipp_available() {
        return;
    }
    let calls = 3u64;
    let config = caller_profile_config();
    let proxy = Proxy::start(&["--log", "warn", "--config", &config]);
    let dir = TempDir::new("e2e_list");
    let uas = Uas::start(&dir, "uas", "uas.xml");
    let uac = UacRun::new("uac", "uac.xml", 3)
        .hold_ms(5000)
        .start(&dir, &uas, proxy.sip_addr());
    let up = wait_until(Duration::from_secs(5), || {
        proxy.active_dialogs().ongoing == calls
    });
    assert!(up, "calls not confirmed: {:?}", proxy.active_dialogs());

    let list = entries(&proxy.rpc("dlg.list", Value::Null));
    assert_eq!(list.len(), 3, "dlg.list: {list:?}");
    for d in &list {
        assert!(d["h_entry"].is_u64() && d["h_id"].is_u64(), "ids: {d}");
        assert_eq!(d["state"], json!(4), "confirmed state: {d}");
        assert!(!text(d, &["call-id"]).is_empty(), "call-id: {d}");
        // SIPp tags: caller `<pid>T<n>`, callee `<pid>U<n>`, same n.
        let (ct, et) = (text(d, &["caller", "tag"]), text(d, &["callee", "tag"]));
        let n = ct.rsplit('T').next().unwrap_or_default();
        assert!(
            ct.contains('T') && et.ends_with(&format!("U{n}")),
            "caller/callee tags {ct:?}/{et:?}: {d}"
        );
        assert!(
            d.get("profiles").is_none(),
            "dlg.list prints no context: {d}"
        );
    }
    let mut ids: Vec<(u64, u64)> = list
        .iter()
        .map(|d| {
            (
                d["h_entry"].as_u64().unwrap_or(0),
                d["h_id"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "h_entry/h_id must be unique: {ids:?}");

    for d in entries(&proxy.rpc("dlg.list_ctx", Value::Null)) {
        let user = uri_user(text(&d, &["from_uri"])).to_owned();
        let want = json!([{ "caller": user }]);
        assert_eq!(d["profiles"], want, "dlg.list_ctx profiles: {d}");
    }

    let callid = text(&list[1], &["call-id"]).to_owned();
    let one = entries(&proxy.rpc("dlg.dlg_list", json!([callid])));
    assert_eq!(one.len(), 1, "dlg.dlg_list {callid}: {one:?}");
    assert_eq!(text(&one[0], &["call-id"]), callid);
    assert_eq!(one[0]["h_id"], list[1]["h_id"]);
    let matched = entries(&proxy.rpc("dlg.list_match", json!(["callid", "eq", callid])));
    assert_eq!(matched.len(), 1, "dlg.list_match callid eq: {matched:?}");
    assert_eq!(text(&matched[0], &["call-id"]), callid);
    let none = entries(&proxy.rpc("dlg.list_match", json!(["callid", "eq", "no-such-call"])));
    assert!(none.is_empty(), "{none:?}");

    uac.wait().assert_all_ok(calls);
    let gone = wait_until(Duration::from_secs(5), || proxy.active_dialogs().all == 0);
    assert!(gone, "dialogs left: {:?}", proxy.active_dialogs());
    assert_eq!(uas.finish().map_or(0, |s| s.successful), calls);
}

/// `dlg.end_dlg` and `dlg.terminate_dlg` end live calls: both SIPps get a BYE (and answer
/// 200) long before their 10 s wait runs out; unknown dialogs are clear errors.
#[test]
fn end_dlg_terminates_a_live_call() {
    if !sipp_available() {
        return;
    }
    let proxy = Proxy::start(&["--log", "warn"]);
    let dir = TempDir::new("e2e_end");
    let uas = Uas::start(&dir, "uas", "uas_expire.xml");
    let mut uac = UacRun::new("uac", "uac_expire.xml", 2).start(&dir, &uas, proxy.sip_addr());
    let up = wait_until(Duration::from_secs(5), || {
        proxy.active_dialogs().ongoing == 2
    });
    assert!(up, "calls not confirmed: {:?}", proxy.active_dialogs());
    let list = entries(&proxy.rpc("dlg.list", Value::Null));
    assert_eq!(list.len(), 2, "{list:?}");
    let (a, b) = (&list[0], &list[1]);

    let t0 = now();
    let r = proxy.rpc("dlg.end_dlg", json!([a["h_entry"], a["h_id"]]));
    assert_eq!(r, json!("Dialog terminated"));
    let a_callid = text(a, &["call-id"]).to_owned();
    let a_gone = wait_until(Duration::from_secs(3), || {
        entries(&proxy.rpc("dlg.dlg_list", json!([a_callid]))).is_empty()
    });
    assert!(a_gone, "ended dialog still listed");
    assert_eq!(proxy.active_dialogs().all, 1, "one call left");
    assert!(uac.running(), "the other call must still be up");

    let (callid, ftag, ttag) = (
        text(b, &["call-id"]),
        text(b, &["caller", "tag"]),
        text(b, &["callee", "tag"]),
    );
    let r = proxy.rpc("dlg.terminate_dlg", json!([callid, ftag, ttag]));
    assert_eq!(r, json!("Dialog terminated"));
    let out = uac.wait();
    out.assert_all_ok(2);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "BYEs took {:?} (the scenarios wait 10 s for them)",
        t0.elapsed()
    );
    let idle = wait_until(Duration::from_secs(3), || {
        proxy.dialog_counters().active == 0
    });
    assert!(idle, "active dialogs left: {:?}", proxy.dialog_counters());
    assert!(entries(&proxy.rpc("dlg.list", Value::Null)).is_empty());

    let m = proxy.mgmt();
    for (method, params) in [
        ("dlg.end_dlg", json!([a["h_entry"], a["h_id"]])),
        ("dlg.end_dlg", json!([12345, 67890])),
        ("dlg.terminate_dlg", json!(["no-such-call", "x", "y"])),
        ("dlg.terminate_dlg", json!([callid, ftag, ttag])),
    ] {
        match m.try_rpc(method, params.clone()) {
            Ok(v) => panic!("{method} {params} on an unknown dialog succeeded: {v}"),
            Err(e) => assert!(
                e.to_lowercase().contains("not found"),
                "{method} {params}: unclear error {e}"
            ),
        }
    }
    let uas_errors = uas.errors();
    let uas_ok = uas.finish().map_or(0, |s| s.successful);
    assert_eq!(uas_ok, 2, "the UAS must get both BYEs\n{uas_errors}");
}

/// Sum of every sample of `name` in Prometheus text whose labels contain `label`.
fn metric_sum(body: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = key.split('{').next().unwrap_or_default();
        if metric == name && key.contains(label) {
            let v: f64 = value.parse().unwrap_or(f64::NAN);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// After real calls, `/metrics` shows dialog gauges and per-worker packet counters, and
/// `sipedge ctl` prints JSON, tables, and one error line when the port is closed.
#[test]
fn metrics_and_ctl_against_running_proxy() {
    if !sipp_available() {
        return;
    }
    // Every worker fed from the start (adaptive spreading would keep 20 calls on one).
    let proxy = Proxy::start(&["--log", "warn", "--spread", "all"]);
    let dir = TempDir::new("e2e_metrics");
    let report = CallRun::new(BASIC, 20)
        .rate(50)
        .via(proxy.sip_addr())
        .run(&dir);
    report.assert_all_ok(20);

    let body = proxy.metrics();
    assert!(
        body.lines()
            .any(|l| l.starts_with("sipedge_dialog_active_dialogs ")),
        "no sipedge_dialog_active_dialogs in /metrics:\n{body}"
    );
    // Every received batch was forwarded with one flush, timed apart from the packet work:
    // at least one send sample, and never more than packets processed. Workers hand their
    // histograms over once a second, so look again for up to 3 s.
    let (mut sends, mut packets) = (0.0, 0.0);
    for _ in 0..10 {
        let b = proxy.metrics();
        sends = metric_sum(&b, "sipedge_send_latency_us_count", "").unwrap_or(0.0);
        packets = metric_sum(&b, "sipedge_packet_processing_latency_us_count", "").unwrap_or(0.0);
        if sends >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        sends >= 1.0 && sends <= packets,
        "send samples {sends}, packet samples {packets}"
    );
    for counter in ["sipedge_packets_in_total", "sipedge_packets_out_total"] {
        let total = metric_sum(&body, counter, "transport=\"udp\"").unwrap_or(0.0);
        assert!(total >= 20.0 * 4.0, "{counter} = {total} after 20 calls");
        // Calls are spread over both workers (20 calls, each worker gets about half).
        assert!(
            body.lines().any(|l| l == "sipedge_workers_active 2"),
            "--spread all: expected sipedge_workers_active 2:\n{body}"
        );
        for w in 0..2 {
            let label = format!("worker=\"{w}\",transport=\"udp\"");
            let n = metric_sum(&body, counter, &label).unwrap_or(0.0);
            assert!(
                n > 0.0,
                "{counter}{{{label}}} = {n} after 20 calls:\n{body}"
            );
        }
    }

    let mgmt = format!("127.0.0.1:{}", proxy.mgmt_port);
    let five = Duration::from_secs(5);
    let out = sipedge(
        &dir,
        "ctl_json",
        &["ctl", "--mgmt", &mgmt, "dlg.stats_active"],
        five,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl output is not JSON ({e}): {}", out.stdout));
    assert_eq!(common::mgmt::lookup(&v, &["all"]), Some(0), "{v}");

    let args = ["ctl", "--mgmt", &mgmt, "--format", "table", "stats.latency"];
    let out = sipedge(&dir, "ctl_table", &args, five);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.split_whitespace().any(|c| c == "p99") && out.stdout.contains("packet_processing"),
        "stats.latency table:\n{}",
        out.stdout
    );

    let closed = format!("127.0.0.1:{}", free_udp_port());
    let out = sipedge(
        &dir,
        "ctl_closed",
        &["ctl", "--mgmt", &closed, "dlg.list"],
        five,
    );
    assert!(matches!(out.code, Some(c) if c != 0), "exit {:?}", out.code);
    assert_one_line("ctl against a closed port", &out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
}

/// Start-up and config errors are one line naming the problem, with a non-zero exit; a
/// running proxy stops within 2 s of SIGTERM.
#[test]
fn cli_errors_are_one_clear_line() {
    let dir = TempDir::new("e2e_cli");
    let ten = Duration::from_secs(10);

    let out = sipedge(&dir, "bogus", &["run", "--listen", "bogus"], ten);
    assert!(matches!(out.code, Some(c) if c != 0), "exit {:?}", out.code);
    assert_one_line("--listen bogus", &out.stderr);
    assert!(out.stderr.contains("--listen"), "{}", out.stderr);

    let (port, mgmt) = free_port_pair();
    let busy = match std::net::UdpSocket::bind(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => panic!("bind {port}: {e}"),
    };
    let listen = format!("udp:127.0.0.1:{port}");
    let mgmt_addr = format!("127.0.0.1:{mgmt}");
    let args = [
        "run",
        "--listen",
        &listen,
        "--mgmt",
        &mgmt_addr,
        "--workers",
        "1",
    ];
    let out = sipedge(&dir, "busy", &args, ten);
    drop(busy);
    assert!(matches!(out.code, Some(c) if c != 0), "exit {:?}", out.code);
    assert_one_line("port in use", &out.stderr);
    assert!(
        out.stderr.contains("already in use") && out.stderr.contains(&listen),
        "{}",
        out.stderr
    );

    let (port, mgmt) = free_port_pair();
    let busy = match std::net::TcpListener::bind(("127.0.0.1", mgmt)) {
        Ok(s) => s,
        Err(e) => panic!("bind {mgmt}: {e}"),
    };
    let listen = format!("udp:127.0.0.1:{port}");
    let mgmt_addr = format!("127.0.0.1:{mgmt}");
    let args = [
        "run",
        "--listen",
        &listen,
        "--mgmt",
        &mgmt_addr,
        "--workers",
        "1",
    ];
    let out = sipedge(&dir, "busy_mgmt", &args, ten);
    drop(busy);
    assert!(matches!(out.code, Some(c) if c != 0), "exit {:?}", out.code);
    assert_one_line("management port in use", &out.stderr);
    assert!(
        out.stderr.contains("cannot bind") && out.stderr.contains(&mgmt_addr),
        "{}",
        out.stderr
    );

    let broken = dir.join("broken.toml");
    let text = "[core]\nworkers = \"many\"\n";
    if let Err(e) = std::fs::write(&broken, text) {
        panic!("write {}: {e}", broken.display());
    }
    let path = broken.to_string_lossy().into_owned();
    let out = sipedge(&dir, "check_bad", &["check-config", &path], ten);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!("{path}:2:11:")),
        "expected {path}:2:11: first, got {}",
        out.stderr
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/per-caller-limit.toml");
    let example = example.to_string_lossy().into_owned();
    let out = sipedge(&dir, "check_ok", &["check-config", &example], ten);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let mut proxy = Proxy::start(&["--log", "warn"]);
    let t0 = now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(2));
    assert!(
        status.is_some(),
        "still running 2 s after SIGTERM\n{}",
        proxy.log_tail()
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit on SIGTERM"
    );
}
