//! Virtual-time call flows: the sans-IO UAC and UAS exchange datagrams through an in-memory
//! network with a fixed one-way delay and optional drops; no sockets, no sleeps.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::SocketAddr;

use loadgen::outbox::Outbox;
use loadgen::scenario::Scenario;
use loadgen::sipmsg::{self, Kind, Msg, ResponseOpts};
use loadgen::stats::{FailReason, Metric};
use loadgen::uac::{Uac, UacConfig};
use loadgen::uas::{Uas, UasConfig};

const DELAY: u64 = 100; // one-way network delay, µs

fn uac_addr() -> SocketAddr {
    "127.0.0.1:6000".parse().unwrap()
}
fn uas_addr() -> SocketAddr {
    "127.0.0.1:5090".parse().unwrap()
}

/// Decides whether to drop a datagram: (index of the datagram sent, bytes) -> drop?
type DropFn = Box<dyn FnMut(usize, &[u8]) -> bool>;

/// A packet in flight.
struct Pkt {
    at: u64,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

struct Net {
    uac: Uac,
    uas: Uas,
    now: u64,
    flight: Vec<Pkt>,
    out: Outbox,
    /// Decides whether to drop a datagram: (sent index, bytes) -> drop?
    drop: DropFn,
    sent: usize,
    log: Vec<String>,
}

impl Net {
    fn new() -> Net {
        Net {
            uac: Uac::new(UacConfig {
                target: uas_addr(),
                ruri: format!("sip:service@{}", uas_addr()),
                local: vec![uac_addr()],
                invite_timeout_us: 32_000_000,
                max_concurrent: 100,
                run_tag: 7,
                reliable: false,
            }),
            uas: Uas::new(UasConfig {
                local: vec![uas_addr()],
                ..UasConfig::default()
            }),
            now: 0,
            flight: Vec::new(),
            out: Outbox::default(),
            drop: Box::new(|_, _| false),
            sent: 0,
            log: Vec::new(),
        }
    }

    fn take_out(&mut self) {
        for t in self.out.items.clone() {
            let b = self.out.bytes(&t).to_vec();
            let first = String::from_utf8_lossy(&b)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let dropped = (self.drop)(self.sent, &b);
            self.sent += 1;
            self.log.push(format!(
                "{:>9} {} {}{}",
                self.now,
                t.dst,
                first,
                if dropped { " (dropped)" } else { "" }
            ));
            if !dropped {
                self.flight.push(Pkt {
                    at: self.now + DELAY,
                    dst: t.dst,
                    bytes: b,
                });
            }
        }
        self.out.clear();
    }

    fn start(&mut self, intended: u64, scen: Scenario, hold: u64) {
        self.uac
            .start_call(self.now, intended, scen, hold, &mut self.out)
            .expect("room");
        self.take_out();
    }

    /// Runs until nothing is in flight and no timer is pending before `until`.
    fn run(&mut self, until: u64) {
        loop {
            let next_pkt = self.flight.iter().map(|p| p.at).min();
            let next_t = [self.uac.poll_timeout(), self.uas.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = match (next_pkt, next_t) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => return,
                },
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            if let Some(i) = self.flight.iter().position(|p| p.at <= self.now) {
                let p = self.flight.remove(i);
                if p.dst == uas_addr() {
                    self.uas
                        .handle(self.now, 0, uac_addr(), &p.bytes, &mut self.out);
                } else {
                    self.uac
                        .handle(self.now, 0, uas_addr(), &p.bytes, &mut self.out);
                }
            } else {
                self.uac.handle_timeout(self.now, &mut self.out);
                self.uas.handle_timeout(self.now, &mut self.out);
            }
            self.take_out();
        }
    }

    fn dump(&self) -> String {
        self.log.join("\n")
    }
}

/// The histogram's max is `want` up to its 3-significant-digit resolution.
fn assert_max(uac: &Uac, m: Metric, want: u64) {
    let h = uac.stats.hist(m);
    assert!(
        h.equivalent(h.max(), want),
        "{m:?} max {} != {want}",
        h.max()
    );
    assert_eq!(h.len(), 1);
}

fn methods(log: &[String]) -> Vec<String> {
    log.iter()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w[2] == "SIP/2.0" {
                w[3].to_string()
            } else {
                w[2].to_string()
            }
        })
        .collect()
}

#[test]
fn basic_call_flow_and_latencies() {
    let mut n = Net::new();
    n.start(0, Scenario::Basic, 1_000_000);
    n.run(u64::MAX);
    assert_eq!(
        methods(&n.log),
        ["INVITE", "100", "180", "200", "ACK", "BYE", "200"],
        "{}",
        n.dump()
    );
    let s = &n.uac.stats;
    assert_eq!((s.c.ok, s.c.failed_total(), s.c.retrans), (1, 0, 0));
    assert_eq!(s.hist(Metric::Invite100).max(), 2 * DELAY);
    assert_eq!(s.hist(Metric::Invite200).max(), 2 * DELAY);
    assert_eq!(s.hist(Metric::Bye200).max(), 2 * DELAY);
    // BYE left exactly one hold after the 200 arrived.
    assert!(
        n.log[5]
            .trim_start()
            .starts_with(&(2 * DELAY + 1_000_000).to_string()),
        "{}",
        n.dump()
    );
    assert_eq!(n.uas.stats.c.uas_ok, 1);
    assert_eq!(n.uac.active(), 0);
}

#[test]
fn latency_counts_from_intended_start_not_from_late_send() {
    let mut n = Net::new();
    n.now = 5_000; // the generator is 5 ms late for a call due at t=0
    n.start(0, Scenario::Basic, 0);
    n.run(u64::MAX);
    assert_eq!(n.uac.stats.c.ok, 1);
    let setup = n.uac.stats.hist(Metric::Setup).max();
    assert!(
        (5_000 + 2 * DELAY..5_000 + 2 * DELAY + 10).contains(&setup),
        "{setup}"
    );
    assert_eq!(n.uac.stats.max_behind_us, 5_000);
    // The generator's own lag and the service time split that figure into its two parts.
    let lag = n.uac.stats.hist(Metric::StartLag);
    assert_eq!(lag.len(), 1);
    assert!(lag.equivalent(lag.max(), 5_000), "{}", lag.max()); // 3 significant digits
    let served = n.uac.stats.hist(Metric::Invite200Sent).max();
    let total = n.uac.stats.hist(Metric::Invite200).max();
    assert!((2 * DELAY..2 * DELAY + 10).contains(&served), "{served}");
    assert!(
        total.abs_diff(served + 5_000) <= 10,
        "{total} vs {served} + 5000"
    );
}

#[test]
fn every_direct_scenario_completes() {
    for scen in [
        Scenario::Basic,
        Scenario::Reject,
        Scenario::Cancel,
        Scenario::Fork,
        Scenario::Nobye,
        Scenario::Reinvite,
        Scenario::Options,
    ] {
        let mut n = Net::new();
        n.start(0, scen, 10_000);
        n.run(60_000_000);
        let c = &n.uac.stats.c;
        assert_eq!(
            (c.ok, c.failed_total(), c.retrans),
            (1, 0, 0),
            "{scen}: {}",
            n.dump()
        );
        assert_eq!(n.uas.stats.c.failed_total(), 0, "{scen}: {}", n.dump());
        let m = methods(&n.log);
        let want: &[&str] = match scen {
            Scenario::Basic => &["INVITE", "100", "180", "200", "ACK", "BYE", "200"],
            Scenario::Reject => &["INVITE", "100", "486", "ACK"],
            Scenario::Cancel => &["INVITE", "100", "180", "CANCEL", "200", "487", "ACK"],
            Scenario::Fork => &[
                "INVITE", "100", "180", "180", "180", "200", "ACK", "BYE", "200",
            ],
            Scenario::Nobye => &["INVITE", "100", "180", "200", "ACK"],
            Scenario::Reinvite => &[
                "INVITE", "100", "180", "200", "ACK", "INVITE", "200", "ACK", "BYE", "200",
            ],
            Scenario::Options => &["OPTIONS", "200"],
            Scenario::Noanswer => &[],
        };
        assert_eq!(m, want, "{scen}: {}", n.dump());
    }
}

#[test]
fn fork_uses_distinct_to_tags_and_acks_the_answering_one() {
    let mut n = Net::new();
    n.start(0, Scenario::Fork, 0);
    let inv = n.flight.remove(0);
    n.uas.handle(1, 0, uac_addr(), &inv.bytes, &mut n.out);
    let mut tags = Vec::new();
    let mut tag_200 = Vec::new();
    for t in n.out.items.clone() {
        let b = n.out.bytes(&t).to_vec();
        let m = Msg::parse(&b).unwrap();
        if m.kind == Kind::Response(180) {
            tags.push(m.get(m.to_tag).to_vec());
        }
        if m.kind == Kind::Response(200) {
            tag_200 = m.get(m.to_tag).to_vec();
        }
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 3, "three early dialogs");
    assert!(tags.contains(&tag_200), "200 comes from one of them");
    n.take_out();
    n.run(u64::MAX);
    assert_eq!(n.uac.stats.c.ok, 1, "{}", n.dump());
    let ack = n.log.iter().position(|l| l.contains(" ACK ")).unwrap();
    assert!(ack > 0);
    assert_eq!(
        n.uas.stats.c.uas_ok,
        1,
        "BYE matched the dialog: {}",
        n.dump()
    );
}

#[test]
fn lost_invite_is_retransmitted_after_t1() {
    let mut n = Net::new();
    n.drop = Box::new(|i, _| i == 0);
    n.start(0, Scenario::Basic, 0);
    n.run(u64::MAX);
    assert_eq!(n.uac.stats.c.ok, 1, "{}", n.dump());
    assert_eq!(n.uac.stats.c.retrans, 1);
    assert_max(&n.uac, Metric::Invite200, 500_000 + 2 * DELAY);
}

#[test]
fn unanswered_invite_backs_off_and_times_out() {
    let mut n = Net::new();
    n.drop = Box::new(|_, _| true);
    n.start(0, Scenario::Basic, 0);
    n.run(u64::MAX);
    let times: Vec<u64> = n
        .log
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    // Timer A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B fails the call at 32 s.
    assert_eq!(
        times,
        [
            0, 500_000, 1_500_000, 3_500_000, 7_500_000, 15_500_000, 31_500_000
        ]
    );
    let c = &n.uac.stats.c;
    assert_eq!(c.failed[FailReason::InviteTimeout as usize], 1);
    assert_eq!(c.ok, 0);
    assert_eq!(n.uac.active(), 0);
}

#[test]
fn lost_ack_makes_uas_retransmit_200_and_uac_ack_again() {
    let mut n = Net::new();
    // Drop the first ACK (4th datagram: INVITE, 100, 180, 200, ACK).
    n.drop = Box::new(|i, b| i == 4 && b.starts_with(b"ACK"));
    n.start(0, Scenario::Basic, 2_000_000);
    n.run(u64::MAX);
    assert_eq!(n.uac.stats.c.ok, 1, "{}", n.dump());
    assert_eq!(n.uas.stats.c.uas_retrans, 1, "{}", n.dump());
    assert_eq!(n.uac.stats.c.retrans, 1, "re-ACK counted: {}", n.dump());
    assert_eq!(n.uas.stats.c.failed_total(), 0);
}

#[test]
fn lost_bye_response_is_absorbed() {
    let mut n = Net::new();
    let mut dropped = false;
    n.drop = Box::new(move |_, b| {
        if !dropped && b.starts_with(b"SIP/2.0 200") && memchr::memmem::find(b, b"BYE").is_some() {
            dropped = true;
            return true;
        }
        false
    });
    n.start(0, Scenario::Basic, 0);
    n.run(u64::MAX);
    assert_eq!(n.uac.stats.c.ok, 1, "{}", n.dump());
    assert_eq!(n.uac.stats.c.retrans, 1);
    assert_eq!(n.uas.stats.c.uas_retrans, 1, "{}", n.dump());
    assert_max(&n.uac, Metric::Bye200, 500_000 + 2 * DELAY);
}

#[test]
fn noanswer_succeeds_on_408_from_a_proxy() {
    let mut n = Net::new();
    n.start(0, Scenario::Noanswer, 0);
    // Stand in for the proxy: take the INVITE off the wire, answer 408 ourselves.
    let inv = n.flight.remove(0);
    n.uas.handle(DELAY, 0, uac_addr(), &inv.bytes, &mut n.out);
    n.take_out(); // 100 + 180 from the UAS
    let m = Msg::parse(&inv.bytes).unwrap();
    let mut r = Vec::new();
    let o = ResponseOpts {
        code: 408,
        to_tag: b"proxy",
        contact: b"",
        record_route: false,
        sdp: false,
    };
    sipmsg::build_response(&mut r, &m, &o);
    n.flight.push(Pkt {
        at: 3_000_000,
        dst: uac_addr(),
        bytes: r,
    });
    n.run(4_000_000);
    assert_eq!(n.uac.stats.c.ok, 1, "{}", n.dump());
    assert_max(&n.uac, Metric::Setup, 3_000_000);
    assert!(
        n.log.iter().any(|l| l.contains("ACK")),
        "408 is ACKed: {}",
        n.dump()
    );
}

#[test]
fn unexpected_final_fails_the_call() {
    let mut n = Net::new();
    n.start(0, Scenario::Reject, 0);
    let inv = n.flight.remove(0);
    let m = Msg::parse(&inv.bytes).unwrap();
    let mut r = Vec::new();
    let o = ResponseOpts {
        code: 481,
        to_tag: b"x",
        contact: b"",
        record_route: false,
        sdp: false,
    };
    sipmsg::build_response(&mut r, &m, &o);
    n.uac.handle(10, 0, uas_addr(), &r, &mut n.out);
    assert_eq!(
        n.uac.stats.c.failed[FailReason::UnexpectedStatus as usize],
        1
    );
    // A late duplicate for the finished call is stray, not a second result.
    n.uac.handle(20, 0, uas_addr(), &r, &mut n.out);
    assert_eq!(n.uac.stats.c.stray, 1);
    assert_eq!(n.uac.stats.c.failed_total(), 1);
}

#[test]
fn in_dialog_requests_follow_record_route_and_contact() {
    let mut n = Net::new();
    n.start(0, Scenario::Basic, 0);
    let inv = n.flight.remove(0);
    let m = Msg::parse(&inv.bytes).unwrap();
    // A 200 as if through two record-routing proxies.
    let mut r = Vec::new();
    r.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    r.extend_from_slice(m.get(m.via_lines[0]));
    r.extend_from_slice(b"\r\nRecord-Route: <sip:127.0.0.2:5071;lr;did=1>\r\nRecord-Route: <sip:127.0.0.3:5072;lr>\r\n");
    r.extend_from_slice(m.get(m.from_line));
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(m.get(m.to_line));
    r.extend_from_slice(b";tag=uas9\r\n");
    r.extend_from_slice(m.get(m.call_id_line));
    r.extend_from_slice(
        b"\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@127.0.0.9:5099>\r\nContent-Length: 0\r\n\r\n",
    );
    n.uac.handle(300, 0, uas_addr(), &r, &mut n.out);
    assert_eq!(n.out.len(), 2, "ACK and BYE");
    for t in n.out.items.clone() {
        let b = n.out.bytes(&t);
        let text = String::from_utf8_lossy(b);
        assert_eq!(t.dst, "127.0.0.2:5071".parse().unwrap(), "first Route hop");
        assert!(
            text.contains(" sip:callee@127.0.0.9:5099 SIP/2.0"),
            "{text}"
        );
        assert!(
            text.contains("Route: <sip:127.0.0.2:5071;lr;did=1>, <sip:127.0.0.3:5072;lr>\r\n"),
            "{text}"
        );
        assert!(text.contains(";tag=uas9\r\n"), "{text}");
    }
}

#[test]
fn uas_absorbs_retransmitted_requests() {
    let mut n = Net::new();
    n.start(0, Scenario::Cancel, 0);
    let inv = n.flight.remove(0);
    n.uas.handle(1, 0, uac_addr(), &inv.bytes, &mut n.out);
    let first: Vec<u8> = n.out.bytes(n.out.items.last().unwrap()).to_vec();
    assert!(first.starts_with(b"SIP/2.0 180"));
    n.out.clear();
    // The INVITE again: the UAS repeats its 180, starts nothing new.
    n.uas.handle(2, 0, uac_addr(), &inv.bytes, &mut n.out);
    assert_eq!(n.out.len(), 1);
    assert_eq!(n.out.bytes(&n.out.items[0]), &first[..]);
    assert_eq!(n.uas.stats.c.uas_calls, 1);
    assert_eq!(n.uas.stats.c.uas_retrans, 1);
    assert_eq!(n.uas.active(), 1);
}

#[test]
fn uas_answers_481_to_bye_for_unknown_call_and_times_out_without_ack() {
    let mut n = Net::new();
    n.start(0, Scenario::Basic, 0);
    let inv = n.flight.remove(0);
    // Never deliver anything back to the UAC: the UAS retransmits its 200 (Timer G) and
    // gives up after 64*T1 counting NoAck.
    n.drop = Box::new(|_, _| true);
    n.uas.handle(0, 0, uac_addr(), &inv.bytes, &mut n.out);
    n.take_out();
    n.run(40_000_000);
    let retrans = n.uas.stats.c.uas_retrans;
    // 0.5, 1.5, 3.5, 7.5, 11.5, ... up to 32 s (T2 cap of 4 s): 10 retransmissions.
    assert_eq!(retrans, 10, "{}", n.dump());
    assert_eq!(n.uas.stats.c.failed[FailReason::NoAck as usize], 1);
    assert_eq!(n.uas.active(), 0);
    // A BYE for a call the UAS does not know gets 481.
    let bye = b"BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nope\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    n.out.clear();
    n.uas.handle(1, 0, uac_addr(), bye, &mut n.out);
    assert!(n.out.bytes(&n.out.items[0]).starts_with(b"SIP/2.0 481"));
}

#[test]
fn bye_from_the_network_is_answered_and_fails_the_live_call() {
    let mut n = Net::new();
    n.start(0, Scenario::Basic, 60_000_000);
    n.run(1_000_000); // call is now holding
    assert_eq!(n.uac.active(), 1);
    assert!(n.log.iter().any(|l| l.contains(" ACK ")), "{}", n.dump());
    let mut bye = Vec::new();
    bye.extend_from_slice(b"BYE sip:loadgen@127.0.0.1:6000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKpx\r\n");
    // Call-ID of slot 0, generation 1, run tag 7.
    bye.extend_from_slice(b"From: <sip:service@127.0.0.1:5090>;tag=x\r\nTo: <sip:loadgen@127.0.0.1:6000>;tag=0000000000000001\r\nCall-ID: 0000000000000001-00000007@loadgen\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n");
    n.out.clear();
    n.uac.handle(n.now, 0, uas_addr(), &bye, &mut n.out);
    assert!(n.out.bytes(&n.out.items[0]).starts_with(b"SIP/2.0 200 OK"));
    assert_eq!(n.uac.active(), 0);
    assert_eq!(n.uac.stats.c.failed[FailReason::PeerBye as usize], 1);
    assert_eq!(n.uac.stats.c.peer_byes, 1);
}
