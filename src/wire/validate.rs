//! Proxy-level validation of parsed messages (RFC 3261 §16.3 "request validation").
//!
//! Invariants: validation reads the message only and returns the first problem as a small
//! `Copy` [`ParseError`], or on success the validated view ([`ValidRequest`],
//! [`ValidResponse`]) with the headers it proved, each read once: the engine trusts those
//! fields and never re-reads them as `Option`s. These two functions are the only makers of
//! the views. Validation is separate from parsing so a proxy can still route responses and
//! answer malformed requests with the right status code.
//!
//! Missing Max-Forwards is deliberately *not* an error of [`validate_request`]: RFC 3261 §16.6
//! step 3 says a proxy MUST add it when absent (see `Edits::decrement_max_forwards`). Callers
//! that want strictness use [`require_max_forwards`]; [`check_hops`] gives 483 for zero.

use super::error::ParseError;
use super::message::{Message, StartLine};
use super::names::HeaderName;
use super::scan::parse_u32;
use super::valid::{Common, ValidRequest, ValidResponse};
use super::values::parse_cseq;

const REQUIRED: [HeaderName; 5] = [
    HeaderName::Via,
    HeaderName::To,
    HeaderName::From,
    HeaderName::CallId,
    HeaderName::CSeq,
];

const SINGLE: [HeaderName; 7] = [
    HeaderName::CallId,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ContentType,
];

/// Slot of a header name in the one-pass count of [`common`] (the union of REQUIRED and SINGLE).
fn slot(name: HeaderName) -> Option<usize> {
    Some(match name {
        HeaderName::Via => 0,
        HeaderName::To => 1,
        HeaderName::From => 2,
        HeaderName::CallId => 3,
        HeaderName::CSeq => 4,
        HeaderName::MaxForwards => 5,
        HeaderName::ContentLength => 6,
        HeaderName::ContentType => 7,
        _ => return None,
    })
}

/// What the one pass over the header lines found: per slot, how many lines and the first.
struct Seen<'m, 'a> {
    m: &'m Message<'a>,
    counts: [u32; 8],
    first: [usize; 8],
}

impl<'a> Seen<'_, 'a> {
    fn count(&self, name: HeaderName) -> u32 {
        slot(name)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The value of the first line called `name`: what `Message::header_value` returns.
    fn value(&self, name: HeaderName) -> Option<&'a [u8]> {
        let i = *self.first.get(slot(name)?)?;
        let h = self.m.headers().get(i)?;
        Some(h.value.get(self.m.buf()))
    }
}

/// The checks requests and responses share; on success, the headers they proved, each read
/// once (the header lines are walked once, for the counts and the first of each name).
fn common<'m, 'a>(m: &'m Message<'a>) -> Result<(Common<'a>, Seen<'m, 'a>), ParseError> {
    // One pass over the header lines counts every name checked below (instead of one scan
    // per name) and notes where each first occurs; the checks then report in the same order
    // as before: the first missing REQUIRED name, then the first repeated SINGLE name.
    let mut seen = Seen {
        m,
        counts: [0; 8],
        first: [usize::MAX; 8],
    };
    for (i, h) in m.headers().iter().enumerate() {
        if let Some(s) = slot(h.name)
            && let (Some(c), Some(f)) = (seen.counts.get_mut(s), seen.first.get_mut(s))
        {
            if *c == 0 {
                *f = i;
            }
            *c += 1;
        }
    }
    for name in REQUIRED {
        if seen.count(name) == 0 {
            return Err(ParseError::MissingHeader(name));
        }
    }
    for name in SINGLE {
        if seen.count(name) > 1 {
            return Err(ParseError::DuplicateHeader(name));
        }
    }
    let call_id = seen
        .value(HeaderName::CallId)
        .filter(|c| !c.is_empty())
        .ok_or(ParseError::BadHeaderValue(HeaderName::CallId))?;
    let top_via = m
        .top_via()
        .filter(|v| v.params_well_formed())
        .ok_or(ParseError::BadHeaderValue(HeaderName::Via))?;
    let from = m
        .from()
        .ok_or(ParseError::BadHeaderValue(HeaderName::From))?;
    let to = m.to().ok_or(ParseError::BadHeaderValue(HeaderName::To))?;
    let cseq = seen
        .value(HeaderName::CSeq)
        .and_then(parse_cseq)
        .ok_or(ParseError::BadHeaderValue(HeaderName::CSeq))?;
    let common = Common {
        call_id,
        from,
        to,
        cseq,
        top_via,
    };
    Ok((common, seen))
}

/// Validates a request for forwarding: mandatory headers (Via, To, From, Call-ID, CSeq) present
/// and parseable; single-valued headers (Call-ID, From, To, CSeq, Max-Forwards,
/// Content-Length, Content-Type) not repeated; CSeq method equal to the request method (ACK and
/// CANCEL included); Max-Forwards, when present, in 0..=255; the Request-URI a parseable
/// `sip`/`sips`/`tel` URI (416 for other schemes). The first problem found, in that order
/// (Request-URI first), is the error.
///
/// On success, the [`ValidRequest`] holds those headers parsed, so the caller never reads
/// them again as `Option`s.
pub fn validate_request<'m, 'a>(m: &'m Message<'a>) -> Result<ValidRequest<'m, 'a>, ParseError> {
    let uri = m.parsed_request_uri()?;
    let StartLine::Request {
        method,
        method_span,
        uri: uri_span,
    } = m.start_line()
    else {
        return Err(ParseError::WrongKind);
    };
    let (common, seen) = common(m)?;
    if common.cseq.method_bytes != method_span.get(m.buf()) {
        return Err(ParseError::CSeqMethodMismatch);
    }
    if let Some(v) = seen.value(HeaderName::MaxForwards)
        && parse_u32(v).is_none_or(|n| n > 255)
    {
        return Err(ParseError::BadHeaderValue(HeaderName::MaxForwards));
    }
    let request_uri = uri_span.get(m.buf());
    Ok(ValidRequest::new(m, method, request_uri, uri, common))
}

/// Validates a response for forwarding: mandatory headers present and parseable, no
/// duplicated single-valued headers, and the parameters of the top two Vias well formed (the
/// top one is ours; the second says where the response goes). On success, the
/// [`ValidResponse`] holds them parsed.
pub fn validate_response<'m, 'a>(m: &'m Message<'a>) -> Result<ValidResponse<'m, 'a>, ParseError> {
    let StartLine::Response { code, .. } = m.start_line() else {
        return Err(ParseError::WrongKind);
    };
    let (common, _) = common(m)?;
    // Memoised: relaying reads the second Via again.
    if m.second_via().is_some_and(|v| !v.params_well_formed()) {
        return Err(ParseError::BadHeaderValue(HeaderName::Via));
    }
    Ok(ValidResponse::new(m, code, common))
}

/// Strict check: Max-Forwards must be present (RFC 3261 allows a proxy to add it instead).
pub fn require_max_forwards(m: &Message) -> Result<(), ParseError> {
    match m.header(HeaderName::MaxForwards) {
        Some(_) => Ok(()),
        None => Err(ParseError::MissingHeader(HeaderName::MaxForwards)),
    }
}

/// 483 check: `Err(TooManyHops)` if Max-Forwards is present and zero. OPTIONS with zero
/// hops may be answered by the proxy itself (RFC 3261 §16.3 step 3); the caller decides.
pub fn check_hops(m: &Message) -> Result<(), ParseError> {
    match m.max_forwards() {
        Some(0) => Err(ParseError::TooManyHops),
        _ => Ok(()),
    }
}

/// The first option tag in header `name` (Proxy-Require or Require) that is not in
/// `supported` (compared case-insensitively), for a 420 answer with `Unsupported: <tag>`
/// (RFC 3261 §16.3 step 5). `None` when every tag is supported.
pub fn first_unsupported<'a>(
    m: &Message<'a>,
    name: HeaderName,
    supported: &[&[u8]],
) -> Option<&'a [u8]> {
    m.option_tags(name)
        .find(|t| !supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::wire::parse;

    const BASE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
Call-ID: abc\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn with(from: &str, to: &str) -> Vec<u8> {
        BASE.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn valid_request_passes() {
        let m = parse(BASE.as_bytes()).unwrap();
        assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
        assert_eq!(require_max_forwards(&m), Ok(()));
        assert_eq!(check_hops(&m), Ok(()));
        assert_eq!(
            validate_response(&m).map(|_| ()),
            Err(ParseError::WrongKind)
        );
    }

    #[test]
    fn request_errors() {
        use HeaderName as H;
        use ParseError as E;
        let table: &[(&str, &str, ParseError)] = &[
            (
                "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n",
                "",
                E::MissingHeader(H::Via),
            ),
            ("To: <sip:bob@example.com>\r\n", "", E::MissingHeader(H::To)),
            (
                "From: <sip:alice@example.com>;tag=1\r\n",
                "",
                E::MissingHeader(H::From),
            ),
            ("Call-ID: abc\r\n", "", E::MissingHeader(H::CallId)),
            ("CSeq: 1 INVITE\r\n", "", E::MissingHeader(H::CSeq)),
            (
                "Call-ID: abc\r\n",
                "Call-ID: abc\r\ni: def\r\n",
                E::DuplicateHeader(H::CallId),
            ),
            (
                "To: <sip:bob@example.com>\r\n",
                "To: <sip:b@x>\r\nt: <sip:c@x>\r\n",
                E::DuplicateHeader(H::To),
            ),
            (
                "CSeq: 1 INVITE\r\n",
                "CSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\n",
                E::DuplicateHeader(H::CSeq),
            ),
            (
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nMax-Forwards: 69\r\n",
                E::DuplicateHeader(H::MaxForwards),
            ),
            (
                "Call-ID: abc\r\n",
                "Call-ID: abc\r\nContent-Type: a/b\r\nc: a/b\r\n",
                E::DuplicateHeader(H::ContentType),
            ),
            ("CSeq: 1 INVITE", "CSeq: 1 BYE", E::CSeqMethodMismatch),
            ("CSeq: 1 INVITE", "CSeq: 1 invite", E::CSeqMethodMismatch),
            (
                "CSeq: 1 INVITE",
                "CSeq: 4294967296 INVITE",
                E::BadHeaderValue(H::CSeq),
            ),
            ("CSeq: 1 INVITE", "CSeq: INVITE", E::BadHeaderValue(H::CSeq)),
            (
                "CSeq: 1 INVITE",
                "CSeq: 1INVITE",
                E::BadHeaderValue(H::CSeq),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: 256",
                E::BadHeaderValue(H::MaxForwards),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: -1",
                E::BadHeaderValue(H::MaxForwards),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: x",
                E::BadHeaderValue(H::MaxForwards),
            ),
            (
                "sip:bob@example.com SIP",
                "http://bob SIP",
                E::UnsupportedUriScheme,
            ),
            ("sip:bob@example.com SIP", "sip:bob@ SIP", E::BadUri),
            (
                "Via: SIP/2.0/UDP 10.0.0.1:5060",
                "Via: garbage",
                E::BadHeaderValue(H::Via),
            ),
            (
                "From: <sip:alice@example.com>",
                "From: <sip:alice@example.com",
                E::BadHeaderValue(H::From),
            ),
            ("Call-ID: abc", "Call-ID: ", E::BadHeaderValue(H::CallId)),
        ];
        for (from, to, err) in table {
            let b = with(from, to);
            assert_ne!(b, BASE.as_bytes(), "substitution {from:?} did not apply");
            let m = parse(&b).unwrap();
            assert_eq!(
                validate_request(&m).map(|_| ()),
                Err(*err),
                "{from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn ack_and_cancel_cseq_method() {
        let b = BASE
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK");
        let m = parse(b.as_bytes()).unwrap();
        assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
        let b = with("INVITE sip", "CANCEL sip");
        let m = parse(&b).unwrap();
        assert_eq!(
            validate_request(&m).map(|_| ()),
            Err(ParseError::CSeqMethodMismatch)
        );
    }

    #[test]
    fn max_forwards_checks() {
        let b = with("Max-Forwards: 70\r\n", "");
        let m = parse(&b).unwrap();
        assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
        assert_eq!(
            require_max_forwards(&m),
            Err(ParseError::MissingHeader(HeaderName::MaxForwards))
        );
        assert_eq!(check_hops(&m), Ok(()));
        let b = with("Max-Forwards: 70", "Max-Forwards: 0");
        let m = parse(&b).unwrap();
        assert_eq!(validate_request(&m).map(|_| ()), Ok(()));
        assert_eq!(check_hops(&m), Err(ParseError::TooManyHops));
        assert_eq!(check_hops(&m).unwrap_err().status(), 483);
    }

    #[test]
    fn proxy_require_check() {
        let b = with(
            "Call-ID: abc\r\n",
            "Call-ID: abc\r\nProxy-Require: Foo, bar\r\n",
        );
        let m = parse(&b).unwrap();
        assert_eq!(
            first_unsupported(&m, HeaderName::ProxyRequire, &[b"foo"]),
            Some(&b"bar"[..])
        );
        assert_eq!(
            first_unsupported(&m, HeaderName::ProxyRequire, &[b"bar", b"FOO"]),
            None
        );
        assert_eq!(first_unsupported(&m, HeaderName::Require, &[]), None);
    }

    #[test]
    fn response_validation() {
        let r = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@x>;tag=2\r\n\
From: <sip:a@x>;tag=1\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = parse(r.as_bytes()).unwrap();
        assert_eq!(validate_response(&m).map(|_| ()), Ok(()));
        assert_eq!(validate_request(&m).map(|_| ()), Err(ParseError::WrongKind));
        let r2 = r.replace("Call-ID: abc\r\n", "");
        let m = parse(r2.as_bytes()).unwrap();
        assert_eq!(
            validate_response(&m).map(|_| ()),
            Err(ParseError::MissingHeader(HeaderName::CallId))
        );
    }
}
