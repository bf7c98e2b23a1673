//! Byte-exact tests for the builders; every built message must parse back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use super::*;
use crate::wire::{Method, parse, validate_request, validate_response};

const INVITE: &str = "INVITE sip:bob@10.0.0.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp1, SIP/2.0/UDP pc33;branch=z9hG4bK776\r\n\
v: SIP/2.0/UDP h3;branch=z9hG4bK3\r\n\
Route: <sip:p2;lr>\r\n\
Max-Forwards: 69\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
f: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 2\r\n\
\r\n\
hi";

fn out_str(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap()
}

#[test]
fn response_with_to_tag() {
    let m = parse(INVITE.as_bytes()).unwrap();
    let mut out = b"PREFIX".to_vec();
    response(
        &m,
        486,
        b"Busy Here",
        Some(b"abc"),
        &[(b"Retry-After", b"30")],
        &mut out,
    );
    let want = "PREFIXSIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp1, SIP/2.0/UDP pc33;branch=z9hG4bK776\r\n\
v: SIP/2.0/UDP h3;branch=z9hG4bK3\r\n\
f: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
To: Bob <sip:bob@biloxi.com>;tag=abc\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Retry-After: 30\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(out_str(&out), want);
    let r = parse(&out[6..]).unwrap();
    assert_eq!(validate_response(&r).map(|_| ()), Ok(()));
    assert_eq!(r.code(), Some(486));
    assert_eq!(r.vias().count(), 3);
    assert_eq!(r.to().unwrap().tag(), Some(&b"abc"[..]));
}

#[test]
fn response_100_and_existing_tag() {
    let m = parse(INVITE.as_bytes()).unwrap();
    let mut out = Vec::new();
    response(&m, 100, b"Trying", None, &[], &mut out);
    let r = parse(&out).unwrap();
    assert_eq!(r.code(), Some(100));
    assert_eq!(r.to().unwrap().tag(), None);
    assert!(out_str(&out).starts_with("SIP/2.0 100 Trying\r\n"));

    let tagged = INVITE.replace("To: Bob <sip:bob@biloxi.com>", "To: <sip:b@x>;tag=keep");
    let m = parse(tagged.as_bytes()).unwrap();
    let mut out = Vec::new();
    response(&m, 603, b"Decline", Some(b"new"), &[], &mut out);
    assert!(out_str(&out).contains("\r\nTo: <sip:b@x>;tag=keep\r\n"));
    assert!(!out_str(&out).contains("new"));
}

#[test]
fn cancel_for_invite() {
    let m = parse(INVITE.as_bytes()).unwrap();
    let mut out = Vec::new();
    cancel(&m, &mut out).unwrap();
    let want = "CANCEL sip:bob@10.0.0.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp1\r\n\
Route: <sip:p2;lr>\r\n\
Max-Forwards: 70\r\n\
f: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 CANCEL\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(out_str(&out), want);
    let c = parse(&out).unwrap();
    assert_eq!(c.method(), Some(Method::Cancel));
    assert_eq!(validate_request(&c).map(|_| ()), Ok(()));

    let no_callid = INVITE.replace("Call-ID: a84b@pc33\r\n", "");
    let m = parse(no_callid.as_bytes()).unwrap();
    let mut out = b"keep".to_vec();
    assert_eq!(
        cancel(&m, &mut out),
        Err(ParseError::MissingHeader(HeaderName::CallId))
    );
    assert_eq!(out, b"keep");
}

#[test]
fn ack_for_failure() {
    let m = parse(INVITE.as_bytes()).unwrap();
    let resp = "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp1\r\n\
To: Bob <sip:bob@biloxi.com>;tag=uas1\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    let r = parse(resp.as_bytes()).unwrap();
    let mut out = Vec::new();
    ack_for_non2xx(&m, &r, &mut out).unwrap();
    let want = "ACK sip:bob@10.0.0.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp1\r\n\
Route: <sip:p2;lr>\r\n\
Max-Forwards: 70\r\n\
f: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
To: Bob <sip:bob@biloxi.com>;tag=uas1\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 ACK\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(out_str(&out), want);
    assert_eq!(validate_request(&parse(&out).unwrap()).map(|_| ()), Ok(()));
    // A response passed as the INVITE is refused.
    let mut out = Vec::new();
    assert_eq!(ack_for_non2xx(&r, &r, &mut out), Err(ParseError::WrongKind));
    assert!(out.is_empty());
}

#[test]
fn in_dialog_bye_and_options() {
    let d = InDialog {
        method: b"BYE",
        ruri: b"sip:bob@10.0.0.2:5062",
        route_set: &[b"<sip:p1;lr>", b"<sip:p2;lr>"],
        via: b"SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKd1",
        from: b"<sip:alice@atlanta.com>;tag=1928",
        to: b"<sip:bob@biloxi.com>;tag=uas1",
        call_id: b"a84b@pc33",
        cseq: 314160,
        max_forwards: 70,
        extra_headers: b"Reason: SIP;cause=200;text=\"timeout\"\r\n",
        content_type: None,
        body: b"",
    };
    let mut out = Vec::new();
    in_dialog_request(&d, &mut out);
    let want = "BYE sip:bob@10.0.0.2:5062 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKd1\r\n\
Route: <sip:p1;lr>\r\n\
Route: <sip:p2;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@atlanta.com>;tag=1928\r\n\
To: <sip:bob@biloxi.com>;tag=uas1\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314160 BYE\r\n\
Reason: SIP;cause=200;text=\"timeout\"\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(out_str(&out), want);
    let m = parse(&out).unwrap();
    assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
    assert_eq!(m.routes().count(), 2);

    let d = InDialog {
        method: b"OPTIONS",
        route_set: &[],
        extra_headers: b"",
        content_type: Some(b"text/plain"),
        body: b"ping",
        ..d
    };
    let mut out = Vec::new();
    in_dialog_request(&d, &mut out);
    let m = parse(&out).unwrap();
    assert_eq!(m.method(), Some(Method::Options));
    assert_eq!(m.cseq().unwrap().method, Method::Options);
    assert_eq!(m.body(), b"ping");
    assert_eq!(
        m.header_value(HeaderName::ContentType),
        Some(&b"text/plain"[..])
    );
    assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
}
