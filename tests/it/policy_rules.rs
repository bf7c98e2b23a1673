//! Rule evaluation against a fake request and a recording fake dialog: every match kind,
//! every action, every template variable, ordering and `stop`, limit rejections.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use sipedge::config::Config;
use sipedge::policy::{DialogOps, Policy, RequestView, RulePolicy, Template, Verdict};
use sipedge::wire::Transport;

struct Req {
    method: &'static str,
    initial: bool,
    transport: Transport,
    ruri: &'static str,
    ruri_user: &'static str,
    ruri_host: &'static str,
    from_uri: &'static str,
    from_user: &'static str,
    from_host: &'static str,
    to_uri: &'static str,
    to_user: &'static str,
    to_host: &'static str,
    ip: IpAddr,
    port: u16,
    call_id: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    vars: Vec<(&'static str, &'static str)>,
}

fn invite() -> Req {
    Req {
        method: "INVITE",
        initial: true,
        transport: Transport::Udp,
        ruri: "sip:bob@pbx.example.com",
        ruri_user: "bob",
        ruri_host: "pbx.example.com",
        from_uri: "sip:alice@carrier.net",
        from_user: "alice",
        from_host: "carrier.net",
        to_uri: "sip:bob@example.com",
        to_user: "bob",
        to_host: "example.com",
        ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        port: 5062,
        call_id: "abc@host",
        headers: vec![("X-Timeout", "90"), ("User-Agent", "friendly-scanner 1.0")],
        vars: vec![("tenant", "t1")],
    }
}

impl RequestView for Req {
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }
    fn is_initial(&self) -> bool {
        self.initial
    }
    fn transport(&self) -> Transport {
        self.transport
    }
    fn ruri(&self) -> &[u8] {
        self.ruri.as_bytes()
    }
    fn ruri_user(&self) -> &[u8] {
        self.ruri_user.as_bytes()
    }
    fn ruri_host(&self) -> &[u8] {
        self.ruri_host.as_bytes()
    }
    fn from_uri(&self) -> &[u8] {
        self.from_uri.as_bytes()
    }
    fn from_user(&self) -> &[u8] {
        self.from_user.as_bytes()
    }
    fn from_host(&self) -> &[u8] {
        self.from_host.as_bytes()
    }
    fn to_uri(&self) -> &[u8] {
        self.to_uri.as_bytes()
    }
    fn to_user(&self) -> &[u8] {
        self.to_user.as_bytes()
    }
    fn to_host(&self) -> &[u8] {
        self.to_host.as_bytes()
    }
    fn src_ip(&self) -> IpAddr {
        self.ip
    }
    fn src_port(&self) -> u16 {
        self.port
    }
    fn call_id(&self) -> &[u8] {
        self.call_id.as_bytes()
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
    fn dlg_var(&self, key: &[u8]) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k.as_bytes() == key)
            .map(|(_, v)| v.as_bytes())
    }
}

/// Records every effect as a readable string; keeps profile counts and flags.
#[derive(Default)]
struct Ops {
    log: Vec<String>,
    sizes: HashMap<(String, Option<String>), u64>,
    member: HashSet<(String, Option<String>)>,
    flags: u32,
    rate_refused: bool,
}

fn key(p: &str, v: Option<&[u8]>) -> (String, Option<String>) {
    (
        p.to_owned(),
        v.map(|v| String::from_utf8_lossy(v).into_owned()),
    )
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl DialogOps for Ops {
    fn is_in_profile(&self, profile: &str, value: Option<&[u8]>) -> bool {
        match value {
            Some(_) => self.member.contains(&key(profile, value)),
            None => self.member.iter().any(|(p, _)| p == profile),
        }
    }
    fn profile_size(&self, profile: &str, value: Option<&[u8]>) -> u64 {
        self.sizes.get(&key(profile, value)).copied().unwrap_or(0)
    }
    fn set_track(&mut self, on: bool) {
        self.log.push(format!("track {on}"));
    }
    fn set_profile(&mut self, profile: &str, value: Option<&[u8]>) -> bool {
        self.log
            .push(format!("set_profile {profile} {:?}", value.map(s)));
        *self.sizes.entry(key(profile, value)).or_default() += 1;
        self.member.insert(key(profile, value));
        true
    }
    fn set_profile_limited(&mut self, profile: &str, value: Option<&[u8]>, max: u64) -> bool {
        let n = self.profile_size(profile, value);
        self.log
            .push(format!("limit {profile} {:?} {n}/{max}", value.map(s)));
        if n >= max {
            return false;
        }
        self.set_profile(profile, value)
    }
    fn profile_rate_ok(
        &mut self,
        profile: &str,
        value: Option<&[u8]>,
        per_sec: u32,
        burst: u32,
    ) -> bool {
        self.log.push(format!(
            "rate {profile} {:?} {per_sec}/s burst {burst}",
            value.map(s)
        ));
        !self.rate_refused
    }
    fn unset_profile(&mut self, profile: &str, value: Option<&[u8]>) {
        self.log
            .push(format!("unset_profile {profile} {:?}", value.map(s)));
        self.member.remove(&key(profile, value));
    }
    fn set_timeout(&mut self, secs: u32) {
        self.log.push(format!("timeout {secs}"));
    }
    fn set_flag(&mut self, n: u8) {
        self.flags |= 1 << n;
        self.log.push(format!("set_flag {n}"));
    }
    fn reset_flag(&mut self, n: u8) {
        self.flags &= !(1 << n);
        self.log.push(format!("reset_flag {n}"));
    }
    fn is_flag_set(&self, n: u8) -> bool {
        self.flags & (1 << n) != 0
    }
    fn set_var(&mut self, k: &[u8], v: &[u8]) {
        self.log.push(format!("set_var {}={}", s(k), s(v)));
    }
    fn add_header(&mut self, name: &[u8], value: &[u8]) {
        self.log
            .push(format!("add_header {}: {}", s(name), s(value)));
    }
    fn remove_header(&mut self, name: &[u8]) {
        self.log.push(format!("remove_header {}", s(name)));
    }
    fn route_to_group(&mut self, group: &str) {
        self.log.push(format!("route {group}"));
    }
    fn terminate(&mut self, reason: &[u8]) {
        self.log.push(format!("terminate {}", s(reason)));
    }
}

const PRELUDE: &str = r#"
[profiles]
no_value = ["calls"]
with_value = ["caller", "trunk"]

[[target_group]]
name = "pbx"
targets = ["udp:10.0.0.10:5060"]
"#;

fn policy(rules: &str) -> RulePolicy {
    let text = format!("{PRELUDE}\n{rules}");
    let c = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    RulePolicy::new(&c.rule)
}

/// Runs `rules` on `req`; returns the verdict (reason owned) and the effect log.
fn run_with(rules: &str, req: &Req, ops: &mut Ops) -> Option<(u16, String)> {
    let p = policy(rules);
    let mut scratch = Vec::new();
    match p.on_request(req, ops, &mut scratch) {
        Verdict::Continue => None,
        Verdict::Reply { code, reason } => Some((code, reason.to_owned())),
        Verdict::Drop => Some((0, "drop".to_owned())),
    }
}

fn run(rules: &str, req: &Req) -> (Option<(u16, String)>, Vec<String>) {
    let mut ops = Ops::default();
    let v = run_with(rules, req, &mut ops);
    (v, ops.log)
}

/// One rule `[rule.match] <cond>` whose action sets var `hit`: did it fire?
fn fires(cond: &str, req: &Req) -> bool {
    fires_ops(cond, req, &mut Ops::default())
}

fn fires_ops(cond: &str, req: &Req, ops: &mut Ops) -> bool {
    let rules = format!(
        "[[rule]]\nname = \"t\"\nactions = [{{ set_var = {{ name = \"hit\", value = \"1\" }} }}]\n[rule.match]\n{cond}\n"
    );
    run_with(&rules, req, ops);
    ops.log.iter().any(|l| l == "set_var hit=1")
}

#[test]
fn empty_match_matches_everything() {
    assert!(fires("", &invite()));
}

#[test]
fn match_method() {
    assert!(fires(r#"method = ["BYE", "INVITE"]"#, &invite()));
    assert!(!fires(r#"method = ["BYE"]"#, &invite()));
    assert!(
        !fires(r#"method = ["invite"]"#, &invite()),
        "methods are case-sensitive"
    );
    assert!(!fires(r#"not_method = ["INVITE"]"#, &invite()));
    assert!(fires(r#"not_method = ["BYE"]"#, &invite()));
}

#[test]
fn match_initial_and_sequential() {
    let mut seq = invite();
    seq.initial = false;
    assert!(fires("initial = true", &invite()));
    assert!(!fires("initial = true", &seq));
    assert!(fires("initial = false", &seq));
    assert!(!fires("initial = false", &invite()));
}

#[test]
fn match_uri_parts_exact_prefix_regex_not() {
    let r = invite();
    assert!(fires(r#"ruri_user = "bob""#, &r));
    assert!(
        !fires(r#"ruri_user = "Bob""#, &r),
        "users are case-sensitive"
    );
    assert!(
        fires(r#"ruri_host = "PBX.example.com""#, &r),
        "hosts ignore case"
    );
    assert!(fires(r#"from_user = { prefix = "ali" }"#, &r));
    assert!(!fires(r#"from_user = { prefix = "alicex" }"#, &r));
    assert!(fires(
        r#"from_host = { regex = "^carrier\\.(net|com)$" }"#,
        &r
    ));
    assert!(!fires(r#"from_host = { regex = "^evil" }"#, &r));
    assert!(fires(r#"to_user = { exact = "bob" }"#, &r));
    assert!(!fires(r#"to_user = { exact = "bob", not = true }"#, &r));
    assert!(fires(r#"to_host = { prefix = "EXAMPLE" }"#, &r));
    assert!(fires(r#"to_host = { prefix = "pbx", not = true }"#, &r));
}

#[test]
fn match_source_ip_cidr() {
    let r = invite();
    assert!(fires(r#"src_ip = ["192.168.0.0/16", "10.0.0.0/8"]"#, &r));
    assert!(!fires(r#"src_ip = ["192.168.0.0/16"]"#, &r));
    assert!(fires(r#"src_ip = ["10.1.2.3"]"#, &r), "bare IP is a /32");
    assert!(!fires(r#"not_src_ip = ["10.1.0.0/16"]"#, &r));
    assert!(fires(r#"not_src_ip = ["2001:db8::/32"]"#, &r));
}

#[test]
fn match_transport() {
    let mut r = invite();
    assert!(fires(r#"transport = "udp""#, &r));
    r.transport = Transport::Tcp;
    assert!(!fires(r#"transport = "udp""#, &r));
    assert!(fires(r#"transport = "tcp""#, &r));
}

#[test]
fn match_headers() {
    let r = invite();
    assert!(fires(r#"header_present = ["x-timeout"]"#, &r));
    assert!(!fires(r#"header_present = ["X-Timeout", "X-Missing"]"#, &r));
    assert!(fires(r#"header_absent = ["X-Missing"]"#, &r));
    assert!(!fires(r#"header_absent = ["User-Agent"]"#, &r));
    assert!(fires(
        r#"header = [{ name = "X-Timeout", value = "90" }]"#,
        &r
    ));
    assert!(!fires(
        r#"header = [{ name = "X-Timeout", value = "9" }]"#,
        &r
    ));
    assert!(fires(
        r#"header = [{ name = "User-Agent", value = { prefix = "friendly-scanner" } }]"#,
        &r
    ));
    assert!(
        !fires(
            r#"header = [{ name = "X-Missing", value = { exact = "x", not = true } }]"#,
            &r
        ),
        "absent header never matches"
    );
}

#[test]
fn match_in_profile_with_template_value() {
    let r = invite();
    let mut ops = Ops::default();
    assert!(!fires_ops(
        r#"in_profile = [{ name = "caller", value = "$fU" }]"#,
        &r,
        &mut ops
    ));
    let mut ops = Ops::default();
    ops.member.insert(key("caller", Some(b"alice")));
    assert!(fires_ops(
        r#"in_profile = [{ name = "caller", value = "$fU" }]"#,
        &r,
        &mut ops
    ));
    let mut ops = Ops::default();
    ops.member.insert(key("caller", Some(b"alice")));
    assert!(!fires_ops(
        r#"not_in_profile = [{ name = "caller", value = "$fU" }]"#,
        &r,
        &mut ops
    ));
    let mut ops = Ops::default();
    ops.member.insert(key("calls", None));
    assert!(fires_ops(
        r#"in_profile = [{ name = "calls" }]"#,
        &r,
        &mut ops
    ));
}

#[test]
fn match_profile_size_every_op() {
    let r = invite();
    let cases = [
        ("lt", 6, true),
        ("lt", 5, false),
        ("le", 5, true),
        ("le", 4, false),
        ("gt", 4, true),
        ("gt", 5, false),
        ("ge", 5, true),
        ("ge", 6, false),
        ("eq", 5, true),
        ("eq", 4, false),
    ];
    for (op, n, want) in cases {
        let mut ops = Ops::default();
        ops.sizes.insert(key("trunk", Some(b"carrier.net")), 5);
        let cond = format!(
            r#"profile_size = [{{ name = "trunk", value = "$fd", op = "{op}", n = {n} }}]"#
        );
        assert_eq!(fires_ops(&cond, &r, &mut ops), want, "{op} {n}");
    }
}

#[test]
fn match_flags() {
    let r = invite();
    let mut ops = Ops {
        flags: 1 << 3,
        ..Ops::default()
    };
    assert!(fires_ops("flag_set = [3]", &r, &mut ops));
    let mut ops = Ops {
        flags: 1 << 3,
        ..Ops::default()
    };
    assert!(!fires_ops("flag_set = [3, 4]", &r, &mut ops));
    let mut ops = Ops {
        flags: 1 << 3,
        ..Ops::default()
    };
    assert!(!fires_ops("flag_unset = [3]", &r, &mut ops));
    let mut ops = Ops::default();
    assert!(fires_ops("flag_unset = [31]", &r, &mut ops));
}

#[test]
fn conditions_are_and_ed() {
    let r = invite();
    assert!(fires(
        "method = [\"INVITE\"]\nfrom_user = \"alice\"\nsrc_ip = [\"10.0.0.0/8\"]",
        &r
    ));
    assert!(!fires(
        "method = [\"INVITE\"]\nfrom_user = \"mallory\"\nsrc_ip = [\"10.0.0.0/8\"]",
        &r
    ));
}

#[test]
fn every_action_in_order() {
    let rules = r#"
[[rule]]
name = "all"
actions = [
  { track = false },
  { track = true },
  { set_profile = { name = "caller", value = "$fU" } },
  { set_profile = { name = "calls" } },
  { unset_profile = { name = "caller", value = "$fU" } },
  { limit = { profile = "trunk", value = "$si", max = 10 } },
  { timeout = { seconds = 120 } },
  { timeout = { from = "$hdr(X-Timeout)" } },
  { set_flag = 7 },
  { reset_flag = 7 },
  { set_var = { name = "who", value = "$fU via $si" } },
  { add_header = { name = "X-Caller", value = "<$fu>" } },
  { remove_header = "User-Agent" },
  { route = { group = "pbx" } },
]
"#;
    let (v, log) = run(rules, &invite());
    assert_eq!(v, None);
    assert_eq!(
        log,
        [
            "track false",
            "track true",
            "set_profile caller Some(\"alice\")",
            "set_profile calls None",
            "unset_profile caller Some(\"alice\")",
            "limit trunk Some(\"10.1.2.3\") 0/10",
            "set_profile trunk Some(\"10.1.2.3\")",
            "timeout 120",
            "timeout 90",
            "set_flag 7",
            "reset_flag 7",
            "set_var who=alice via 10.1.2.3",
            "add_header X-Caller: <sip:alice@carrier.net>",
            "remove_header User-Agent",
            "route pbx",
        ]
    );
}

#[test]
fn timeout_from_bad_header_leaves_timeout_unchanged() {
    let mut r = invite();
    r.headers = vec![("X-Timeout", "soon")];
    let (_, log) = run(
        "[[rule]]\nname = \"t\"\nactions = [{ timeout = { from = \"$hdr(X-Timeout)\" } }]",
        &r,
    );
    assert!(log.is_empty(), "{log:?}");
    r.headers.clear();
    let (_, log) = run(
        "[[rule]]\nname = \"t\"\nactions = [{ timeout = { from = \"$hdr(X-Timeout)\" } }]",
        &r,
    );
    assert!(log.is_empty(), "{log:?}");
}

#[test]
fn reply_stops_everything() {
    let rules = r#"
[[rule]]
name = "scanner"
actions = [{ reply = { code = 403, reason = "Go Away" } }, { track = true }]
[rule.match]
header = [{ name = "User-Agent", value = { prefix = "friendly-scanner" } }]

[[rule]]
name = "later"
actions = [{ track = true }]
"#;
    let (v, log) = run(rules, &invite());
    assert_eq!(v, Some((403, "Go Away".into())));
    assert!(log.is_empty(), "{log:?}");
    let (v, _) = run(
        "[[rule]]\nname = \"r\"\nactions = [{ reply = { code = 404 } }]",
        &invite(),
    );
    assert_eq!(v, Some((404, "Not Found".into())), "default reason phrase");
}

#[test]
fn limit_over_max_rejects_with_its_reply() {
    let rules = r#"
[[rule]]
name = "per-caller"
actions = [
  { limit = { profile = "caller", value = "$fU", max = 2, code = 486, reason = "Too Many Calls" } },
  { route = { group = "pbx" } },
]
"#;
    let r = invite();
    let mut ops = Ops::default();
    assert_eq!(run_with(rules, &r, &mut ops), None);
    assert_eq!(run_with(rules, &r, &mut ops), None);
    ops.log.clear();
    assert_eq!(
        run_with(rules, &r, &mut ops),
        Some((486, "Too Many Calls".into()))
    );
    assert_eq!(
        ops.log,
        ["limit caller Some(\"alice\") 2/2"],
        "no route after rejection"
    );
    let (v, _) = run(
        "[[rule]]\nname = \"z\"\nactions = [{ limit = { profile = \"calls\", max = 0 } }]",
        &r,
    );
    assert_eq!(v, Some((503, "Service Unavailable".into())), "default 503");
}

#[test]
fn drop_stops_silently_and_drop_false_does_nothing() {
    let rules = r#"
[[rule]]
name = "scanners"
actions = [{ drop = true }, { route = { group = "pbx" } }]
[rule.match]
header_present = ["User-Agent"]
"#;
    let r = invite();
    let mut ops = Ops::default();
    assert_eq!(run_with(rules, &r, &mut ops), Some((0, "drop".into())));
    assert!(ops.log.is_empty(), "nothing after drop: {:?}", ops.log);
    let (v, log) = run(
        "[[rule]]\nname = \"z\"\nactions = [{ drop = false }, { route = { group = \"pbx\" } }]",
        &r,
    );
    assert_eq!(v, None);
    assert_eq!(log, ["route pbx"]);
}

#[test]
fn limit_rate_is_checked_before_the_concurrency_limit() {
    let rules = r#"
[[rule]]
name = "cps"
actions = [
  { limit = { profile = "caller", value = "$fU", max = 5, rate = 10, burst = 3 } },
  { limit = { profile = "calls", rate = 2 } },
]
"#;
    let r = invite();
    let mut ops = Ops::default();
    assert_eq!(run_with(rules, &r, &mut ops), None);
    assert_eq!(
        ops.log,
        [
            "rate caller Some(\"alice\") 10/s burst 3",
            "limit caller Some(\"alice\") 0/5",
            "set_profile caller Some(\"alice\")",
            "rate calls None 2/s burst 2",
        ]
    );
    // Over the rate: the limit's reply, and no concurrency slot taken.
    let mut ops = Ops {
        rate_refused: true,
        ..Ops::default()
    };
    assert_eq!(
        run_with(rules, &r, &mut ops),
        Some((503, "Service Unavailable".into()))
    );
    assert_eq!(ops.log, ["rate caller Some(\"alice\") 10/s burst 3"]);
}

#[test]
fn limit_without_max_or_rate_is_a_config_error() {
    for (action, want) in [
        ("{ limit = { profile = \"calls\" } }", "limit needs `max`"),
        (
            "{ limit = { profile = \"calls\", rate = 0 } }",
            "rate must be > 0",
        ),
        (
            "{ limit = { profile = \"calls\", max = 3, burst = 2 } }",
            "burst needs `rate`",
        ),
    ] {
        let text = format!("{PRELUDE}\n[[rule]]\nname = \"z\"\nactions = [{action}]\n");
        let Err(e) = Config::from_toml_str(&text) else {
            panic!("{action} was accepted");
        };
        let e = e.to_string();
        assert!(e.contains(want), "{action}: {e}");
    }
}

#[test]
fn terminate_calls_engine_and_stops() {
    let rules = r#"
[[rule]]
name = "kill"
actions = [{ terminate = { reason = "Admin" } }, { track = true }]
[rule.match]
initial = false
[[rule]]
name = "kill-default"
actions = [{ terminate = {} }]
"#;
    let mut r = invite();
    r.initial = false;
    let (v, log) = run(rules, &r);
    assert_eq!(v, None);
    assert_eq!(log, ["terminate Admin"]);
    let (_, log) = run(rules, &invite());
    assert_eq!(log, ["terminate Terminated by policy"]);
}

#[test]
fn rules_run_in_order_and_stop_ends_evaluation() {
    let rules = r#"
[[rule]]
name = "a"
actions = [{ set_var = { name = "n", value = "a" } }]

[[rule]]
name = "b-no-match"
actions = [{ set_var = { name = "n", value = "b" } }]
stop = true
[rule.match]
method = ["BYE"]

[[rule]]
name = "c"
actions = [{ set_var = { name = "n", value = "c" } }]
stop = true

[[rule]]
name = "d"
actions = [{ set_var = { name = "n", value = "d" } }]
"#;
    let (_, log) = run(rules, &invite());
    assert_eq!(
        log,
        ["set_var n=a", "set_var n=c"],
        "non-matching stop rule does not stop"
    );
}

#[test]
fn flags_set_by_earlier_rules_are_seen_by_later_ones() {
    let rules = r#"
[[rule]]
name = "mark"
actions = [{ set_flag = 2 }]
[rule.match]
from_user = "alice"

[[rule]]
name = "marked"
actions = [{ route = { group = "pbx" } }]
[rule.match]
flag_set = [2]
"#;
    let (_, log) = run(rules, &invite());
    assert_eq!(log, ["set_flag 2", "route pbx"]);
}

#[test]
fn template_expands_every_variable() {
    let r = invite();
    let cases = [
        ("$fu", "sip:alice@carrier.net"),
        ("$fU", "alice"),
        ("$fd", "carrier.net"),
        ("$tu", "sip:bob@example.com"),
        ("$tU", "bob"),
        ("$td", "example.com"),
        ("$ru", "sip:bob@pbx.example.com"),
        ("$rU", "bob"),
        ("$rd", "pbx.example.com"),
        ("$si", "10.1.2.3"),
        ("$sp", "5062"),
        ("$ci", "abc@host"),
        ("$hdr(x-timeout)", "90"),
        ("$hdr(X-Missing)", ""),
        ("$dlg_var(tenant)", "t1"),
        ("$dlg_var(none)", ""),
        ("a-$fU-$$-$rU-z", "a-alice-$-bob-z"),
        ("no vars", "no vars"),
    ];
    let mut out = Vec::new();
    for (src, want) in cases {
        out.clear();
        Template::compile(src).unwrap().expand(&r, &mut out);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), want, "{src}");
    }
    let mut r6 = invite();
    r6.ip = "2001:db8::7".parse().unwrap();
    out.clear();
    Template::compile("[$si]:$sp")
        .unwrap()
        .expand(&r6, &mut out);
    assert_eq!(out, b"[2001:db8::7]:5062");
}

#[test]
fn expansion_does_not_allocate_with_capacity() {
    let r = invite();
    let t = Template::compile("$fu;$si;$hdr(User-Agent)").unwrap();
    let mut out = Vec::with_capacity(256);
    let ptr = out.as_ptr();
    for _ in 0..100 {
        out.clear();
        t.expand(&r, &mut out);
    }
    assert_eq!(out.as_ptr(), ptr, "buffer was reallocated");
    assert_eq!(out.capacity(), 256);
}
