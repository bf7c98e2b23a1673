//! Answering a request that did not parse: [`parse_for_reply`].
//!
//! [`super::parse`] stops at the first error, so a request with 300 header lines, a NUL in a
//! header or a bad SIP version leaves the caller with no [`Message`] to copy Via, From, To,
//! Call-ID and CSeq from, and such a request used to be dropped without a word. This module
//! re-reads the bytes leniently and keeps only the lines a reply copies.
//!
//! Invariants:
//! - Only requests are answered, never an ACK, and only for errors of the message's content
//!   (see [`answers`]); a datagram that does not even look like a request (no start line, a
//!   status line, no end of line) or has no usable Via gets `None`: count it and drop it.
//! - A line that holds a NUL or a bare CR is never kept, so smuggled bytes are never reflected
//!   into the reply. A line is kept byte for byte (name form, folds and line end), like
//!   [`super::parse`] would have stored it.
//! - At most [`INLINE_HEADERS`] lines are kept (the first ones of the wanted names), none
//!   longer than [`MAX_KEPT_LINE`] and at most [`MAX_KEPT_BYTES`] in all, so a reply stays
//!   small and parseable whatever the request held; nothing allocates and nothing panics. The
//!   view is for building the reply only: it has no body and none of the other headers.

use memchr::{memchr, memchr2, memrchr};

use super::Span;
use super::error::ParseError;
use super::message::{
    Header, INLINE_HEADERS, Message, StartLine, blank_line_at, logical_line_end, skip_crlf,
    split_name,
};
use super::names::{HeaderName, Method};
use super::scan::{is_token_str, trim_range};

/// The longest header line a reply view keeps (longer ones, such as a Via merged with a huge
/// line, are left out).
pub(crate) const MAX_KEPT_LINE: usize = 4096;

/// The most header bytes a reply view keeps in all.
pub(crate) const MAX_KEPT_BYTES: usize = 16 * 1024;

/// Does a request failing to parse with `e` get an answer (with `e.status()`)?
///
/// Yes for errors in the message's content: too many header lines or bytes (513), a NUL or
/// bare CR (400), a header line without a colon (400), a bad or missing Content-Length
/// (400; RFC 3261 §18.3 asks for 400 when it exceeds the datagram) and a bad version (505).
/// No for what does not frame as a request at all: `Empty` (a keep-alive), `Truncated`, a bad
/// start line or status code.
pub fn answers(e: ParseError) -> bool {
    matches!(
        e,
        ParseError::BadVersion
            | ParseError::BadHeaderLine
            | ParseError::IllegalByte
            | ParseError::TooManyHeaders
            | ParseError::HeadersTooLarge
            | ParseError::BodyTooLarge
            | ParseError::BadContentLength
            | ParseError::DuplicateContentLength
            | ParseError::ContentLengthTooLarge
            | ParseError::MissingContentLength
    )
}

/// A view of a request that failed to parse with `e`, holding only its Via, From, To,
/// Call-ID and CSeq lines: enough for [`super::build::response`] and for routing the reply by
/// the top Via. `None` when the error is not answered ([`answers`]), for a response or an
/// ACK, or when no clean Via line is left.
///
/// ```
/// use sipedge::wire::{ParseError, build, parse, parse_for_reply};
///
/// let req = b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
/// From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\n\
/// CSeq: 1 OPTIONS\r\nSubject: a\0b\r\n\r\n";
/// let e = parse(req).unwrap_err();
/// assert_eq!(e, ParseError::IllegalByte);
/// let view = parse_for_reply(req, e).unwrap();
/// let mut out = Vec::new();
/// build::response(&view, e.status(), e.reason().as_bytes(), None, &[], &mut out);
/// let reply = parse(&out).unwrap();
/// assert_eq!(reply.code(), Some(400));
/// assert_eq!(reply.call_id(), Some(&b"c"[..]));
/// ```
pub fn parse_for_reply(bytes: &[u8], e: ParseError) -> Option<Message<'_>> {
    if !answers(e) {
        return None;
    }
    let ls = skip_crlf(bytes);
    let nl = ls + memchr(b'\n', bytes.get(ls..)?)?;
    let line = bytes.get(ls..nl)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = request_line(line, ls)?;
    let mut kept = [EMPTY; INLINE_HEADERS];
    let mut n = 0;
    let mut kept_bytes = 0;
    let mut pos = nl + 1;
    let headers_end = loop {
        if pos >= bytes.len() || blank_line_at(bytes, pos).is_some() {
            break pos.min(bytes.len());
        }
        // The last line may end the buffer exactly (no byte left to rule out a fold).
        let next = match logical_line_end(bytes, pos) {
            Some(next) => next,
            None if bytes.last() == Some(&b'\n') => bytes.len(),
            None => break pos,
        };
        let len = next - pos;
        if len <= MAX_KEPT_LINE
            && kept_bytes + len <= MAX_KEPT_BYTES
            && let Some(h) = wanted(bytes, pos, next)
            && let Some(slot) = kept.get_mut(n)
        {
            *slot = h;
            n += 1;
            kept_bytes += len;
        }
        pos = next;
    };
    let head_end = blank_line_at(bytes, headers_end).unwrap_or(headers_end);
    let m = Message::reply_view(
        bytes,
        start,
        Span::new(ls, ls + line.len()),
        kept.get(..n).unwrap_or(&[]),
        headers_end,
        head_end,
    );
    m.top_via()?;
    Some(m)
}

const EMPTY: Header = Header {
    name: HeaderName::Other,
    name_span: Span { start: 0, end: 0 },
    value: Span { start: 0, end: 0 },
    line: Span { start: 0, end: 0 },
};

/// `Method SP Request-URI [SP version]`, any version (a bad one is what 505 answers) or none
/// (a NUL or bare CR may stand where the second space was). `None` for a status line, an ACK
/// or a line without a method token and something after it.
fn request_line(line: &[u8], base: usize) -> Option<StartLine> {
    let sp1 = memchr(b' ', line)?;
    let sp2 = memrchr(b' ', line)
        .filter(|&s| s > sp1)
        .unwrap_or(line.len());
    let method = line.get(..sp1)?;
    let uri = line.get(sp1 + 1..sp2)?;
    let is_status = method
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
    if is_status || !is_token_str(method) || uri.is_empty() {
        return None;
    }
    let m = Method::from_bytes(method);
    if m == Method::Ack {
        return None;
    }
    Some(StartLine::Request {
        method: m,
        method_span: Span::new(base, base + sp1),
        uri: Span::new(base + sp1 + 1, base + sp2),
    })
}

/// The header on `bytes[pos..next]` if a reply copies it and the line is clean.
fn wanted(bytes: &[u8], pos: usize, next: usize) -> Option<Header> {
    let (name_end, colon) = split_name(bytes, pos, next).ok()?;
    let name = HeaderName::from_bytes(bytes.get(pos..name_end)?);
    let copied = matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    );
    if !copied || !clean(bytes.get(pos..next)?) {
        return None;
    }
    let (mut va, mut vb) = trim_range(bytes, colon + 1, next);
    if va == vb {
        (va, vb) = (colon + 1, colon + 1);
    }
    Some(Header {
        name,
        name_span: Span::new(pos, name_end),
        value: Span::new(va, vb),
        line: Span::new(pos, next),
    })
}

/// No NUL, and every CR followed by LF.
fn clean(line: &[u8]) -> bool {
    let mut i = 0;
    while let Some(k) = line.get(i..).and_then(|r| memchr2(b'\0', b'\r', r)) {
        let at = i + k;
        if line.get(at) == Some(&b'\0') || line.get(at + 1) != Some(&b'\n') {
            return false;
        }
        i = at + 2;
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::wire::{build, parse, validate_response};

    const HEAD: &str = "INVITE sip:b@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKr1;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKr0\r\n\
Max-Forwards: 70\r\n\
From: <sip:a@example.com>;tag=f1\r\n\
To: <sip:b@example.com>\r\n\
Call-ID: rej-1\r\n\
CSeq: 7 INVITE\r\n";

    /// Build the reply from the view and check it carries the request's identity.
    fn answer(bytes: &[u8]) -> (ParseError, Vec<u8>) {
        let e = parse(bytes).unwrap_err();
        let view = parse_for_reply(bytes, e).unwrap_or_else(|| panic!("{e:?} not answered"));
        let mut out = Vec::new();
        build::response(
            &view,
            e.status(),
            e.reason().as_bytes(),
            None,
            &[],
            &mut out,
        );
        let r = parse(&out).unwrap();
        validate_response(&r).unwrap();
        assert_eq!(r.code(), Some(e.status()));
        assert_eq!(r.call_id(), Some(&b"rej-1"[..]));
        assert_eq!(r.cseq().unwrap().num, 7);
        assert_eq!(r.vias().count(), 2);
        assert_eq!(r.top_via().unwrap().branch(), Some(&b"z9hG4bKr1"[..]));
        (e, out)
    }

    #[test]
    fn too_many_headers_gets_513() {
        let mut s = String::from(HEAD);
        for i in 0..300 {
            s.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        assert_eq!(answer(s.as_bytes()).0, ParseError::TooManyHeaders);
        // The identity headers may come after the limit: they are still found.
        let mut s = String::from("INVITE sip:b@example.com SIP/2.0\r\n");
        for i in 0..300 {
            s.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        s.push_str(HEAD.split_once("\r\n").unwrap().1);
        s.push_str("\r\n");
        assert_eq!(answer(s.as_bytes()).0, ParseError::TooManyHeaders);
    }

    #[test]
    fn one_huge_header_line_gets_513() {
        let s = format!(
            "{HEAD}X-Big: {}\r\n\r\n",
            "a".repeat(crate::wire::MAX_HEAD_BYTES + 10)
        );
        assert_eq!(answer(s.as_bytes()).0, ParseError::HeadersTooLarge);
        // Even with no end of head in sight (a stream buffer cut short).
        let s = format!("{HEAD}X-Big: {}", "a".repeat(crate::wire::MAX_HEAD_BYTES));
        let view = parse_for_reply(s.as_bytes(), ParseError::HeadersTooLarge).unwrap();
        assert_eq!(view.call_id(), Some(&b"rej-1"[..]));
        // A wanted line merged with the huge one (its line end lost) is left out.
        let s = format!(
            "{}X-Big: {}\r\n\r\n",
            HEAD.replace("CSeq: 7 INVITE\r\n", "CSeq: 7 I"),
            "a".repeat(crate::wire::MAX_HEAD_BYTES + 10)
        );
        let e = parse(s.as_bytes()).unwrap_err();
        let view = parse_for_reply(s.as_bytes(), e).unwrap();
        assert_eq!((view.call_id(), view.cseq()), (Some(&b"rej-1"[..]), None));
        let mut out = Vec::new();
        build::response(&view, 513, b"Message Too Large", None, &[], &mut out);
        assert!(out.len() < 1024);
    }

    #[test]
    fn kept_lines_are_bounded() {
        let mut s = String::from(HEAD);
        for i in 0..200 {
            s.push_str(&format!(
                "Via: SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bK{i}{}\r\n",
                "x".repeat(200)
            ));
        }
        s.push_str("Subject: \0\r\n\r\n");
        let view = parse_for_reply(s.as_bytes(), ParseError::IllegalByte).unwrap();
        let kept: usize = view.headers().iter().map(|h| h.line.len()).sum();
        assert!(kept <= MAX_KEPT_BYTES && view.headers().len() <= INLINE_HEADERS);
        assert_eq!(view.call_id(), Some(&b"rej-1"[..]));
    }

    #[test]
    fn smuggling_bytes_get_400_and_are_not_reflected() {
        for bad in [
            "Subject: a\0b\r\n",
            "Subject: a\rInjected: 1\r\n",
            "X-Fold: a\r\n b\rc\r\n",
        ] {
            let s = format!("{HEAD}{bad}Content-Length: 0\r\n\r\n");
            let (e, out) = answer(s.as_bytes());
            assert_eq!(e, ParseError::IllegalByte, "{bad:?}");
            assert!(!out.contains(&0) && !out.windows(8).any(|w| w == b"Injected"));
        }
        // A tainted Via is not copied; the clean one still routes the reply.
        let s = HEAD.replace("192.0.2.9;", "192.0.2.9\0;");
        let s = format!("{s}\r\n");
        let e = parse(s.as_bytes()).unwrap_err();
        let v = parse_for_reply(s.as_bytes(), e).unwrap();
        assert_eq!(v.vias().count(), 1);
        // With no clean Via there is nowhere to answer.
        let s = HEAD.replace(
            "Via: SIP/2.0/UDP 192.0.2.1:5062;",
            "Via: SIP/2.0/UDP \r192;",
        );
        let s = s.replace("192.0.2.9;", "192.0.2.9\0;");
        let s = format!("{s}\r\n");
        let e = parse(s.as_bytes()).unwrap_err();
        assert_eq!(e, ParseError::IllegalByte);
        assert!(parse_for_reply(s.as_bytes(), e).is_none());
    }

    #[test]
    fn bad_version_and_content_errors_are_answered() {
        let s = format!("{HEAD}\r\n").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
        assert_eq!(answer(s.as_bytes()).0, ParseError::BadVersion);
        let s = format!("{HEAD}Content-Length: 99\r\n\r\nv=0\r\n");
        assert_eq!(answer(s.as_bytes()).0, ParseError::ContentLengthTooLarge);
        let s = format!("{HEAD}Content-Length: x\r\n\r\n");
        assert_eq!(answer(s.as_bytes()).0, ParseError::BadContentLength);
        let s = format!("{HEAD}No colon here\r\n\r\n");
        assert_eq!(answer(s.as_bytes()).0, ParseError::BadHeaderLine);
    }

    #[test]
    fn not_answered() {
        let ok = format!("{HEAD}\r\n");
        // Errors that are not answered, whatever the bytes.
        for e in [
            ParseError::Empty,
            ParseError::Truncated,
            ParseError::BadStartLine,
            ParseError::BadStatusCode,
        ] {
            assert!(parse_for_reply(ok.as_bytes(), e).is_none(), "{e:?}");
        }
        // Responses and ACKs are never answered.
        let ack = ok.replace("INVITE", "ACK");
        assert!(parse_for_reply(ack.as_bytes(), ParseError::IllegalByte).is_none());
        let resp = format!("SIP/2.0 200 OK\r\n{}", ok.split_once("\r\n").unwrap().1);
        assert!(parse_for_reply(resp.as_bytes(), ParseError::IllegalByte).is_none());
        // Nothing to answer with.
        assert!(
            parse_for_reply(b"INVITE sip:x SIP/2.0\r\n\r\n", ParseError::IllegalByte).is_none()
        );
        assert!(parse_for_reply(b"INVITE sip:x SIP/2.0", ParseError::IllegalByte).is_none());
        assert!(parse_for_reply(b"", ParseError::IllegalByte).is_none());
    }

    #[test]
    fn never_panics_and_spans_stay_inside() {
        let base = format!("{HEAD}Subject: x\r\n y\r\nContent-Length: 0\r\n\r\n");
        let b = base.as_bytes();
        for cut in 0..=b.len() {
            for e in [ParseError::IllegalByte, ParseError::BadVersion] {
                if let Some(m) = parse_for_reply(&b[..cut], e) {
                    assert!(m.len() <= cut);
                    for h in m.headers() {
                        assert!(h.line.end as usize <= cut && h.line.get(m.buf()).ends_with(b"\n"));
                    }
                    let mut out = Vec::new();
                    build::response(&m, 400, b"Bad", None, &[], &mut out);
                    parse(&out).unwrap();
                }
            }
        }
    }
}
