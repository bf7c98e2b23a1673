//! Tests of the validated views: the fields they hold, the optional parts kept optional, and a
//! differential test against the validation as it was before the views (a naive reference
//! built from the `Option` accessors), over mutated messages.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::wire::{
    HeaderName, Message, Method, ParseError, Scheme, parse, validate_request, validate_response,
};

const INVITE: &str = "INVITE sip:bob@192.0.2.4:5062;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
Via: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bK0\r\n\
Max-Forwards: 70\r\n\
To: \"Bob\" <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=f1\r\n\
Call-ID: abc@host\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n";

const OK: &str = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h:5070;branch=z9hG4bKd1\r\n\
t: <sip:b@x>;tag=t2\r\nf: <sip:a@x>;tag=f1\r\ni: cid\r\nCSeq: 3 BYE\r\nl: 0\r\n\r\n";

#[test]
fn a_valid_request_holds_its_fields() {
    let m = parse(INVITE.as_bytes()).unwrap();
    let v = validate_request(&m).unwrap();
    assert_eq!(v.method(), Method::Invite);
    assert_eq!(v.request_uri(), b"sip:bob@192.0.2.4:5062;transport=udp");
    let u = v.uri();
    assert_eq!(u.scheme, Scheme::Sip);
    assert_eq!(
        (u.user, u.host, u.port),
        (Some(&b"bob"[..]), &b"192.0.2.4"[..], Some(5062))
    );
    assert_eq!(u.transport(), Some(&b"udp"[..]));
    assert_eq!(v.call_id(), b"abc@host");
    assert_eq!(v.from().uri, b"sip:alice@example.com");
    assert_eq!(v.from_tag(), Some(&b"f1"[..]));
    assert_eq!(v.from_tag_or_empty(), b"f1");
    assert_eq!(v.from_value(), b"<sip:alice@example.com>;tag=f1");
    assert_eq!(v.to().display, Some(&b"Bob"[..]));
    assert_eq!(v.to_tag(), None);
    assert_eq!(v.to_value(), b"\"Bob\" <sip:bob@example.com>");
    assert_eq!((v.cseq().num, v.cseq().method), (7, Method::Invite));
    let via = v.top_via();
    assert_eq!(
        (via.transport, via.host, via.port),
        (&b"UDP"[..], &b"10.0.0.1"[..], Some(5060))
    );
    assert_eq!(v.branch(), b"z9hG4bK1");
    // Everything else is the message's.
    assert!(std::ptr::eq(v.msg(), &m));
    assert_eq!(v.max_forwards(), Some(70));
    assert_eq!(v.vias().count(), 2);
    assert_eq!(v.headers().len(), 8);
}

#[test]
fn a_valid_response_holds_its_fields() {
    let m = parse(OK.as_bytes()).unwrap();
    let v = validate_response(&m).unwrap();
    assert_eq!(v.code(), 200);
    assert_eq!(v.call_id(), b"cid");
    assert_eq!((v.cseq().num, v.cseq().method), (3, Method::Bye));
    assert_eq!(v.top_via().port, Some(5070));
    assert_eq!(v.branch(), b"z9hG4bKd1");
    assert_eq!(v.from().uri, b"sip:a@x");
    assert_eq!(v.from_tag(), Some(&b"f1"[..]));
    assert_eq!(v.to_tag(), Some(&b"t2"[..]));
    assert_eq!(v.to_value(), b"<sip:b@x>;tag=t2");
    assert!(std::ptr::eq(v.msg(), &m));
    assert_eq!(v.reason(), Some(&b"OK"[..]));
}

/// RFC 2543 peers: no From tag and no branch still validate; the tag stays optional and the
/// branch reads as empty (the engine only keys and compares it).
#[test]
fn what_validation_does_not_require_stays_optional() {
    let b = INVITE
        .replace(";tag=f1", "")
        .replace(";branch=z9hG4bK1", "");
    let m = parse(b.as_bytes()).unwrap();
    let v = validate_request(&m).unwrap();
    assert_eq!(v.from_tag(), None);
    assert_eq!(v.from_tag_or_empty(), b"");
    assert_eq!(v.branch(), b"");
    assert_eq!(v.top_via().branch(), None);

    // An empty tag is a tag (keys take it like none); an empty branch is a bad Via.
    let b = INVITE.replace(";tag=f1", ";tag=");
    let m = parse(b.as_bytes()).unwrap();
    let v = validate_request(&m).unwrap();
    assert_eq!(v.from_tag(), Some(&b""[..]));
    assert_eq!(v.from_tag_or_empty(), b"");
    let b = INVITE.replace(";branch=z9hG4bK1", ";branch=");
    let m = parse(b.as_bytes()).unwrap();
    assert_eq!(
        validate_request(&m).map(|_| ()),
        Err(ParseError::BadHeaderValue(HeaderName::Via))
    );

    let r = OK.replace(";tag=t2", "").replace(";branch=z9hG4bKd1", "");
    let m = parse(r.as_bytes()).unwrap();
    let v = validate_response(&m).unwrap();
    assert_eq!((v.to_tag(), v.branch()), (None, &b""[..]));
}

/// Each mandatory field missing or bad is refused, with the error it always had.
#[test]
fn each_missing_or_bad_field_is_refused() {
    use HeaderName as H;
    use ParseError as E;
    let table: &[(&str, &str, ParseError)] = &[
        (
            "sip:bob@192.0.2.4:5062;transport=udp",
            "mailto:bob",
            E::UnsupportedUriScheme,
        ),
        (
            "sip:bob@192.0.2.4:5062;transport=udp",
            "sip:bob@",
            E::BadUri,
        ),
        ("Call-ID: abc@host\r\n", "", E::MissingHeader(H::CallId)),
        (
            "Call-ID: abc@host",
            "Call-ID: ",
            E::BadHeaderValue(H::CallId),
        ),
        (
            "Call-ID: abc@host\r\n",
            "Call-ID: a\r\ni: b\r\n",
            E::DuplicateHeader(H::CallId),
        ),
        (
            "From: <sip:alice@example.com>;tag=f1\r\n",
            "",
            E::MissingHeader(H::From),
        ),
        (
            "From: <sip:alice@example.com>",
            "From: <sip:alice@example.com",
            E::BadHeaderValue(H::From),
        ),
        (
            "To: \"Bob\" <sip:bob@example.com>\r\n",
            "",
            E::MissingHeader(H::To),
        ),
        ("To: \"Bob\" <", "To: \"Bob <", E::BadHeaderValue(H::To)),
        ("CSeq: 7 INVITE\r\n", "", E::MissingHeader(H::CSeq)),
        (
            "CSeq: 7 INVITE",
            "CSeq: seven INVITE",
            E::BadHeaderValue(H::CSeq),
        ),
        ("CSeq: 7 INVITE", "CSeq: 7 BYE", E::CSeqMethodMismatch),
        (
            "CSeq: 7 INVITE\r\n",
            "CSeq: 7 INVITE\r\nCSeq: 8 INVITE\r\n",
            E::DuplicateHeader(H::CSeq),
        ),
        (
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
Via: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bK0\r\n",
            "",
            E::MissingHeader(H::Via),
        ),
        (
            "Via: SIP/2.0/UDP 10.0.0.1:5060",
            "Via: SIP/2.0/UDP",
            E::BadHeaderValue(H::Via),
        ),
        (
            "Max-Forwards: 70",
            "Max-Forwards: 300",
            E::BadHeaderValue(H::MaxForwards),
        ),
    ];
    for (from, to, err) in table {
        let b = INVITE.replacen(from, to, 1);
        assert_ne!(b, INVITE, "substitution {from:?} did not apply");
        let m = parse(b.as_bytes()).unwrap();
        let got = validate_request(&m).map(|_| ());
        assert_eq!(got, Err(*err), "{from:?} -> {to:?}");
        assert_eq!(got, reference_request(&m), "{from:?} -> {to:?}");
    }
}

/// With several problems, the first in the old order is the error: the Request-URI, then a
/// missing name, a repeated one, then bad values (Call-ID, Via, From, To, CSeq), then the CSeq
/// method, then Max-Forwards.
#[test]
fn the_first_problem_in_the_old_order_wins() {
    use HeaderName as H;
    use ParseError as E;
    let table: &[(&[(&str, &str)], ParseError)] = &[
        (
            &[
                ("sip:bob@192.0.2.4:5062;transport=udp", "x:y"),
                ("CSeq: 7 INVITE\r\n", ""),
            ],
            E::UnsupportedUriScheme,
        ),
        (
            &[
                ("Call-ID: abc@host", "Call-ID: "),
                ("CSeq: 7 INVITE\r\n", ""),
            ],
            E::MissingHeader(H::CSeq),
        ),
        (
            &[
                ("To: \"Bob\" <", "To: \"Bob <"),
                ("Content-Length: 0\r\n", "c: a/b\r\nc: a/b\r\n"),
            ],
            E::DuplicateHeader(H::ContentType),
        ),
        (
            &[
                ("Call-ID: abc@host", "Call-ID: "),
                ("Via: SIP/2.0/UDP 10.0.0.1:5060", "Via: x"),
            ],
            E::BadHeaderValue(H::CallId),
        ),
        (
            &[
                ("CSeq: 7 INVITE", "CSeq: 7 BYE"),
                ("To: \"Bob\" <", "To: \"Bob <"),
            ],
            E::BadHeaderValue(H::To),
        ),
        (
            &[
                ("CSeq: 7 INVITE", "CSeq: 7 BYE"),
                ("Max-Forwards: 70", "Max-Forwards: x"),
            ],
            E::CSeqMethodMismatch,
        ),
    ];
    for (subs, err) in table {
        let mut b = INVITE.to_string();
        for (from, to) in subs.iter() {
            let before = b.clone();
            b = b.replacen(from, to, 1);
            assert_ne!(b, before, "substitution {from:?} did not apply");
        }
        let m = parse(b.as_bytes()).unwrap();
        let got = validate_request(&m).map(|_| ());
        assert_eq!(got, Err(*err), "{subs:?}");
        assert_eq!(got, reference_request(&m), "{subs:?}");
    }
}

/// Validation as it was before the views, from the `Option` accessors: the reference.
fn reference_common(m: &Message) -> Result<(), ParseError> {
    use HeaderName as H;
    for name in [H::Via, H::To, H::From, H::CallId, H::CSeq] {
        if m.header(name).is_none() {
            return Err(ParseError::MissingHeader(name));
        }
    }
    for name in [
        H::CallId,
        H::From,
        H::To,
        H::CSeq,
        H::MaxForwards,
        H::ContentLength,
        H::ContentType,
    ] {
        if m.count_named(name) > 1 {
            return Err(ParseError::DuplicateHeader(name));
        }
    }
    if m.call_id().is_none_or(<[u8]>::is_empty) {
        return Err(ParseError::BadHeaderValue(H::CallId));
    }
    if !m.top_via().is_some_and(|v| v.params_well_formed()) {
        return Err(ParseError::BadHeaderValue(H::Via));
    }
    if m.from().is_none() {
        return Err(ParseError::BadHeaderValue(H::From));
    }
    if m.to().is_none() {
        return Err(ParseError::BadHeaderValue(H::To));
    }
    if m.cseq().is_none() {
        return Err(ParseError::BadHeaderValue(H::CSeq));
    }
    Ok(())
}

fn reference_request(m: &Message) -> Result<(), ParseError> {
    m.parsed_request_uri()?;
    reference_common(m)?;
    let cseq = m
        .cseq()
        .ok_or(ParseError::BadHeaderValue(HeaderName::CSeq))?;
    if cseq.method_bytes != m.method_bytes() {
        return Err(ParseError::CSeqMethodMismatch);
    }
    if m.header(HeaderName::MaxForwards).is_some() && m.max_forwards().is_none_or(|n| n > 255) {
        return Err(ParseError::BadHeaderValue(HeaderName::MaxForwards));
    }
    Ok(())
}

fn reference_response(m: &Message) -> Result<(), ParseError> {
    if m.is_request() {
        return Err(ParseError::WrongKind);
    }
    reference_common(m)?;
    if m.vias().nth(1).is_some_and(|v| !v.params_well_formed()) {
        return Err(ParseError::BadHeaderValue(HeaderName::Via));
    }
    Ok(())
}

/// Validates `m` both ways and, when it passes, checks every field against the accessor.
fn check(m: &Message) {
    match validate_request(m) {
        Ok(v) => {
            assert_eq!(reference_request(m), Ok(()));
            // Compared with a fresh parse, whose accessors have memoised nothing yet.
            let f = parse(m.bytes()).unwrap();
            assert_eq!(Some(v.method()), f.method());
            assert_eq!(Some(v.request_uri()), f.request_uri());
            assert_eq!(Ok(v.uri()), f.parsed_request_uri());
            assert_eq!(Some(v.call_id()), f.call_id());
            assert!(!v.call_id().is_empty());
            assert_eq!(Some(v.from()), f.from());
            assert_eq!(v.from_tag(), f.from_tag());
            assert_eq!(Some(v.from_value()), f.header_value(HeaderName::From));
            assert_eq!(Some(v.to()), f.to());
            assert_eq!(v.to_tag(), f.to_tag());
            assert_eq!(Some(v.to_value()), f.header_value(HeaderName::To));
            assert_eq!(Some(v.cseq()), f.cseq());
            assert_eq!(v.cseq().method_bytes, f.method_bytes());
            assert_eq!(Some(v.top_via()), f.top_via());
            assert_eq!(
                v.branch(),
                f.top_via().and_then(|t| t.branch()).unwrap_or(&[])
            );
        }
        Err(e) => assert_eq!(reference_request(m), Err(e)),
    }
    match validate_response(m) {
        Ok(v) => {
            assert_eq!(reference_response(m), Ok(()));
            let f = parse(m.bytes()).unwrap();
            assert_eq!(Some(v.code()), f.code());
            assert_eq!(Some(v.call_id()), f.call_id());
            assert_eq!(Some(v.from()), f.from());
            assert_eq!(v.from_tag(), f.from_tag());
            assert_eq!(v.to_tag(), f.to_tag());
            assert_eq!(Some(v.to_value()), f.header_value(HeaderName::To));
            assert_eq!(Some(v.cseq()), f.cseq());
            assert_eq!(Some(v.top_via()), f.top_via());
            assert_eq!(
                v.branch(),
                f.top_via().and_then(|t| t.branch()).unwrap_or(&[])
            );
        }
        Err(e) => assert_eq!(reference_response(m), Err(e)),
    }
}

use crate::wire::robust_tests::Rng;

/// Bytes and whole header lines that move validation: the mutants below insert, delete and
/// duplicate them, so every check fails now and then, and passes often.
const PIECES: &[&str] = &[
    "Call-ID: x\r\n",
    "i: \r\n",
    "CSeq: 1 INVITE\r\n",
    "CSeq: 2 BYE\r\n",
    "From: <sip:a@b>\r\n",
    "f: sip:a@b;tag=\r\n",
    "To: <sip:c@d\r\n",
    "t: sip:c@d;tag=9\r\n",
    "v: SIP/2.0/UDP 1.2.3.4;branch=\r\n",
    "Via: junk\r\n",
    "Max-Forwards: 256\r\n",
    "Max-Forwards: 0\r\n",
    "Content-Type: a/b\r\n",
];

#[test]
fn the_views_agree_with_the_reference_on_mutants() {
    let seeds = [INVITE, OK];
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut valid, mut refused) = (0, 0);
    for n in 0..20_000 {
        let seed = seeds[n % seeds.len()];
        let mut lines: Vec<String> = seed.split_inclusive("\r\n").map(str::to_string).collect();
        for _ in 0..1 + rng.below(3) {
            // Keep the start line and the empty line that ends the head.
            let at = 1 + rng.below(lines.len().saturating_sub(2));
            match rng.below(4) {
                0 => {
                    lines.remove(at);
                }
                1 => lines.insert(at, PIECES[rng.below(PIECES.len())].to_string()),
                2 => {
                    let dup = lines[at].clone();
                    lines.insert(at, dup);
                }
                _ => {
                    let l = &mut lines[at];
                    let i = rng.below(l.len().saturating_sub(2));
                    if l.is_char_boundary(i) {
                        l.replace_range(i..i, [";", ",", " ", "<", "\"", "="][rng.below(6)]);
                    }
                }
            }
            if lines.len() < 3 {
                break;
            }
        }
        let b = lines.concat();
        let Ok(m) = parse(b.as_bytes()) else {
            continue;
        };
        check(&m);
        if validate_request(&m).is_ok() || validate_response(&m).is_ok() {
            valid += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes must be common, or the comparison exercises little.
    assert!(
        valid > 3_000 && refused > 3_000,
        "{valid} valid, {refused} refused"
    );
}
