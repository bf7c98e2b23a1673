//! Fuzz target `engine`: one sans-IO proxy (one `Shared`, two `Engine` workers) driven by a
//! sequence of operations decoded from the input, in virtual time.
//!
//! The input is a byte program. The first bytes pick the settings (default target group,
//! timeouts, race handling, 100 delay, policy rules on or off); then each operation starts with
//! an opcode byte and takes the bytes it needs (an exhausted input reads as zeros):
//! - a new request from the caller, built from a template whose fields the input picks
//!   (Call-ID, From-tag, R-URI, CSeq, Max-Forwards, an extra header);
//! - a retransmission of anything the harness sent before (same bytes, same source);
//! - a CANCEL for one of the caller's INVITEs;
//! - a response (100..603, with one of a few To-tags) to a request the proxy sent anywhere,
//!   copying its Vias, From, To, Call-ID, CSeq and Record-Route, from where it was sent;
//! - an in-dialog request (ACK, BYE, re-INVITE, UPDATE, INFO, ...) from the receiver of a
//!   response the proxy sent (Route from Record-Route, R-URI from Contact), or from the
//!   receiver of a request the proxy forwarded (the callee side);
//! - a mutation of any message seen so far (byte flips, truncation, dictionary inserts,
//!   duplicated or dropped lines), or raw bytes;
//! - a clock step (`handle_timeout` at every deadline on the way);
//! - management commands: `Terminate` of a live dialog from `shared.table`, `set_timeout` +
//!   `Rearm`, `Refer`, `Bridge`.
//!
//! Hand-offs travel as `Command::Packet`, and every command goes through a queue the input may
//! let fill up within the same instant, as `io` delivers them after each batch.
//!
//! Invariants checked: nothing panics; every emitted message parses; and after the input,
//! a final flush and up to 2 virtual hours of timers (until no worker has a deadline), the
//! dialog table is empty, every worker's `txn_count()`, `pending_timers()` and
//! `generated_in_flight()` are 0, the active/early gauges are 0 and no profile counts anyone.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sipedge::config::Config;
use sipedge::dialog::Side;
use sipedge::dialog::id::{DialogId, worker_of};
use sipedge::dialog::profile::Profiles;
use sipedge::engine::{Command, Engine, Inbound, LocalAddrs, Output, Settings, Shared};
use sipedge::policy::{Policy, RulePolicy};
use sipedge::wire::{ParseError, Transport};

const WORKERS: usize = 2;
/// Longest quiet period allowed after the input: every timer must be gone by then.
const QUIESCE_MS: u64 = 2 * 3600 * 1000;
/// Ring size of each message store.
const RING: usize = 16;

const PROXY: &str = "127.0.0.1:5060";
const UAC: &str = "10.0.0.1:5060";
const UAS1: &str = "10.0.0.2:5060";
const UAS2: &str = "10.0.0.3:5060";

const RURIS: [&str; 6] = [
    "sip:bob@10.0.0.2:5060",
    "sip:bob@10.0.0.3:5060",
    "sip:bob@127.0.0.1:5060",
    "sip:bob@10.0.0.2:5060;transport=tcp",
    "sip:bob@example.com",
    "sip:127.0.0.1",
];
const METHODS: [&str; 10] = [
    "INVITE",
    "INVITE",
    "INVITE",
    "OPTIONS",
    "MESSAGE",
    "BYE",
    "ACK",
    "REFER",
    "SUBSCRIBE",
    "CANCEL",
];
const IN_DIALOG: [&str; 10] = [
    "ACK", "BYE", "INVITE", "UPDATE", "INFO", "ACK", "BYE", "PRACK", "NOTIFY", "CANCEL",
];
const EXTRAS: [&str; 8] = [
    "",
    "",
    "X-Timeout: 3\r\n",
    "Route: <sip:127.0.0.1:5060;lr>\r\n",
    "Record-Route: <sip:10.9.9.9;lr>\r\n",
    "Supported: 100rel\r\nRequire: 100rel\r\n",
    "X-Kill: 1\r\n",
    "Route: <sip:10.0.0.3:5060;lr>\r\n",
];
const CODES: [u16; 16] = [
    100, 180, 183, 200, 200, 200, 202, 302, 404, 408, 481, 486, 487, 500, 503, 603,
];
const TAGS: [&str; 4] = ["t1", "t2", "t3", ""];
const STEPS_MS: [u64; 12] = [
    0, 1, 50, 500, 1_000, 4_000, 16_000, 32_000, 64_000, 181_000, 600_000, 3_600_000,
];
const DICT: [&[u8]; 16] = [
    b"\r\n",
    b"\r\n\r\n",
    b";tag=",
    b";branch=z9hG4bK",
    b";lr",
    b";did=",
    b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\n",
    b"Route: <sip:127.0.0.1;lr>\r\n",
    b"Content-Length: 4\r\n",
    b"CSeq: 4294967295 INVITE\r\n",
    b"Max-Forwards: 0\r\n",
    b"To: <sip:x@y>;tag=t1\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"ACK sip:x SIP/2.0\r\n",
    b"Contact: *\r\n",
    b"\xff\x00",
];

/// Rules installed when the input asks for a policy: profiles, a limit, a timeout from a
/// header, and a terminate on an in-dialog INFO.
const RULES: &str = r#"
[[rule]]
name = "count"
actions = [
  { set_profile = { name = "calls" } },
  { limit = { profile = "caller", value = "$fU", max = 2, code = 486, reason = "Busy" } },
  { timeout = { from = "$hdr(X-Timeout)" } },
]
[rule.match]
method = ["INVITE"]
initial = true

[[rule]]
name = "kill"
actions = [{ terminate = { reason = "fuzz" } }]
[rule.match]
method = ["INFO"]
initial = false
header_present = ["X-Kill"]

[[rule]]
name = "no-message"
actions = [{ reply = { code = 403, reason = "Forbidden" } }]
[rule.match]
method = ["MESSAGE"]
"#;

/// `SIPEDGE_FUZZ_TRACE=1` prints every message in and out (to read what an input does).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SIPEDGE_FUZZ_TRACE").is_some())
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9)))
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Terminate { .. } => "Terminate",
        Command::Refer { .. } => "Refer",
        Command::Bridge { .. } => "Bridge",
        Command::Rearm(_) => "Rearm",
        Command::Retime(_) => "Retime",
        Command::Packet { .. } => "Packet (hand-off)",
    }
}

/// Reads the input; an exhausted input reads as zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One message on the virtual wire.
#[derive(Clone)]
struct Msg {
    /// Sender (for what the harness sent) or destination (for what the proxy sent).
    addr: SocketAddr,
    transport: Transport,
    text: Vec<u8>,
}

fn push_ring(ring: &mut VecDeque<Msg>, m: Msg) {
    if ring.iter().any(|x| x.text == m.text) {
        return;
    }
    if ring.len() == RING {
        ring.pop_front();
    }
    ring.push_back(m);
}

// ---- text helpers on SIP messages (lenient: missing headers read as "") ----

fn lines(text: &[u8]) -> impl Iterator<Item = &str> {
    let head = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(text, |p| &text[..p]);
    std::str::from_utf8(head)
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
}

fn all(text: &[u8], name: &str, compact: &str) -> Vec<String> {
    lines(text)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(name) || (!compact.is_empty() && n.eq_ignore_ascii_case(compact))
        })
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn hdr(text: &[u8], name: &str, compact: &str) -> String {
    all(text, name, compact)
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn first_line(text: &[u8]) -> &str {
    let end = text.iter().position(|&b| b == b'\r').unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).unwrap_or("")
}

fn ruri(text: &[u8]) -> String {
    first_line(text)
        .split(' ')
        .nth(1)
        .unwrap_or("sip:x")
        .to_string()
}

fn is_response(text: &[u8]) -> bool {
    text.starts_with(b"SIP/2.0 ")
}

fn code(text: &[u8]) -> u16 {
    first_line(text)
        .get(8..11)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn cseq_num(text: &[u8]) -> u32 {
    hdr(text, "CSeq", "")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn has_tag(v: &str) -> bool {
    let after = v.rsplit_once('>').map_or(v, |(_, a)| a);
    after.to_ascii_lowercase().contains(";tag=")
}

fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if b > a => v[a + 1..b].to_string(),
        _ => v.to_string(),
    }
}

fn record_routes(text: &[u8]) -> Vec<String> {
    all(text, "Record-Route", "")
        .iter()
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

/// The virtual network around the proxy and what its peers remember.
struct Harness {
    shared: Arc<Shared>,
    engines: Vec<Engine>,
    now: u64,
    out: Output,
    commands: VecDeque<(usize, Command)>,
    /// Everything the harness sent (retransmissions, mutations).
    sent: VecDeque<Msg>,
    /// The caller's INVITEs (CANCEL, ACK of non-2xx).
    invites: VecDeque<Msg>,
    /// Requests the proxy sent (answered by their receivers).
    reqs: VecDeque<Msg>,
    /// Responses the proxy sent (their receivers send in-dialog requests).
    resps: VecDeque<Msg>,
    /// Branch counter for fresh requests.
    seq: u32,
}

impl Harness {
    fn new(inp: &mut Input<'_>) -> Harness {
        let flags = inp.byte();
        let timeouts = inp.byte();
        let mut toml = format!(
            "[dialog]\ndefault_timeout = {}\nearly_timeout = {}\nnoack_timeout = {}\n\
             end_timeout = {}\nfr_inv_timer = {}\nend_on_race = {}\nsend_bye = {}\n\
             detect_spirals = {}\ninv_100_delay = {}\n\
             [profiles]\nno_value = [\"calls\"]\nwith_value = [\"caller\"]\n\
             [[target_group]]\nname = \"par\"\nmode = \"parallel\"\n\
             targets = [\"udp:10.0.0.2:5060\", \"udp:10.0.0.3:5060\"]\n\
             [[target_group]]\nname = \"ser\"\nmode = \"serial\"\n\
             targets = [\"udp:10.0.0.2:5060\", \"udp:10.0.0.3:5060\"]\n\
             [[target_group]]\nname = \"rr\"\nmode = \"round_robin\"\n\
             targets = [\"udp:10.0.0.2:5060\", \"tcp:10.0.0.3:5060\"]\n",
            [5, 60, 600, 3600][usize::from(timeouts & 3)],
            [10, 120][usize::from(timeouts >> 2 & 1)],
            [2, 60][usize::from(timeouts >> 3 & 1)],
            [5, 300][usize::from(timeouts >> 4 & 1)],
            [1000, 181_000][usize::from(timeouts >> 5 & 1)],
            flags & 4 != 0,
            flags & 8 == 0,
            flags & 16 == 0,
            [0, 100][usize::from(timeouts >> 6 & 1)],
        );
        let policy = flags & 32 != 0;
        if policy {
            toml.push_str(RULES);
        }
        let config = Config::from_toml_str(&toml).expect("fuzz config is valid");
        let mut settings = Settings::from_config(&config);
        settings.default_group = match flags & 3 {
            0 => None,
            g => Some(usize::from(g) - 1),
        };
        let locals = LocalAddrs::new(
            &[(Transport::Udp, sa(PROXY)), (Transport::Tcp, sa(PROXY))],
            None,
        );
        let profiles = Profiles::new(&["calls"], &["caller"]).expect("profiles");
        let shared = Shared::new(WORKERS, locals, settings, profiles, 1, 0xF022);
        if policy {
            let p: Arc<dyn Policy> = Arc::new(RulePolicy::new(&config.rule));
            shared.policy.store(Arc::new(Some(p)));
        }
        let engines = (0..WORKERS)
            .map(|w| Engine::new(shared.clone(), w, 0))
            .collect();
        Harness {
            shared,
            engines,
            now: 0,
            out: Output::with_capacity(1 << 16, 64),
            commands: VecDeque::new(),
            sent: VecDeque::new(),
            invites: VecDeque::new(),
            reqs: VecDeque::new(),
            resps: VecDeque::new(),
            seq: 0,
        }
    }

    /// Take what the last engine call produced: store transmits, queue commands.
    fn collect(&mut self) {
        for t in &self.out.tx {
            let bytes = self.out.bytes(t);
            if trace() {
                eprintln!(
                    "[{} ms] proxy -> {}\n{}",
                    self.now,
                    t.dst,
                    String::from_utf8_lossy(bytes)
                );
            }
            match sipedge::wire::parse(bytes) {
                Ok(_) => {}
                // An edited message at the header-count/size limits may outgrow them.
                Err(ParseError::TooManyHeaders | ParseError::HeadersTooLarge) => continue,
                Err(e) => panic!(
                    "engine sent an unparsable message ({e:?}):\n{}",
                    String::from_utf8_lossy(bytes)
                ),
            }
            let m = Msg {
                addr: t.dst,
                transport: t.transport,
                text: bytes.to_vec(),
            };
            if is_response(bytes) {
                push_ring(&mut self.resps, m);
            } else {
                push_ring(&mut self.reqs, m);
            }
        }
        self.commands.extend(self.out.commands.drain(..));
        self.out.clear();
    }

    fn run_commands(&mut self) {
        for _ in 0..100_000 {
            let Some((w, cmd)) = self.commands.pop_front() else {
                return;
            };
            assert!(w < WORKERS, "command for worker {w} of {WORKERS}");
            let now = self.now;
            if trace() {
                eprintln!("[{now} ms] worker {w} runs {}", command_name(&cmd));
            }
            self.out.clear();
            self.engines[w].handle_command(now, now * 1000, cmd, &mut self.out);
            assert!(
                self.out.handoff.is_none(),
                "a handed-off packet was handed off again"
            );
            self.collect();
        }
        panic!("commands keep causing commands");
    }

    /// Deliver a datagram to worker `w`, as `io` does: a hand-off becomes a `Command::Packet`.
    fn deliver(
        &mut self,
        w: usize,
        src: SocketAddr,
        transport: Transport,
        bytes: &[u8],
        flush: bool,
    ) {
        let (local, conn) = match transport {
            Transport::Udp => (0, None),
            Transport::Tcp => (1, Some(7)),
        };
        let inb = Inbound {
            now_ms: self.now,
            now_us: self.now * 1000,
            src,
            local,
            transport,
            conn,
            bytes,
        };
        if trace() {
            eprintln!(
                "[{} ms] {src} -> worker {w}\n{}",
                self.now,
                String::from_utf8_lossy(bytes)
            );
        }
        self.out.clear();
        self.engines[w].handle_datagram(inb, &mut self.out);
        if let Some(to) = self.out.handoff {
            assert!(to < WORKERS && to != w, "hand-off from {w} to {to}");
            let cmd = Command::Packet {
                src,
                local,
                transport,
                conn,
                bytes: self.shared.handoff_buffer(w, bytes),
                from: w,
            };
            self.out.commands.push((to, cmd));
        }
        self.collect();
        if flush {
            self.run_commands();
        }
    }

    /// Send a message the harness built, remembering it.
    fn send(&mut self, inp: &mut Input<'_>, src: SocketAddr, text: Vec<u8>) {
        let meta = inp.byte();
        let transport = if meta & 0x0e == 0x0e {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        self.deliver(
            usize::from(meta & 1),
            src,
            transport,
            &text,
            meta & 0x30 != 0x30,
        );
        push_ring(
            &mut self.sent,
            Msg {
                addr: src,
                transport,
                text,
            },
        );
    }

    /// Advance the clock to `end`, firing every deadline on the way in order.
    fn advance_to(&mut self, end: u64) {
        self.run_commands();
        for _ in 0..1_000_000 {
            let next = self.engines.iter().filter_map(|e| e.poll_timeout()).min();
            let Some(t) = next.filter(|&t| t <= end) else {
                self.now = self.now.max(end);
                return;
            };
            self.now = self.now.max(t);
            for w in 0..WORKERS {
                if self.engines[w]
                    .poll_timeout()
                    .is_some_and(|d| d <= self.now)
                {
                    self.out.clear();
                    let now = self.now;
                    if trace() {
                        eprintln!("[{now} ms] worker {w} timers");
                    }
                    self.engines[w].handle_timeout(now, &mut self.out);
                    self.collect();
                }
            }
            self.run_commands();
        }
        panic!("timers keep firing at {} ms", self.now);
    }

    fn fresh(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("z9hG4bK{what}{}", self.seq)
    }

    fn op_new_request(&mut self, inp: &mut Input<'_>) {
        let method = inp.pick(&METHODS);
        let call = inp.byte() % 4;
        let ftag = inp.byte() % 3;
        let ruri = inp.pick(&RURIS);
        let cseq = [1, 2, 101, 0][usize::from(inp.byte() % 4)];
        let mf = [70, 70, 1, 0][usize::from(inp.byte() % 4)];
        let extra = inp.pick(&EXTRAS);
        let user = ["alice", "alice", "bob"][usize::from(inp.byte() % 3)];
        let branch = self.fresh("u");
        let text = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport\r\n\
             Max-Forwards: {mf}\r\n\
             From: \"A\" <sip:{user}@10.0.0.1>;tag=f{ftag}\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: c{call}@fz\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@10.0.0.1:5060>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes();
        if method == "INVITE" {
            push_ring(
                &mut self.invites,
                Msg {
                    addr: sa(UAC),
                    transport: Transport::Udp,
                    text: text.clone(),
                },
            );
        }
        self.send(inp, sa(UAC), text);
    }

    fn op_retransmit(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.byte());
        let Some(m) = self.sent.get(i % self.sent.len().max(1)).cloned() else {
            return;
        };
        let meta = inp.byte();
        self.deliver(
            usize::from(meta & 1),
            m.addr,
            m.transport,
            &m.text,
            meta & 2 == 0,
        );
    }

    fn op_cancel(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.byte());
        let Some(inv) = self.invites.get(i % self.invites.len().max(1)).cloned() else {
            return;
        };
        let t = &inv.text;
        let text = format!(
            "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
            ruri(t),
            hdr(t, "Via", "v"),
            hdr(t, "From", "f"),
            hdr(t, "To", "t"),
            hdr(t, "Call-ID", "i"),
            cseq_num(t)
        );
        self.send(inp, inv.addr, text.into_bytes());
    }

    /// A response from the receiver of a request the proxy sent.
    fn op_respond(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.byte());
        let Some(req) = self.reqs.get(i % self.reqs.len().max(1)).cloned() else {
            return;
        };
        let code = inp.pick(&CODES);
        let tag = inp.pick(&TAGS);
        let t = &req.text;
        let mut s = format!("SIP/2.0 {code} Fuzz\r\n");
        for v in all(t, "Via", "v") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        s.push_str(&format!("From: {}\r\n", hdr(t, "From", "f")));
        let to = hdr(t, "To", "t");
        if code > 100 && !tag.is_empty() && !has_tag(&to) {
            s.push_str(&format!("To: {to};tag={tag}\r\n"));
        } else {
            s.push_str(&format!("To: {to}\r\n"));
        }
        s.push_str(&format!("Call-ID: {}\r\n", hdr(t, "Call-ID", "i")));
        s.push_str(&format!("CSeq: {}\r\n", hdr(t, "CSeq", "")));
        if code > 100 && code < 300 {
            for rr in all(t, "Record-Route", "") {
                s.push_str(&format!("Record-Route: {rr}\r\n"));
            }
            s.push_str(&format!("Contact: <sip:bob@{}>\r\n", req.addr));
        }
        if code == 183 && inp.byte() & 1 == 1 {
            s.push_str("Require: 100rel\r\nRSeq: 1\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        self.send(inp, req.addr, s.into_bytes());
    }

    /// An in-dialog request from the receiver of a response the proxy sent (normally the
    /// caller): R-URI from Contact, Route from Record-Route in order. ACK of a non-2xx final is
    /// hop-by-hop: the INVITE's Via branch, no Route.
    fn op_caller_request(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.byte());
        let Some(resp) = self.resps.get(i % self.resps.len().max(1)).cloned() else {
            return;
        };
        let method = inp.pick(&IN_DIALOG);
        let bump = u32::from(inp.byte() % 3);
        let t = &resp.text;
        let call_id = hdr(t, "Call-ID", "i");
        let inv_cseq = cseq_num(t);
        let mut s;
        if method == "ACK" && code(t) >= 300 {
            let ruri = self
                .invites
                .iter()
                .rev()
                .find(|m| hdr(&m.text, "Call-ID", "i") == call_id)
                .map_or_else(|| RURIS[0].to_string(), |m| ruri(&m.text));
            s = format!("ACK {ruri} SIP/2.0\r\nVia: {}\r\n", hdr(t, "Via", "v"));
        } else {
            let contact = hdr(t, "Contact", "m");
            let target = if contact.is_empty() {
                RURIS[0].to_string()
            } else {
                uri_of(&contact)
            };
            let branch = self.fresh("c");
            s = format!(
                "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch}\r\n",
                resp.addr
            );
            for r in record_routes(t) {
                s.push_str(&format!("Route: {r}\r\n"));
            }
        }
        let cseq = if matches!(method, "ACK" | "CANCEL") {
            inv_cseq
        } else {
            inv_cseq.saturating_add(bump)
        };
        s.push_str(&format!(
            "Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@{}>\r\n{}Content-Length: 0\r\n\r\n",
            hdr(t, "From", "f"),
            hdr(t, "To", "t"),
            resp.addr,
            if method == "INFO" { "X-Kill: 1\r\n" } else { "" },
        ));
        self.send(inp, resp.addr, s.into_bytes());
    }

    /// A request from the receiver of a request the proxy sent (normally the callee, after
    /// the INVITE): R-URI from the request's Contact, Route from its Record-Route reversed,
    /// From/To swapped, with one of the To-tags.
    fn op_callee_request(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.byte());
        let Some(req) = self.reqs.get(i % self.reqs.len().max(1)).cloned() else {
            return;
        };
        let method = inp.pick(&IN_DIALOG);
        let tag = inp.pick(&TAGS[..3]);
        let cseq = [1u32, 2, 7][usize::from(inp.byte() % 3)];
        let t = &req.text;
        let contact = hdr(t, "Contact", "m");
        let target = if contact.is_empty() {
            format!("sip:alice@{UAC}")
        } else {
            uri_of(&contact)
        };
        let branch = self.fresh("e");
        let mut s = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch}\r\nMax-Forwards: 70\r\n",
            req.addr
        );
        for r in record_routes(t).iter().rev() {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        let to = hdr(t, "To", "t");
        let from = if has_tag(&to) {
            to
        } else {
            format!("{to};tag={tag}")
        };
        s.push_str(&format!(
            "From: {from}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:bob@{}>\r\nContent-Length: 0\r\n\r\n",
            hdr(t, "From", "f"),
            hdr(t, "Call-ID", "i"),
            req.addr
        ));
        self.send(inp, req.addr, s.into_bytes());
    }

    /// A mutated copy of any message seen so far, from its sender (or a stranger).
    fn op_mutate(&mut self, inp: &mut Input<'_>) {
        let pool = inp.byte() % 3;
        let ring = match pool {
            0 => &self.sent,
            1 => &self.reqs,
            _ => &self.resps,
        };
        let i = usize::from(inp.byte());
        let Some(m) = ring.get(i % ring.len().max(1)).cloned() else {
            return;
        };
        let mut b = m.text;
        for _ in 0..1 + inp.byte() % 4 {
            if b.is_empty() {
                break;
            }
            let at = (usize::from(inp.byte()) << 8 | usize::from(inp.byte())) % b.len();
            match inp.byte() % 6 {
                0 => b[at] ^= inp.byte() | 1,
                1 => b.truncate(at),
                2 => {
                    let d = inp.pick(&DICT);
                    b.splice(at..at, d.iter().copied());
                }
                3 => {
                    let n = usize::from(inp.byte() % 8) + 1;
                    let ins = inp.bytes(n).to_vec();
                    b.splice(at..at, ins);
                }
                4 | 5 => {
                    // Duplicate or drop the line holding `at`.
                    let start = b[..at]
                        .windows(2)
                        .rposition(|w| w == b"\r\n")
                        .map_or(0, |p| p + 2);
                    let end = b[at..]
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .map_or(b.len(), |p| at + p + 2);
                    let line: Vec<u8> = b[start..end].to_vec();
                    if inp.byte() & 1 == 0 {
                        b.splice(start..start, line);
                    } else {
                        b.drain(start..end);
                    }
                }
                _ => unreachable!(),
            }
        }
        let src = if pool == 0 {
            m.addr
        } else {
            sa([UAC, UAS1, UAS2][usize::from(inp.byte() % 3)])
        };
        self.send(inp, src, b);
    }

    fn op_raw(&mut self, inp: &mut Input<'_>) {
        let n = usize::from(inp.byte()) * 4;
        let bytes = inp.bytes(n).to_vec();
        let src = sa([UAC, UAS1, "192.0.2.9:5060"][usize::from(inp.byte() % 3)]);
        self.send(inp, src, bytes);
    }

    fn op_tick(&mut self, inp: &mut Input<'_>) {
        let step = inp.pick(&STEPS_MS) + u64::from(inp.byte()) * 10;
        self.advance_to(self.now + step);
    }

    /// Dialog ids in the table, sorted (the table's iteration order is not deterministic).
    fn dialog_ids(&self) -> Vec<DialogId> {
        let mut ids = Vec::new();
        self.shared.table.for_each(|id, _| ids.push(*id));
        ids.sort_by_key(|id| (id.h_entry, id.h_id));
        ids
    }

    fn op_command(&mut self, inp: &mut Input<'_>) {
        let kind = inp.byte() % 6;
        let ids = self.dialog_ids();
        let side = [Side::All, Side::Caller, Side::Callee][usize::from(inp.byte() % 3)];
        let id = (!ids.is_empty()).then(|| ids[usize::from(inp.byte()) % ids.len()]);
        match (kind, id) {
            (0..=2, Some(id)) => self.commands.push_back((
                worker_of(id),
                Command::Terminate {
                    id,
                    side,
                    reason: "SIP;cause=200;text=\"fuzz\"".into(),
                    extra_hdrs: if kind == 2 {
                        "X-Why: fuzz\r\n".into()
                    } else {
                        String::new()
                    },
                },
            )),
            (3, Some(id)) => {
                if let Some(d) = self.shared.table.get(id) {
                    d.set_timeout(self.now, u32::from(inp.byte() % 8));
                }
                self.commands.push_back((worker_of(id), Command::Rearm(id)));
            }
            (4, Some(id)) => self.commands.push_back((
                worker_of(id),
                Command::Refer {
                    id,
                    side,
                    address: "sip:carol@10.0.0.4:5060".into(),
                },
            )),
            (5, _) => self.commands.push_back((
                usize::from(inp.byte() & 1),
                Command::Bridge {
                    from: "sip:alice@10.0.0.1:5060".into(),
                    to: "sip:carol@10.0.0.4:5060".into(),
                    op: (inp.byte() & 1 == 1).then(|| "sip:10.0.0.2:5060".into()),
                },
            )),
            _ => {}
        }
        if inp.byte() & 3 != 3 {
            self.run_commands();
        }
    }

    /// After the input: deliver what is queued, then let up to two virtual hours pass until
    /// no worker has a deadline; then everything must be gone.
    fn quiesce_and_check(&mut self) {
        let end = self.now + QUIESCE_MS;
        self.advance_to(end);
        let left: Vec<Option<u64>> = self.engines.iter().map(|e| e.poll_timeout()).collect();
        let mut dialogs = Vec::new();
        self.shared.table.for_each(|id, d| {
            dialogs.push(format!("{id:?} {:?}", d.state()));
        });
        let txns: Vec<usize> = self.engines.iter().map(|e| e.txn_count()).collect();
        let timers: Vec<usize> = self.engines.iter().map(|e| e.pending_timers()).collect();
        let generated: Vec<usize> = self
            .engines
            .iter()
            .map(|e| e.generated_in_flight())
            .collect();
        let stats = self.shared.stats.snapshot();
        let profiles = self.shared.profiles.load();
        let counted: Vec<i64> = ["calls", "caller"]
            .iter()
            .filter_map(|p| profiles.index(p))
            .map(|i| profiles.raw_total(i))
            .collect();
        let clean = left.iter().all(Option::is_none)
            && dialogs.is_empty()
            && txns.iter().all(|&n| n == 0)
            && timers.iter().all(|&n| n == 0)
            && generated.iter().all(|&n| n == 0)
            && stats.active_dialogs == 0
            && stats.early_dialogs == 0
            && counted.iter().all(|&n| n == 0);
        assert!(
            clean,
            "not quiet {} ms after the input: deadlines {left:?}, dialogs {dialogs:?}, \
             txns {txns:?}, timers {timers:?}, generated {generated:?}, stats {stats:?}, \
             profile totals {counted:?}",
            QUIESCE_MS
        );
    }
}

/// Every run builds fresh engines, whose latency histograms are a few large zeroed blocks:
/// served by fresh `mmap`s, their page faults cost most of a run. Keep blocks up to 32 MiB on
/// the heap instead, where the next run reuses them (about 10x more runs per second without
/// a sanitizer; a no-op under ASan, whose allocator ignores `mallopt`).
fn keep_large_blocks_on_the_heap() {
    // SAFETY: mallopt only changes allocator tuning parameters; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fuzz_target!(init: keep_large_blocks_on_the_heap(), |data: &[u8]| {
    let mut inp = Input(data);
    let mut h = Harness::new(&mut inp);
    let mut ops = 0;
    while !inp.is_empty() && ops < 256 {
        ops += 1;
        match inp.byte() % 12 {
            0 | 1 => h.op_new_request(&mut inp),
            2 => h.op_retransmit(&mut inp),
            3 => h.op_cancel(&mut inp),
            4 | 5 => h.op_respond(&mut inp),
            6 => h.op_caller_request(&mut inp),
            7 => h.op_callee_request(&mut inp),
            8 => h.op_mutate(&mut inp),
            9 => h.op_raw(&mut inp),
            10 => h.op_tick(&mut inp),
            _ => h.op_command(&mut inp),
        }
    }
    h.quiesce_and_check();
});
