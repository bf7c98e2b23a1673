//! The proxy's own BYE over real UDP sockets: after `dlg.end_dlg`, a callee that ignores the
//! first BYE gets it again (Timer E) until it answers, then no more; the caller's side
//! completes too, and the dialog is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::now;
use common::proxy::Proxy;
use serde_json::json;

pub(crate) fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Receives until `pred` accepts a datagram or `within` passes.
pub(crate) fn recv_until(
    s: &UdpSocket,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<(String, SocketAddr, Instant)> {
    let deadline = now() + within;
    let mut buf = [0u8; 65_535];
    while now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&text) {
                return Some((text, from, now()));
            }
        }
    }
    None
}

pub(crate) fn lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// A response to `req` with its Vias, From, To (+ `to_tag` if given), Call-ID, CSeq.
pub(crate) fn answer(req: &str, code: &str, to_tag: Option<&str>, extra: &str) -> String {
    let mut r = format!("SIP/2.0 {code}\r\n");
    for h in ["Via", "Record-Route", "From", "Call-ID", "CSeq"] {
        for l in lines(req, h) {
            r.push_str(l);
            r.push_str("\r\n");
        }
    }
    let to = lines(req, "To")[0];
    r.push_str(to);
    if let Some(t) = to_tag {
        r.push_str(&format!(";tag={t}"));
    }
    r.push_str("\r\n");
    r.push_str(extra);
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

#[test]
fn proxy_bye_after_end_dlg_is_retransmitted_until_the_callee_answers() {
    let proxy = Proxy::start(&["--log", "warn"]);
    let (uac, uas) = (bind(), bind());
    let uac_port = uac.local_addr().unwrap().port();
    let uas_port = uas.local_addr().unwrap().port();
    let invite = format!(
        "INVITE sip:bob@127.0.0.1:{uas_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-gb1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: gen-bye-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@127.0.0.1:{uac_port}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    uac.send_to(invite.as_bytes(), proxy.sip_addr()).unwrap();
    let (fwd, from, _) = recv_until(&uas, Duration::from_secs(5), |t| t.starts_with("INVITE "))
        .expect("forwarded INVITE");
    let contact = format!("Contact: <sip:bob@127.0.0.1:{uas_port}>\r\n");
    uas.send_to(
        answer(&fwd, "200 OK", Some("b1"), &contact).as_bytes(),
        from,
    )
    .unwrap();
    let (ok, _, _) = recv_until(&uac, Duration::from_secs(5), |t| {
        t.starts_with("SIP/2.0 200")
    })
    .expect("200 upstream");
    // ACK through the proxy (its Record-Route is the route set).
    let rr = lines(&ok, "Record-Route")[0]
        .split_once(':')
        .unwrap()
        .1
        .trim();
    let ack = format!(
        "ACK sip:bob@127.0.0.1:{uas_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-gb1ack;rport\r\n\
         Route: {rr}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>;tag=b1\r\n\
         Call-ID: gen-bye-1\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    uac.send_to(ack.as_bytes(), proxy.sip_addr()).unwrap();
    recv_until(&uas, Duration::from_secs(5), |t| t.starts_with("ACK ")).expect("ACK");
    let list = proxy.rpc("dlg.list", json!([]));
    let d = &list.as_array().expect("dlg.list array")[0];
    let (h_entry, h_id) = (d["h_entry"].as_u64().unwrap(), d["h_id"].as_u64().unwrap());
    proxy.rpc("dlg.end_dlg", json!([h_entry, h_id]));

    // The caller answers its BYE at once.
    let (bye_up, from_up, _) =
        recv_until(&uac, Duration::from_secs(5), |t| t.starts_with("BYE ")).expect("BYE to caller");
    uac.send_to(answer(&bye_up, "200 OK", None, "").as_bytes(), from_up)
        .unwrap();
    // The callee ignores the first copy and the second, and answers the third.
    let is_bye = |t: &str| t.starts_with("BYE ");
    let (first, _, t1) = recv_until(&uas, Duration::from_secs(5), is_bye).expect("BYE to callee");
    let (second, _, t2) = recv_until(&uas, Duration::from_secs(3), is_bye).expect("retransmitted");
    let (third, from_bye, t3) =
        recv_until(&uas, Duration::from_secs(4), is_bye).expect("retransmitted twice");
    assert_eq!(first, second, "a retransmission is the same request");
    assert_eq!(second, third);
    let (g1, g2) = (t2 - t1, t3 - t2);
    assert!(
        g1 >= Duration::from_millis(400) && g1 < Duration::from_millis(1500),
        "T1 ≈ 500 ms: {g1:?}"
    );
    assert!(g2 > g1, "the interval doubles: {g1:?} then {g2:?}");
    uas.send_to(answer(&third, "200 OK", None, "").as_bytes(), from_bye)
        .unwrap();
    assert!(
        recv_until(&uas, Duration::from_secs(3), is_bye).is_none(),
        "answered: no more copies"
    );
    let deadline = now() + Duration::from_secs(5);
    while proxy.active_dialogs().all > 0 && now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(proxy.active_dialogs().all, 0, "the dialog is gone");
    assert_generated(&proxy, 2, 0);
}

/// The proxy counted `answered` generated requests answered and `timed_out` given up.
pub(crate) fn assert_generated(proxy: &Proxy, answered: u64, timed_out: u64) {
    let stats = proxy
        .rpc(
            "stats.get_statistics",
            json!(["core:generated_answered", "core:generated_timed_out"]),
        )
        .to_string();
    assert!(
        stats.contains(&format!("core:generated_answered = {answered}")),
        "{stats}"
    );
    assert!(
        stats.contains(&format!("core:generated_timed_out = {timed_out}")),
        "{stats}"
    );
}
