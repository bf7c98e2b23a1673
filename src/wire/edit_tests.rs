//! Byte-exact tests for every edit operation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use super::*;
use crate::wire::parse;

const BASE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 2\r\n\
\r\n\
hiJUNK";

/// The message proper (without trailing datagram junk).
fn proper(s: &str) -> String {
    s.strip_suffix("JUNK").unwrap_or(s).to_string()
}

fn apply(input: &str, f: impl FnOnce(&mut Edits) -> Result<(), EditError>) -> String {
    let m = parse(input.as_bytes()).unwrap();
    let mut e = Edits::new(&m);
    f(&mut e).unwrap();
    let mut out = Vec::with_capacity(e.output_len());
    let cap = out.capacity();
    e.write(&mut out).unwrap();
    assert_eq!(out.len(), e.output_len());
    assert_eq!(
        out.capacity(),
        cap,
        "write must not reallocate when capacity suffices"
    );
    String::from_utf8(out).unwrap()
}

fn expect(from: &str, to: &str) -> String {
    let p = proper(BASE);
    assert!(p.contains(from), "{from:?}");
    p.replacen(from, to, 1)
}

#[test]
fn no_edits_reproduce_bytes() {
    let out = apply(BASE, |_| Ok(()));
    assert_eq!(out, proper(BASE));
    let m = parse(BASE.as_bytes()).unwrap();
    assert_eq!(out.as_bytes(), m.bytes());
}

#[test]
fn insert_via() {
    let out = apply(BASE, |e| {
        e.insert_via(b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp")
    });
    assert_eq!(
        out,
        expect(
            "Via: SIP/2.0/UDP pc33",
            "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP pc33"
        )
    );
}

#[test]
fn received_rport() {
    let out = apply(BASE, |e| {
        e.set_received_rport(Some(b"192.0.2.1"), Some(5080))
    });
    assert_eq!(
        out,
        expect(";rport\r\n", ";rport=5080;received=192.0.2.1\r\n")
    );
    let out = apply(BASE, |e| e.set_received_rport(Some(b"192.0.2.1"), None));
    assert_eq!(out, expect(";rport\r\n", ";rport;received=192.0.2.1\r\n"));
    let out = apply(BASE, |e| e.set_received_rport(None, None));
    assert_eq!(out, proper(BASE));

    let input = BASE.replace(
        ";branch=z9hG4bK776;rport",
        ";received=1.1.1.1;rport=1;branch=z9hG4bK776",
    );
    let out = apply(&input, |e| e.set_received_rport(Some(b"2.2.2.2"), Some(9)));
    assert_eq!(
        out,
        proper(&input).replace(";received=1.1.1.1;rport=1;", ";received=2.2.2.2;rport=9;")
    );
    // rport absent: not added; multi-value Via line: only the first value is touched.
    let input = BASE.replace(
        ";branch=z9hG4bK776;rport",
        ";branch=z9hG4bK776 , SIP/2.0/UDP b;rport",
    );
    let out = apply(&input, |e| e.set_received_rport(Some(b"3.3.3.3"), Some(7)));
    assert_eq!(
        out,
        proper(&input).replace(
            ";branch=z9hG4bK776 ,",
            ";branch=z9hG4bK776;received=3.3.3.3 ,"
        )
    );
}

#[test]
fn remove_top_via() {
    let input = BASE.replace(";rport\r\n", ";rport\r\nVia: SIP/2.0/UDP second\r\n");
    let out = apply(&input, |e| e.remove_top_via());
    assert_eq!(
        out,
        proper(&input).replace(
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport\r\n",
            ""
        )
    );
    let input = BASE.replace(";rport\r\n", ";rport , SIP/2.0/TCP b;branch=2\r\n");
    let out = apply(&input, |e| e.remove_top_via());
    assert_eq!(
        out,
        proper(&input).replace(
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport , ",
            "Via: "
        )
    );
    let input = BASE.replace(
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport\r\n",
        "",
    );
    let m = parse(input.as_bytes()).unwrap();
    assert_eq!(Edits::new(&m).remove_top_via(), Err(EditError::NoVia));
    assert_eq!(
        Edits::new(&m).set_received_rport(None, None),
        Err(EditError::NoVia)
    );
}

#[test]
fn record_route_double_and_first() {
    let out = apply(BASE, |e| {
        e.insert_record_route(b"<sip:a;lr>")?;
        e.insert_record_route(b"<sip:b;lr>")
    });
    assert_eq!(
        out,
        expect(
            "Content-Length: 2\r\n\r\n",
            "Content-Length: 2\r\nRecord-Route: <sip:a;lr>\r\nRecord-Route: <sip:b;lr>\r\n\r\n"
        )
    );
    let input = BASE.replace("To: Bob", "Record-Route: <sip:old;lr>\r\nTo: Bob");
    let out = apply(&input, |e| e.insert_record_route(b"<sip:new;lr>"));
    assert_eq!(
        out,
        proper(&input).replace(
            "Record-Route: <sip:old;lr>",
            "Record-Route: <sip:new;lr>\r\nRecord-Route: <sip:old;lr>"
        )
    );
}

#[test]
fn remove_top_route() {
    let out = apply(BASE, |e| e.remove_top_route());
    assert_eq!(out, expect("<sip:p1.example.com;lr>, ", ""));
    let input = BASE.replace(
        "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "<sip:p1;lr>",
    );
    let out = apply(&input, |e| e.remove_top_route());
    assert_eq!(out, proper(&input).replace("Route: <sip:p1;lr>\r\n", ""));
    let input = BASE
        .replace("Route: <sip:p3.example.com;lr>\r\n", "")
        .replace(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
            "",
        );
    let m = parse(input.as_bytes()).unwrap();
    assert_eq!(Edits::new(&m).remove_top_route(), Err(EditError::NoRoute));
    assert_eq!(Edits::new(&m).strict_route_fixup(), Err(EditError::NoRoute));
    assert_eq!(Edits::new(&m).route_to_strict_router(), Ok(false));
}

#[test]
fn strict_route_fixup() {
    let out = apply(BASE, |e| e.strict_route_fixup());
    assert_eq!(
        out,
        proper(BASE)
            .replace(
                "INVITE sip:bob@biloxi.com SIP",
                "INVITE sip:p3.example.com;lr SIP"
            )
            .replace("Route: <sip:p3.example.com;lr>\r\n", "")
    );
    let input = BASE.replace("Route: <sip:p3.example.com;lr>\r\n", "");
    let out = apply(&input, |e| e.strict_route_fixup());
    assert_eq!(
        out,
        proper(&input)
            .replace(
                "INVITE sip:bob@biloxi.com SIP",
                "INVITE sip:p2.example.com;lr SIP"
            )
            .replace(", <sip:p2.example.com;lr>", "")
    );
}

#[test]
fn route_to_strict_router() {
    assert_eq!(
        apply(BASE, |e| e.route_to_strict_router().map(|_| ())),
        proper(BASE)
    );
    let input = BASE.replace("<sip:p1.example.com;lr>", "<sip:strict.example.com>");
    let out = apply(&input, |e| {
        assert!(e.route_to_strict_router()?);
        Ok(())
    });
    assert_eq!(
        out,
        proper(&input)
            .replace(
                "INVITE sip:bob@biloxi.com SIP",
                "INVITE sip:strict.example.com SIP"
            )
            .replace("<sip:strict.example.com>, ", "")
            .replace(
                "Route: <sip:p3.example.com;lr>\r\n",
                "Route: <sip:p3.example.com;lr>\r\nRoute: <sip:bob@biloxi.com>\r\n"
            )
    );
}

#[test]
fn max_forwards() {
    assert_eq!(
        apply(BASE, |e| e.decrement_max_forwards()),
        expect("Max-Forwards: 70", "Max-Forwards: 69")
    );
    let input = BASE.replace("Max-Forwards: 70", "Max-Forwards:   1 ");
    assert_eq!(
        apply(&input, |e| e.decrement_max_forwards()),
        proper(&input).replace("Max-Forwards:   1 ", "Max-Forwards:   0 ")
    );
    let input = BASE.replace("Max-Forwards: 70\r\n", "");
    assert_eq!(
        apply(&input, |e| e.decrement_max_forwards()),
        proper(&input).replace(
            "Content-Length: 2\r\n\r\n",
            "Content-Length: 2\r\nMax-Forwards: 70\r\n\r\n"
        )
    );
    for (v, err) in [("0", EditError::TooManyHops), ("x", EditError::BadHeader)] {
        let input = BASE.replace("Max-Forwards: 70", &format!("Max-Forwards: {v}"));
        let m = parse(input.as_bytes()).unwrap();
        assert_eq!(Edits::new(&m).decrement_max_forwards(), Err(err));
    }
}

#[test]
fn request_uri_and_generic_headers() {
    let out = apply(BASE, |e| e.replace_request_uri(b"sip:bob@10.0.0.2:5062"));
    assert_eq!(
        out,
        expect("sip:bob@biloxi.com SIP", "sip:bob@10.0.0.2:5062 SIP")
    );
    let out = apply(BASE, |e| e.add_header(b"X-Dlg", b"42"));
    assert_eq!(out, expect("\r\n\r\nhi", "\r\nX-Dlg: 42\r\n\r\nhi"));
    let m = parse(BASE.as_bytes()).unwrap();
    let h = *m.header(crate::wire::HeaderName::CallId).unwrap();
    let out = apply(BASE, |e| e.remove_header(&h));
    assert_eq!(out, expect("Call-ID: a84b@pc33\r\n", ""));
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\n\r\n";
    let m = parse(resp.as_bytes()).unwrap();
    assert_eq!(
        Edits::new(&m).replace_request_uri(b"sip:x"),
        Err(EditError::NotRequest)
    );
    assert_eq!(
        Edits::new(&m).strict_route_fixup(),
        Err(EditError::NotRequest)
    );
}

#[test]
fn conflicts_and_capacity() {
    let m = parse(BASE.as_bytes()).unwrap();
    let h = *m.header(crate::wire::HeaderName::CallId).unwrap();
    let mut e = Edits::new(&m);
    e.replace(h.value, b"new").unwrap();
    assert_eq!(e.remove_header(&h), Err(EditError::Overlap));
    // Insertions at the boundaries of a replaced range are fine.
    e.replace(
        Span {
            start: h.value.end,
            end: h.value.end,
        },
        b"-x",
    )
    .unwrap();
    e.replace(
        Span {
            start: h.value.start,
            end: h.value.start,
        },
        b"x-",
    )
    .unwrap();
    // An insertion strictly inside is not.
    let mid = h.value.start + 1;
    assert_eq!(
        e.replace(
            Span {
                start: mid,
                end: mid
            },
            b"!"
        ),
        Err(EditError::Overlap)
    );
    let mut out = Vec::new();
    e.write(&mut out).unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("Call-ID: x-new-x\r\n")
    );

    let len = m.len() as u32;
    assert_eq!(
        Edits::new(&m).replace(
            Span {
                start: len,
                end: len + 1
            },
            b""
        ),
        Err(EditError::OutOfRange)
    );
    let mut e = Edits::new(&m);
    for _ in 0..MAX_EDITS {
        e.add_header(b"X", b"1").unwrap();
    }
    assert_eq!(e.add_header(b"X", b"1"), Err(EditError::TooManyEdits));
    assert_eq!(e.len(), MAX_EDITS);
    let big = vec![b'a'; SCRATCH_BYTES];
    assert_eq!(
        Edits::new(&m).add_header(b"X", &big),
        Err(EditError::ScratchFull)
    );
}

#[test]
fn typical_proxy_forward() {
    let out = apply(BASE, |e| {
        e.remove_top_route()?;
        e.decrement_max_forwards()?;
        e.insert_via(b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx")?;
        e.set_received_rport(Some(b"192.0.2.7"), Some(5999))?;
        e.insert_record_route(b"<sip:10.0.0.9;lr;did=7>")
    });
    let want = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport=5999;received=192.0.2.7\r\n\
Max-Forwards: 69\r\n\
Route: <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928\r\n\
Call-ID: a84b@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 2\r\n\
Record-Route: <sip:10.0.0.9;lr;did=7>\r\n\
\r\n\
hi";
    assert_eq!(out, want);
    let reparsed = parse(out.as_bytes()).unwrap();
    assert_eq!(reparsed.body(), b"hi");
    assert_eq!(reparsed.vias().count(), 2);
}

#[test]
fn edit_error_status() {
    assert_eq!(EditError::TooManyHops.status(), 483);
    assert_eq!(EditError::BadHeader.status(), 400);
    assert_eq!(EditError::Overlap.status(), 500);
    assert_eq!(EditError::ScratchFull.to_string(), "scratch_full");
}

#[test]
fn bare_received_param_gets_value() {
    let input = BASE.replace(";rport\r\n", ";received\r\n");
    let out = apply(&input, |e| e.set_received_rport(Some(b"9.9.9.9"), Some(1)));
    assert_eq!(
        out,
        proper(&input).replace(";received\r\n", ";received=9.9.9.9\r\n")
    );
}

#[test]
fn remove_top_via_across_fold() {
    let input = BASE.replace(";rport\r\n", ";rport,\r\n SIP/2.0/TCP b;branch=2\r\n");
    let out = apply(&input, |e| e.remove_top_via());
    assert_eq!(
        out,
        proper(&input).replace(
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776;rport,\r\n SIP/2.0/TCP",
            "Via: SIP/2.0/TCP"
        )
    );
    let m = parse(out.as_bytes()).unwrap();
    assert_eq!(m.top_via().unwrap().branch(), Some(&b"2"[..]));
}
