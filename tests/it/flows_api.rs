//! dialog_ng's lookup API and pseudo-variables on a live call: `dlg_get`, `is_known_dlg`,
//! `$DLG_count`, `$DLG_status`, `$DLG_lifetime`, `$dlg(attr)`, `$dlg_ctx(attr)`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;

const DIRECT: &str = "sip:bob@10.0.0.2:5060";

#[test]
fn lookups_and_pseudo_variables_on_a_live_call() {
    let mut net = Net::new();
    net.advance(1_000);
    let out = net.send(UAC, &invite("api1", "ftag1", "b1", DIRECT));
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("ttag1"), UAS1));
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    assert_eq!(net.shared.dlg_count(), 1);
    net.send(UAC, &caller_req(&ok, "ACK", 1, "a1"));
    net.advance(3_000);

    let d = net
        .shared
        .dlg_get(b"api1", b"ftag1", b"ttag1")
        .expect("by tags");
    assert!(
        net.shared.dlg_get(b"api1", b"ttag1", b"ftag1").is_some(),
        "either direction"
    );
    assert!(
        net.shared.dlg_get(b"api1", b"ftag1", b"").is_some(),
        "by Call-ID and From-tag"
    );
    assert!(net.shared.dlg_get(b"api1", b"ftag1", b"wrong").is_none());
    assert!(net.shared.dlg_get(b"nope", b"ftag1", b"ttag1").is_none());

    assert_eq!(d.status(), 4);
    assert!(d.lifetime_secs(net.now) >= 3);
    assert_eq!(d.attr("callid").as_deref(), Some("api1"));
    assert_eq!(d.attr("from_tag").as_deref(), Some("ftag1"));
    assert_eq!(d.attr("to_tag").as_deref(), Some("ttag1"));
    assert_eq!(d.attr("state").as_deref(), Some("4"));
    assert_eq!(d.attr("h_id"), Some(d.id.h_id.to_string()));
    assert!(d.attr("from_contact").unwrap().contains("alice@10.0.0.1"));
    assert!(d.attr("to_bind_addr").unwrap().contains("10.0.0.2:5060"));
    assert_eq!(d.attr("no_such_attr"), None);
    assert_eq!(d.ctx_attr("flags").as_deref(), Some("0"));

    let bye = caller_req(&ok, "BYE", 2, "y1");
    let m = sipedge::wire::parse(bye.as_bytes()).unwrap();
    assert!(net.shared.is_known_dlg(&m));
    let stray = raw_request("BYE", DIRECT, "other", "");
    let m2 = sipedge::wire::parse(stray.as_bytes()).unwrap();
    assert!(!net.shared.is_known_dlg(&m2));

    net.send(UAC, &bye);
    assert!(
        net.shared.dlg_get(b"api1", b"ftag1", b"ttag1").is_none(),
        "ended dialogs are not found"
    );
    assert_eq!(net.shared.dlg_count(), 0);
}

#[test]
fn dlg_refer_sends_refer_to_one_side_and_bye_to_the_other() {
    let mut net = Net::new();
    net.advance(1_000);
    let out = net.send(UAC, &invite("ref1", "ftr", "br", DIRECT));
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("ttr"), UAS1));
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    net.send(UAC, &caller_req(&ok, "ACK", 1, "ar"));
    let d = net.shared.dlg_get(b"ref1", b"ftr", b"ttr").unwrap();
    let id = d.id;
    let mut out = sipedge::engine::Output::default();
    let now = net.now;
    net.engines[0].handle_command(
        now,
        now * 1000,
        sipedge::engine::Command::Refer {
            id,
            side: sipedge::dialog::Side::Caller,
            address: "sip:carol@10.0.0.9".into(),
        },
        &mut out,
    );
    let sent: Vec<(std::net::SocketAddr, String)> = out
        .tx
        .iter()
        .map(|t| (t.dst, String::from_utf8_lossy(out.bytes(t)).into_owned()))
        .collect();
    let refer = sent
        .iter()
        .find(|(_, m)| m.starts_with("REFER "))
        .expect("a REFER");
    assert_eq!(refer.0, sa(UAC));
    assert!(
        refer.1.contains("Refer-To: <sip:carol@10.0.0.9>"),
        "{}",
        refer.1
    );
    assert!(refer.1.contains("Referred-By: <sip:controller@127.0.0.1>"));
    let bye = sent
        .iter()
        .find(|(_, m)| m.starts_with("BYE "))
        .expect("a BYE");
    assert_eq!(bye.0, sa(UAS1));
    assert_eq!(
        net.state_of("ref1"),
        Some(sipedge::dialog::DlgState::Deleted)
    );
    assert_eq!(net.stats().active_dialogs, 0);
}

#[test]
fn dlg_bridge_invites_refers_and_hangs_up() {
    let mut net = Net::new();
    net.advance(1_000);
    let inv = start_bridge(&mut net);
    assert_eq!(inv.dst, sa(UAC));
    assert!(
        inv.text
            .starts_with("INVITE sip:alice@10.0.0.1:5060 SIP/2.0"),
        "{}",
        inv.text
    );
    assert!(inv.text.contains("a=inactive"), "on-hold SDP");
    assert!(inv.text.contains("From: <sip:controller@127.0.0.1>;tag="));
    assert_eq!(net.engines[0].bridges_active(), 1);
    // Alice answers: ACK + REFER to Bob.
    let out = net.send(UAC, &reply(&inv, 200, "OK", Some("al"), UAC));
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    assert!(ack.hdr("To").contains("tag=al"));
    let refer = one(&out, "REFER", |s| s.is("REFER")).clone();
    assert!(refer.hdr("Refer-To").contains("sip:bob@10.0.0.2:5060"));
    assert_eq!(refer.cseq_num(), 2);
    // Alice's NOTIFY about the transfer gets 200 from the proxy.
    let notify = format!(
        "NOTIFY {} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKn1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@10.0.0.1:5060>;tag=al\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 NOTIFY\r\n\
         Event: refer\r\nContent-Length: 0\r\n\r\n",
        uri_of(&refer.hdr("Contact")),
        refer.hdr("From"),
        refer.hdr("Call-ID")
    );
    let out = net.send(UAC, &notify);
    assert_eq!(one(&out, "200 NOTIFY", |s| s.code() == 200).dst, sa(UAC));
    // 202 for the REFER: the proxy hangs up; 200 for the BYE ends the bridge call.
    let out = net.send(UAC, &reply(&refer, 202, "Accepted", None, UAC));
    let bye = one(&out, "BYE", |s| s.is("BYE")).clone();
    assert_eq!(bye.cseq_num(), 3);
    net.send(UAC, &reply(&bye, 200, "OK", None, UAC));
    assert_eq!(net.engines[0].bridges_active(), 0);
}

/// Start a bridge call from worker 0 to `sip:alice@10.0.0.1:5060` and return its INVITE.
fn start_bridge(net: &mut Net) -> Sent {
    let now = net.now;
    let mut out = sipedge::engine::Output::default();
    net.engines[0].handle_command(
        now,
        now * 1000,
        sipedge::engine::Command::Bridge {
            from: "sip:alice@10.0.0.1:5060".into(),
            to: "sip:bob@10.0.0.2:5060".into(),
            op: None,
        },
        &mut out,
    );
    assert_eq!(out.tx.len(), 1);
    Sent {
        dst: out.tx[0].dst,
        text: String::from_utf8_lossy(out.bytes(&out.tx[0])).into_owned(),
    }
}

#[test]
fn a_bridge_invite_ringing_at_its_deadline_is_cancelled_and_leaves_nothing() {
    let mut net = Net::new();
    net.advance(1_000);
    let timers_before = net.pending_timers();
    let inv = start_bridge(&mut net);
    let ringing = net.send(UAC, &reply(&inv, 180, "Ringing", Some("al"), UAC));
    assert!(
        ringing.is_empty(),
        "a provisional needs no answer: {ringing:?}"
    );
    // Nothing until the deadline (no INVITE copy after the provisional), then a CANCEL.
    let sent = net.advance(sipedge::engine::BRIDGE_TIMEOUT - 1_000);
    assert!(sent.is_empty(), "{sent:?}");
    let sent = net.advance(1_000);
    let cancel = one(&sent, "CANCEL", |s| s.is("CANCEL")).clone();
    assert_eq!(cancel.hdr("Call-ID"), inv.hdr("Call-ID"));
    assert_eq!(cancel.cseq_num(), 1);
    assert_eq!(
        cancel.all("Via"),
        inv.all("Via"),
        "a CANCEL shares its INVITE's Via"
    );
    net.send(UAC, &reply(&cancel, 200, "OK", Some("al"), UAC));
    let out = net.send(
        UAC,
        &reply(&inv, 487, "Request Terminated", Some("al"), UAC),
    );
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    assert_eq!(ack.all("Via"), inv.all("Via"));
    assert_eq!(net.engines[0].bridges_active(), 1, "kept to ACK 487 copies");
    net.advance(sipedge::txn::ict::TIMER_D + 1_000);
    assert_eq!(net.engines[0].bridges_active(), 0);
    assert_eq!(net.engines[0].generated_in_flight(), 0);
    assert_eq!(
        net.pending_timers(),
        timers_before,
        "every timer of the bridge call is cancelled or fired"
    );
}

#[test]
fn a_bridge_invite_nobody_answers_is_retransmitted_then_given_up() {
    let mut net = Net::new();
    net.advance(1_000);
    let timers_before = net.pending_timers();
    let inv = start_bridge(&mut net);
    let sent = net.advance(32_000);
    let copies = sent.iter().filter(|s| s.is("INVITE")).count();
    // Timer A at 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, ... (doubling, capped at T2 = 4 s), Timer B
    // at 32 s.
    assert!((6..=10).contains(&copies), "{copies} INVITE copies");
    assert!(sent.iter().all(|s| !s.is("INVITE") || s.text == inv.text));
    net.advance(sipedge::txn::ict::TIMER_D + 1_000);
    assert_eq!(net.engines[0].bridges_active(), 0);
    assert_eq!(net.pending_timers(), timers_before);
}

#[test]
fn a_bridge_answered_across_its_cancel_is_acked_and_hung_up() {
    let mut net = Net::new();
    net.advance(1_000);
    let inv = start_bridge(&mut net);
    net.send(UAC, &reply(&inv, 180, "Ringing", Some("al"), UAC));
    let sent = net.advance(sipedge::engine::BRIDGE_TIMEOUT);
    let cancel = one(&sent, "CANCEL", |s| s.is("CANCEL")).clone();
    net.send(UAC, &reply(&cancel, 200, "OK", Some("al"), UAC));
    // Alice answers anyway: the 200 crossed the CANCEL.
    let out = net.send(UAC, &reply(&inv, 200, "OK", Some("al"), UAC));
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    assert!(ack.hdr("To").contains("tag=al"));
    let bye = one(&out, "BYE", |s| s.is("BYE")).clone();
    assert!(
        out.iter().all(|s| !s.is("REFER")),
        "no transfer after giving up"
    );
    net.send(UAC, &reply(&bye, 200, "OK", None, UAC));
    assert_eq!(net.engines[0].bridges_active(), 0);
    // The BYE's client transaction absorbs copies of its 200 for T4, then goes too.
    net.advance(6_000);
    assert_eq!(net.engines[0].generated_in_flight(), 0);
}
