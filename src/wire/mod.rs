//! Zero-copy SIP wire layer: bytes -> views, views + edits -> bytes.
//!
//! # What this module owns
//! - [`parse`] / [`frame_stream`] / [`parse_stream_message`]: framing and parsing of one SIP
//!   message into a [`Message`], which is the borrowed buffer plus small [`Span`]s (an inline
//!   array of [`INLINE_HEADERS`] headers; a message with more, up to [`MAX_HEADERS`], spills
//!   into a caller-owned, reused [`HeaderSpill`] with [`parse_with`]). No heap allocation per
//!   message on the packet path.
//! - [`StreamFramer`]: the same framing, resumed across reads of a stream, so a message that
//!   arrives in many pieces is scanned once (linear time).
//! - [`parse_for_reply`]: a lenient view of a request that failed to parse (513 too many
//!   headers, 400 NUL or bare CR, 505 ...), holding the lines a reply copies, so it is
//!   answered rather than dropped.
//! - Lazy typed accessors ([`Via`], [`NameAddr`], [`CSeq`], [`Uri`], option tags) that parse a
//!   header value only when called, again without allocating.
//! - [`validate_request`] / [`validate_response`]: the checks a proxy needs before forwarding;
//!   they return a [`ValidRequest`] / [`ValidResponse`], whose Call-ID, From, To, CSeq, top Via
//!   (and method and Request-URI) are fields, not `Option`s (check once, then trust the type).
//! - [`Edits`]: an ordered, fixed-capacity edit list over a parsed message, serialized once.
//! - [`build`]: builders for locally generated responses, CANCEL, ACK and in-dialog requests.
//! - [`Kept`]: a message kept past its datagram with its spans, viewed again without parsing.
//! - [`Transport`]: the transport protocols (UDP, TCP) and their names on the wire.
//!
//! # Example: forward a request
//! ```
//! use sipedge::wire::{Edits, parse, validate_request};
//!
//! let datagram = b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n\
//! Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
//! From: <sip:alice@example.com>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
//! Content-Length: 0\r\n\r\n";
//! let msg = parse(datagram).unwrap();
//! let req = validate_request(&msg).unwrap();
//! assert_eq!(req.branch(), b"z9hG4bK1");
//! assert_eq!(req.cseq().num, 1);
//!
//! let mut edits = Edits::new(&msg);
//! edits.decrement_max_forwards().unwrap();
//! edits.set_received_rport(Some(b"198.51.100.7"), Some(5062)).unwrap();
//! edits.insert_via(b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKproxy").unwrap();
//! let mut out = Vec::with_capacity(1500);
//! edits.write(&mut out).unwrap();
//! let fwd = parse(&out).unwrap();
//! assert_eq!(fwd.max_forwards(), Some(69));
//! assert_eq!(fwd.vias().nth(1).unwrap().rport(), Some(Some(5062)));
//! ```
//!
//! # Invariants
//! - Nothing here panics on any input: all indexing goes through `get` or [`Span::get`], which
//!   returns an empty slice when out of range.
//! - Every [`Span`] stored in a [`Message`] lies inside [`Message::buf`] and has
//!   `start <= end`; header spans lie inside `bytes()`.
//! - Errors are the small `Copy` enums [`ParseError`] and [`EditError`].
//! - Line ends may be CRLF or a bare LF; a line end followed by SP/HTAB is a fold and belongs to
//!   the value. Value scanners treat CR and LF as linear white space for this reason. A NUL or
//!   a bare CR (one not followed by LF) in the start line or headers is rejected (400), so no
//!   peer can split our lines differently from us; the body may hold any bytes.

pub mod build;
mod edit;
mod error;
mod kept;
mod message;
mod names;
mod reject;
mod scan;
mod stream;
mod transport;
mod uri;
mod valid;
mod validate;
mod values;

pub use build::{InDialog, ack_for_non2xx, cancel, cancel_with, in_dialog_request, response};
pub use edit::{EditError, Edits, MAX_EDITS, SCRATCH_BYTES};
pub use error::{KINDS, ParseError};
pub use kept::Kept;
pub use message::{
    Frame, Header, HeaderSpill, INLINE_HEADERS, MAX_HEAD_BYTES, MAX_HEADERS, MAX_STREAM_BODY,
    Message, StartLine, frame_stream, parse, parse_stream_message, parse_stream_message_with,
    parse_with,
};
pub use names::{HeaderName, Method};
pub use reject::{answers, parse_for_reply};
pub(crate) use scan::fmt_u32;
pub use scan::{ParamIter, param_lookup};
pub use stream::StreamFramer;
pub use transport::Transport;
pub use uri::{Scheme, Uri, parse_uri};
pub use valid::{ValidRequest, ValidResponse};
pub use validate::{
    check_hops, first_unsupported, require_max_forwards, validate_request, validate_response,
};
pub use values::{CSeq, NameAddr, NameAddrIter, TokenIter, Via, ViaIter};

/// A byte range `[start, end)` into a message buffer. `Copy`, 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte offset.
    pub start: u32,
    /// One past the last byte offset.
    pub end: u32,
}

impl Span {
    /// Builds a span from `usize` offsets (saturating to `u32`; buffers are capped far below).
    #[inline]
    pub fn new(start: usize, end: usize) -> Span {
        let s = u32::try_from(start).unwrap_or(u32::MAX);
        let e = u32::try_from(end).unwrap_or(u32::MAX);
        Span {
            start: s,
            end: e.max(s),
        }
    }

    /// The bytes of this span in `buf`. Never panics: empty if out of range.
    #[inline]
    pub fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }

    /// Length in bytes (0 if `end < start`).
    #[inline]
    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True if the span covers no bytes.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }

    /// The start offset as `usize`.
    #[inline]
    pub fn start_usize(self) -> usize {
        self.start as usize
    }

    /// The end offset as `usize`.
    #[inline]
    pub fn end_usize(self) -> usize {
        self.end as usize
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::Span;

    #[test]
    fn span_get_never_panics() {
        let buf = b"hello";
        assert_eq!(Span::new(1, 3).get(buf), b"el");
        assert_eq!(Span::new(3, 10).get(buf), b"");
        assert_eq!(Span { start: 4, end: 2 }.get(buf), b"");
        assert_eq!(Span { start: 4, end: 2 }.len(), 0);
        assert!(Span { start: 4, end: 2 }.is_empty());
        assert_eq!(Span::new(0, 5).len(), 5);
    }
}

#[cfg(test)]
#[path = "robust_tests.rs"]
mod robust_tests;
