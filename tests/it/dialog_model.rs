//! Differential test: random event sequences over several dialogs (INVITE, 180 with a tag,
//! 200, ACK, BYE from either side, CANCEL, 486, time passing, terminate) go through the engine
//! and through a small model of dialog_ng semantics; final states and every statistic must
//! agree.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use proptest::prelude::*;
use sipedge::dialog::{DlgState, Side};
use sipedge::engine::{Command, Output, Settings};

const K: usize = 4;
const EARLY_S: u64 = 15;
const NOACK_S: u64 = 10;
const LIFE_S: u64 = 20;

#[derive(Clone, Copy, Debug)]
enum Ev {
    Invite(usize),
    Ring(usize),
    Ok(usize),
    Ack(usize),
    ByeCaller(usize),
    ByeCallee(usize),
    Cancel(usize),
    Busy(usize),
    Terminate(usize),
    Advance(u64),
}

fn ev() -> impl Strategy<Value = Ev> {
    let i = 0..K;
    prop_oneof![
        i.clone().prop_map(Ev::Invite),
        i.clone().prop_map(Ev::Ring),
        i.clone().prop_map(Ev::Ok),
        i.clone().prop_map(Ev::Ack),
        i.clone().prop_map(Ev::ByeCaller),
        i.clone().prop_map(Ev::ByeCallee),
        i.clone().prop_map(Ev::Cancel),
        i.clone().prop_map(Ev::Busy),
        i.prop_map(Ev::Terminate),
        (1u64..12).prop_map(|s| Ev::Advance(s * 1000)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum M {
    None,
    Live(DlgState, u64),
    Deleted,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Stats {
    active: i64,
    early: i64,
    processed: u64,
    expired: u64,
    failed: u64,
}

fn run(events: &[Ev]) {
    let settings = Settings {
        early_timeout: EARLY_S as u32,
        noack_timeout: NOACK_S as u32,
        default_timeout: LIFE_S as u32,
        ..Settings::default()
    };
    let mut net = Net::with(settings, 1);
    let mut model = [M::None; K];
    let mut st = Stats::default();
    let mut fwd: Vec<Option<Sent>> = vec![None; K];
    let mut ok: Vec<Option<Sent>> = vec![None; K];
    let call = |i: usize| format!("m{i}");
    let gauge = |st: &mut Stats, s: DlgState, d: i64| match s {
        DlgState::Early => st.early += d,
        DlgState::ConfirmedNa | DlgState::Confirmed => st.active += d,
        _ => {}
    };
    for (n, &e) in events.iter().enumerate() {
        let now = net.now;
        match e {
            Ev::Advance(ms) => {
                let end = now + ms;
                for m in model.iter_mut() {
                    if let M::Live(s, dl) = *m
                        && dl <= end
                    {
                        gauge(&mut st, s, -1);
                        st.expired += 1;
                        *m = M::Deleted;
                    }
                }
                net.advance(ms);
            }
            Ev::Invite(i) if model[i] == M::None => {
                let out = net.send(
                    UAC,
                    &invite(&call(i), "ft", &format!("b{i}"), "sip:b@10.0.0.2"),
                );
                fwd[i] = Some(one(&out, "INVITE", |s| s.is("INVITE")).clone());
                model[i] = M::Live(DlgState::Unconfirmed, now + EARLY_S * 1000);
                st.processed += 1;
            }
            Ev::Ring(i) => {
                if let M::Live(s @ (DlgState::Unconfirmed | DlgState::Early), dl) = model[i] {
                    net.send(
                        UAS1,
                        &reply(fwd[i].as_ref().unwrap(), 180, "Ringing", Some("t"), UAS1),
                    );
                    gauge(&mut st, s, -1);
                    gauge(&mut st, DlgState::Early, 1);
                    model[i] = M::Live(DlgState::Early, dl);
                }
            }
            Ev::Ok(i) => {
                if let M::Live(s @ (DlgState::Unconfirmed | DlgState::Early), _) = model[i] {
                    let out = net.send(
                        UAS1,
                        &reply(fwd[i].as_ref().unwrap(), 200, "OK", Some("t"), UAS1),
                    );
                    ok[i] = Some(one(&out, "200", |s| s.code() == 200).clone());
                    gauge(&mut st, s, -1);
                    gauge(&mut st, DlgState::ConfirmedNa, 1);
                    model[i] = M::Live(DlgState::ConfirmedNa, now + NOACK_S * 1000);
                }
            }
            Ev::Ack(i) => {
                if let M::Live(DlgState::ConfirmedNa, _) = model[i] {
                    net.send(
                        UAC,
                        &caller_req(ok[i].as_ref().unwrap(), "ACK", 1, &format!("a{n}")),
                    );
                    model[i] = M::Live(DlgState::Confirmed, now + LIFE_S * 1000);
                }
            }
            Ev::ByeCaller(i) | Ev::ByeCallee(i) => {
                if let M::Live(s @ (DlgState::ConfirmedNa | DlgState::Confirmed), _) = model[i] {
                    let text = match e {
                        Ev::ByeCaller(_) => {
                            caller_req(ok[i].as_ref().unwrap(), "BYE", 2, &format!("y{n}"))
                        }
                        _ => callee_req(
                            fwd[i].as_ref().unwrap(),
                            "t",
                            "BYE",
                            1,
                            UAS1,
                            &format!("y{n}"),
                        ),
                    };
                    let out = net.send(UAC, &text);
                    let bye = one(&out, "BYE", |s| s.is("BYE")).clone();
                    net.send(UAS1, &reply(&bye, 200, "OK", None, ""));
                    gauge(&mut st, s, -1);
                    model[i] = M::Deleted;
                }
            }
            Ev::Cancel(i) => {
                if let M::Live(s @ DlgState::Early, _) = model[i] {
                    let inv = invite(&call(i), "ft", &format!("b{i}"), "sip:b@10.0.0.2");
                    net.send(UAC, &cancel_for(&inv));
                    net.send(
                        UAS1,
                        &reply(fwd[i].as_ref().unwrap(), 487, "Terminated", Some("t"), ""),
                    );
                    gauge(&mut st, s, -1);
                    st.failed += 1;
                    model[i] = M::Deleted;
                }
            }
            Ev::Busy(i) => {
                if let M::Live(s @ (DlgState::Unconfirmed | DlgState::Early), _) = model[i] {
                    net.send(
                        UAS1,
                        &reply(fwd[i].as_ref().unwrap(), 486, "Busy", Some("t"), ""),
                    );
                    gauge(&mut st, s, -1);
                    st.failed += 1;
                    model[i] = M::Deleted;
                }
            }
            Ev::Terminate(i) => {
                if let M::Live(s, _) = model[i] {
                    let id = net.shared.table.find_by_callid(call(i).as_bytes())[0];
                    let mut o = Output::default();
                    let cmd = Command::Terminate {
                        id,
                        side: Side::All,
                        reason: String::new(),
                        extra_hdrs: String::new(),
                    };
                    net.engines[0].handle_command(now, now * 1000, cmd, &mut o);
                    gauge(&mut st, s, -1);
                    model[i] = M::Deleted;
                }
            }
            _ => {}
        }
        for (i, m) in model.iter().enumerate() {
            let got = net.state_of(&call(i));
            let ok = match m {
                M::None => got.is_none(),
                M::Live(s, _) => got == Some(*s),
                M::Deleted => got.is_none_or(|g| g == DlgState::Deleted),
            };
            assert!(
                ok,
                "after {e:?} (#{n}): dialog {i} model {m:?} engine {got:?}\n{events:?}"
            );
        }
    }
    let s = net.stats();
    let got = Stats {
        active: s.active_dialogs,
        early: s.early_dialogs,
        processed: s.processed_dialogs,
        expired: s.expired_dialogs,
        failed: s.failed_dialogs,
    };
    assert_eq!(got, st, "{events:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(events in proptest::collection::vec(ev(), 1..60)) {
        run(&events);
    }
}
