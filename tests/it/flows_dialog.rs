//! Virtual-time dialog flows (dialog_ng semantics) and forking through the sans-IO engine:
//! forked early legs, best-response selection, serial forking, CANCEL/200 and 200/200 races,
//! BYE either side, re-INVITE, dialog timeout, termination (early and confirmed), forged dids,
//! and end callbacks/statistics applied exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use sipedge::dialog::{DlgEvent, DlgState, Side};
use sipedge::engine::{Command, ForkMode, Output};
use sipedge::wire::Transport;

/// Net with a target group of UAS1..UAS3 as the default group (R-URI points at the proxy).
fn forking(mode: ForkMode) -> Net {
    let net = Net::new();
    net.default_group(mode, Transport::Udp, &[UAS1, UAS2, UAS3]);
    net
}

const OURS: &str = "sip:bob@127.0.0.1:5060";
const DIRECT: &str = "sip:bob@10.0.0.2:5060";

fn invites(out: &[Sent]) -> Vec<Sent> {
    out.iter().filter(|s| s.is("INVITE")).cloned().collect()
}

/// Every dialog that ended got exactly one end event, and every destroyed one one DESTROY.
fn assert_end_events_once(net: &Net) {
    let mut ends = net.rec.ids(DlgEvent::Terminated);
    ends.extend(net.rec.ids(DlgEvent::Failed));
    ends.extend(net.rec.ids(DlgEvent::Expired));
    let mut sorted = ends.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ends.len(),
        "an end event fired twice: {ends:?}"
    );
    let mut d = net.rec.ids(DlgEvent::Destroy);
    let n = d.len();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), n, "DESTROY fired twice");
}

fn dialog_id(net: &Net, call: &str) -> sipedge::dialog::id::DialogId {
    net.shared.table.find_by_callid(call.as_bytes())[0]
}

/// A simple confirmed call to UAS1; returns (forwarded INVITE, 2xx as the caller got it).
fn confirmed(net: &mut Net, call: &str) -> (Sent, Sent) {
    let inv = invite(call, &format!("ft-{call}"), &format!("b-{call}"), DIRECT);
    let out = net.send(UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("tt"), UAS1));
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    let out = net.send(UAC, &caller_req(&ok, "ACK", 1, &format!("ack-{call}")));
    one(&out, "ACK", |s| s.is("ACK"));
    assert_eq!(net.state_of(call), Some(DlgState::Confirmed));
    (fwd, ok)
}

#[test]
fn three_early_legs_then_200_from_second() {
    let mut net = forking(ForkMode::Parallel);
    let out = net.send(UAC, &invite("f1", "ft", "b1", OURS));
    let fwd = invites(&out);
    assert_eq!(fwd.len(), 3);
    let dsts: Vec<_> = fwd.iter().map(|s| s.dst).collect();
    assert_eq!(dsts, vec![sa(UAS1), sa(UAS2), sa(UAS3)]);
    for (i, (f, uas)) in fwd.iter().zip([UAS1, UAS2, UAS3]).enumerate() {
        let out = net.send(uas, &reply(f, 180, "Ringing", Some(&format!("e{i}")), uas));
        assert_eq!(one(&out, "180", |s| s.code() == 180).dst, sa(UAC));
    }
    assert_eq!(net.rec.count(DlgEvent::Early), 3, "one EARLY per leg");
    let d = net.shared.table.get(dialog_id(&net, "f1")).unwrap();
    assert_eq!(d.early_legs.load().as_ref().map(|v| v.len()), Some(3));
    assert_eq!(net.stats().early_dialogs, 1);
    let out = net.send(UAS2, &reply(&fwd[1], 200, "OK", Some("e1"), UAS2));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    let cancels: Vec<_> = out
        .iter()
        .filter(|s| s.is("CANCEL"))
        .map(|s| s.dst)
        .collect();
    assert_eq!(cancels, vec![sa(UAS1), sa(UAS3)]);
    assert_eq!(d.callee.get().unwrap().tag(), b"e1");
    assert_eq!(d.state(), DlgState::ConfirmedNa);
    let st = net.stats();
    assert_eq!((st.early_dialogs, st.active_dialogs), (0, 1));
    // The cancelled legs answer 487: ACKed downstream, nothing upstream.
    let out = net.send(
        UAS1,
        &reply(&fwd[0], 487, "Request Terminated", Some("e0"), ""),
    );
    assert!(
        out.iter().all(|s| s.dst == sa(UAS1) && s.is("ACK")),
        "{out:#?}"
    );
    assert_eq!(d.state(), DlgState::ConfirmedNa);
    assert_eq!(net.stats().failed_dialogs, 0);
}

#[test]
fn parallel_best_response() {
    let mut net = forking(ForkMode::Parallel);
    let out = net.send(UAC, &invite("f2", "ft", "b2", OURS));
    let fwd = invites(&out);
    let a = net.send(UAS1, &reply(&fwd[0], 486, "Busy Here", Some("x1"), ""));
    assert!(
        a.iter().all(|s| s.dst == sa(UAS1)),
        "held until all complete"
    );
    net.send(UAS2, &reply(&fwd[1], 404, "Not Found", Some("x2"), ""));
    let out = net.send(UAS3, &reply(&fwd[2], 503, "Unavailable", Some("x3"), ""));
    let r = one(&out, "final upstream", |s| s.dst == sa(UAC));
    assert_eq!(r.code(), 486, "4xx beats 5xx, first 4xx kept");
    assert_eq!(net.stats().failed_dialogs, 1);
    assert_eq!(net.state_of("f2"), Some(DlgState::Deleted));
    assert_end_events_once(&net);
}

#[test]
fn six_xx_cancels_the_others() {
    let mut net = forking(ForkMode::Parallel);
    let out = net.send(UAC, &invite("f3", "ft", "b3", OURS));
    let fwd = invites(&out);
    net.send(UAS1, &reply(&fwd[0], 180, "Ringing", Some("y1"), UAS1));
    net.send(UAS2, &reply(&fwd[1], 180, "Ringing", Some("y2"), UAS2));
    let out = net.send(UAS3, &reply(&fwd[2], 603, "Decline", Some("y3"), ""));
    let cancels: Vec<_> = out
        .iter()
        .filter(|s| s.is("CANCEL"))
        .map(|s| s.dst)
        .collect();
    assert_eq!(cancels, vec![sa(UAS1), sa(UAS2)]);
    net.send(UAS1, &reply(&fwd[0], 487, "Terminated", Some("y1"), ""));
    let out = net.send(UAS2, &reply(&fwd[1], 487, "Terminated", Some("y2"), ""));
    assert_eq!(one(&out, "final", |s| s.dst == sa(UAC)).code(), 603);
}

#[test]
fn serial_forking() {
    let mut net = forking(ForkMode::Serial);
    let out = net.send(UAC, &invite("f4", "ft", "b4", OURS));
    let fwd = invites(&out);
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].dst, sa(UAS1));
    let out = net.send(UAS1, &reply(&fwd[0], 486, "Busy", Some("z1"), ""));
    let next = invites(&out);
    assert_eq!(next.len(), 1, "{out:#?}");
    assert_eq!(next[0].dst, sa(UAS2));
    assert!(
        out.iter().all(|s| s.dst != sa(UAC)),
        "no final upstream yet"
    );
    let out = net.send(UAS2, &reply(&next[0], 200, "OK", Some("z2"), UAS2));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    assert_eq!(net.state_of("f4"), Some(DlgState::ConfirmedNa));
}

#[test]
fn cancel_200_race_confirms() {
    let mut net = Net::new();
    let inv = invite("r1", "ft", "br1", DIRECT);
    let out = net.send(UAC, &inv);
    let fwd = invites(&out).remove(0);
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t"), UAS1));
    net.send(UAC, &cancel_for(&inv));
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("t"), UAS1));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    let st = net.stats();
    assert_eq!(st.race_dialogs, 1);
    assert_eq!(st.active_dialogs, 1);
    assert_eq!(net.state_of("r1"), Some(DlgState::ConfirmedNa));
}

#[test]
fn two_2xx_with_end_on_race_ack_bye_loser() {
    let mut net = forking(ForkMode::Parallel);
    net.settings(|s| s.end_on_race = true);
    let out = net.send(UAC, &invite("r2", "ft", "br2", OURS));
    let fwd = invites(&out);
    net.send(UAS1, &reply(&fwd[0], 200, "OK", Some("w1"), UAS1));
    let out = net.send(UAS2, &reply(&fwd[1], 200, "OK", Some("w2"), UAS2));
    assert!(
        out.iter().all(|s| s.dst == sa(UAS2)),
        "loser's 2xx not relayed: {out:#?}"
    );
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    let bye = one(&out, "BYE", |s| s.is("BYE"));
    assert_eq!(ack.to_tag().as_deref(), Some("w2"));
    assert_eq!(bye.to_tag().as_deref(), Some("w2"));
    assert_eq!(bye.cseq_num(), ack.cseq_num() + 1);
    assert_eq!(net.stats().race_dialogs, 1);
    let d = net.shared.table.get(dialog_id(&net, "r2")).unwrap();
    assert_eq!(d.callee.get().unwrap().tag(), b"w1");
}

#[test]
fn bye_before_ack() {
    let mut net = Net::new();
    let out = net.send(UAC, &invite("bb", "ft", "bbb", DIRECT));
    let fwd = invites(&out).remove(0);
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("t"), UAS1));
    let ok = one(&out, "200", |_| true).clone();
    let out = net.send(UAC, &caller_req(&ok, "BYE", 2, "bye"));
    assert_eq!(one(&out, "BYE", |s| s.is("BYE")).dst, sa(UAS1));
    assert_eq!(net.state_of("bb"), Some(DlgState::Deleted));
    let st = net.stats();
    assert_eq!((st.active_dialogs, st.early_dialogs), (0, 0));
    assert_eq!(net.rec.count(DlgEvent::Terminated), 1);
}

#[test]
fn bye_from_callee() {
    let mut net = Net::new();
    let (fwd, _ok) = confirmed(&mut net, "bc");
    let out = net.send(UAS1, &callee_req(&fwd, "tt", "BYE", 1, UAS1, "cbye"));
    let bye = one(&out, "BYE", |s| s.is("BYE")).clone();
    assert_eq!(bye.dst, sa(UAC));
    assert_eq!(bye.ruri(), "sip:alice@10.0.0.1:5060");
    assert_eq!(net.state_of("bc"), Some(DlgState::Deleted));
    net.send(UAC, &reply(&bye, 200, "OK", None, ""));
    assert_eq!(net.dialogs(), 0);
    assert_eq!(net.rec.count(DlgEvent::TerminatedConfirmed), 1);
    assert_eq!(net.stats().active_dialogs, 0);
    assert_end_events_once(&net);
}

#[test]
fn reinvite_refreshes_timeout_and_cseq() {
    let mut net = Net::new();
    net.settings(|s| s.default_timeout = 100);
    let (_fwd, ok) = confirmed(&mut net, "ri");
    let id = dialog_id(&net, "ri");
    let d = net.shared.table.get(id).unwrap();
    let before = d.deadline_ms.load(std::sync::atomic::Ordering::Relaxed);
    net.advance(50_000);
    let out = net.send(UAC, &caller_req(&ok, "INVITE", 7, "reinv"));
    let f = one(&out, "re-INVITE", |s| s.is("INVITE")).clone();
    assert_eq!(f.dst, sa(UAS1));
    assert_eq!(net.rec.count(DlgEvent::ReqWithin), 1);
    let after = d.deadline_ms.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after, before + 50_000, "timeout reset from now");
    let out = net.send(UAS1, &reply(&f, 200, "OK", None, UAS1));
    assert_eq!(one(&out, "200", |_| true).dst, sa(UAC));
    assert_eq!(net.rec.count(DlgEvent::ResponseWithin), 1);
    // Not expired at the old deadline.
    let out = net.advance(60_000);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(net.state_of("ri"), Some(DlgState::Confirmed));
    // A BYE we generate to the callee uses CSeq 7 + 1.
    let mut o = Output::default();
    net.engines[0].handle_command(
        net.now,
        net.now * 1000,
        Command::Terminate {
            id,
            side: Side::Callee,
            reason: String::new(),
            extra_hdrs: String::new(),
        },
        &mut o,
    );
    assert_eq!(o.tx.len(), 1);
    let bye = String::from_utf8_lossy(o.bytes(&o.tx[0])).into_owned();
    assert!(bye.contains("CSeq: 8 BYE"), "{bye}");
}

#[test]
fn dialog_timeout_byes_both_sides() {
    let mut net = Net::new();
    net.settings(|s| s.default_timeout = 30);
    let (_fwd, _ok) = confirmed(&mut net, "to");
    let out = net.advance(29_000);
    assert!(out.is_empty());
    let out = net.advance(1_000);
    let byes: Vec<_> = out.iter().filter(|s| s.is("BYE")).collect();
    assert_eq!(byes.len(), 2, "{out:#?}");
    let dsts: Vec<_> = byes.iter().map(|s| s.dst).collect();
    assert!(dsts.contains(&sa(UAS1)) && dsts.contains(&sa(UAC)));
    for b in &byes {
        assert!(b.hdr("Reason").contains("dialog timeout"), "{b:#?}");
    }
    let to_callee = byes.iter().find(|b| b.dst == sa(UAS1)).unwrap();
    assert_eq!(to_callee.ruri(), "sip:bob@10.0.0.2:5060");
    assert_eq!(to_callee.to_tag().as_deref(), Some("tt"));
    assert_eq!(to_callee.cseq_num(), 2);
    let st = net.stats();
    assert_eq!((st.expired_dialogs, st.active_dialogs), (1, 0));
    assert_eq!(net.rec.count(DlgEvent::Expired), 1);
    net.advance(400_000);
    assert_eq!(net.dialogs(), 0, "cleaned up after end_timeout");
    assert_end_events_once(&net);
}

#[test]
fn terminate_early_dialog() {
    let mut net = Net::new();
    let out = net.send(UAC, &invite("te", "ft", "bte", DIRECT));
    let fwd = invites(&out).remove(0);
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t"), UAS1));
    let id = dialog_id(&net, "te");
    net.out.clear();
    let mut o = Output::default();
    net.engines[0].handle_command(
        net.now,
        0,
        Command::Terminate {
            id,
            side: Side::All,
            reason: String::new(),
            extra_hdrs: String::new(),
        },
        &mut o,
    );
    let sent: Vec<_> =
        o.tx.iter()
            .map(|t| (t.dst, String::from_utf8_lossy(o.bytes(t)).into_owned()))
            .collect();
    assert!(
        sent.iter()
            .any(|(d, s)| *d == sa(UAS1) && s.starts_with("CANCEL ")),
        "{sent:#?}"
    );
    assert!(
        sent.iter()
            .any(|(d, s)| *d == sa(UAC) && s.starts_with("SIP/2.0 480")),
        "{sent:#?}"
    );
    assert_eq!(net.state_of("te"), Some(DlgState::Deleted));
    // The callee's 487 is ACKed and not relayed (a final already went upstream).
    let out = net.send(UAS1, &reply(&fwd, 487, "Terminated", Some("t"), ""));
    assert!(out.iter().all(|s| s.dst == sa(UAS1)), "{out:#?}");
    let st = net.stats();
    assert_eq!((st.early_dialogs, st.failed_dialogs), (0, 0));
    assert_eq!(net.rec.count(DlgEvent::Terminated), 1);
    net.advance(40_000);
    assert_eq!(net.dialogs(), 0);
    assert_end_events_once(&net);
}

#[test]
fn terminate_confirmed_dialog() {
    let mut net = Net::new();
    let (_fwd, _ok) = confirmed(&mut net, "tc");
    let id = dialog_id(&net, "tc");
    let mut o = Output::default();
    net.engines[0].handle_command(
        net.now,
        0,
        Command::Terminate {
            id,
            side: Side::All,
            reason: "SIP;cause=503".into(),
            extra_hdrs: "X-Why: admin\r\n".into(),
        },
        &mut o,
    );
    assert_eq!(o.tx.len(), 2);
    for t in &o.tx {
        let s = String::from_utf8_lossy(o.bytes(t));
        assert!(s.starts_with("BYE "), "{s}");
        assert!(s.contains("Reason: SIP;cause=503\r\n"), "{s}");
        assert!(s.contains("X-Why: admin\r\n"), "{s}");
    }
    assert_eq!(net.state_of("tc"), Some(DlgState::Deleted));
    assert_eq!(net.stats().active_dialogs, 0);
    // A second terminate does nothing.
    let mut o2 = Output::default();
    net.engines[0].handle_command(
        net.now,
        0,
        Command::Terminate {
            id,
            side: Side::All,
            reason: String::new(),
            extra_hdrs: String::new(),
        },
        &mut o2,
    );
    assert!(o2.tx.is_empty());
    assert_eq!(net.rec.count(DlgEvent::Terminated), 1);
}

#[test]
fn forged_did_never_matches() {
    let mut net = Net::new();
    let (_fwd, ok) = confirmed(&mut net, "fg");
    // Same Route (did) but another From-tag: routed, dialog untouched.
    let forged = caller_req(&ok, "BYE", 2, "forged").replace(";tag=ft-fg", ";tag=evil");
    let out = net.send(UAC, &forged);
    assert_eq!(one(&out, "BYE", |s| s.is("BYE")).dst, sa(UAS1));
    assert_eq!(net.state_of("fg"), Some(DlgState::Confirmed));
    let forged = caller_req(&ok, "BYE", 2, "forged2").replace("Call-ID: fg", "Call-ID: other");
    net.send(UAC, &forged);
    assert_eq!(net.state_of("fg"), Some(DlgState::Confirmed));
    assert_eq!(net.stats().active_dialogs, 1);
}
