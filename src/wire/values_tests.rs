//! Table tests for the typed accessors: name-addr, Via, CSeq, multi-value iteration.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use super::*;
use crate::wire::{Scheme, parse};

fn m(headers: &str) -> Vec<u8> {
    format!("OPTIONS sip:x@y SIP/2.0\r\n{headers}\r\n").into_bytes()
}

#[test]
fn from_to_call_id_cseq_max_forwards() {
    let b = m(
        "f: \"Alice \\\"A\\\", Jr\" <sip:alice@atlanta.com;transport=udp>;tag=1928 ; x\r\n\
To:sip:bob@biloxi.com;tag=a6c85cf\r\n\
i: a84b4c76e66710\r\n\
CSeq:  4711   INVITE \r\n\
Max-Forwards: 69\r\n",
    );
    let msg = parse(&b).unwrap();
    let f = msg.from().unwrap();
    assert_eq!(f.display, Some(&b"Alice \\\"A\\\", Jr"[..]));
    assert_eq!(f.uri, b"sip:alice@atlanta.com;transport=udp");
    assert_eq!(f.uri_span.get(&b), f.uri);
    assert_eq!(f.tag(), Some(&b"1928"[..]));
    assert_eq!(f.param(b"x"), Some(None));
    assert_eq!(f.params_span.get(&b), f.params);
    assert_eq!(f.parsed_uri().unwrap().transport(), Some(&b"udp"[..]));
    let t = msg.to().unwrap();
    assert_eq!(t.display, None);
    assert_eq!(t.uri, b"sip:bob@biloxi.com");
    assert_eq!(t.tag(), Some(&b"a6c85cf"[..]));
    assert!(!t.is_star());
    assert_eq!(msg.call_id(), Some(&b"a84b4c76e66710"[..]));
    let c = msg.cseq().unwrap();
    assert_eq!(
        (c.num, c.method, c.method_bytes),
        (4711, Method::Invite, &b"INVITE"[..])
    );
    assert_eq!(msg.max_forwards(), Some(69));
}

#[test]
fn name_addr_forms() {
    type Case = (
        &'static str,
        Option<&'static [u8]>,
        &'static [u8],
        &'static [u8],
    );
    let table: &[Case] = &[
        ("<sip:a@b>", None, b"sip:a@b", b""),
        ("Bob <sip:a@b>;tag=1", Some(b"Bob"), b"sip:a@b", b";tag=1"),
        (
            "  The  Bob  <sip:a@b> ; tag=1",
            Some(b"The  Bob"),
            b"sip:a@b",
            b"; tag=1",
        ),
        ("\"\" <sip:a@b>", Some(b""), b"sip:a@b", b""),
        ("sip:a@b;tag=2", None, b"sip:a@b", b";tag=2"),
        ("sip:a@b", None, b"sip:a@b", b""),
        ("*", None, b"*", b""),
    ];
    for (v, d, u, p) in table {
        let b = m(&format!("To: {v}\r\n"));
        let msg = parse(&b).unwrap();
        let na = msg.to().unwrap_or_else(|| panic!("{v}"));
        assert_eq!((na.display, na.uri, na.params), (*d, *u, *p), "{v}");
    }
    for bad in [
        "<sip:a@b",
        "\"Bob <sip:a@b>",
        "\"Bob\" sip:a@b",
        "<sip:a@b> junk",
        "<>",
    ] {
        let b = m(&format!("To: {bad}\r\n"));
        assert!(parse(&b).unwrap().to().is_none(), "{bad}");
    }
}

#[test]
fn via_forms() {
    let b = m(
        "Via: SIP / 2.0 / UDP  [2001:db8::9]:5070 ;branch=z9hG4bKa;rport;received=1.2.3.4;maddr=224.0.0.1;ttl=16\r\n\
v: SIP/2.0/TCP host.example.com;branch=z9hG4bKb, SIP/2.0/TLS 10.0.0.2:5061;rport=5999;branch=z9hG4bKc\r\n\
Via: SIP/2.0/WS h\r\n",
    );
    let msg = parse(&b).unwrap();
    let vias: Vec<Via> = msg.vias().collect();
    assert_eq!(vias.len(), 4);
    let v = &vias[0];
    assert_eq!(v.transport, b"UDP");
    assert_eq!(v.host, b"[2001:db8::9]");
    assert_eq!(v.port, Some(5070));
    assert_eq!(v.branch(), Some(&b"z9hG4bKa"[..]));
    assert_eq!(v.rport(), Some(None));
    assert_eq!(v.received(), Some(&b"1.2.3.4"[..]));
    assert_eq!(v.maddr(), Some(&b"224.0.0.1"[..]));
    assert_eq!(v.ttl(), Some(16));
    assert_eq!(v.host_ip(), "2001:db8::9".parse().ok());
    assert_eq!(v.header_index, 0);
    assert_eq!(v.span.get(&b).first(), Some(&b'S'));
    assert_eq!(vias[1].host, b"host.example.com");
    assert_eq!(vias[1].port, None);
    assert_eq!(vias[1].rport(), None);
    assert_eq!(vias[1].host_ip(), None);
    assert_eq!(vias[1].header_index, 1);
    assert_eq!(vias[2].transport, b"TLS");
    assert_eq!(vias[2].rport(), Some(Some(5999)));
    assert_eq!(vias[2].branch(), Some(&b"z9hG4bKc"[..]));
    assert_eq!(vias[2].header_index, 1);
    assert_eq!(vias[3].params, b"");
    assert_eq!(vias[3].header_index, 2);
    assert_eq!(msg.top_via().unwrap(), vias[0]);
}

#[test]
fn via_errors_stop_iteration() {
    for bad in [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP h",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h:",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP h junk",
        "/2.0/UDP h",
    ] {
        let b = m(&format!("Via: {bad}, SIP/2.0/UDP ok\r\n"));
        let msg = parse(&b).unwrap();
        assert!(msg.top_via().is_none(), "{bad}");
        assert_eq!(msg.vias().count(), 0, "{bad}");
    }
    let b = m("Via: SIP/2.0/UDP a, bogus\r\nVia: SIP/2.0/UDP c\r\n");
    assert_eq!(parse(&b).unwrap().vias().count(), 1);
}

#[test]
fn routes_across_lines_and_commas() {
    let b = m(
        "Route: <sip:p1.example.com;lr>, \"Quoted, Name\" <sip:p2;lr>\r\n\
Record-Route: <sip:rr1;lr;did=abc>\r\n\
Route: <sip:p3;lr>\r\n\
Record-Route: <sip:rr2;lr>,<sip:rr3;lr>\r\n",
    );
    let msg = parse(&b).unwrap();
    let r: Vec<&[u8]> = msg.routes().map(|n| n.uri).collect();
    assert_eq!(
        r,
        vec![&b"sip:p1.example.com;lr"[..], b"sip:p2;lr", b"sip:p3;lr"]
    );
    let d: Vec<Option<&[u8]>> = msg.routes().map(|n| n.display).collect();
    assert_eq!(d[1], Some(&b"Quoted, Name"[..]));
    let rr: Vec<&[u8]> = msg.record_routes().map(|n| n.uri).collect();
    assert_eq!(
        rr,
        vec![&b"sip:rr1;lr;did=abc"[..], b"sip:rr2;lr", b"sip:rr3;lr"]
    );
    let first = msg.record_routes().next().unwrap().parsed_uri().unwrap();
    assert_eq!(first.param(b"did"), Some(Some(&b"abc"[..])));
    assert!(first.has_lr());
    assert_eq!(first.scheme, Scheme::Sip);
    let mut it = msg.routes();
    assert_eq!(it.next_with_index().map(|(i, _)| i), Some(0));
    assert_eq!(it.next_with_index().map(|(i, _)| i), Some(0));
    assert_eq!(it.next_with_index().map(|(i, _)| i), Some(2));
    assert!(it.next_with_index().is_none());
}

#[test]
fn contacts_star_and_expires() {
    let b = m("Contact: *\r\n");
    let msg = parse(&b).unwrap();
    let c: Vec<NameAddr> = msg.contacts().collect();
    assert_eq!(c.len(), 1);
    assert!(c[0].is_star());
    let b = m("m: <sip:a@10.0.0.1:5060>;expires=3600;q=0.5, sip:b@h;expires=0\r\n");
    let msg = parse(&b).unwrap();
    let c: Vec<NameAddr> = msg.contacts().collect();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].param(b"expires"), Some(Some(&b"3600"[..])));
    assert_eq!(c[1].uri, b"sip:b@h");
    assert_eq!(c[1].param(b"Expires"), Some(Some(&b"0"[..])));
    assert_eq!(c[0].parsed_uri().unwrap().port, Some(5060));
}

#[test]
fn option_tags() {
    let b = m(
        "Require: 100rel , timer\r\nProxy-Require: foo\r\nk: path,\r\n gruu\r\nSupported: ,outbound\r\nUnsupported: x\r\nAllow: INVITE, ACK,BYE\r\n",
    );
    let msg = parse(&b).unwrap();
    let tags = |h| msg.option_tags(h).collect::<Vec<&[u8]>>();
    assert_eq!(tags(HeaderName::Require), vec![&b"100rel"[..], b"timer"]);
    assert_eq!(tags(HeaderName::ProxyRequire), vec![&b"foo"[..]]);
    assert_eq!(
        tags(HeaderName::Supported),
        vec![&b"path"[..], b"gruu", b"outbound"]
    );
    assert_eq!(tags(HeaderName::Unsupported), vec![&b"x"[..]]);
    assert_eq!(
        tags(HeaderName::Allow),
        vec![&b"INVITE"[..], b"ACK", b"BYE"]
    );
    assert!(tags(HeaderName::Event).is_empty());
}

#[test]
fn cseq_forms() {
    assert_eq!(parse_cseq(b"1 ACK").map(|c| c.method), Some(Method::Ack));
    assert_eq!(
        parse_cseq(b"0\t\r\n FOO").map(|c| c.method_bytes),
        Some(&b"FOO"[..])
    );
    for bad in [
        &b""[..],
        b"1",
        b"INVITE",
        b"1 INVITE x",
        b"-1 INVITE",
        b"1x INVITE",
    ] {
        assert!(
            parse_cseq(bad).is_none(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn absent_headers_are_none() {
    let b = m("");
    let msg = parse(&b).unwrap();
    assert!(msg.from().is_none() && msg.to().is_none() && msg.cseq().is_none());
    assert!(msg.top_via().is_none() && msg.call_id().is_none());
    assert_eq!(msg.max_forwards(), None);
    assert_eq!(msg.routes().count(), 0);
    assert_eq!(msg.content_length(), None);
}

#[test]
fn compact_message_accessors() {
    let b = b"BYE sip:b@x SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n SIP/2.0/TCP b:5070\r\n\
f: <sip:a@x>;tag=1\r\nt: <sip:b@x>;tag=2\r\ni: cid\r\nCSeq: 2 BYE\r\nm: <sip:a@1.2.3.4>\r\n\
k: timer\r\nl: 0\r\nc: text/plain\r\ne: gzip\r\ns: hi\r\no: dialog\r\nu: presence\r\n\
r: <sip:c@x>\r\nb: <sip:d@x>\r\nx: 1800;refresher=uac\r\ny: sig\r\n\r\n";
    let msg = parse(b).unwrap();
    let vias: Vec<Via> = msg.vias().collect();
    assert_eq!(vias.len(), 2);
    assert_eq!(
        (vias[1].transport, vias[1].host, vias[1].port),
        (&b"TCP"[..], &b"b"[..], Some(5070))
    );
    assert_eq!(msg.from().unwrap().tag(), Some(&b"1"[..]));
    assert_eq!(msg.to().unwrap().tag(), Some(&b"2"[..]));
    assert_eq!(msg.call_id(), Some(&b"cid"[..]));
    assert_eq!(msg.contacts().next().unwrap().uri, b"sip:a@1.2.3.4");
    assert_eq!(
        msg.option_tags(HeaderName::Supported).next(),
        Some(&b"timer"[..])
    );
    assert_eq!(msg.content_length(), Some(0));
    let by = |h| msg.header_value(h).unwrap();
    assert_eq!(by(HeaderName::ContentType), b"text/plain");
    assert_eq!(by(HeaderName::ContentEncoding), b"gzip");
    assert_eq!(by(HeaderName::Subject), b"hi");
    assert_eq!(by(HeaderName::Event), b"dialog");
    assert_eq!(by(HeaderName::AllowEvents), b"presence");
    assert_eq!(by(HeaderName::ReferTo), b"<sip:c@x>");
    assert_eq!(by(HeaderName::ReferredBy), b"<sip:d@x>");
    assert_eq!(by(HeaderName::SessionExpires), b"1800;refresher=uac");
    assert_eq!(by(HeaderName::Identity), b"sig");
    assert_eq!(
        msg.find_header(b"Session-Expires"),
        Some(&b"1800;refresher=uac"[..])
    );
    assert_eq!(crate::wire::validate_request(&msg).map(|_| ()), Ok(()));
}

#[test]
fn lf_only_stream_framing() {
    let b = b"OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/TCP h\nl: 2\n\nokNEXT";
    assert_eq!(
        crate::wire::frame_stream(b),
        Ok(crate::wire::Frame::Complete(b.len() - 4))
    );
    let m = crate::wire::parse_stream_message(b, b.len() - 4).unwrap();
    assert_eq!(m.body(), b"ok");
}
