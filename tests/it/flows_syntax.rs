//! Syntax before routing (RFC 3261 §16.3): an invalid request gets 400 before any routing
//! decision (not 503 from the routing step), and a valid one with legal but unusual tokens
//! (RFC 4475 §3.1.1.2) is forwarded, not refused. IPv6 references per RFC 5118.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::flows;

use flows::*;

const INTMETH: &str = "!interesting-Method0123456789_*+`.%indeed'~";

fn request(method: &str, ruri: &str, via: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: token1~` token2'+_ <sip:mundane@10.0.0.1>;tag=_token~1'+`*%!-.\r\n\
         To: <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n\
         Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}}{{\r\n\
         CSeq: 139122385 {method}\r\n\
         extensionHeader-!.%*+_`'~: x\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

const VIA: &str = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-.!%66*_+`'~";
const UNUSUAL_RURI: &str = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@10.0.0.2:5060";

#[test]
fn unusual_but_legal_tokens_are_forwarded() {
    let mut net = Net::new();
    let out = net.send(UAC, &request(INTMETH, UNUSUAL_RURI, VIA));
    assert_eq!(out.len(), 1, "{out:?}");
    let fwd = &out[0];
    assert_eq!(
        fwd.dst,
        sa(UAS1),
        "routed by the R-URI's host and port: {fwd:?}"
    );
    assert!(
        fwd.text
            .starts_with(&format!("{INTMETH} {UNUSUAL_RURI} SIP/2.0\r\n"))
    );
    assert_eq!(fwd.hdr("CSeq"), format!("139122385 {INTMETH}"));
}

#[test]
fn invalid_syntax_gets_400_before_routing() {
    for (what, ruri, via) in [
        (
            "an IPv6 reference with three colons (RFC 5118 §4.10)",
            "sip:user@[2001:db8:::192.0.2.1]",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        ),
        (
            "an IPv6 address without brackets (RFC 5118 §4.2)",
            "sip:user@2001:db8::10",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        ),
        (
            "a Via with an empty parameter",
            "sip:user@example.com",
            "SIP/2.0/UDP 10.0.0.1:5060;;branch=z9hG4bK1",
        ),
        (
            "a Via with an empty branch",
            "sip:user@example.com",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=",
        ),
        (
            "a Via with a three-colon IPv6 sent-by",
            "sip:user@example.com",
            "SIP/2.0/UDP [2001:db8:::1]:5060;branch=z9hG4bK1",
        ),
    ] {
        let mut net = Net::new();
        let out = net.send(UAC, &request("OPTIONS", ruri, via));
        let codes: Vec<u16> = out.iter().map(Sent::code).collect();
        // A broken Via leaves nowhere to answer but the source address.
        assert_eq!(codes, [400], "{what}: {out:?}");
        let mut net = Net::new();
        let out = net.send(UAC, &request("INVITE", ruri, via));
        let codes: Vec<u16> = out.iter().map(Sent::code).collect();
        assert_eq!(codes, [400], "{what} (INVITE): {out:?}");
        assert_eq!(net.dialogs(), 0, "{what}: no state");
    }
}
