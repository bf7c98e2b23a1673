//! Virtual-time proxy call flows (RFC 3261 §16–17) through the sans-IO engine: 100 Trying
//! (at once by default, or held back `inv_100_delay_ms`),
//! retransmissions, Timers A/B/C, CANCEL, ACK handling, 2xx relay, request validation,
//! loops and spirals, OPTIONS, Via routing and rport/received.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use sipedge::dialog::DlgState;

const RURI: &str = "sip:bob@10.0.0.2:5060";

/// INVITE in; returns (100 upstream, INVITE forwarded to UAS1).
fn start(net: &mut Net, call: &str) -> (String, Sent) {
    let inv = invite(call, &format!("ft-{call}"), &format!("b-{call}"), RURI);
    let out = net.send(UAC, &inv);
    let trying = one(&out, "100", |s| s.code() == 100);
    assert_eq!(trying.dst, sa(UAC));
    let fwd = one(&out, "forwarded INVITE", |s| s.is("INVITE")).clone();
    assert_eq!(fwd.dst, sa(UAS1));
    (inv, fwd)
}

/// A held-back 100 Trying's delay, ms.
const DELAY: u64 = 100;

/// A proxy whose 100 Trying waits `DELAY` ms for a downstream reply that makes it unneeded.
fn held_net() -> Net {
    let net = Net::new();
    net.settings(|s| s.inv_100_delay_ms = DELAY);
    net
}

/// INVITE in with the 100 held back: only the forwarded INVITE leaves at once; returns it.
fn start_held(net: &mut Net, call: &str) -> Sent {
    let inv = invite(call, &format!("ft-{call}"), &format!("b-{call}"), RURI);
    let out = net.send(UAC, &inv);
    assert_eq!(out.len(), 1, "only the forwarded INVITE: {out:#?}");
    let fwd = one(&out, "forwarded INVITE", |s| s.is("INVITE")).clone();
    assert_eq!(fwd.dst, sa(UAS1));
    fwd
}

#[test]
fn default_answers_100_at_once() {
    assert_eq!(sipedge::config::Config::default().dialog.inv_100_delay, 0);
    assert_eq!(sipedge::engine::Settings::default().inv_100_delay_ms, 0);
    let mut net = Net::new();
    let (_inv, _fwd) = start(&mut net, "t0");
    let later = net.advance(450);
    assert!(later.is_empty(), "no second 100: {later:#?}");
}

#[test]
fn held_back_100_goes_out_when_nothing_came_back() {
    let mut net = held_net();
    start_held(&mut net, "t1");
    assert!(net.advance(DELAY - 10).is_empty(), "not before the delay");
    let out = net.advance(10);
    let t = one(&out, "100", |s| s.code() == 100);
    assert_eq!(t.dst, sa(UAC));
    assert_eq!(
        t.top_branch(),
        "z9hG4bKb-t1",
        "the 100 answers the caller's INVITE"
    );
    assert_eq!(out.len(), 1, "{out:#?}");
    // Up to just before Timer A (500 ms): nothing more.
    assert!(net.advance(380).is_empty(), "one 100 only");
}

#[test]
fn held_back_100_not_sent_when_a_provisional_or_final_came_first() {
    let mut net = held_net();
    let fwd = start_held(&mut net, "t2");
    net.advance(DELAY / 2);
    let out = net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t1"), UAS1));
    assert_eq!(one(&out, "180", |s| s.code() == 180).dst, sa(UAC));
    let later = net.advance(DELAY);
    assert!(later.iter().all(|s| s.code() != 100), "{later:#?}");
    // A downstream 100 is hop-by-hop: it is absorbed, and ours still goes out on time.
    let fwd = start_held(&mut net, "t3");
    let out = net.send(UAS1, &reply(&fwd, 100, "Trying", None, ""));
    assert!(out.is_empty(), "{out:#?}");
    let out = net.advance(DELAY);
    assert_eq!(one(&out, "100", |s| s.code() == 100).dst, sa(UAC));
    // A final first: no 100 after it.
    let fwd = start_held(&mut net, "t4");
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("t1"), UAS1));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    let later = net.advance(DELAY);
    assert!(later.iter().all(|s| s.code() != 100), "{later:#?}");
}

#[test]
fn held_back_100_sent_early_on_a_retransmission_and_only_once() {
    let mut net = held_net();
    let inv = invite("t5", "ft-t5", "b-t5", RURI);
    start_held(&mut net, "t5");
    let again = net.send(UAC, &inv);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].code(), 100);
    assert_eq!(again[0].dst, sa(UAC));
    assert!(
        net.advance(DELAY).is_empty(),
        "the held-back 100 was sent already"
    );
}

#[test]
fn held_back_100_follows_rport() {
    let mut net = held_net();
    let inv = invite("t6", "ft-t6", "b-t6", RURI)
        .replace(";branch=z9hG4bKb-t6", ";rport;branch=z9hG4bKb-t6");
    let out = net.send("192.0.2.7:40000", &inv);
    assert_eq!(out.len(), 1, "{out:#?}");
    let later = net.advance(DELAY);
    assert_eq!(
        one(&later, "100", |s| s.code() == 100).dst,
        sa("192.0.2.7:40000")
    );
}

#[test]
fn basic_call_relays_and_tracks() {
    let mut net = Net::new();
    let (_inv, fwd) = start(&mut net, "c1");
    // Our Via on top, theirs below; Record-Route with the did; Max-Forwards decremented.
    let vias = fwd.all("Via");
    assert_eq!(vias.len(), 2);
    assert!(vias[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-se."));
    assert!(fwd.record_routes()[0].contains(";did="));
    assert_eq!(fwd.hdr("Max-Forwards"), "69");
    assert_eq!(net.state_of("c1"), Some(DlgState::Unconfirmed));

    let ringing = net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t1"), UAS1));
    let r = one(&ringing, "180", |s| s.code() == 180);
    assert_eq!(r.dst, sa(UAC));
    assert_eq!(r.all("Via").len(), 1, "our Via stripped");
    assert_eq!(net.state_of("c1"), Some(DlgState::Early));
    assert_eq!(net.stats().early_dialogs, 1);

    let ok = net.send(UAS1, &reply(&fwd, 200, "OK", Some("t1"), UAS1));
    let ok = one(&ok, "200", |s| s.code() == 200).clone();
    assert_eq!(ok.dst, sa(UAC));
    assert_eq!(net.state_of("c1"), Some(DlgState::ConfirmedNa));
    let st = net.stats();
    assert_eq!((st.early_dialogs, st.active_dialogs), (0, 1));

    // ACK for 2xx is loose-routed: our Route removed, sent to the Contact.
    let ack = net.send(UAC, &caller_req(&ok, "ACK", 1, "ack1"));
    let ack = one(&ack, "ACK", |s| s.is("ACK"));
    assert_eq!(ack.dst, sa(UAS1));
    assert!(!ack.has("Route"), "our own Route entry must be removed");
    assert_eq!(ack.ruri(), "sip:bob@10.0.0.2:5060");
    assert_eq!(net.state_of("c1"), Some(DlgState::Confirmed));

    // BYE from caller, 200 back.
    let bye = net.send(UAC, &caller_req(&ok, "BYE", 2, "bye1"));
    let bye = one(&bye, "BYE", |s| s.is("BYE")).clone();
    assert_eq!(bye.dst, sa(UAS1));
    assert_eq!(net.state_of("c1"), Some(DlgState::Deleted));
    let r = net.send(UAS1, &reply(&bye, 200, "OK", None, ""));
    assert_eq!(one(&r, "200 BYE", |s| s.is_resp(200, "BYE")).dst, sa(UAC));
    assert_eq!(net.dialogs(), 0, "removed after the BYE's reply");
    let st = net.stats();
    assert_eq!((st.active_dialogs, st.processed_dialogs), (0, 1));
}

#[test]
fn invite_retransmission_absorbed_with_last_provisional() {
    let mut net = Net::new();
    let (inv, fwd) = start(&mut net, "c2");
    // Before any provisional: 100 again, nothing downstream.
    let again = net.send(UAC, &inv);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].code(), 100);
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t1"), UAS1));
    let again = net.send(UAC, &inv);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].code(), 180);
    assert_eq!(again[0].dst, sa(UAC));
}

#[test]
fn timer_a_retransmits_until_provisional() {
    let mut net = Net::new();
    let (_inv, fwd) = start(&mut net, "c3");
    let mut times = Vec::new();
    for _ in 0..4000 {
        let out = net.advance(50);
        for s in out {
            assert_eq!(s.text, fwd.text, "retransmission is the same INVITE");
            times.push(net.now);
        }
        if net.now >= 3600 {
            break;
        }
    }
    assert_eq!(
        times,
        vec![500, 1500, 3500],
        "Timer A: 500, 1000, 2000 ms intervals"
    );
    net.send(UAS1, &reply(&fwd, 100, "Trying", None, ""));
    let later = net.advance(10_000);
    assert!(
        later.is_empty(),
        "no retransmission after a provisional: {later:#?}"
    );
}

#[test]
fn timer_b_sends_408_upstream() {
    let mut net = Net::new();
    let (_inv, _fwd) = start(&mut net, "c4");
    let out = net.advance(32_001);
    let r = one(&out, "408", |s| s.code() == 408);
    assert_eq!(r.dst, sa(UAC));
    assert!(r.to_tag().is_some());
    // Timer A stopped at B: INVITE retransmissions capped at T2 = 4 s.
    let invites = out.iter().filter(|s| s.is("INVITE")).count();
    // 500, 1500, 3500, 7500, then every T2 = 4 s: 11500 ... 31500.
    assert_eq!(invites, 10);
}

#[test]
fn timer_c_cancels_and_sends_408() {
    let mut net = Net::new();
    let (_inv, fwd) = start(&mut net, "c5");
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t1"), UAS1));
    let out = net.advance(181_000);
    let c = one(&out, "CANCEL", |s| s.is("CANCEL"));
    assert_eq!(c.dst, sa(UAS1));
    assert_eq!(c.top_branch(), fwd.top_branch());
    let r = one(&out, "408", |s| s.code() == 408);
    assert_eq!(r.dst, sa(UAC));
    assert_eq!(net.stats().failed_dialogs, 1);
}

#[test]
fn cancel_from_upstream() {
    let mut net = Net::new();
    let (inv, fwd) = start(&mut net, "c6");
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t1"), UAS1));
    let out = net.send(UAC, &cancel_for(&inv));
    assert_eq!(
        one(&out, "200 CANCEL", |s| s.is_resp(200, "CANCEL")).dst,
        sa(UAC)
    );
    let c = one(&out, "CANCEL", |s| s.is("CANCEL"));
    assert_eq!(c.dst, sa(UAS1));
    // UAS answers 487; ACK generated downstream, 487 relayed upstream.
    let out = net.send(
        UAS1,
        &reply(&fwd, 487, "Request Terminated", Some("t1"), ""),
    );
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    assert_eq!(ack.dst, sa(UAS1));
    assert_eq!(one(&out, "487", |s| s.code() == 487).dst, sa(UAC));
    // The UAC's ACK for the 487 is absorbed.
    let ack_up = inv
        .replace("INVITE sip", "ACK sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=t1",
        );
    let out = net.send(UAC, &ack_up);
    assert!(out.is_empty(), "ACK absorbed: {out:#?}");
    assert_eq!(net.state_of("c6"), Some(DlgState::Deleted));
    assert_eq!(net.stats().failed_dialogs, 1);
}

#[test]
fn cancel_before_provisional_waits() {
    let mut net = Net::new();
    let (inv, fwd) = start(&mut net, "c7");
    let out = net.send(UAC, &cancel_for(&inv));
    one(&out, "200 CANCEL", |s| s.is_resp(200, "CANCEL"));
    assert!(
        !out.iter().any(|s| s.is("CANCEL")),
        "no CANCEL before a provisional"
    );
    let out = net.send(UAS1, &reply(&fwd, 100, "Trying", None, ""));
    assert_eq!(one(&out, "CANCEL", |s| s.is("CANCEL")).dst, sa(UAS1));
}

#[test]
fn every_2xx_relayed_including_retransmissions() {
    let mut net = Net::new();
    let (_inv, fwd) = start(&mut net, "c8");
    let ok = reply(&fwd, 200, "OK", Some("t1"), UAS1);
    for _ in 0..3 {
        let out = net.send(UAS1, &ok);
        assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    }
    // Also after the transaction lingered out.
    net.advance(10_000);
    let out = net.send(UAS1, &ok);
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
}

#[test]
fn validation_replies() {
    let mut net = Net::new();
    let out = net.send(
        UAC,
        &raw_request("INVITE", RURI, "v1", "Max-Forwards: 0\r\n"),
    );
    assert_eq!(one(&out, "483", |_| true).code(), 483);
    let out = net.send(
        UAC,
        &raw_request("INVITE", RURI, "v2", "Proxy-Require: foo\r\n"),
    );
    let r = one(&out, "420", |_| true);
    assert_eq!(r.code(), 420);
    assert_eq!(r.hdr("Unsupported"), "foo");
    let bad_ver = raw_request("INVITE", RURI, "v3", "").replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
    let out = net.send(UAC, &bad_ver);
    assert_eq!(one(&out, "505", |_| true).code(), 505);
    let bad_ct = raw_request("INVITE", RURI, "v4", "Content-Encoding: gzip\r\n");
    let out = net.send(UAC, &bad_ct);
    // An unsupported content encoding may be forwarded (proxies do not inspect bodies):
    // only check nothing panicked and something went out.
    assert!(!out.is_empty());
    let no_callid = raw_request("INVITE", RURI, "v5", "").replace("Call-ID: v5\r\n", "");
    let out = net.send(UAC, &no_callid);
    assert_eq!(one(&out, "400", |_| true).code(), 400);
    let out = net.send(UAC, &raw_request("INVITE", "http://example.com/", "v6", ""));
    assert_eq!(one(&out, "416", |_| true).code(), 416);
    assert_eq!(
        net.dialogs(),
        1,
        "only the forwarded v4 INVITE made a dialog"
    );
}

#[test]
fn options_to_proxy_answered() {
    let mut net = Net::new();
    let out = net.send(
        UAC,
        &raw_request(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            "o1",
            "Max-Forwards: 70\r\n",
        ),
    );
    let r = one(&out, "200", |_| true);
    assert_eq!(r.code(), 200);
    assert!(r.to_tag().is_some());
    assert_eq!(r.dst, sa(UAC));
}

#[test]
fn response_with_foreign_top_via_dropped() {
    let mut net = Net::new();
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKx\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(net.send(UAS1, resp).is_empty());
}

#[test]
fn rport_and_received() {
    let mut net = Net::new();
    let inv = invite("rp", "ft-rp", "b-rp", RURI)
        .replace(";branch=z9hG4bKb-rp", ";rport;branch=z9hG4bKb-rp");
    // Arrives from a NATed address and port.
    let out = net.send("192.0.2.7:40000", &inv);
    let t = one(&out, "100", |s| s.code() == 100);
    assert_eq!(
        t.dst,
        sa("192.0.2.7:40000"),
        "rport: reply to the source port"
    );
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let theirs = &fwd.all("Via")[1];
    assert!(theirs.contains("received=192.0.2.7"), "{theirs}");
    assert!(theirs.contains("rport=40000"), "{theirs}");
    let out = net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t"), UAS1));
    assert_eq!(one(&out, "180", |_| true).dst, sa("192.0.2.7:40000"));
}

#[test]
fn loop_detected_but_spiral_is_not_a_loop() {
    let mut net = Net::new();
    // The INVITE goes to ourselves again through a Route back to us: first pass forwards.
    let (_inv, fwd) = start(&mut net, "lp");
    // Same request comes back unchanged (loop): 482.
    let out = net.send(UAS1, &fwd.text);
    assert_eq!(one(&out, "482", |_| true).code(), 482);
    // With a changed R-URI it is a spiral: forwarded, same dialog.
    let spiral = fwd
        .text
        .replacen("sip:bob@10.0.0.2:5060", "sip:carol@10.0.0.3:5060", 1);
    let out = net.send(UAS1, &spiral);
    let f2 = one(&out, "spiral INVITE", |s| s.is("INVITE"));
    assert_eq!(f2.dst, sa(UAS2));
    assert_eq!(net.dialogs(), 1, "spiral maps to the same dialog");
    assert_eq!(net.rec.count(sipedge::dialog::DlgEvent::Spiraled), 1);
}

#[test]
fn strict_router_fixup() {
    let mut net = Net::new();
    // Previous hop is a strict router: R-URI is our RR URI, the real target is the last Route.
    let inv = "BYE sip:127.0.0.1:5060;lr SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsr1\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:bob@10.0.0.2:5060>\r\n\
         From: <sip:alice@10.0.0.1>;tag=a\r\nTo: <sip:bob@x>;tag=b\r\n\
         Call-ID: sr\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        .to_string();
    let out = net.send(UAC, &inv);
    let f = one(&out, "BYE", |s| s.is("BYE"));
    assert_eq!(f.dst, sa(UAS1));
    assert_eq!(
        f.ruri(),
        "sip:bob@10.0.0.2:5060",
        "R-URI restored from the last Route"
    );
    assert!(!f.has("Route"), "{f:#?}");
}
