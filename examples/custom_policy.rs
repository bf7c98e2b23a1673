//! A hand-written [`Policy`]: embed sipedge's library with logic that TOML rules cannot say,
//! and fall back to the configured [`RulePolicy`] for everything else.
//!
//! Run with `cargo run --example custom_policy`; it evaluates two requests against stub engine
//! types and prints the verdicts and effects.

use std::net::{IpAddr, Ipv4Addr};

use sipedge::config::Config;
use sipedge::policy::{DialogOps, Policy, RequestView, RulePolicy, Verdict};
use sipedge::wire::Transport;

/// Business hours gate for premium numbers, then the config's rules.
struct PremiumGate {
    /// Hour of day (0..24) supplied by the embedder: policies are sans-IO, no clock reads.
    hour: u8,
    rules: RulePolicy,
}

impl Policy for PremiumGate {
    fn on_request<'a>(
        &'a self,
        req: &dyn RequestView,
        ops: &mut dyn DialogOps,
        scratch: &mut Vec<u8>,
    ) -> Verdict<'a> {
        let premium = req.ruri_user().starts_with(b"0900");
        if req.is_initial() && premium && !(8..18).contains(&self.hour) {
            return Verdict::Reply {
                code: 480,
                reason: "Premium Lines Closed",
            };
        }
        if premium {
            ops.set_timeout(600);
        }
        self.rules.on_request(req, ops, scratch)
    }
}

struct StubReq(&'static str);

impl RequestView for StubReq {
    fn method(&self) -> &[u8] {
        b"INVITE"
    }
    fn is_initial(&self) -> bool {
        true
    }
    fn transport(&self) -> Transport {
        Transport::Udp
    }
    fn ruri(&self) -> &[u8] {
        b"sip:number@gw"
    }
    fn ruri_user(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn ruri_host(&self) -> &[u8] {
        b"gw"
    }
    fn from_uri(&self) -> &[u8] {
        b"sip:alice@example.com"
    }
    fn from_user(&self) -> &[u8] {
        b"alice"
    }
    fn from_host(&self) -> &[u8] {
        b"example.com"
    }
    fn to_uri(&self) -> &[u8] {
        self.ruri()
    }
    fn to_user(&self) -> &[u8] {
        self.ruri_user()
    }
    fn to_host(&self) -> &[u8] {
        self.ruri_host()
    }
    fn src_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
    fn src_port(&self) -> u16 {
        5060
    }
    fn call_id(&self) -> &[u8] {
        b"example-call"
    }
    fn header(&self, _name: &[u8]) -> Option<&[u8]> {
        None
    }
    fn dlg_var(&self, _key: &[u8]) -> Option<&[u8]> {
        None
    }
}

/// Prints every effect instead of applying it.
struct PrintOps;

impl DialogOps for PrintOps {
    fn is_in_profile(&self, _p: &str, _v: Option<&[u8]>) -> bool {
        false
    }
    fn profile_size(&self, _p: &str, _v: Option<&[u8]>) -> u64 {
        0
    }
    fn set_track(&mut self, on: bool) {
        println!("  track {on}");
    }
    fn set_profile(&mut self, p: &str, v: Option<&[u8]>) -> bool {
        println!("  set_profile {p} {:?}", v.map(String::from_utf8_lossy));
        true
    }
    fn set_profile_limited(&mut self, p: &str, v: Option<&[u8]>, max: u64) -> bool {
        println!("  limit {p} {:?} max {max}", v.map(String::from_utf8_lossy));
        true
    }
    fn unset_profile(&mut self, p: &str, _v: Option<&[u8]>) {
        println!("  unset_profile {p}");
    }
    fn set_timeout(&mut self, secs: u32) {
        println!("  timeout {secs}");
    }
    fn set_flag(&mut self, n: u8) {
        println!("  set_flag {n}");
    }
    fn reset_flag(&mut self, n: u8) {
        println!("  reset_flag {n}");
    }
    fn is_flag_set(&self, _n: u8) -> bool {
        false
    }
    fn set_var(&mut self, k: &[u8], v: &[u8]) {
        println!(
            "  set_var {}={}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        );
    }
    fn add_header(&mut self, n: &[u8], v: &[u8]) {
        println!(
            "  add_header {}: {}",
            String::from_utf8_lossy(n),
            String::from_utf8_lossy(v)
        );
    }
    fn remove_header(&mut self, n: &[u8]) {
        println!("  remove_header {}", String::from_utf8_lossy(n));
    }
    fn route_to_group(&mut self, g: &str) {
        println!("  route {g}");
    }
    fn terminate(&mut self, r: &[u8]) {
        println!("  terminate {}", String::from_utf8_lossy(r));
    }
}

const RULES: &str = r#"
[profiles]
with_value = ["caller"]

[[rule]]
name = "per-caller"
actions = [{ limit = { profile = "caller", value = "$fU", max = 5 } }]
[rule.match]
method = ["INVITE"]
"#;

fn main() {
    let config = match Config::from_toml_str(RULES) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let policy = PremiumGate {
        hour: 20,
        rules: RulePolicy::new(&config.rule),
    };
    let mut scratch = Vec::with_capacity(256);
    for number in ["09001234", "4912345"] {
        println!("INVITE to {number}:");
        let verdict = policy.on_request(&StubReq(number), &mut PrintOps, &mut scratch);
        println!("  => {verdict:?}");
    }
}
