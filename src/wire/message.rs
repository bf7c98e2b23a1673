//! Framing and parsing of one SIP message into a [`Message`] of spans.
//!
//! Invariants:
//! - A [`Message`] borrows its buffer and stores only [`Span`]s: the start line, the headers,
//!   the end of the header section and the body. The first [`INLINE_HEADERS`] header spans live
//!   in a fixed inline array (the common case). A message with more (up to [`MAX_HEADERS`])
//!   spills *all* its header spans into one contiguous buffer: the caller's reusable
//!   [`HeaderSpill`] with [`parse_with`] / [`parse_stream_message_with`] (no allocation once the
//!   spill has grown, which it does once), or a `Vec` of its own with [`parse`] (one allocation,
//!   only for such large messages). Parsing never panics.
//! - Every stored span is inside `buf` with `start <= end`; `len <= buf.len()`.
//! - Leading CR/LF before the start line are skipped (RFC 3261 §7.5).
//! - UDP ([`parse`]): the body is Content-Length bytes; trailing bytes after it are excluded
//!   from `len` and so never forwarded. Without Content-Length the body is the rest of the
//!   datagram. Content-Length beyond the datagram is an error.
//! - Stream ([`frame_stream`] then [`parse_stream_message`]): Content-Length is mandatory and
//!   at most [`MAX_STREAM_BODY`].
//! - Content-Length that is duplicated, negative, non-numeric or above `u32::MAX` is an error
//!   in both modes (on a stream the caller closes the connection).
//! - The header section is capped at [`MAX_HEAD_BYTES`]; more headers than [`MAX_HEADERS`] is
//!   [`ParseError::TooManyHeaders`] (513).
//! - Header smuggling: a NUL byte anywhere in the start line or the header section, or a CR
//!   not followed by LF there (a bare CR), is [`ParseError::IllegalByte`] (400). A bare LF
//!   still ends a line. The body is not inspected. [`frame_stream`] does not apply this check
//!   (it only cuts the stream at the same LF-delimited lines); [`parse_stream_message`] does.
//! - The only state besides spans is a per-message memo of typed views (top two Vias, From,
//!   To, their tags, the parsed Request-URI), filled on first use from the same immutable
//!   bytes, so it can never disagree with a fresh parse.

use std::borrow::Cow;

use memchr::{memchr, memchr3, memrchr};

use super::Span;
use super::error::ParseError;
use super::names::{HeaderName, Method};
use super::scan::{is_token, is_token_str, parse_u32, trim_range};
use super::stream::StreamFramer;

/// Header lines a [`Message`] keeps inline; a message with more spills (see [`HeaderSpill`]).
pub const INLINE_HEADERS: usize = 64;

/// Maximum number of header lines per message; more is [`ParseError::TooManyHeaders`] (513).
pub const MAX_HEADERS: usize = 256;

/// Maximum size of the header section (start line excluded); more is
/// [`ParseError::HeadersTooLarge`]. Bounds how far a stream `Partial` can grow.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Largest body accepted on a stream; a bigger Content-Length is
/// [`ParseError::BodyTooLarge`] (513), so a peer cannot make the caller buffer without bound.
pub const MAX_STREAM_BODY: usize = 1 << 20;

#[inline]
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One header line (possibly folded over several physical lines).
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Recognised name (compact forms mapped to the full name).
    pub name: HeaderName,
    /// The name as written.
    pub name_span: Span,
    /// The value, trimmed of surrounding white space (folds inside are kept).
    pub value: Span,
    /// The whole line(s), from the name to and including the final line end.
    pub line: Span,
}

const EMPTY_HEADER: Header = Header {
    name: HeaderName::Other,
    name_span: Span { start: 0, end: 0 },
    value: Span { start: 0, end: 0 },
    line: Span { start: 0, end: 0 },
};

/// The parsed first line.
#[derive(Clone, Copy, Debug)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP/2.0`
    Request {
        /// Recognised method ([`Method::Other`] for extensions).
        method: Method,
        /// The method token as written.
        method_span: Span,
        /// The Request-URI.
        uri: Span,
    },
    /// `SIP/2.0 SP Status-Code SP Reason-Phrase`
    Response {
        /// Status code, 100..=699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: Span,
    },
}

/// Result of [`frame_stream`] on a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message occupies `buf[..n]`: pass it to [`parse_stream_message`] and consume `n`.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// `n` leading CR/LF bytes (RFC 5626 keep-alive): consume them. A `"\r\n\r\n"` ping
    /// should be answered with a `"\r\n"` pong by the caller.
    KeepAlive(usize),
}

/// A parsed SIP message: the buffer plus spans. See the module docs for invariants.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    start: StartLine,
    start_line: Span,
    /// The header spans while `count <= INLINE_HEADERS`.
    headers: [Header; INLINE_HEADERS],
    /// Every header span (inline ones copied first) once `count > INLINE_HEADERS`; empty and
    /// unused otherwise.
    spill: Cow<'a, [Header]>,
    count: usize,
    headers_end: u32,
    body: Span,
    len: u32,
    content_length: Option<u32>,
    /// Typed views the proxy reads several times per message, computed on first use.
    pub(crate) memo: Memo<'a>,
}

/// Per-message memo of parsed views (`None` = not computed yet). The views are pure functions
/// of the immutable buffer and spans, so a memoised value always equals a fresh parse; it only
/// saves re-scanning the same bytes (a response's top Via was parsed seven times per relay).
#[derive(Clone, Debug, Default)]
pub(crate) struct Memo<'a> {
    pub(crate) top_via: std::cell::Cell<Option<Option<super::Via<'a>>>>,
    pub(crate) second_via: std::cell::Cell<Option<Option<super::Via<'a>>>>,
    pub(crate) from: std::cell::Cell<Option<Option<super::NameAddr<'a>>>>,
    pub(crate) to: std::cell::Cell<Option<Option<super::NameAddr<'a>>>>,
    pub(crate) ruri: std::cell::Cell<Option<Result<super::Uri<'a>, ParseError>>>,
    pub(crate) from_tag: std::cell::Cell<Option<Option<&'a [u8]>>>,
    pub(crate) to_tag: std::cell::Cell<Option<Option<&'a [u8]>>>,
}

impl<T: Copy> MemoCell<T> for std::cell::Cell<Option<T>> {
    fn get_or(&self, f: impl FnOnce() -> T) -> T {
        if let Some(v) = self.get() {
            return v;
        }
        let v = f();
        self.set(Some(v));
        v
    }
}

/// Compute-once access to a memo cell.
pub(crate) trait MemoCell<T> {
    /// The memoised value, computing and storing it with `f` on first use.
    fn get_or(&self, f: impl FnOnce() -> T) -> T;
}

/// Caller-owned, reusable storage for the header spans of messages with more than
/// [`INLINE_HEADERS`] header lines (see [`parse_with`]).
///
/// Keep one per worker and pass it to every parse: the first large message grows it to
/// [`MAX_HEADERS`] entries (one allocation of about 7 KiB), later ones reuse it. A message
/// parsed into it borrows it, so it is free again when the message is dropped. An empty
/// `HeaderSpill` (`default()`) has not allocated.
#[derive(Debug, Default)]
pub struct HeaderSpill {
    v: Vec<Header>,
}

impl HeaderSpill {
    /// An empty spill (no allocation until a message needs it).
    pub fn new() -> HeaderSpill {
        HeaderSpill::default()
    }

    /// Header spans it can hold without allocating.
    pub fn capacity(&self) -> usize {
        self.v.capacity()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Datagram,
    Stream,
}

/// Parses one UDP datagram (see the module docs for framing rules).
///
/// Allocates only for a message with more than [`INLINE_HEADERS`] header lines; the packet
/// path uses [`parse_with`] and a reused [`HeaderSpill`] instead.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    parse_inner(datagram, Mode::Datagram, None)
}

/// [`parse`], with the header spans of a large message stored in `spill` (reused: no
/// allocation once it has grown). The message borrows `spill` until it is dropped.
pub fn parse_with<'a>(
    datagram: &'a [u8],
    spill: &'a mut HeaderSpill,
) -> Result<Message<'a>, ParseError> {
    parse_inner(datagram, Mode::Datagram, Some(&mut spill.v))
}

/// Parses a stream message framed by [`frame_stream`]: `buf[..len]` is the message.
/// Content-Length is mandatory and must match `len` exactly.
pub fn parse_stream_message(buf: &[u8], len: usize) -> Result<Message<'_>, ParseError> {
    let b = buf.get(..len).ok_or(ParseError::Truncated)?;
    parse_inner(b, Mode::Stream, None)
}

/// [`parse_stream_message`] with a reused [`HeaderSpill`] (see [`parse_with`]).
pub fn parse_stream_message_with<'a>(
    buf: &'a [u8],
    len: usize,
    spill: &'a mut HeaderSpill,
) -> Result<Message<'a>, ParseError> {
    let b = buf.get(..len).ok_or(ParseError::Truncated)?;
    parse_inner(b, Mode::Stream, Some(&mut spill.v))
}

/// The offset of the LF that ends the physical line containing `pos`, checking the bytes on
/// the way: a NUL, or a CR not followed by LF, is [`ParseError::IllegalByte`]. One memchr3
/// jump per physical line (it stops at the CR of a CRLF and steps over the LF), so it costs
/// what the plain LF search cost. `Truncated` if no LF follows.
#[inline]
fn checked_lf(buf: &[u8], pos: usize) -> Result<usize, ParseError> {
    let rest = buf.get(pos..).ok_or(ParseError::Truncated)?;
    let k = memchr3(b'\n', b'\r', b'\0', rest).ok_or(ParseError::Truncated)?;
    let at = pos + k;
    match (rest.get(k), buf.get(at + 1)) {
        (Some(b'\n'), _) => Ok(at),
        (Some(b'\r'), Some(b'\n')) => Ok(at + 1),
        (Some(b'\r'), None) => Err(ParseError::Truncated),
        _ => Err(ParseError::IllegalByte),
    }
}

/// [`logical_line_end`] for parsing: the same line structure, with every physical line
/// checked by [`checked_lf`].
#[inline]
fn checked_line_end(buf: &[u8], pos: usize) -> Result<usize, ParseError> {
    let mut search = pos;
    loop {
        let after = checked_lf(buf, search)? + 1;
        match buf.get(after) {
            Some(b' ' | b'\t') => search = after,
            Some(_) => return Ok(after),
            None => return Err(ParseError::Truncated),
        }
    }
}

/// Finds the end of the logical line starting at `pos` (folds included): the offset just past
/// its final LF. `None` if the buffer ends before that is known.
#[inline]
pub(super) fn logical_line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let mut search = pos;
    loop {
        let nl = memchr(b'\n', buf.get(search..)?)?;
        let after = search + nl + 1;
        match buf.get(after) {
            Some(b' ' | b'\t') => search = after,
            Some(_) => return Some(after),
            None => return None,
        }
    }
}

/// Splits a header line into `(name_end, colon)` after checking the name is a token.
#[inline]
pub(super) fn split_name(
    buf: &[u8],
    start: usize,
    end: usize,
) -> Result<(usize, usize), ParseError> {
    // Names are short: one byte loop beats a memchr call plus a token check.
    let mut i = start;
    while i < end && buf.get(i).is_some_and(|&b| is_token(b)) {
        i += 1;
    }
    let name_end = i;
    while i < end && matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if name_end == start || i >= end || buf.get(i) != Some(&b':') {
        return Err(ParseError::BadHeaderLine);
    }
    Ok((name_end, i))
}

/// Is `pos` the start of the empty line? Returns the offset after it.
#[inline]
pub(super) fn blank_line_at(buf: &[u8], pos: usize) -> Option<usize> {
    match buf.get(pos) {
        Some(b'\n') => Some(pos + 1),
        Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => Some(pos + 2),
        _ => None,
    }
}

pub(super) fn skip_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// Frames one message at the start of a growing stream buffer.
///
/// Returns [`Frame::KeepAlive`] for leading CR/LF bytes, [`Frame::Partial`] while the header
/// section or body is incomplete, and [`Frame::Complete`] with the message length otherwise.
/// Errors (missing/bad/duplicate Content-Length, oversized header section, a header line
/// without colon) mean the framing is lost: the caller should close the connection. Framing
/// only looks at line structure and Content-Length; once `Complete(n)` is returned the caller
/// consumes `n` bytes even if [`parse_stream_message`] then rejects the message (answer 400).
/// Cost: one line scan of the header section (parsing repeats it). A connection that gets a
/// message in many reads keeps a [`StreamFramer`] instead, which resumes where it stopped
/// (this function is a fresh framer on `buf`).
pub fn frame_stream(buf: &[u8]) -> Result<Frame, ParseError> {
    StreamFramer::new().advance(buf)
}

fn parse_start_line(line: &[u8], base: usize) -> Result<StartLine, ParseError> {
    let sp1 = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let first = line.get(..sp1).unwrap_or(&[]);
    if first.len() >= 4
        && first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        if !first.eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(ParseError::BadVersion);
        }
        let code_b = line
            .get(sp1 + 1..sp1 + 4)
            .ok_or(ParseError::BadStatusCode)?;
        let code = parse_u32(code_b).ok_or(ParseError::BadStatusCode)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode);
        }
        let reason = match line.get(sp1 + 4) {
            None => Span::new(base + line.len(), base + line.len()),
            Some(b' ') => Span::new(base + sp1 + 5, base + line.len()),
            Some(_) => return Err(ParseError::BadStatusCode),
        };
        return Ok(StartLine::Response {
            code: code as u16,
            reason,
        });
    }
    if !is_token_str(first) {
        return Err(ParseError::BadStartLine);
    }
    let sp2 = memrchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let version = line.get(sp2 + 1..).unwrap_or(&[]);
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        let is_sip = version
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
        return Err(if is_sip {
            ParseError::BadVersion
        } else {
            ParseError::BadStartLine
        });
    }
    let uri = line.get(sp1 + 1..sp2).unwrap_or(&[]);
    if uri.is_empty() || uri.iter().any(|&b| b == b' ' || b == b'\t') {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(first),
        method_span: Span::new(base, base + sp1),
        uri: Span::new(base + sp1 + 1, base + sp2),
    })
}

fn parse_inner<'a>(
    buf: &'a [u8],
    mode: Mode,
    spill: Option<&'a mut Vec<Header>>,
) -> Result<Message<'a>, ParseError> {
    let ls = skip_crlf(buf);
    if ls >= buf.len() {
        return Err(ParseError::Empty);
    }
    let nl = checked_lf(buf, ls)?;
    let le = if nl > ls && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    let start = parse_start_line(buf.get(ls..le).unwrap_or(&[]), ls)?;
    let mut msg = Message {
        buf,
        start,
        start_line: Span::new(ls, le),
        headers: [EMPTY_HEADER; INLINE_HEADERS],
        spill: Cow::Borrowed(&[]),
        count: 0,
        headers_end: 0,
        body: Span::default(),
        len: 0,
        content_length: None,
        memo: Memo::default(),
    };
    let mut spill = spill;
    // Where spilled spans go when the caller gave no spill (`parse`): allocated only then.
    let mut own: Vec<Header> = Vec::new();
    let head_start = nl + 1;
    let mut pos = head_start;
    let body_start = loop {
        if let Some(b) = blank_line_at(buf, pos) {
            msg.headers_end = to_u32(pos);
            break b;
        }
        if buf.get(pos).is_none() {
            return Err(ParseError::Truncated);
        }
        let next = checked_line_end(buf, pos)?;
        if next - head_start > MAX_HEAD_BYTES {
            return Err(ParseError::HeadersTooLarge);
        }
        let (name_end, colon) = split_name(buf, pos, next)?;
        let name = HeaderName::from_bytes(buf.get(pos..name_end).unwrap_or(&[]));
        let (mut va, mut vb) = trim_range(buf, colon + 1, next);
        if va == vb {
            // An empty value sits right after the colon, so a replacement stays on its line.
            (va, vb) = (colon + 1, colon + 1);
        }
        if name == HeaderName::ContentLength {
            if msg.content_length.is_some() {
                return Err(ParseError::DuplicateContentLength);
            }
            let cl =
                parse_u32(buf.get(va..vb).unwrap_or(&[])).ok_or(ParseError::BadContentLength)?;
            msg.content_length = Some(cl);
        }
        let h = Header {
            name,
            name_span: Span::new(pos, name_end),
            value: Span::new(va, vb),
            line: Span::new(pos, next),
        };
        if let Some(slot) = msg.headers.get_mut(msg.count) {
            *slot = h;
        } else {
            if msg.count >= MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            let v = match spill.as_deref_mut() {
                Some(v) => v,
                None => &mut own,
            };
            if msg.count == INLINE_HEADERS {
                v.clear();
                v.reserve(MAX_HEADERS);
                v.extend_from_slice(&msg.headers);
            }
            v.push(h);
        }
        msg.count += 1;
        pos = next;
    };
    if msg.count > INLINE_HEADERS {
        msg.spill = match spill {
            Some(v) => {
                let v: &'a Vec<Header> = v;
                Cow::Borrowed(v.as_slice())
            }
            None => Cow::Owned(own),
        };
    }
    let end = match (mode, msg.content_length) {
        (_, Some(cl)) => {
            let end = body_start
                .checked_add(cl as usize)
                .ok_or(ParseError::ContentLengthTooLarge)?;
            if end > buf.len() || (mode == Mode::Stream && end != buf.len()) {
                return Err(ParseError::ContentLengthTooLarge);
            }
            end
        }
        (Mode::Datagram, None) => buf.len(),
        (Mode::Stream, None) => return Err(ParseError::MissingContentLength),
    };
    msg.body = Span::new(body_start, end);
    msg.len = to_u32(end);
    Ok(msg)
}

impl<'a> Message<'a> {
    /// A request that holds only `headers` (at most [`INLINE_HEADERS`]; more are ignored),
    /// with an empty body at `head_end`, the offset after the empty line (or the end of what
    /// was read). For [`super::parse_for_reply`]; the caller guarantees every span is inside
    /// `buf` and `headers_end <= head_end <= buf.len()`.
    pub(super) fn reply_view(
        buf: &'a [u8],
        start: StartLine,
        start_line: Span,
        headers: &[Header],
        headers_end: usize,
        head_end: usize,
    ) -> Message<'a> {
        let mut inline = [EMPTY_HEADER; INLINE_HEADERS];
        let count = headers.len().min(INLINE_HEADERS);
        if let (Some(d), Some(s)) = (inline.get_mut(..count), headers.get(..count)) {
            d.copy_from_slice(s);
        }
        let head_end = head_end.min(buf.len());
        Message {
            buf,
            start,
            start_line,
            headers: inline,
            spill: Cow::Borrowed(&[]),
            count,
            headers_end: to_u32(headers_end.min(head_end)),
            body: Span::new(head_end, head_end),
            len: to_u32(head_end),
            content_length: None,
            memo: Memo::default(),
        }
    }

    /// A message over `buf` from spans found by an earlier parse of the same bytes (see
    /// [`super::Kept`]): no scanning. The caller guarantees the spans came from a [`Message`]
    /// over these very bytes (or were mapped onto them exactly), so every invariant of a
    /// parsed message holds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_spans(
        buf: &'a [u8],
        start: StartLine,
        start_line: Span,
        headers: &'a [Header],
        headers_end: u32,
        body: Span,
        len: u32,
        content_length: Option<u32>,
    ) -> Message<'a> {
        let mut inline = [EMPTY_HEADER; INLINE_HEADERS];
        let count = headers.len();
        let spill = if count <= INLINE_HEADERS {
            if let (Some(d), Some(s)) = (inline.get_mut(..count), headers.get(..count)) {
                d.copy_from_slice(s);
            }
            Cow::Borrowed(&[][..])
        } else {
            Cow::Borrowed(headers)
        };
        Message {
            buf,
            start,
            start_line,
            headers: inline,
            spill,
            count,
            headers_end,
            body,
            len,
            content_length,
            memo: Memo::default(),
        }
    }

    /// The whole input buffer (the datagram, trailing bytes included).
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// The message proper: `buf[..len]` (trailing datagram bytes excluded).
    pub fn bytes(&self) -> &'a [u8] {
        Span::new(0, self.len as usize).get(self.buf)
    }

    /// Length of the message proper.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false for a parsed message (it has at least a start line).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parsed start line.
    pub fn start_line(&self) -> StartLine {
        self.start
    }

    /// The start line text without its line end.
    pub fn start_line_span(&self) -> Span {
        self.start_line
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request; `None` for responses.
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The method token of a request as written; empty for responses.
    pub fn method_bytes(&self) -> &'a [u8] {
        match self.start {
            StartLine::Request { method_span, .. } => method_span.get(self.buf),
            StartLine::Response { .. } => &[],
        }
    }

    /// The status code of a response; `None` for requests.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response; `None` for requests.
    pub fn reason(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(reason.get(self.buf)),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI bytes of a request.
    pub fn request_uri(&self) -> Option<&'a [u8]> {
        self.request_uri_span().map(|s| s.get(self.buf))
    }

    /// The Request-URI parsed (parsed once per message, then memoised); `WrongKind` for a
    /// response.
    pub fn parsed_request_uri(&self) -> Result<super::Uri<'a>, ParseError> {
        self.memo.ruri.get_or(|| {
            let r = self.request_uri().ok_or(ParseError::WrongKind)?;
            super::parse_uri(r)
        })
    }

    /// The Request-URI span of a request.
    pub fn request_uri_span(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// All header lines in order.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        if self.count <= INLINE_HEADERS {
            self.headers.get(..self.count).unwrap_or(&[])
        } else {
            &self.spill
        }
    }

    /// The first header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers().iter().find(|h| h.name == name)
    }

    /// Index into [`Message::headers`] of the first header with this name.
    pub fn header_index(&self, name: HeaderName) -> Option<usize> {
        self.headers().iter().position(|h| h.name == name)
    }

    /// The trimmed value of the first header with this name.
    pub fn header_value(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.header(name).map(|h| h.value.get(self.buf))
    }

    /// Every header with this name, in order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header> {
        self.headers().iter().filter(move |h| h.name == name)
    }

    /// Number of header lines with this name.
    pub fn count_named(&self, name: HeaderName) -> usize {
        self.headers_named(name).count()
    }

    /// The value of the first header called `name` (case-insensitive; compact forms of known
    /// headers match too).
    pub fn find_header(&self, name: &[u8]) -> Option<&'a [u8]> {
        let known = HeaderName::from_bytes(name);
        if known != HeaderName::Other {
            return self.header_value(known);
        }
        self.headers()
            .iter()
            .find(|h| {
                h.name == HeaderName::Other && h.name_span.get(self.buf).eq_ignore_ascii_case(name)
            })
            .map(|h| h.value.get(self.buf))
    }

    /// Offset of the start of the empty line: where a new header line can be inserted.
    pub fn headers_end(&self) -> u32 {
        self.headers_end
    }

    /// The body (Content-Length bytes, or the rest of the datagram without Content-Length).
    pub fn body(&self) -> &'a [u8] {
        self.body.get(self.buf)
    }

    /// The body span.
    pub fn body_span(&self) -> Span {
        self.body
    }

    /// Content-Length value, if the header is present (validated during parsing).
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
