//! Transactions and timers in virtual time: no wheel entry outlives the call it guards (on
//! the worker that created the dialog or on another one); the proxy's own BYE and CANCEL are
//! client transactions, retransmitted over UDP until answered and given up after Timer F; a
//! 503 chosen as the best response goes upstream as 500 (RFC 3261 §16.7).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use sipedge::dialog::{DlgEvent, DlgState, Side};
use sipedge::engine::{Command, Settings};
use sipedge::stats::Counter;

/// Request-URI straight at the callee UAS1.
const DIRECT: &str = "sip:bob@10.0.0.2:5060";

/// Confirmed call `call` through worker `w`; returns (forwarded INVITE, 2xx at the caller).
fn confirmed_on(net: &mut Net, w: usize, call: &str) -> (Sent, Sent) {
    let inv = invite(call, &format!("ft-{call}"), &format!("b-{call}"), DIRECT);
    let out = net.send_to(w, UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send_to(w, UAS1, &reply(&fwd, 200, "OK", Some("tt"), UAS1));
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    let out = net.send_to(w, UAC, &caller_req(&ok, "ACK", 1, &format!("ack-{call}")));
    one(&out, "ACK", |s| s.is("ACK"));
    assert_eq!(net.state_of(call), Some(DlgState::Confirmed));
    (fwd, ok)
}

fn counter(net: &Net, c: Counter) -> u64 {
    net.shared.worker_stats.iter().map(|s| s.get(c)).sum()
}

#[test]
fn no_timer_outlives_its_call_on_any_worker() {
    let mut net = Net::with(Default::default(), 2);
    for i in 0..40 {
        let call = format!("leak{i}");
        let (fwd, ok) = confirmed_on(&mut net, i % 2, &call);
        // The BYE lands on either worker, as SO_REUSEPORT would spread it.
        let bye_worker = (i / 2) % 2;
        let out = if i % 3 == 0 {
            net.send_to(
                bye_worker,
                UAS1,
                &callee_req(&fwd, "tt", "BYE", 1, UAS1, &format!("cb{i}")),
            )
        } else {
            net.send_to(
                bye_worker,
                UAC,
                &caller_req(&ok, "BYE", 2, &format!("bye{i}")),
            )
        };
        let bye = one(&out, "BYE", |s| s.is("BYE")).clone();
        let from = if bye.dst == sa(UAC) { UAC } else { UAS1 };
        net.send_to(bye_worker, from, &reply(&bye, 200, "OK", None, ""));
        net.advance(20);
    }
    assert_eq!(net.dialogs(), 0);
    assert!(
        net.commands_delivered > 0,
        "cross-worker ends were re-timed"
    );
    // Transactions linger a few seconds; nothing may stay until early_timeout (300 s).
    net.advance(40_000);
    assert_eq!(
        net.pending_timers(),
        0,
        "wheel entries left after every call ended"
    );
    assert!(net.engines.iter().all(|e| e.txn_count() == 0));
}

#[test]
fn an_ended_dialog_waiting_for_its_bye_answer_is_removed_by_its_own_timer() {
    let mut net = Net::with(Default::default(), 2);
    net.settings(|s| s.end_timeout = 10);
    let (_fwd, ok) = confirmed_on(&mut net, 0, "wait");
    // Past the INVITE transaction's linger, which would take an ended dialog with it.
    net.advance(6_000);
    // BYE on the other worker; its 200 never comes back.
    let out = net.send_to(1, UAC, &caller_req(&ok, "BYE", 2, "bye-wait"));
    one(&out, "BYE", |s| s.is("BYE"));
    assert_eq!(net.state_of("wait"), Some(DlgState::Deleted));
    net.advance(9_000);
    assert_eq!(net.dialogs(), 1);
    net.advance(2_000);
    assert_eq!(
        net.dialogs(),
        0,
        "removed at end_timeout, not at early_timeout"
    );
    net.advance(10_000);
    assert_eq!(net.pending_timers(), 0);
}

#[test]
fn proxy_bye_is_retransmitted_until_answered() {
    let mut net = Net::new();
    let (_fwd, _ok) = confirmed_on(&mut net, 0, "rtx");
    let id = net.shared.table.find_by_callid(b"rtx")[0];
    let mut out = Vec::new();
    let cmd = Command::Terminate {
        id,
        side: Side::All,
        reason: "SIP;cause=200;text=\"test\"".into(),
        extra_hdrs: String::new(),
    };
    net.commands.push_back((0, cmd));
    out.extend(net.run_commands());
    let byes = |out: &[Sent], dst: &str| {
        out.iter()
            .filter(|s| s.is("BYE") && s.dst == sa(dst))
            .count()
    };
    assert_eq!((byes(&out, UAS1), byes(&out, UAC)), (1, 1));
    // The caller answers at once; the callee ignores the first two copies.
    let to_uac = out
        .iter()
        .find(|s| s.is("BYE") && s.dst == sa(UAC))
        .unwrap()
        .clone();
    net.send(UAC, &reply(&to_uac, 200, "OK", None, ""));
    let first = out
        .iter()
        .find(|s| s.is("BYE") && s.dst == sa(UAS1))
        .unwrap()
        .clone();
    let o = net.advance(500);
    assert_eq!(
        (byes(&o, UAS1), byes(&o, UAC)),
        (1, 0),
        "Timer E after T1: {o:#?}"
    );
    let again = o.iter().find(|s| s.is("BYE")).unwrap();
    assert_eq!(
        again.text, first.text,
        "a retransmission is the same request"
    );
    let o = net.advance(1_000);
    assert_eq!(byes(&o, UAS1), 1, "then after 2·T1");
    net.send(UAS1, &reply(&first, 200, "OK", None, ""));
    let o = net.advance(10_000);
    assert_eq!(byes(&o, UAS1), 0, "answered: no more copies");
    assert_eq!(counter(&net, Counter::GeneratedAnswered), 2);
    assert_eq!(counter(&net, Counter::GeneratedTimedOut), 0);
    assert_eq!(net.dialogs(), 0);
    assert_eq!(net.engines[0].generated_in_flight(), 0);
    net.advance(40_000);
    assert_eq!(net.pending_timers(), 0);
}

#[test]
fn unanswered_proxy_bye_gives_up_after_timer_f_and_late_answers_are_absorbed() {
    let mut net = Net::new();
    net.settings(|s| s.default_timeout = 5);
    confirmed_on(&mut net, 0, "gone");
    let out = net.advance(5_000);
    let first = out
        .iter()
        .find(|s| s.is("BYE") && s.dst == sa(UAS1))
        .unwrap()
        .clone();
    let o = net.advance(40_000);
    let copies = o
        .iter()
        .filter(|s| s.is("BYE") && s.dst == sa(UAS1))
        .count();
    assert_eq!(
        copies, 10,
        "10 retransmissions in 64·T1 (RFC 3261 Figure 6)"
    );
    assert_eq!(counter(&net, Counter::GeneratedTimedOut), 2);
    assert_eq!(net.engines[0].generated_in_flight(), 0);
    // A final after Timer F gave up creates no state and is not relayed.
    let absorbed = counter(&net, Counter::Absorbed);
    let o = net.send(UAS1, &reply(&first, 200, "OK", None, ""));
    assert!(o.is_empty(), "{o:#?}");
    assert_eq!(counter(&net, Counter::Absorbed), absorbed + 1);
    net.advance(400_000);
    assert_eq!(net.dialogs(), 0);
    assert_eq!(net.rec.count(DlgEvent::Expired), 1);
    assert_eq!(net.pending_timers(), 0);
}

#[test]
fn proxy_cancel_is_retransmitted_until_answered_then_the_txn_frees() {
    let mut net = Net::new();
    let out = net.send(UAC, &invite("cx", "ft-cx", "b-cx", DIRECT));
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t"), UAS1));
    // The caller cancels; the proxy answers it and CANCELs the branch downstream.
    let out = net.send(UAC, &cancel_for(&invite("cx", "ft-cx", "b-cx", DIRECT)));
    let cancel = one(&out, "CANCEL", |s| s.is("CANCEL") && s.dst == sa(UAS1)).clone();
    assert_eq!(
        cancel.top_branch(),
        fwd.top_branch(),
        "a CANCEL shares its INVITE's branch"
    );
    let cancels = |o: &[Sent]| o.iter().filter(|s| s.is("CANCEL")).count();
    // The callee does not hear it: the proxy sends it again after T1, then 2·T1.
    assert_eq!(cancels(&net.advance(500)), 1, "Timer E");
    assert_eq!(cancels(&net.advance(1_000)), 1, "Timer E doubled");
    // The callee answers the CANCEL and the INVITE.
    net.send(UAS1, &reply(&cancel, 200, "OK", Some("t"), ""));
    assert_eq!(cancels(&net.advance(8_000)), 0, "answered: no more copies");
    net.send(UAS1, &reply(&fwd, 487, "Request Terminated", Some("t"), ""));
    assert_eq!(counter(&net, Counter::GeneratedAnswered), 1);
    net.advance(40_000);
    assert_eq!(net.dialogs(), 0);
    assert_eq!(net.engines[0].txn_count(), 0);
    assert_eq!(net.engines[0].generated_in_flight(), 0);
    assert_eq!(net.pending_timers(), 0);
}

#[test]
fn a_503_chosen_as_best_goes_upstream_as_500() {
    let mut net = Net::new();
    let out = net.send(UAC, &invite("c503", "ft-503", "b-503", DIRECT));
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(
        UAS1,
        &reply(&fwd, 503, "Service Unavailable", Some("t"), ""),
    );
    let up = one(&out, "final upstream", |s| {
        s.dst == sa(UAC) && s.code() >= 300
    });
    assert_eq!(up.code(), 500, "RFC 3261 §16.7 step 6: {up:#?}");
    assert_eq!(up.first(), "SIP/2.0 500 Server Internal Error");
    assert_eq!(up.hdr("Call-ID"), "c503");
}

#[test]
fn requests_too_large_or_smuggling_get_an_error_reply_not_silence() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/");
    for (file, code) in [
        ("invalid-513-too_many_headers-invite-300.sip", 513),
        ("invalid-400-illegal_byte-nul-in-header.sip", 400),
        ("invalid-400-illegal_byte-bare-cr-in-header.sip", 400),
    ] {
        let mut net = Net::new();
        let bytes = std::fs::read(format!("{dir}{file}")).unwrap();
        let out = net.send_bytes(0, sa(UAC), &bytes);
        assert_eq!(
            out.len(),
            1,
            "{file}: one reply, nothing forwarded: {out:#?}"
        );
        assert_eq!(out[0].code(), code, "{file}: {:#?}", out[0]);
    }
}

/// An untracked INVITE (`track_all_invites = false`) is transaction-stateful too: its
/// retransmission on the other worker is absorbed (not forwarded on a new branch), and its
/// CANCEL, on either worker, is matched: 200 to the CANCEL, CANCEL downstream, 487 upstream.
#[test]
fn an_untracked_invite_absorbs_retransmissions_and_matches_its_cancel_across_workers() {
    let mut net = Net::with(Settings::default(), 2);
    net.settings(|s| s.track_invites = false);
    let inv = invite("ux", "ft-ux", "b-ux", DIRECT);
    let out = net.send_to(0, UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    assert_eq!(net.dialogs(), 0, "untracked: no dialog");
    // The retransmission lands on worker 1: handed to worker 0, absorbed there.
    let out = net.send_to(1, UAC, &inv);
    assert!(
        out.iter().all(|s| !s.is("INVITE")),
        "not forwarded again: {out:?}"
    );
    assert!(counter(&net, Counter::RetransAbsorbed) >= 1);
    net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("t"), UAS1));
    // The CANCEL lands on worker 1 too.
    let out = net.send_to(1, UAC, &cancel_for(&inv));
    one(&out, "200 to the CANCEL", |s| {
        s.code() == 200 && s.dst == sa(UAC)
    });
    let cancel = one(&out, "CANCEL", |s| s.is("CANCEL") && s.dst == sa(UAS1)).clone();
    assert_eq!(cancel.top_branch(), fwd.top_branch());
    net.send(UAS1, &reply(&cancel, 200, "OK", Some("t"), ""));
    let out = net.send(UAS1, &reply(&fwd, 487, "Request Terminated", Some("t"), ""));
    one(&out, "487 upstream", |s| {
        s.code() == 487 && s.dst == sa(UAC)
    });
    // A CANCEL or an INVITE copy long after the transaction is freed is still recognised.
    net.advance(40_000);
    assert_eq!(net.engines[0].txn_count() + net.engines[1].txn_count(), 0);
    let out = net.send_to(1, UAC, &inv);
    assert!(out.is_empty(), "a late copy is absorbed: {out:?}");
    let out = net.send_to(0, UAC, &cancel_for(&inv));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].code(),
        200,
        "the CANCEL of a finished transaction gets 200"
    );
    // Past 64*T1 (+ slack) it is forgotten.
    net.advance(40_000);
    let out = net.send_to(1, UAC, &inv);
    assert!(out.iter().any(|s| s.is("INVITE")), "{out:?}");
}

/// `[transaction]` sets the pace: with T1 = 100 ms and T2 = 400 ms the INVITE goes again at
/// 100, 300, 700 ms and then every 400 ms; with Timer B = 2 s the branch gives up at 2 s
/// (not 32 s) and the 408 upstream is retransmitted from T1 too (Timer G).
#[test]
fn configured_t1_and_timer_b_pace_an_unanswered_invite() {
    let c = sipedge::config::Config::from_toml_str(
        "[transaction]\nt1 = 100\nt2 = 400\ntimer_b = 2000\n",
    )
    .unwrap();
    let mut net = Net::with(Settings::from_config(&c), 1);
    let out = net.send(UAC, &invite("fast", "ft-fast", "b-fast", DIRECT));
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let (mut invites, mut finals) = (Vec::new(), Vec::new());
    while net.now < 2_500 {
        for s in net.advance(10) {
            if s.is("INVITE") {
                assert_eq!(s.text, fwd.text, "a retransmission is the same INVITE");
                invites.push(net.now);
            } else if s.dst == sa(UAC) && s.code() >= 300 {
                finals.push((net.now, s.code()));
            }
        }
    }
    assert_eq!(invites, [100, 300, 700, 1100, 1500, 1900], "Timer A");
    assert_eq!(
        finals,
        [(2000, 408), (2100, 408), (2300, 408)],
        "Timer B, then Timer G"
    );
    assert_eq!(counter(&net, Counter::TxnTimeout), 1);
    // With the defaults the same INVITE waits 500 ms for its first retransmission.
    let mut net = Net::new();
    net.send(UAC, &invite("slow", "ft-slow", "b-slow", DIRECT));
    assert!(net.advance(490).is_empty());
    assert_eq!(net.advance(10).iter().filter(|s| s.is("INVITE")).count(), 1);
}

/// The ACK of a non-2xx final stops Timer G and ends the server transaction after T4
/// (Timer I); without an ACK it waits Timer H (64·T1).
#[test]
fn the_ack_of_a_non_2xx_final_ends_the_transaction_after_t4() {
    let mut net = Net::new();
    let call = |net: &mut Net, c: &str| {
        let inv = invite(c, &format!("ft-{c}"), &format!("b-{c}"), DIRECT);
        let out = net.send(UAC, &inv);
        let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
        let out = net.send(UAS1, &reply(&fwd, 486, "Busy Here", Some("t"), ""));
        one(&out, "ACK", |s| s.is("ACK") && s.dst == sa(UAS1));
        let busy = one(&out, "486", |s| s.code() == 486 && s.dst == sa(UAC)).clone();
        (inv, busy)
    };
    let (inv, busy) = call(&mut net, "acked");
    let tag = busy.to_tag().unwrap();
    let ack = inv
        .replace("INVITE sip", "ACK sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            &format!("To: <sip:bob@example.com>;tag={tag}"),
        );
    let o = net.advance(100);
    assert!(o.is_empty(), "{o:#?}");
    let out = net.send(UAC, &ack);
    assert!(out.is_empty(), "absorbed: {out:#?}");
    assert_eq!(counter(&net, Counter::AckAbsorbed), 1);
    call(&mut net, "unacked");
    let o = net.advance(4_800);
    let again = |o: &[Sent], c: &str| {
        o.iter()
            .filter(|s| s.code() == 486 && s.hdr("Call-ID") == c)
            .count()
    };
    assert_eq!(again(&o, "acked"), 0, "Timer G stopped by the ACK");
    assert!(again(&o, "unacked") >= 3, "Timer G: {o:#?}");
    assert_eq!(net.engines[0].txn_count(), 2);
    net.advance(300);
    assert_eq!(net.engines[0].txn_count(), 1, "Timer I (T4) after the ACK");
    // An ACK copy after that is still absorbed (the shared index remembers the INVITE).
    assert!(net.send(UAC, &ack).is_empty());
    net.advance(30_000);
    assert_eq!(net.engines[0].txn_count(), 0, "Timer H without an ACK");
    assert_eq!(net.pending_timers(), 0);
}

/// A branch that has sent nothing when another branch's 2xx wins cannot be CANCELled yet
/// (RFC 3261 §9.1): the transaction outlives Timer L for it, and its first provisional, even
/// late, brings the CANCEL; the 487 is ACKed and nothing more goes upstream.
#[test]
fn a_silent_branch_is_cancelled_when_its_first_provisional_comes_late() {
    use sipedge::engine::ForkMode;
    use sipedge::wire::Transport;
    let mut net = Net::new();
    net.default_group(ForkMode::Parallel, Transport::Udp, &[UAS1, UAS2]);
    let out = net.send(
        UAC,
        &invite("late", "ft-late", "b-late", "sip:bob@127.0.0.1:5060"),
    );
    let fwd: Vec<Sent> = out.iter().filter(|s| s.is("INVITE")).cloned().collect();
    assert_eq!(fwd.len(), 2);
    let out = net.send(UAS1, &reply(&fwd[0], 200, "OK", Some("w"), UAS1));
    one(&out, "200 upstream", |s| {
        s.code() == 200 && s.dst == sa(UAC)
    });
    assert!(!out.iter().any(|s| s.is("CANCEL")), "nothing to CANCEL yet");
    let o = net.advance(6_000);
    assert!(
        o.iter().any(|s| s.is("INVITE") && s.dst == sa(UAS2)),
        "the silent branch is still retransmitted (Timer A)"
    );
    assert_eq!(
        net.engines[0].txn_count(),
        1,
        "kept past Timer L for that branch"
    );
    let out = net.send(UAS2, &reply(&fwd[1], 180, "Ringing", Some("l"), UAS2));
    let cancel = one(&out, "CANCEL", |s| s.is("CANCEL") && s.dst == sa(UAS2)).clone();
    assert!(!out.iter().any(|s| s.dst == sa(UAC)), "{out:#?}");
    net.send(UAS2, &reply(&cancel, 200, "OK", Some("l"), ""));
    let out = net.send(
        UAS2,
        &reply(&fwd[1], 487, "Request Terminated", Some("l"), ""),
    );
    one(&out, "ACK", |s| s.is("ACK") && s.dst == sa(UAS2));
    assert!(!out.iter().any(|s| s.dst == sa(UAC)), "{out:#?}");
    assert_eq!(net.engines[0].txn_count(), 0, "freed with its last branch");
    assert_eq!(net.engines[0].generated_in_flight(), 0);
}

/// Over TCP the INVITE is sent once (no Timer A), our non-2xx final once (no Timer G), and
/// the ACK ends the server transaction at once (no Timer I).
#[test]
fn reliable_transports_skip_the_retransmission_timers() {
    use sipedge::engine::{ForkMode, Inbound};
    use sipedge::wire::Transport;
    let mut net = Net::new();
    net.default_group(ForkMode::Parallel, Transport::Tcp, &[UAS1]);
    // Deliver `text` from the UAC over its TCP connection; what went out.
    let over_tcp = |net: &mut Net, text: &str| -> Vec<(Transport, String)> {
        let inb = Inbound {
            transport: Transport::Tcp,
            conn: Some(7),
            ..net.inbound(sa(UAC), text.as_bytes())
        };
        net.out.clear();
        net.engines[0].handle_datagram(inb, &mut net.out);
        let o = &net.out;
        o.tx.iter()
            .map(|t| {
                (
                    t.transport,
                    String::from_utf8_lossy(o.bytes(t)).into_owned(),
                )
            })
            .collect()
    };
    let inv = invite("tcp", "ft-tcp", "b-tcp", "sip:bob@127.0.0.1:5060");
    let out = over_tcp(&mut net, &inv);
    assert_eq!(out.len(), 2, "100 and the INVITE: {out:#?}");
    assert!(out[0].1.starts_with("SIP/2.0 100") && out[0].0 == Transport::Tcp);
    assert!(out[1].1.starts_with("INVITE") && out[1].0 == Transport::Tcp);
    let fwd = Sent {
        dst: sa(UAS1),
        text: out[1].1.clone(),
    };
    assert!(net.advance(10_000).is_empty(), "no Timer A over TCP");
    let out = net.send(UAS1, &reply(&fwd, 486, "Busy Here", Some("t"), ""));
    one(&out, "ACK", |s| s.is("ACK") && s.dst == sa(UAS1));
    let busy = one(&out, "486", |s| s.code() == 486 && s.dst == sa(UAC)).clone();
    assert!(net.advance(10_000).is_empty(), "no Timer G over TCP");
    let ack = inv
        .replace("INVITE sip", "ACK sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            &format!("To: <sip:bob@example.com>;tag={}", busy.to_tag().unwrap()),
        );
    assert!(over_tcp(&mut net, &ack).is_empty(), "the ACK is absorbed");
    assert_eq!(net.engines[0].txn_count(), 0, "no Timer I over TCP");
    assert_eq!(net.pending_timers(), 0);
}

#[test]
fn a_cancel_that_matches_no_transaction_is_dropped_counted_and_leaves_no_state() {
    let mut net = Net::with(Default::default(), 2);
    net.advance(1_000);
    let timers = net.pending_timers();
    // Its INVITE never came (or came so long ago that even its tombstone is gone).
    let inv = invite("stray", "ft-stray", "b-stray", DIRECT);
    for w in 0..2 {
        let out = net.send_to(w, UAC, &cancel_for(&inv));
        assert!(
            out.is_empty(),
            "dropped, not forwarded or answered: {out:?}"
        );
    }
    assert_eq!(counter(&net, Counter::CancelUnmatched), 2);
    assert_eq!(net.pending_timers(), timers, "no timer armed");
    assert_eq!(net.dialogs(), 0);
    assert!(net.engines.iter().all(|e| e.generated_in_flight() == 0));
    // A CANCEL of a transaction that ended moments ago still gets its 200 (RFC 3261 §16.10).
    let out = net.send_to(0, UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    net.send_to(0, UAS1, &reply(&fwd, 486, "Busy Here", Some("tt"), UAS1));
    let out = net.send_to(1, UAC, &cancel_for(&inv));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
    assert_eq!(counter(&net, Counter::CancelUnmatched), 2);
}

#[test]
fn a_response_after_its_transaction_ended_is_absorbed_unless_it_is_a_2xx() {
    let mut net = Net::new();
    let inv = invite("late", "ft-late", "b-late", DIRECT);
    let out = net.send(UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let busy = reply(&fwd, 486, "Busy Here", Some("tt"), UAS1);
    let out = net.send(UAS1, &busy);
    assert_eq!(one(&out, "486", |s| s.code() == 486).dst, sa(UAC));
    one(&out, "ACK", |s| s.is("ACK"));
    // The caller's ACK, then every timer runs out: the transaction is freed.
    net.send(UAC, &caller_req(&fwd, "ACK", 1, "b-late"));
    net.advance(40_000);
    assert_eq!(net.engines[0].txn_count(), 0);
    let absorbed = counter(&net, Counter::Absorbed);
    let out = net.send(UAS1, &busy);
    assert!(out.is_empty(), "a late 486 goes nowhere: {out:?}");
    assert_eq!(counter(&net, Counter::Absorbed), absorbed + 1);
    let out = net.send(UAS1, &reply(&fwd, 180, "Ringing", Some("tt"), UAS1));
    assert!(out.is_empty(), "nor does a late 180: {out:?}");
    // A 2xx still goes upstream (a late fork, or a retransmission whose ACK was lost).
    let out = net.send(UAS1, &reply(&fwd, 200, "OK", Some("t2"), UAS1));
    assert_eq!(one(&out, "200", |s| s.code() == 200).dst, sa(UAC));
}

/// A re-INVITE is forwarded statelessly within its dialog; its CANCEL and the ACK of its
/// non-2xx final must reach the callee with the branch the re-INVITE got there (RFC 3261
/// §16.11, §17.1.1.3, §9.1), or the callee could match neither.
#[test]
fn a_reinvites_cancel_and_non_2xx_ack_follow_it_with_its_branch() {
    let mut net = Net::new();
    let (_fwd, ok) = confirmed_on(&mut net, 0, "reinv");
    let out = net.send(UAC, &caller_req(&ok, "INVITE", 2, "re1"));
    let reinv = one(&out, "re-INVITE", |s| s.is("INVITE")).clone();
    let out = net.send(UAC, &caller_req(&ok, "CANCEL", 2, "re1"));
    let cancel = one(&out, "CANCEL", |s| s.is("CANCEL")).clone();
    assert_eq!(cancel.dst, reinv.dst);
    assert_eq!(
        cancel.all("Via"),
        reinv.all("Via"),
        "same branch as the re-INVITE"
    );
    assert_eq!(counter(&net, Counter::CancelUnmatched), 0);
    // The callee refuses the re-INVITE; the caller's ACK goes down with the same branch.
    let out = net.send(UAS1, &reply(&reinv, 491, "Request Pending", None, UAS1));
    one(&out, "491", |s| s.code() == 491);
    let out = net.send(UAC, &caller_req(&ok, "ACK", 2, "re1"));
    let ack = one(&out, "ACK", |s| s.is("ACK"));
    assert_eq!(
        ack.all("Via"),
        reinv.all("Via"),
        "same branch as the re-INVITE"
    );
    assert_eq!(net.state_of("reinv"), Some(DlgState::Confirmed));
}
