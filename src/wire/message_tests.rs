//! Table tests for start lines, header scanning and framing (UDP and stream).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use super::*;

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn msg(head: &str) -> Vec<u8> {
    format!("{head}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n").into_bytes()
}

#[test]
fn request_line() {
    let m = parse(INVITE).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.method_bytes(), b"INVITE");
    assert_eq!(m.request_uri(), Some(&b"sip:bob@biloxi.com"[..]));
    assert_eq!(m.code(), None);
    assert_eq!(m.headers().len(), 9);
    assert_eq!(m.body(), b"v=0\n");
    assert_eq!(m.bytes(), INVITE);
    assert_eq!(m.content_length(), Some(4));
    let he = m.headers_end() as usize;
    assert_eq!(&INVITE[he..he + 2], b"\r\n");
    assert_eq!(
        m.header_value(HeaderName::ContentType),
        Some(&b"application/sdp"[..])
    );
    assert_eq!(
        m.find_header(b"content-TYPE"),
        Some(&b"application/sdp"[..])
    );
    assert_eq!(m.find_header(b"c"), Some(&b"application/sdp"[..]));
    let h = m.header(HeaderName::CallId).unwrap();
    assert_eq!(
        h.line.get(INVITE),
        b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    );
    assert_eq!(h.name_span.get(INVITE), b"Call-ID");
}

#[test]
fn extension_method_and_status_lines() {
    let b = msg("FOO sip:x SIP/2.0");
    let m = parse(&b).unwrap();
    assert_eq!(m.method(), Some(Method::Other));
    assert_eq!(m.method_bytes(), b"FOO");

    let table: &[(&str, u16, &[u8])] = &[
        ("SIP/2.0 200 OK", 200, b"OK"),
        ("SIP/2.0 180 Ringing Now", 180, b"Ringing Now"),
        ("SIP/2.0 100", 100, b""),
        ("SIP/2.0 699 ", 699, b""),
        ("sip/2.0 486 Busy Here", 486, b"Busy Here"),
    ];
    for (line, code, reason) in table {
        let b = msg(line);
        let m = parse(&b).unwrap();
        assert!(!m.is_request());
        assert_eq!(m.code(), Some(*code), "{line}");
        assert_eq!(m.reason(), Some(*reason), "{line}");
        assert_eq!(m.method(), None);
        assert_eq!(m.method_bytes(), b"");
        assert_eq!(m.request_uri(), None);
    }
}

#[test]
fn start_line_errors() {
    let table: &[(&str, ParseError)] = &[
        ("SIP/2.1 200 OK", ParseError::BadVersion),
        ("SIP/3.0 200 OK", ParseError::BadVersion),
        ("INVITE sip:x SIP/1.0", ParseError::BadVersion),
        ("INVITE sip:x HTTP/1.1", ParseError::BadStartLine),
        ("SIP/2.0 99 Low", ParseError::BadStatusCode),
        ("SIP/2.0 700 High", ParseError::BadStatusCode),
        ("SIP/2.0 20 OK", ParseError::BadStatusCode),
        ("SIP/2.0 2000 OK", ParseError::BadStatusCode),
        ("SIP/2.0 abc OK", ParseError::BadStatusCode),
        ("INVITE", ParseError::BadStartLine),
        ("INVITE SIP/2.0", ParseError::BadStartLine),
        ("INV@TE sip:x SIP/2.0", ParseError::BadStartLine),
        ("INVITE sip:x  SIP/2.0", ParseError::BadStartLine),
    ];
    for (line, err) in table {
        assert_eq!(parse(&msg(line)).unwrap_err(), *err, "{line}");
    }
    assert_eq!(parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b"\r\n\r\n").unwrap_err(), ParseError::Empty);
    assert_eq!(
        parse(b"INVITE sip:x SIP/2.0").unwrap_err(),
        ParseError::Truncated
    );
    assert_eq!(
        parse(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n").unwrap_err(),
        ParseError::Truncated
    );
    assert_eq!(parse(&msg("SIP/2.1 200 OK")).unwrap_err().status(), 505);
}

#[test]
fn leading_crlf_skipped_and_bare_lf() {
    let b = b"\r\n\r\nOPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h\nCall-ID: a\n\nbody";
    let m = parse(b).unwrap();
    assert_eq!(m.method(), Some(Method::Options));
    assert_eq!(m.call_id(), Some(&b"a"[..]));
    assert_eq!(m.body(), b"body");
    assert_eq!(m.headers()[1].line.get(b), b"Call-ID: a\n");
}

#[test]
fn header_line_errors() {
    let table: &[(&[u8], ParseError)] = &[
        (
            b"OPTIONS sip:x SIP/2.0\r\nNoColon\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\n: empty\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\n folded: x\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nBad Name: x\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
    ];
    for (b, err) in table {
        assert_eq!(
            parse(b).unwrap_err(),
            *err,
            "{}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn folding_and_odd_spacing() {
    let b = b"OPTIONS sip:x SIP/2.0\r\nSubject :   I know you're there,\r\n    pick up the phone \r\n\t and talk to me!  \r\nv:SIP/2.0/UDP h\r\n\r\n";
    let m = parse(b).unwrap();
    let h = m.header(HeaderName::Subject).unwrap();
    assert_eq!(h.name_span.get(b), b"Subject");
    assert_eq!(
        h.value.get(b),
        &b"I know you're there,\r\n    pick up the phone \r\n\t and talk to me!"[..]
    );
    assert!(h.line.get(b).ends_with(b"to me!  \r\n"));
    assert_eq!(m.header_value(HeaderName::Via), Some(&b"SIP/2.0/UDP h"[..]));
    assert_eq!(m.headers().len(), 2);
}

#[test]
fn too_many_headers() {
    let mut s = String::from("OPTIONS sip:x SIP/2.0\r\n");
    for i in 0..MAX_HEADERS {
        s.push_str(&format!("X-{i}: {i}\r\n"));
    }
    let ok = format!("{s}\r\n");
    assert_eq!(parse(ok.as_bytes()).unwrap().headers().len(), MAX_HEADERS);
    let mut spill = HeaderSpill::new();
    assert_eq!(
        parse_with(ok.as_bytes(), &mut spill)
            .unwrap()
            .headers()
            .len(),
        MAX_HEADERS
    );
    let bad = format!("{s}X-last: 1\r\n\r\n");
    let e = parse(bad.as_bytes()).unwrap_err();
    assert_eq!(e, ParseError::TooManyHeaders);
    assert_eq!(e.status(), 513);
    assert_eq!(
        parse_with(bad.as_bytes(), &mut spill).unwrap_err(),
        ParseError::TooManyHeaders
    );
}

/// `n` header lines: Via first, `X-<i>` fillers, and Call-ID / CSeq / a folded Subject last,
/// so the accessors must find headers past the inline array.
fn with_headers(n: usize) -> String {
    let mut s = String::from("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n");
    for i in 0..n - 4 {
        s.push_str(&format!("X-{i}: v{i}\r\n"));
    }
    s.push_str("Subject: a\r\n b\r\nCall-ID: big\r\nCSeq: 9 OPTIONS\r\n\r\n");
    s
}

#[test]
fn spill_past_the_inline_array() {
    let mut spill = HeaderSpill::new();
    assert_eq!(spill.capacity(), 0);
    for n in [
        4,
        INLINE_HEADERS - 1,
        INLINE_HEADERS,
        INLINE_HEADERS + 1,
        200,
        MAX_HEADERS,
    ] {
        let s = with_headers(n);
        let owned = parse(s.as_bytes()).unwrap();
        let m = parse_with(s.as_bytes(), &mut spill).unwrap();
        assert_eq!(m.headers().len(), n, "{n}");
        assert_eq!(owned.headers().len(), n, "{n}");
        for (a, b) in m.headers().iter().zip(owned.headers()) {
            assert_eq!((a.name, a.line, a.value), (b.name, b.line, b.value));
        }
        assert_eq!(m.call_id(), Some(&b"big"[..]), "{n}");
        assert_eq!(m.cseq().unwrap().num, 9);
        assert_eq!(m.top_via().unwrap().branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(m.header_index(HeaderName::CallId), Some(n - 2));
        if n > 4 {
            assert_eq!(
                m.find_header(format!("x-{}", n - 5).as_bytes()),
                Some(format!("v{}", n - 5).as_bytes())
            );
        }
        assert_eq!(m.bytes(), s.as_bytes());
        // The clone of a spilled message is a full message too.
        assert_eq!(m.clone().headers().len(), n);
        // Editing a spilled message writes it back byte for byte.
        let mut out = Vec::new();
        crate::wire::Edits::new(&m).write(&mut out).unwrap();
        assert_eq!(out, s.as_bytes());
    }
    // The spill grew once, to the limit, and is reused from then on.
    let cap = spill.capacity();
    assert!(cap >= MAX_HEADERS);
    let ptr = spill.v.as_ptr();
    for n in [MAX_HEADERS, INLINE_HEADERS + 1, 3 * INLINE_HEADERS] {
        let s = with_headers(n);
        assert_eq!(
            parse_with(s.as_bytes(), &mut spill)
                .unwrap()
                .headers()
                .len(),
            n
        );
        assert_eq!((spill.capacity(), spill.v.as_ptr()), (cap, ptr));
    }
    // A stream message spills the same way.
    let s = with_headers(100).replace("\r\n\r\n", "\r\nl: 0\r\n\r\n");
    let m = parse_stream_message_with(s.as_bytes(), s.len(), &mut spill).unwrap();
    assert_eq!((m.headers().len(), m.content_length()), (101, Some(0)));
    assert_eq!(
        parse_stream_message(s.as_bytes(), s.len())
            .unwrap()
            .headers()
            .len(),
        101
    );
}

#[test]
fn nul_and_bare_cr_are_rejected_in_the_head_only() {
    let ok = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nSubject: s\r\n t\r\nCall-ID: c\r\n";
    // Each case puts one byte somewhere in the start line or headers.
    let bad: &[&str] = &[
        "OPTIONS sip:x\0y SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
        "OPTIONS sip:x SIP/2.0\0\r\nVia: SIP/2.0/UDP h\r\n",
        "\0OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
        "OPTIONS sip:x\ry SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
        "OPTIONS sip:x SIP/2.0\r\r\nVia: SIP/2.0/UDP h\r\n",
        "OPTIONS sip:x SIP/2.0\rVia: SIP/2.0/UDP h\r\n",
        "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\0\r\n",
        "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nX\0: 1\r\n",
        "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\rCall-ID: smuggled\r\n",
        "OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n b\rc\r\n",
        "OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n \0\r\n",
        "OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h\r\r\n",
    ];
    for head in bad {
        let b = format!("{head}Content-Length: 0\r\n\r\n");
        let e = parse(b.as_bytes()).unwrap_err();
        assert_eq!(e, ParseError::IllegalByte, "{head:?}");
        assert_eq!(e.status(), 400);
        assert_eq!(
            parse_stream_message(b.as_bytes(), b.len()).unwrap_err(),
            ParseError::IllegalByte,
            "{head:?}"
        );
    }
    // A CR that ends the buffer may still get its LF: that is a truncation, not a bare CR.
    assert_eq!(
        parse(b"OPTIONS sip:x SIP/2.0\r").unwrap_err(),
        ParseError::Truncated
    );
    assert_eq!(
        parse(b"OPTIONS sip:x SIP/2.0\r\nVia: h\r").unwrap_err(),
        ParseError::Truncated
    );
    // A CR on the blank line that is not followed by LF is not a blank line.
    assert_eq!(
        parse(b"OPTIONS sip:x SIP/2.0\r\nVia: h\r\n\rx")
            .unwrap_err()
            .status(),
        400
    );
    // LF-only and mixed line ends, folds, and any byte in the body stay accepted.
    for (head, body) in [
        (ok.to_string(), "\0\r\r\n\0"),
        (ok.replace("\r\n", "\n"), "a\rb\0"),
        (ok.replacen("\r\n", "\n", 2), ""),
    ] {
        let b = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
        let m = parse(b.as_bytes()).unwrap_or_else(|e| panic!("{head:?}: {e:?}"));
        assert_eq!(m.body(), body.as_bytes());
        assert_eq!(m.call_id(), Some(&b"c"[..]));
        let s = parse_stream_message(b.as_bytes(), b.len()).unwrap();
        assert_eq!(s.body(), body.as_bytes());
    }
    // Framing stays liberal (it only cuts at LF); the parse of the framed message rejects.
    let b = b"OPTIONS sip:x SIP/2.0\r\nSubject: a\0b\r\nl: 0\r\n\r\n";
    assert_eq!(frame_stream(b), Ok(Frame::Complete(b.len())));
    assert_eq!(
        parse_stream_message(b, b.len()).unwrap_err(),
        ParseError::IllegalByte
    );
}

#[test]
fn content_length_udp_framing() {
    let base = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n";
    // (headers, tail, expected body or error)
    type Case = (
        &'static str,
        &'static str,
        Result<&'static [u8], ParseError>,
    );
    let table: &[Case] = &[
        ("Content-Length: 3\r\n", "abcJUNK", Ok(b"abc")),
        ("l: 3\r\n", "abc", Ok(b"abc")),
        ("Content-Length:0\r\n", "\r\n\r\n", Ok(b"")),
        ("", "rest of it", Ok(b"rest of it")),
        (
            "Content-Length: 4\r\n",
            "abc",
            Err(ParseError::ContentLengthTooLarge),
        ),
        (
            "Content-Length: -1\r\n",
            "abc",
            Err(ParseError::BadContentLength),
        ),
        (
            "Content-Length: 1x\r\n",
            "abc",
            Err(ParseError::BadContentLength),
        ),
        (
            "Content-Length: \r\n",
            "abc",
            Err(ParseError::BadContentLength),
        ),
        (
            "Content-Length: 4294967296\r\n",
            "abc",
            Err(ParseError::BadContentLength),
        ),
        (
            "Content-Length: 4294967295\r\n",
            "abc",
            Err(ParseError::ContentLengthTooLarge),
        ),
        (
            "Content-Length: 1\r\nl: 1\r\n",
            "a",
            Err(ParseError::DuplicateContentLength),
        ),
    ];
    for (hdrs, tail, want) in table {
        let b = format!("{base}{hdrs}\r\n{tail}").into_bytes();
        let got = parse(&b);
        match want {
            Ok(body) => {
                let m = got.unwrap();
                assert_eq!(m.body(), *body, "{hdrs:?}");
                assert_eq!(m.bytes().len(), b.len() - (tail.len() - body.len()));
                assert_eq!(m.buf(), &b[..]);
            }
            Err(e) => assert_eq!(got.unwrap_err(), *e, "{hdrs:?}"),
        }
    }
}

#[test]
fn stream_framing() {
    let msg = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nContent-Length: 2\r\n\r\nhi";
    for cut in 0..msg.len() {
        assert_eq!(frame_stream(&msg[..cut]), Ok(Frame::Partial), "cut {cut}");
    }
    assert_eq!(frame_stream(msg), Ok(Frame::Complete(msg.len())));
    let mut two = msg.to_vec();
    two.extend_from_slice(b"OPTIONS");
    assert_eq!(frame_stream(&two), Ok(Frame::Complete(msg.len())));
    let m = parse_stream_message(&two, msg.len()).unwrap();
    assert_eq!(m.body(), b"hi");
    assert_eq!(m.bytes(), &msg[..]);

    assert_eq!(frame_stream(b"\r\n\r\nOPTIONS"), Ok(Frame::KeepAlive(4)));
    assert_eq!(frame_stream(b"\r\n"), Ok(Frame::KeepAlive(2)));
    assert_eq!(frame_stream(b""), Ok(Frame::Partial));

    let errs: &[(&[u8], ParseError)] = &[
        (
            b"OPTIONS sip:x SIP/2.0\r\nVia: h\r\n\r\n",
            ParseError::MissingContentLength,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nl: -1\r\n\r\n",
            ParseError::BadContentLength,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nl: 99999999999\r\n\r\n",
            ParseError::BadContentLength,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nl: 1048577\r\n\r\n",
            ParseError::BodyTooLarge,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\n",
            ParseError::DuplicateContentLength,
        ),
        (
            b"OPTIONS sip:x SIP/2.0\r\nno colon\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
    ];
    for (b, e) in errs {
        assert_eq!(frame_stream(b), Err(*e), "{}", String::from_utf8_lossy(b));
    }
    // Folded Content-Length is still found.
    let f = b"OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 1\r\n\r\nx";
    assert_eq!(frame_stream(f), Ok(Frame::Complete(f.len())));
    // parse_stream_message insists on the exact length and on Content-Length.
    assert_eq!(
        parse_stream_message(b"OPTIONS sip:x SIP/2.0\r\nVia: h\r\n\r\n", 33).unwrap_err(),
        ParseError::MissingContentLength
    );
    assert_eq!(
        parse_stream_message(msg, msg.len() - 1).unwrap_err(),
        ParseError::ContentLengthTooLarge
    );
    assert_eq!(
        parse_stream_message(msg, msg.len() + 1).unwrap_err(),
        ParseError::Truncated
    );
}

#[test]
fn stream_header_cap() {
    let mut b = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
    while b.len() <= MAX_HEAD_BYTES + 100 {
        b.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(frame_stream(&b), Err(ParseError::HeadersTooLarge));
    let long_line = vec![b'a'; MAX_HEAD_BYTES + 10];
    assert_eq!(frame_stream(&long_line), Err(ParseError::HeadersTooLarge));
    assert_eq!(frame_stream(&long_line[..100]), Ok(Frame::Partial));
}

#[test]
fn headers_named_and_find_other() {
    let b = b"OPTIONS sip:x SIP/2.0\r\nX-A: 1\r\nVia: a\r\nx-a: 2\r\nv: b\r\n\r\n";
    let m = parse(b).unwrap();
    let vias: Vec<&[u8]> = m
        .headers_named(HeaderName::Via)
        .map(|h| h.value.get(b))
        .collect();
    assert_eq!(vias, vec![&b"a"[..], b"b"]);
    assert_eq!(m.find_header(b"X-a"), Some(&b"1"[..]));
    assert_eq!(m.find_header(b"X-b"), None);
    assert_eq!(m.count_named(HeaderName::Via), 2);
    assert_eq!(m.header_index(HeaderName::Via), Some(1));
}

#[test]
fn empty_value_span_stays_on_its_line() {
    let b = b"OPTIONS sip:x SIP/2.0\r\nSubject:\r\nX-E:   \r\nVia: SIP/2.0/UDP h\r\n\r\n";
    let m = parse(b).unwrap();
    let s = m.header(HeaderName::Subject).unwrap();
    assert!(s.value.is_empty());
    assert_eq!(s.value.start, s.name_span.end + 1);
    let x = m.headers()[1];
    assert_eq!(x.value.start, x.name_span.end + 1);
    assert_eq!(m.find_header(b"x-e"), Some(&b""[..]));
}
