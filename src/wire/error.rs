//! The hot-path parse/validation error: one small `Copy` enum mapped to a SIP status code.
//!
//! Invariants: every variant maps to a status in 400..=599 via [`ParseError::status`], a static
//! reason phrase and a short static metric label (`kind`). Nothing here allocates.

use super::names::HeaderName;

/// Why a message could not be framed, parsed or validated.
///
/// The caller either answers with [`ParseError::status`] (requests) or drops and counts the
/// message (responses, or when the error means the stream must be closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CR/LF (a UDP keep-alive such as `"\r\n\r\n"`: drop it silently).
    Empty,
    /// The header section does not end with an empty line inside the datagram.
    Truncated,
    /// The request or status line is malformed.
    BadStartLine,
    /// The SIP version is not `SIP/2.0` (505).
    BadVersion,
    /// The status code is not three digits in 100..=699.
    BadStatusCode,
    /// A header line has no colon, an empty or invalid name, or starts with white space.
    BadHeaderLine,
    /// A NUL byte, or a CR not followed by LF (a bare CR), in the start line or the header
    /// section: bytes that peers split lines on differently (header smuggling).
    IllegalByte,
    /// More than [`super::MAX_HEADERS`] header lines (513: the proxy cannot hold them).
    TooManyHeaders,
    /// The header section exceeds [`super::MAX_HEAD_BYTES`] (513).
    HeadersTooLarge,
    /// A stream message's Content-Length exceeds [`super::MAX_STREAM_BODY`] (513).
    BodyTooLarge,
    /// Content-Length is not a decimal `u32` (negative, junk or overflow).
    BadContentLength,
    /// Content-Length appears more than once.
    DuplicateContentLength,
    /// Content-Length claims more bytes than the datagram holds, or on a stream does not match
    /// the framed length.
    ContentLengthTooLarge,
    /// A stream message without Content-Length (RFC 3261 §18.3 makes it mandatory).
    MissingContentLength,
    /// A URI scheme other than `sip`, `sips` or `tel` (416).
    UnsupportedUriScheme,
    /// A malformed URI.
    BadUri,
    /// A mandatory header is missing.
    MissingHeader(HeaderName),
    /// A single-valued header appears more than once.
    DuplicateHeader(HeaderName),
    /// A header value does not parse (Via, From, To, CSeq, Max-Forwards, ...).
    BadHeaderValue(HeaderName),
    /// The CSeq method differs from the request method.
    CSeqMethodMismatch,
    /// Max-Forwards reached zero (483).
    TooManyHops,
    /// An unsupported extension in Proxy-Require/Require (420); the proxy decides when.
    BadExtension,
    /// A request-only operation was used on a response or vice versa.
    WrongKind,
}

impl ParseError {
    /// The SIP status code to answer a request with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::BadVersion => 505,
            ParseError::TooManyHeaders | ParseError::HeadersTooLarge | ParseError::BodyTooLarge => {
                513
            }
            ParseError::UnsupportedUriScheme => 416,
            ParseError::TooManyHops => 483,
            ParseError::BadExtension => 420,
            _ => 400,
        }
    }

    /// A reason phrase suitable for the status line of the answer.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Empty => "Empty Message",
            ParseError::Truncated => "Truncated Message",
            ParseError::BadStartLine => "Bad Start Line",
            ParseError::BadVersion => "Version Not Supported",
            ParseError::BadStatusCode => "Bad Status Code",
            ParseError::BadHeaderLine => "Bad Header Line",
            ParseError::IllegalByte => "Illegal Byte In Header",
            ParseError::TooManyHeaders => "Message Too Large",
            ParseError::HeadersTooLarge => "Message Too Large",
            ParseError::BodyTooLarge => "Message Too Large",
            ParseError::BadContentLength => "Bad Content-Length",
            ParseError::DuplicateContentLength => "Duplicate Content-Length",
            ParseError::ContentLengthTooLarge => "Content-Length Mismatch",
            ParseError::MissingContentLength => "Missing Content-Length",
            ParseError::UnsupportedUriScheme => "Unsupported URI Scheme",
            ParseError::BadUri => "Bad Request-URI",
            ParseError::MissingHeader(h) => match h {
                HeaderName::Via => "Missing Via",
                HeaderName::From => "Missing From",
                HeaderName::To => "Missing To",
                HeaderName::CallId => "Missing Call-ID",
                HeaderName::CSeq => "Missing CSeq",
                HeaderName::MaxForwards => "Missing Max-Forwards",
                _ => "Missing Header",
            },
            ParseError::DuplicateHeader(_) => "Duplicate Header",
            ParseError::BadHeaderValue(h) => match h {
                HeaderName::Via => "Bad Via",
                HeaderName::From => "Bad From",
                HeaderName::To => "Bad To",
                HeaderName::CallId => "Bad Call-ID",
                HeaderName::CSeq => "Bad CSeq",
                HeaderName::MaxForwards => "Bad Max-Forwards",
                _ => "Bad Header Value",
            },
            ParseError::CSeqMethodMismatch => "CSeq Method Mismatch",
            ParseError::TooManyHops => "Too Many Hops",
            ParseError::BadExtension => "Bad Extension",
            ParseError::WrongKind => "Bad Request",
        }
    }

    /// A short, stable label for metrics (`snake_case`, no spaces).
    pub fn kind(self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::Truncated => "truncated",
            ParseError::BadStartLine => "bad_start_line",
            ParseError::BadVersion => "bad_version",
            ParseError::BadStatusCode => "bad_status_code",
            ParseError::BadHeaderLine => "bad_header_line",
            ParseError::IllegalByte => "illegal_byte",
            ParseError::TooManyHeaders => "too_many_headers",
            ParseError::HeadersTooLarge => "headers_too_large",
            ParseError::BodyTooLarge => "body_too_large",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::DuplicateContentLength => "duplicate_content_length",
            ParseError::ContentLengthTooLarge => "content_length_mismatch",
            ParseError::MissingContentLength => "missing_content_length",
            ParseError::UnsupportedUriScheme => "unsupported_uri_scheme",
            ParseError::BadUri => "bad_uri",
            ParseError::MissingHeader(_) => "missing_header",
            ParseError::DuplicateHeader(_) => "duplicate_header",
            ParseError::BadHeaderValue(_) => "bad_header_value",
            ParseError::CSeqMethodMismatch => "cseq_method_mismatch",
            ParseError::TooManyHops => "too_many_hops",
            ParseError::BadExtension => "bad_extension",
            ParseError::WrongKind => "wrong_kind",
        }
    }
}

/// Every [`ParseError::kind`] label, in a fixed order (metrics register them once; new
/// labels are appended so the existing indices stay put).
pub const KINDS: &[&str] = &[
    "empty",
    "truncated",
    "bad_start_line",
    "bad_version",
    "bad_status_code",
    "bad_header_line",
    "too_many_headers",
    "headers_too_large",
    "bad_content_length",
    "duplicate_content_length",
    "content_length_mismatch",
    "missing_content_length",
    "unsupported_uri_scheme",
    "bad_uri",
    "missing_header",
    "duplicate_header",
    "bad_header_value",
    "cseq_method_mismatch",
    "too_many_hops",
    "bad_extension",
    "wrong_kind",
    "body_too_large",
    "illegal_byte",
];

impl ParseError {
    /// Index of [`ParseError::kind`] in [`KINDS`].
    pub fn kind_index(self) -> usize {
        let k = self.kind();
        KINDS.iter().position(|x| *x == k).unwrap_or(KINDS.len())
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let table: &[(ParseError, u16)] = &[
            (ParseError::BadVersion, 505),
            (ParseError::TooManyHeaders, 513),
            (ParseError::HeadersTooLarge, 513),
            (ParseError::BodyTooLarge, 513),
            (ParseError::UnsupportedUriScheme, 416),
            (ParseError::TooManyHops, 483),
            (ParseError::BadExtension, 420),
            (ParseError::BadStartLine, 400),
            (ParseError::MissingHeader(HeaderName::Via), 400),
            (ParseError::CSeqMethodMismatch, 400),
            (ParseError::IllegalByte, 400),
        ];
        for (e, s) in table {
            assert_eq!(e.status(), *s, "{e:?}");
            assert!(!e.reason().is_empty());
            assert!(!e.kind().contains(' '));
        }
        assert_eq!(
            ParseError::MissingHeader(HeaderName::CallId).reason(),
            "Missing Call-ID"
        );
        assert_eq!(
            ParseError::BadVersion.to_string(),
            "505 Version Not Supported"
        );
    }

    #[test]
    fn every_kind_is_listed() {
        use HeaderName as H;
        let all = [
            ParseError::Empty,
            ParseError::Truncated,
            ParseError::BadStartLine,
            ParseError::BadVersion,
            ParseError::BadStatusCode,
            ParseError::BadHeaderLine,
            ParseError::IllegalByte,
            ParseError::TooManyHeaders,
            ParseError::HeadersTooLarge,
            ParseError::BodyTooLarge,
            ParseError::BadContentLength,
            ParseError::DuplicateContentLength,
            ParseError::ContentLengthTooLarge,
            ParseError::MissingContentLength,
            ParseError::UnsupportedUriScheme,
            ParseError::BadUri,
            ParseError::MissingHeader(H::Via),
            ParseError::DuplicateHeader(H::To),
            ParseError::BadHeaderValue(H::CSeq),
            ParseError::CSeqMethodMismatch,
            ParseError::TooManyHops,
            ParseError::BadExtension,
            ParseError::WrongKind,
        ];
        for e in all {
            assert!(e.kind_index() < KINDS.len(), "{e:?} has no metric slot");
        }
        assert_eq!(KINDS.len(), all.len());
    }
}
