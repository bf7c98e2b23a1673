//! Management API end to end: real HTTP on 127.0.0.1 (port 0) against a fake backend.
//!
//! Covers every RPC method with valid and invalid parameters, the JSON-RPC envelope
//! (batches, notifications, parse/invalid-request errors), bearer-token auth, the body size
//! limit, the batch limit, `/health` (open, 503 with a dead worker, detail for the token
//! holder), `/metrics` (checked by a strict Prometheus text parser) and `ctl::run`
//! in both output formats and against a closed port.
// Real-socket test: it may read the wall clock (shutdown latency) and unwrap freely.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipedge::io::mgmt_http::{self, MgmtHandle};
use sipedge::mgmt::MgmtBackend;
use sipedge::mgmt::ctl::{self, CtlArgs, Format};

mod fake;
mod prom;

use fake::*;
use prom::parse_prometheus;

#[test]
fn dlg_list_streams_pages_and_follows_kamailio_fields() {
    let (h, fake) = start(2500, None);
    let all = ok(&h, "dlg.list", json!([]));
    assert_eq!(all.as_array().unwrap().len(), 2500);
    assert!(
        fake.max_page.load(Ordering::Relaxed) <= 1000,
        "fetched in pages"
    );
    assert!(fake.page_calls.load(Ordering::Relaxed) >= 3);
    let d = &all[4];
    for k in [
        "h_entry",
        "h_id",
        "call-id",
        "from_uri",
        "to_uri",
        "state",
        "start_ts",
        "init_ts",
        "end_ts",
        "timeout",
        "lifetime",
        "dflags",
        "sflags",
        "caller",
        "callee",
        "early_legs",
    ] {
        assert!(d.get(k).is_some(), "missing {k} in {d}");
    }
    for k in ["tag", "contact", "cseq", "route_set", "socket"] {
        assert!(
            d["caller"].get(k).is_some() && d["callee"].get(k).is_some(),
            "{k}"
        );
    }
    assert_eq!(
        (d["h_id"].clone(), d["call-id"].clone()),
        (json!(4), json!("call-4"))
    );
    assert!(
        d.get("profiles").is_none() && d.get("variables").is_none(),
        "no ctx"
    );
    assert_eq!(all[5]["early_legs"].as_array().unwrap().len(), 2);

    let page = ok(&h, "dlg.list", json!([10, 5]));
    let ids: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["h_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![10, 11, 12, 13, 14]);
    let named = ok(&h, "dlg.list", json!({"start": 2499, "count": 10}));
    assert_eq!(named.as_array().unwrap().len(), 1);
    let ctx = ok(&h, "dlg.list_ctx", json!([0, 1]));
    assert_eq!(
        ctx[0]["profiles"],
        json!([{"caller": "sip:alice0@a.example"}])
    );
    assert_eq!(ctx[0]["variables"], json!([{"k": "v"}]));

    let (code, msg) = err(&h, "dlg.list", json!(["x"]));
    assert_eq!(
        (code, msg.as_str()),
        (-32602, "start: expected an unsigned integer")
    );
    let (code, msg) = err(&h, "dlg.list", json!([0, -1]));
    assert_eq!(
        (code, msg.as_str()),
        (-32602, "count: expected an unsigned integer")
    );
    let (code, msg) = err(&h, "dlg.list", json!([0, 1, 2]));
    assert!(
        code == -32602 && msg.contains("too many parameters"),
        "{msg}"
    );
    h.shutdown();
}

#[test]
fn dlg_list_match_filters_and_rejects_bad_filters() {
    let (h, _) = start(100, None);
    let count = |p: Value| ok(&h, "dlg.list_match", p).as_array().unwrap().len();
    assert_eq!(count(json!(["callid", "eq", "call-7"])), 1);
    assert_eq!(count(json!(["furi", "sw", "sip:alice1", 5])), 5);
    assert_eq!(count(json!(["furi", "sw", "sip:alice1"])), 11); // 1, 10..19
    assert_eq!(count(json!(["callid", "re", "^call-9[0-9]$"])), 10);
    assert_eq!(count(json!(["ruri", "eq", "sip:bob@10.0.0.1"])), 100);
    assert_eq!(count(json!(["turi", "eq", "sip:nobody@x"])), 0);
    assert_eq!(count(json!(["start_ts", "gt", 1090])), 9);
    assert_eq!(count(json!(["start_ts", "lt", "1002"])), 2);
    let ctx = ok(&h, "dlg.list_match_ctx", json!(["callid", "eq", "call-3"]));
    assert!(ctx[0].get("profiles").is_some());

    let (c, m) = err(&h, "dlg.list_match", json!(["nope", "eq", "x"]));
    assert!(c == -32602 && m.starts_with("key:"), "{m}");
    let (c, m) = err(&h, "dlg.list_match", json!(["callid", "like", "x"]));
    assert!(c == -32602 && m.starts_with("op:"), "{m}");
    let (c, m) = err(&h, "dlg.list_match", json!(["callid", "gt", "x"]));
    assert!(c == -32602 && m.contains("start_ts"), "{m}");
    let (c, m) = err(&h, "dlg.list_match", json!(["callid", "re", "(unclosed"]));
    assert!(
        c == -32602 && m.starts_with("value: invalid regular expression"),
        "{m}"
    );
    let (c, m) = err(&h, "dlg.list_match", json!(["start_ts", "gt", "soon"]));
    assert_eq!(
        (c, m.as_str()),
        (-32602, "value: expected an unsigned integer")
    );
    let (c, m) = err(&h, "dlg.list_match", json!(["callid"]));
    assert!(c == -32602 && m.starts_with("op: missing"), "{m}");
}

#[test]
fn dlg_lookup_briefing_and_dialog_actions() {
    let (h, fake) = start(20, None);
    let l = ok(&h, "dlg.dlg_list", json!(["call-3"]));
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert!(l[0].get("profiles").is_none());
    assert_eq!(
        ok(&h, "dlg.dlg_list", json!(["call-3", "ft3"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(&h, "dlg.dlg_list", json!(["call-3", "zz"])), json!([]));
    assert!(
        ok(&h, "dlg.dlg_list_ctx", json!(["call-3"]))[0]
            .get("profiles")
            .is_some()
    );
    assert_eq!(
        err(&h, "dlg.dlg_list", json!([])).1,
        "callid: missing required parameter (string)"
    );

    let b = ok(&h, "dlg.briefing", json!([]));
    assert_eq!(b.as_array().unwrap().len(), 20);
    assert_eq!(b[2]["from_tag"], "ft2");
    assert_eq!(b[2]["to_tag"], "tt2");
    assert_eq!(
        ok(&h, "dlg.briefing", json!(["cS"]))[0],
        json!({"call-id": "call-0", "state": 4})
    );
    assert!(
        err(&h, "dlg.briefing", json!(["cQ"]))
            .1
            .starts_with("fmt: unknown field letter 'Q'")
    );

    assert_eq!(
        ok(&h, "dlg.terminate_dlg", json!(["call-2", "ft2", "tt2"])),
        "Dialog terminated"
    );
    assert_eq!(
        err(&h, "dlg.terminate_dlg", json!(["call-2", "ft2", "bad"])),
        (404, "Dialog not found".into())
    );
    assert!(
        err(&h, "dlg.terminate_dlg", json!(["call-2", "ft2"]))
            .1
            .starts_with("to_tag:")
    );
    assert_eq!(
        ok(&h, "dlg.end_dlg", json!([4, 4, "X-Reason: ops\r\n"])),
        "Dialog terminated"
    );
    assert_eq!(
        ok(&h, "dlg.end_dlg", json!({"h_entry": 5, "h_id": 5})),
        "Dialog terminated"
    );
    assert_eq!(err(&h, "dlg.end_dlg", json!([4, 5])).0, 404);
    assert_eq!(
        err(&h, "dlg.end_dlg", json!(["x", 1])),
        (-32602, "h_entry: expected an unsigned integer".into())
    );
    assert_eq!(
        err(&h, "dlg.end_dlg", json!([1, 4294967296u64])).1,
        "h_id: expected an unsigned 32-bit integer"
    );
    assert!(
        err(
            &h,
            "dlg.end_dlg",
            json!({"h_entry": 1, "h_id": 1, "bogus": 1})
        )
        .1
        .starts_with("bogus: unknown parameter")
    );
    let ended = fake.ended.lock().unwrap().clone();
    assert_eq!(
        ended,
        vec!["call-2|", "call-4|X-Reason: ops\r\n", "call-5|"]
    );

    assert_eq!(
        ok(&h, "dlg.is_alive", json!(["call-2", "ft2", "tt2"])),
        "Alive"
    );
    assert_eq!(err(&h, "dlg.is_alive", json!(["call-3", "ft3", ""])).0, 500); // early
    assert_eq!(err(&h, "dlg.is_alive", json!(["nope", "a", "b"])).0, 404);

    assert_eq!(ok(&h, "dlg.set_timeout", json!([6, 6, 30])), "Timeout set");
    assert_eq!(err(&h, "dlg.set_timeout", json!([6, 7, 30])).0, 404);
    assert_eq!(
        err(&h, "dlg.set_timeout", json!([6, 6, "soon"])).1,
        "timeout: expected an unsigned integer"
    );
    assert_eq!(*fake.timeouts.lock().unwrap(), vec![(6, 6, 30)]);
}

#[test]
fn profiles_and_dialog_statistics() {
    let (h, fake) = start(10, None);
    let s = ok(&h, "dlg.profile_get_size", json!(["caller"]));
    assert_eq!(s, json!({"profile": "caller", "value": "", "count": 10}));
    assert_eq!(
        ok(
            &h,
            "dlg.profile_get_size",
            json!(["caller", "sip:alice1@a.example"])
        )["count"],
        1
    );
    assert_eq!(
        err(&h, "dlg.profile_get_size", json!(["nope"])),
        (404, "Profile not found: nope".into())
    );
    assert!(
        err(&h, "dlg.profile_get_size", json!([]))
            .1
            .starts_with("profile: missing")
    );
    let l = ok(
        &h,
        "dlg.profile_list",
        json!(["caller", "sip:alice2@a.example"]),
    );
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert!(l[0].get("profiles").is_none());
    assert_eq!(
        ok(&h, "dlg.profile_end_dlgs", json!(["caller"])),
        json!({"ended": 10})
    );
    assert_eq!(
        err(&h, "dlg.profile_end_dlgs", json!([true])).1,
        "profile: expected a string"
    );

    let a = ok(&h, "dlg.stats_active", json!([]));
    assert_eq!(
        a,
        json!({"starting": 0, "connecting": 5, "answering": 0, "ongoing": 5, "all": 10})
    );
    assert!(
        err(&h, "dlg.stats_active", json!([1]))
            .1
            .contains("too many parameters")
    );

    let all: Vec<String> =
        serde_json::from_value(ok(&h, "stats.get_statistics", json!(["all"]))).unwrap();
    for line in [
        "dialog:active_dialogs = 10",
        "dialog:processed_dialogs = 42",
        "core:packets_in_udp = 15",
        "core:packets_out_tcp = 1",
        "parse_errors:bad_header = 1",
        "sl:486_replies = 1",
        "sl:xxx_replies = 0",
    ] {
        assert!(all.iter().any(|l| l == line), "missing {line} in {all:?}");
    }
    let dlg = ok(&h, "stats.get_statistics", json!(["dialog:"]));
    assert_eq!(dlg.as_array().unwrap().len(), 5);
    assert_eq!(
        ok(
            &h,
            "stats.get_statistics",
            json!(["failed_dialogs", "dialog:early_dialogs"])
        ),
        json!(["dialog:failed_dialogs = 2", "dialog:early_dialogs = 1"])
    );
    assert_eq!(
        err(&h, "stats.get_statistics", json!(["bogus:"])),
        (404, "Statistic not found: bogus:".into())
    );
    assert_eq!(
        ok(&h, "stats.fetch", json!(["dialog:expired_dialogs"])),
        json!({"dialog.expired_dialogs": "3"})
    );
    assert_eq!(
        ok(&h, "stats.fetchn", json!(["sl:486_replies"])),
        json!({"sl.486_replies": 1})
    );
    assert_eq!(
        ok(&h, "stats.reset_statistics", json!(["all"])),
        "Statistics reset"
    );
    assert_eq!(fake.resets.load(Ordering::Relaxed), 1);

    let lat = ok(&h, "stats.latency", json!([]));
    let p = &lat["packet_processing"];
    assert_eq!(
        (p["count"].clone(), p["p50"].clone()),
        (json!(5), json!(30))
    );
    assert!(p["max"].as_u64().unwrap() >= 5000 && p["p99_99"].as_u64().unwrap() >= 5000);
    for k in ["p50", "p90", "p99", "p99_9", "p99_99", "max", "count"] {
        assert!(lat["invite_to_final"].get(k).is_some(), "{k}");
    }
}

#[test]
fn core_methods_and_method_table() {
    let (h, _) = start(1, None);
    assert_eq!(ok(&h, "core.version", json!([])), "sipedge 0.1.0");
    assert_eq!(ok(&h, "core.uptime", json!([])), json!({"uptime": 77}));
    assert_eq!(ok(&h, "core.reload", json!([])), "Config reloaded");
    assert_eq!(
        ok(&h, "core.loglevel", json!([])),
        json!({"loglevel": "info"})
    );
    assert_eq!(
        ok(&h, "core.loglevel", json!(["debug"])),
        json!({"loglevel": "debug"})
    );
    assert!(
        err(&h, "core.loglevel", json!(["loud"]))
            .1
            .starts_with("level: expected one of")
    );
    assert!(
        err(&h, "core.version", json!([1]))
            .1
            .contains("too many parameters")
    );
    let methods: Vec<String> =
        serde_json::from_value(ok(&h, "system.listMethods", json!([]))).unwrap();
    assert!(methods.len() >= 25);
    for m in &methods {
        let v = call(&h, m, json!([]));
        let code = v["error"]["code"].as_i64();
        assert_ne!(code, Some(-32601), "{m} is listed but not dispatched");
    }
    // dlg.bridge_dlg validates its URIs before reaching the backend (the fake refuses).
    let (code, msg) = err(&h, "dlg.bridge_dlg", json!(["alice", "sip:bob@10.0.0.2"]));
    assert_eq!(code, -32602);
    assert!(msg.contains("from"), "{msg}");
    let (code, msg) = err(
        &h,
        "dlg.bridge_dlg",
        json!(["sip:a@10.0.0.1", "sip:b@10.0.0.2", "x"]),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("op"), "{msg}");
    let (code, _) = err(
        &h,
        "dlg.bridge_dlg",
        json!(["sip:a@10.0.0.1", "sip:b@10.0.0.2"]),
    );
    assert_eq!(code, 409, "the fake backend has no bridging");
    assert_eq!(
        err(&h, "dlg.frobnicate", json!([])),
        (-32601, "Method not found: dlg.frobnicate".into())
    );
}

fn post(h: &MgmtHandle, body: &str) -> (u16, String) {
    http(h, "POST", "/jsonrpc", body.as_bytes(), None)
}

#[test]
fn envelope_batches_notifications_and_errors() {
    let (h, fake) = start(5, None);
    let (s, t) = post(&h, "{not json");
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(
        (s, v["error"]["code"].clone(), v["id"].clone()),
        (200, json!(-32700), Value::Null)
    );
    for bad in [
        r#"{"method":"core.version","id":1}"#,
        r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
        r#"{"jsonrpc":"2.0","method":"core.version","params":"x","id":1}"#,
        r#"{"jsonrpc":"2.0","method":"core.version","id":{"a":1}}"#,
        r#"[]"#,
        r#"7"#,
    ] {
        let v: Value = serde_json::from_str(&post(&h, bad).1).unwrap();
        assert_eq!(v["error"]["code"], -32600, "{bad}: {v}");
    }
    // Batch: two calls, one notification, one invalid element -> three replies.
    let batch = r#"[
        {"jsonrpc":"2.0","method":"core.version","id":"a"},
        {"jsonrpc":"2.0","method":"dlg.end_dlg","params":[0,0]},
        {"jsonrpc":"2.0","method":"nope","id":2},
        1
    ]"#;
    let v: Value = serde_json::from_str(&post(&h, batch).1).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{v}");
    assert_eq!(
        (arr[0]["id"].clone(), arr[0]["result"].clone()),
        (json!("a"), json!("sipedge 0.1.0"))
    );
    assert_eq!(
        (arr[1]["id"].clone(), arr[1]["error"]["code"].clone()),
        (json!(2), json!(-32601))
    );
    assert_eq!(arr[2]["error"]["code"], -32600);
    assert_eq!(
        fake.ended.lock().unwrap().len(),
        1,
        "notification was executed"
    );
    // Only notifications (even failing ones): 204 and no body.
    let (s, t) = post(
        &h,
        r#"[{"jsonrpc":"2.0","method":"nope"},{"jsonrpc":"2.0","method":"core.version"}]"#,
    );
    assert_eq!((s, t.as_str()), (204, ""));
    let (s, t) = post(&h, r#"{"jsonrpc":"2.0","method":"core.version"}"#);
    assert_eq!((s, t.as_str()), (204, ""));
    // /RPC is an alias; null id is echoed.
    let (s, t) = http(
        &h,
        "POST",
        "/RPC",
        br#"{"jsonrpc":"2.0","method":"core.uptime","id":null}"#,
        None,
    );
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(
        (s, v["result"]["uptime"].clone(), v["id"].clone()),
        (200, json!(77), Value::Null)
    );
}

#[test]
fn http_rules_auth_size_health_and_shutdown() {
    let (h, _) = start(1, Some("s3cret"));
    // /health is open (load balancers probe it); only the token holder sees the detail.
    assert_eq!(http(&h, "GET", "/health", b"", None), (200, "ok".into()));
    assert_eq!(
        http(&h, "GET", "/health", b"", Some("wrong")),
        (200, "ok".into())
    );
    let (s, detail) = http(&h, "GET", "/health", b"", Some("s3cret"));
    let v: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!((s, v["status"].clone()), (200, json!("ok")), "{detail}");
    assert_eq!(v["workers"][0]["alive"], true, "{detail}");
    assert_eq!(http(&h, "POST", "/health", b"", None).0, 405);
    assert_eq!(http(&h, "GET", "/metrics", b"", None).0, 401);
    let body = br#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    assert_eq!(http(&h, "POST", "/jsonrpc", body, None).0, 401);
    assert_eq!(http(&h, "POST", "/jsonrpc", body, Some("s3cret")).0, 200);
    assert_eq!(http(&h, "GET", "/jsonrpc", b"", Some("s3cret")).0, 405);
    assert_eq!(http(&h, "GET", "/nope", b"", Some("s3cret")).0, 404);
    let big = vec![b' '; (1 << 20) + 10];
    assert_eq!(http(&h, "POST", "/jsonrpc", &big, Some("s3cret")).0, 413);

    let e = mgmt_http::spawn("0.0.0.0:0".parse().unwrap(), None, Fake::new(0)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("without a token"));
    mgmt_http::spawn("0.0.0.0:0".parse().unwrap(), Some("t".into()), Fake::new(0))
        .unwrap()
        .shutdown();

    let addr = h.local_addr();
    let t0 = Instant::now();
    h.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t0.elapsed()
    );
    // The listening socket is closed by the time shutdown returns (allow a little slack).
    let closed = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    assert!(closed, "listener still accepting after shutdown");
}

/// `/health` is 503 `not ready` while a worker is dead; the detail shows which, with its
/// restarts and the age of its last loop turn on the clock given to `spawn_with`.
#[test]
fn health_reports_dead_workers_and_detail() {
    let fake = Fake::new(0);
    let mut opts = mgmt_http::MgmtOptions::new("127.0.0.1:0".parse().unwrap(), Some("t".into()));
    opts.now_ms = Some(Arc::new(|| 5_000));
    let h = mgmt_http::spawn_with(opts, fake.clone()).unwrap();
    fake.workers[0].health().beat(4_250);
    assert_eq!(http(&h, "GET", "/health", b"", None), (200, "ok".into()));
    fake.workers[1].health().set_alive(false);
    fake.workers[1].health().add_restart();
    assert_eq!(
        http(&h, "GET", "/health", b"", None),
        (503, "not ready".into())
    );
    let (s, body) = http(&h, "GET", "/health", b"", Some("t"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s, v),
        (
            503,
            json!({"status": "not ready", "workers": [
                {"index": 0, "alive": true, "restarts": 0, "last_beat_ms_ago": 750},
                {"index": 1, "alive": false, "restarts": 1},
            ]})
        )
    );
    fake.workers[1].health().set_alive(true);
    assert_eq!(http(&h, "GET", "/health", b"", None).0, 200);
}

/// A batch of more than 100 entries runs none of them and names the limit.
#[test]
fn batches_over_the_limit_are_refused_whole() {
    let (h, fake) = start(5, None);
    let batch = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({"jsonrpc": "2.0", "method": "dlg.end_dlg", "params": [0, 0], "id": i}))
            .collect();
        Value::Array(items).to_string()
    };
    let (_, t) = post(&h, &batch(101));
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert_eq!(
        v["error"]["message"],
        "Invalid Request: batch of 101 entries exceeds the limit of 100"
    );
    assert_eq!(fake.ended.lock().unwrap().len(), 0, "nothing ran");
    let (_, t) = post(&h, &batch(100));
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 100);
    assert_eq!(fake.ended.lock().unwrap().len(), 100);
}

#[test]
fn metrics_are_valid_prometheus_text_with_expected_series() {
    let (h, _) = start(3, None);
    let (s, text) = http(&h, "GET", "/metrics", b"", None);
    assert_eq!(s, 200);
    let m = parse_prometheus(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("missing {k} in\n{text}"));
    assert_eq!(get("sipedge_dialog_active_dialogs"), 3.0);
    assert_eq!(get("sipedge_dialog_early_dialogs"), 1.0);
    assert_eq!(get("sipedge_dialog_processed_dialogs_total"), 42.0);
    assert_eq!(get("sipedge_dialog_expired_dialogs_total"), 3.0);
    assert_eq!(get("sipedge_dialog_failed_dialogs_total"), 2.0);
    assert_eq!(
        get(r#"sipedge_profile_size{profile="caller",value="sip:alice1@a.example"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sipedge_profile_size{profile="trunk \"x\"",value=""}"#),
        7.0
    );
    assert_eq!(
        get(r#"sipedge_packets_in_total{worker="0",transport="udp"}"#),
        10.0
    );
    assert_eq!(
        get(r#"sipedge_packets_out_total{worker="1",transport="tcp"}"#),
        1.0
    );
    assert_eq!(get(r#"sipedge_parse_errors_total{kind="bad_header"}"#), 1.0);
    assert_eq!(get(r#"sipedge_replies_generated_total{code="486"}"#), 1.0);
    assert_eq!(
        get(r#"sipedge_retransmissions_absorbed_total{worker="0"}"#),
        0.0
    );
    assert_eq!(get(r#"sipedge_tcp_connections_open{worker="1"}"#), 0.0);
    assert_eq!(get("sipedge_packet_processing_latency_us_count"), 5.0);
    assert_eq!(
        get(r#"sipedge_packet_processing_latency_us_bucket{le="50"}"#),
        4.0
    );
    assert_eq!(
        get(r#"sipedge_packet_processing_latency_us_bucket{le="5000"}"#),
        5.0
    );
    assert_eq!(get("sipedge_invite_to_final_latency_us_count"), 0.0);
    let series: HashSet<_> = m
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();
    assert!(series.contains("sipedge_tcp_accepted_total"));
}

fn ctl_args(addr: String, format: Format, method: &str, args: &[&str]) -> CtlArgs {
    CtlArgs {
        mgmt: addr,
        socket: None,
        token: None,
        token_file: None,
        format,
        method: method.into(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn run_ctl(a: &CtlArgs) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = ctl::run_to(a, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn ctl_prints_json_and_tables_and_reports_errors() {
    let (h, fake) = start(4, Some("tok"));
    let addr = h.local_addr().to_string();
    let mut a = ctl_args(addr.clone(), Format::Json, "dlg.stats_active", &[]);
    let (code, _, err) = run_ctl(&a);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: unauthorized (missing or wrong token: --token-file, SIPEDGE_TOKEN or --token)\n"
        )
    );
    a.token = Some("tok".into());
    let (code, out, _) = run_ctl(&a);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["all"], 4);
    assert!(out.contains("\n  \"all\": 4"), "pretty printed: {out}");

    // Numeric-looking args go as numbers (end_dlg accepts them), s: forces strings.
    let mut e = ctl_args(
        addr.clone(),
        Format::Json,
        "dlg.end_dlg",
        &["2", "2", "s:X-A: 1\r\n"],
    );
    e.token = Some("tok".into());
    assert_eq!(run_ctl(&e).0, 0);
    assert_eq!(
        fake.ended.lock().unwrap().last().unwrap(),
        "call-2|X-A: 1\r\n"
    );
    assert_eq!(ctl::typed_arg("42"), json!(42));
    assert_eq!(ctl::typed_arg("-3"), json!(-3));
    assert_eq!(ctl::typed_arg("s:42"), json!("42"));
    assert_eq!(ctl::typed_arg("call-1"), json!("call-1"));

    let mut t = ctl_args(addr.clone(), Format::Table, "stats.latency", &[]);
    t.token = Some("tok".into());
    let (code, out, _) = run_ctl(&t);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("name") && lines[0].contains("p99_99") && lines[0].contains("count"),
        "{out}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("packet_processing"))
        .expect(&out);
    assert!(
        row.split_whitespace().any(|c| c == "5"),
        "count column: {row}"
    );
    let mut l = ctl_args(addr.clone(), Format::Table, "dlg.list", &[]);
    l.token = Some("tok".into());
    let (code, out, _) = run_ctl(&l);
    assert_eq!((code, out.lines().count()), (0, 6), "{out}");
    assert!(out.lines().next().unwrap().contains("call-id"));

    let mut bad = ctl_args(addr, Format::Json, "dlg.end_dlg", &["9", "9"]);
    bad.token = Some("tok".into());
    let (code, out, err) = run_ctl(&bad);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "error: 404: Dialog not found\n")
    );
    h.shutdown();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("127.0.0.1:{port}");
    let (code, out, err) = run_ctl(&ctl_args(closed.clone(), Format::Json, "core.version", &[]));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!("error: cannot reach sipedge management at {closed}: connection refused\n")
    );
}

#[test]
fn streamed_list_replies_equal_buffered_ones() {
    use sipedge::mgmt::rpc::{Reply, handle_jsonrpc, handle_jsonrpc_reply};
    use std::io::Read;
    let fake: Arc<dyn MgmtBackend> = Fake::new(2100);
    for (method, params) in [
        ("dlg.list", json!([])),
        ("dlg.list_ctx", json!([5, 1500])),
        (
            "dlg.list_match",
            json!(["furi", "re", "alice1[0-9]*@", 500]),
        ),
        ("dlg.list_match", json!(["callid", "eq", "none"])),
        ("dlg.briefing", json!(["cS"])),
    ] {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": "q"});
        let body = body.to_string();
        let full = handle_jsonrpc(body.as_bytes(), fake.as_ref());
        let Reply::Stream(mut stream) = handle_jsonrpc_reply(body.as_bytes(), &fake) else {
            panic!("{method} should stream");
        };
        let mut streamed = Vec::new();
        let mut chunk = [0u8; 7];
        loop {
            let n = stream.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            streamed.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(full).unwrap()
        );
    }
    // Bad params and notifications are not streamed.
    let bad = br#"{"jsonrpc":"2.0","method":"dlg.list","params":["x"],"id":1}"#;
    assert!(matches!(handle_jsonrpc_reply(bad, &fake), Reply::Full(_)));
    let note = br#"{"jsonrpc":"2.0","method":"dlg.list"}"#;
    assert!(matches!(handle_jsonrpc_reply(note, &fake), Reply::Full(b) if b.is_empty()));

    // Over HTTP the list goes out chunked.
    let h = mgmt_http::spawn("127.0.0.1:0".parse().unwrap(), None, fake).unwrap();
    let url = format!("http://{}/jsonrpc", h.local_addr());
    let mut resp = agent()
        .post(&url)
        .send(br#"{"jsonrpc":"2.0","method":"dlg.list","id":1}"#.as_slice())
        .unwrap();
    let te = resp
        .headers()
        .get("transfer-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(te.as_deref(), Some("chunked"));
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["result"].as_array().unwrap().len(), 2100);
}
