//! `dlg.bridge_dlg` over real UDP sockets, with a peer that loses requests: the proxy's INVITE
//! is retransmitted (Timer A) until answered, every 2xx (retransmissions too) gets its own ACK
//! (RFC 3261 §13.2.2.4), the REFER and the BYE are retransmitted (Timer E) until answered, and
//! the bridge call is gone afterwards. A refused INVITE is ACKed, its retransmitted final too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;
use crate::generated_bye::{answer, bind, lines, recv_until};

use std::net::UdpSocket;
use std::time::Duration;

use common::proxy::Proxy;
use serde_json::json;

fn starts(prefix: &'static str) -> impl Fn(&str) -> bool {
    move |t: &str| t.starts_with(prefix)
}

fn cseq(msg: &str) -> String {
    lines(msg, "CSeq")[0]
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_string()
}

fn branch(msg: &str) -> String {
    let via = lines(msg, "Via")[0];
    via.split(";branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// A NOTIFY to the bridge's Contact (taken from `req`), as the referred party sends one.
fn notify(req: &str, port: u16, to_tag: &str) -> String {
    let contact = lines(req, "Contact")[0];
    let uri = contact
        .split('<')
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    let from = lines(req, "From")[0].split_once(':').unwrap().1.trim();
    format!(
        "NOTIFY {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-nfy-{to_tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag={to_tag}\r\n\
         To: {from}\r\n\
         {}\r\n\
         CSeq: 7 NOTIFY\r\n\
         Event: refer\r\n\
         Content-Length: 0\r\n\r\n",
        lines(req, "Call-ID")[0]
    )
}

/// A proxy, Alice's socket and port, and a `dlg.bridge_dlg` from Alice to Bob started.
fn bridge_to_alice() -> (Proxy, UdpSocket, u16) {
    let proxy = Proxy::start(&["--log", "warn"]);
    let alice = bind();
    let port = alice.local_addr().unwrap().port();
    proxy.rpc(
        "dlg.bridge_dlg",
        json!([format!("sip:alice@127.0.0.1:{port}"), "sip:bob@127.0.0.1:9"]),
    );
    (proxy, alice, port)
}

#[test]
fn bridge_requests_survive_a_peer_that_ignores_the_first_copy() {
    let (proxy, alice, port) = bridge_to_alice();
    // The INVITE: the first copy is "lost", the second comes T1 later.
    let w = Duration::from_secs(5);
    let (inv1, _, t1) = recv_until(&alice, w, starts("INVITE ")).expect("bridge INVITE");
    let (inv2, from, t2) = recv_until(&alice, w, starts("INVITE ")).expect("INVITE again");
    assert_eq!(inv1, inv2, "a retransmission is the same request");
    let gap = t2 - t1;
    assert!(
        gap >= Duration::from_millis(400) && gap < Duration::from_millis(1500),
        "Timer A ≈ T1: {gap:?}"
    );
    let contact = format!("Contact: <sip:alice@127.0.0.1:{port}>\r\n");
    alice
        .send_to(
            answer(&inv2, "180 Ringing", Some("al"), &contact).as_bytes(),
            from,
        )
        .unwrap();
    assert!(
        recv_until(&alice, Duration::from_millis(1200), starts("INVITE ")).is_none(),
        "a provisional stops Timer A"
    );
    let ok = answer(&inv2, "200 OK", Some("al"), &contact);
    alice.send_to(ok.as_bytes(), from).unwrap();
    let (ack1, _, _) = recv_until(&alice, w, starts("ACK ")).expect("ACK of the 2xx");
    assert_eq!(cseq(&ack1), "1 ACK");
    assert!(lines(&ack1, "To")[0].contains("tag=al"), "{ack1}");
    assert_ne!(
        branch(&ack1),
        branch(&inv2),
        "the 2xx ACK is a transaction of its own"
    );
    // The 200 again (as if the ACK were lost): ACKed again.
    alice.send_to(ok.as_bytes(), from).unwrap();
    let (ack2, _, _) = recv_until(&alice, w, starts("ACK ")).expect("ACK of the 2xx copy");
    assert_eq!(cseq(&ack2), "1 ACK");

    // The REFER: ignored once, answered when it comes again.
    let (ref1, _, _) = recv_until(&alice, w, starts("REFER ")).expect("REFER");
    assert!(lines(&ref1, "Refer-To")[0].contains("sip:bob@127.0.0.1:9"));
    let (ref2, from_ref, _) = recv_until(&alice, w, starts("REFER ")).expect("REFER again");
    assert_eq!(ref1, ref2);
    // While the bridge call lives, its Contact answers the transfer's NOTIFY with 200.
    alice
        .send_to(notify(&ref2, port, "al").as_bytes(), proxy.sip_addr())
        .unwrap();
    let (n200, _, _) = recv_until(&alice, w, starts("SIP/2.0 ")).expect("NOTIFY answered");
    assert!(n200.starts_with("SIP/2.0 200"), "{n200}");
    alice
        .send_to(answer(&ref2, "202 Accepted", None, "").as_bytes(), from_ref)
        .unwrap();

    // The BYE: ignored once, answered the second time; no copy after that.
    let (bye1, _, _) = recv_until(&alice, w, starts("BYE ")).expect("BYE");
    assert_eq!(cseq(&bye1), "3 BYE");
    let (bye2, from_bye, _) = recv_until(&alice, w, starts("BYE ")).expect("BYE again");
    assert_eq!(bye1, bye2);
    alice
        .send_to(answer(&bye2, "200 OK", None, "").as_bytes(), from_bye)
        .unwrap();
    assert!(
        recv_until(&alice, Duration::from_secs(2), starts("BYE ")).is_none(),
        "answered: no more copies"
    );
    // The bridge call is gone: its Contact no longer knows the Call-ID.
    alice
        .send_to(notify(&ref2, port, "al2").as_bytes(), proxy.sip_addr())
        .unwrap();
    let (gone, _, _) = recv_until(&alice, w, starts("SIP/2.0 ")).expect("NOTIFY answered");
    assert!(gone.starts_with("SIP/2.0 481"), "{gone}");
    crate::generated_bye::assert_generated(&proxy, 2, 0);
    // The same outcome in Prometheus, summed over the workers.
    let body = proxy.metrics();
    let sum = |name: &str| -> u64 {
        body.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("sipedge_generated_answered_total"), 2, "{body}");
    assert_eq!(sum("sipedge_generated_timed_out_total"), 0);
    assert!(
        sum("sipedge_retransmissions_sent_total") >= 3,
        "INVITE, REFER, BYE"
    );
}

#[test]
fn a_refused_bridge_invite_is_acked_and_its_retransmitted_final_too() {
    let (_proxy, alice, _) = bridge_to_alice();
    let w = Duration::from_secs(5);
    let (inv, from, _) = recv_until(&alice, w, starts("INVITE ")).expect("bridge INVITE");
    let busy = answer(&inv, "486 Busy Here", Some("al"), "");
    alice.send_to(busy.as_bytes(), from).unwrap();
    let (ack, _, _) = recv_until(&alice, w, starts("ACK ")).expect("ACK of the 486");
    assert_eq!(cseq(&ack), "1 ACK");
    assert_eq!(
        branch(&ack),
        branch(&inv),
        "a non-2xx ACK shares the INVITE's branch"
    );
    assert!(lines(&ack, "To")[0].contains("tag=al"), "{ack}");
    alice.send_to(busy.as_bytes(), from).unwrap();
    recv_until(&alice, w, starts("ACK ")).expect("ACK of the retransmitted 486");
    assert!(
        recv_until(&alice, Duration::from_millis(1500), |t| t
            .starts_with("INVITE ")
            || t.starts_with("REFER "))
        .is_none(),
        "refused: no INVITE copy, no REFER"
    );
}
