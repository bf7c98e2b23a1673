//! Bad input never panics the engine: arbitrary bytes, and mutations of a real call's messages
//! (byte flips, truncation, insertions, duplicated lines), fed to a running engine in the
//! middle of calls, followed by timers. After the noise, a normal call still works.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;
use proptest::prelude::*;

const DIRECT: &str = "sip:bob@10.0.0.2:5060";

/// The messages of one call as they reach the proxy (INVITE, 180, 200, ACK, BYE, 200).
fn call_messages(net: &mut Net, call: &str) -> Vec<(String, String)> {
    let mut msgs = Vec::new();
    let inv = invite(call, &format!("ft{call}"), &format!("b{call}"), DIRECT);
    msgs.push((UAC.to_string(), inv.clone()));
    let out = net.send(UAC, &inv);
    let fwd = one(&out, "INVITE", |s| s.is("INVITE")).clone();
    let ringing = reply(&fwd, 180, "Ringing", Some("tt"), UAS1);
    msgs.push((UAS1.to_string(), ringing.clone()));
    net.send(UAS1, &ringing);
    let ok_text = reply(&fwd, 200, "OK", Some("tt"), UAS1);
    msgs.push((UAS1.to_string(), ok_text.clone()));
    let out = net.send(UAS1, &ok_text);
    let ok = one(&out, "200", |s| s.code() == 200).clone();
    let ack = caller_req(&ok, "ACK", 1, &format!("a{call}"));
    msgs.push((UAC.to_string(), ack.clone()));
    net.send(UAC, &ack);
    let bye = caller_req(&ok, "BYE", 2, &format!("y{call}"));
    msgs.push((UAC.to_string(), bye));
    msgs
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    DupLine(usize),
    DropLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::DupLine),
        any::<usize>().prop_map(Mutation::DropLine),
    ]
}

fn apply(msg: &str, muts: &[Mutation]) -> Vec<u8> {
    let mut b = msg.as_bytes().to_vec();
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let n = b.len();
                b[i % n] ^= x | 1;
            }
            Mutation::Truncate(i) => b.truncate(i % b.len()),
            Mutation::Insert(i, v) => {
                let at = i % b.len();
                b.splice(at..at, v.iter().copied());
            }
            Mutation::DupLine(i) | Mutation::DropLine(i) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.split("\r\n").collect();
                let k = i % lines.len();
                if matches!(m, Mutation::DupLine(_)) {
                    lines.insert(k, lines[k]);
                } else {
                    lines.remove(k);
                }
                b = lines.join("\r\n").into_bytes();
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut net = Net::new();
        net.send_bytes(0, sa(UAC), &data);
        net.advance(40_000);
    }

    #[test]
    fn mutated_call_messages_never_panic(
        picks in proptest::collection::vec((0usize..5, proptest::collection::vec(mutation(), 1..4)), 1..12)
    ) {
        let mut net = Net::new();
        let msgs = call_messages(&mut net, "base");
        for (k, muts) in &picks {
            let (src, text) = &msgs[*k % msgs.len()];
            let bytes = apply(text, muts);
            net.send_bytes(0, sa(src), &bytes);
        }
        net.advance(70_000);
        // The engine still carries a normal call afterwards.
        let again = call_messages(&mut net, "after");
        prop_assert_eq!(again.len(), 5);
        prop_assert_eq!(net.state_of("after"), Some(sipedge::dialog::DlgState::Confirmed));
    }
}
