//! Message rewriting as an ordered edit list ("lumps"), serialized once.
//!
//! Invariants:
//! - An [`Edits`] holds a borrowed [`Message`], at most [`MAX_EDITS`] operations and at most
//!   [`SCRATCH_BYTES`] of inserted bytes, all inline: building and applying edits never touch
//!   the heap (`write` only grows `out` if it lacks capacity).
//! - Each operation replaces `bytes()[start..end]` (empty range = insertion) with scratch bytes.
//!   Ranges are checked against `bytes()` when added; overlapping ranges are rejected with
//!   [`EditError::Overlap`]. An insertion at the boundary of a replaced range is allowed.
//! - Serialization applies operations in offset order; insertions at the same offset keep call
//!   order and come before a replacement starting at that offset. Every byte not covered by an
//!   operation is copied unchanged; bytes after `len` (datagram junk) are never written.
//! - The body is never edited, so Content-Length stays correct.

use super::Span;
use super::kept::{Kept, KeptSpans};
use super::message::{Header, Message, StartLine};
use super::names::HeaderName;
use super::scan::{ParamIter, fmt_u32, parse_u32};

/// Maximum number of edit operations per message.
pub const MAX_EDITS: usize = 24;
/// Maximum total bytes inserted per message.
pub const SCRATCH_BYTES: usize = 2048;

/// Why an edit could not be recorded or applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    /// More than [`MAX_EDITS`] operations.
    TooManyEdits,
    /// More than [`SCRATCH_BYTES`] inserted bytes.
    ScratchFull,
    /// The new range overlaps an earlier edit.
    Overlap,
    /// The span is outside the message.
    OutOfRange,
    /// The message has no (parseable) Via.
    NoVia,
    /// The message has no Route.
    NoRoute,
    /// A request-only edit on a response.
    NotRequest,
    /// Max-Forwards is zero (answer 483).
    TooManyHops,
    /// A header the edit needs does not parse (for example a non-numeric Max-Forwards).
    BadHeader,
}

impl EditError {
    /// The status to answer with if the request cannot be forwarded: 483 for
    /// [`EditError::TooManyHops`], 400 for [`EditError::BadHeader`]/[`EditError::NoVia`],
    /// 500 for capacity and programming errors.
    pub fn status(self) -> u16 {
        match self {
            EditError::TooManyHops => 483,
            EditError::BadHeader | EditError::NoVia => 400,
            _ => 500,
        }
    }

    /// A short, stable label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            EditError::TooManyEdits => "too_many_edits",
            EditError::ScratchFull => "scratch_full",
            EditError::Overlap => "overlap",
            EditError::OutOfRange => "out_of_range",
            EditError::NoVia => "no_via",
            EditError::NoRoute => "no_route",
            EditError::NotRequest => "not_request",
            EditError::TooManyHops => "too_many_hops",
            EditError::BadHeader => "bad_header",
        }
    }
}

impl core::fmt::Display for EditError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.kind())
    }
}

impl std::error::Error for EditError {}

#[derive(Clone, Copy, Debug, Default)]
struct Op {
    start: u32,
    end: u32,
    data: Span,
    /// Set when `data` is a whole new header line: its name and the name's length.
    line: Option<(HeaderName, u8)>,
}

/// An ordered edit list over one parsed message. See the module docs for invariants.
pub struct Edits<'m, 'a> {
    msg: &'m Message<'a>,
    ops: [Op; MAX_EDITS],
    n: usize,
    scratch: [u8; SCRATCH_BYTES],
    used: usize,
}

impl<'m, 'a> Edits<'m, 'a> {
    /// An empty edit list for `msg`.
    pub fn new(msg: &'m Message<'a>) -> Self {
        Edits {
            msg,
            ops: [Op::default(); MAX_EDITS],
            n: 0,
            scratch: [0; SCRATCH_BYTES],
            used: 0,
        }
    }

    /// The message being edited.
    pub fn message(&self) -> &'m Message<'a> {
        self.msg
    }

    /// Number of recorded operations.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no operation is recorded.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn push(&mut self, start: usize, end: usize, parts: &[&[u8]]) -> Result<(), EditError> {
        if start > end || end > self.msg.len() {
            return Err(EditError::OutOfRange);
        }
        let conflicts = |o: &Op| {
            let (a, b) = (o.start as usize, o.end as usize);
            match (start == end, a == b) {
                (true, true) => false,
                (true, false) => a < start && start < b,
                (false, true) => start < a && a < end,
                (false, false) => start < b && a < end,
            }
        };
        if self.ops.get(..self.n).unwrap_or(&[]).iter().any(conflicts) {
            return Err(EditError::Overlap);
        }
        if self.n >= MAX_EDITS {
            return Err(EditError::TooManyEdits);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let d0 = self.used;
        let dst = self
            .scratch
            .get_mut(d0..d0 + total)
            .ok_or(EditError::ScratchFull)?;
        let mut at = 0;
        for p in parts {
            if let Some(d) = dst.get_mut(at..at + p.len()) {
                d.copy_from_slice(p);
            }
            at += p.len();
        }
        self.used += total;
        if let Some(slot) = self.ops.get_mut(self.n) {
            *slot = Op {
                start: Span::new(start, end).start,
                end: Span::new(start, end).end,
                data: Span::new(d0, d0 + total),
                line: None,
            };
        }
        self.n += 1;
        Ok(())
    }

    /// Inserts the header line `name: value\r\n` (`value` in parts) at `at`.
    fn push_line(&mut self, at: usize, name: &[u8], value: &[&[u8]]) -> Result<(), EditError> {
        let mut parts: [&[u8]; 6] = [name, b": ", &[], &[], &[], &[]];
        for (d, v) in parts.iter_mut().skip(2).zip(value.iter().take(3)) {
            *d = v;
        }
        let n = 2 + value.len().min(3);
        if let Some(p) = parts.get_mut(n) {
            *p = b"\r\n";
        }
        self.push(at, at, parts.get(..n + 1).unwrap_or(&[]))?;
        if let Some(op) = self.n.checked_sub(1).and_then(|i| self.ops.get_mut(i)) {
            let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
            op.line = Some((HeaderName::from_bytes(name), len));
        }
        Ok(())
    }

    /// Replaces `span` of the message with `bytes` (empty span = insertion, empty bytes =
    /// deletion).
    pub fn replace(&mut self, span: Span, bytes: &[u8]) -> Result<(), EditError> {
        self.push(span.start_usize(), span.end_usize(), &[bytes])
    }

    /// Deletes a whole header line (folded continuation lines included).
    pub fn remove_header(&mut self, h: &Header) -> Result<(), EditError> {
        self.replace(h.line, &[])
    }

    /// Adds `name: value\r\n` just before the empty line that ends the header section.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), EditError> {
        let he = self.msg.headers_end() as usize;
        self.push_line(he, name, &[value])
    }

    fn line_start_or_end(&self, name: HeaderName) -> usize {
        self.msg
            .header(name)
            .map_or(self.msg.headers_end() as usize, |h| h.line.start_usize())
    }

    /// Inserts a `Via: value\r\n` line above the first Via.
    pub fn insert_via(&mut self, value: &[u8]) -> Result<(), EditError> {
        let at = self.line_start_or_end(HeaderName::Via);
        self.push_line(at, b"Via", &[value])
    }

    /// Inserts a `Record-Route: value\r\n` line above the existing Record-Route lines (or at
    /// the end of the headers). Calling twice (double record-routing) keeps call order.
    pub fn insert_record_route(&mut self, value: &[u8]) -> Result<(), EditError> {
        let at = self.line_start_or_end(HeaderName::RecordRoute);
        self.push_line(at, b"Record-Route", &[value])
    }

    /// On the top Via: adds or replaces `;received=` (when `received` is `Some`) and fills
    /// in the value of `;rport` (when `rport` is `Some` and the parameter is present, RFC 3581;
    /// an absent rport is not added). A new `;received=` goes at the end of the Via value,
    /// after a filled-in trailing `rport`.
    pub fn set_received_rport(
        &mut self,
        received: Option<&[u8]>,
        rport: Option<u16>,
    ) -> Result<(), EditError> {
        let via = self.msg.top_via().ok_or(EditError::NoVia)?;
        let base = via.params_span.start_usize();
        let find = |name: &[u8]| {
            ParamIter::new(via.params).find(|(n, _)| n.get(via.params).eq_ignore_ascii_case(name))
        };
        if let Some(p) = rport {
            let mut digits = [0u8; 10];
            let k = fmt_u32(u32::from(p), &mut digits);
            let d = digits.get(..k).unwrap_or(&[]);
            match find(b"rport") {
                Some((_, Some(v))) => {
                    let at = Span::new(base + v.start_usize(), base + v.end_usize());
                    self.replace(at, d)?;
                }
                Some((n, None)) => {
                    let at = base + n.end_usize();
                    self.push(at, at, &[b"=", d])?;
                }
                None => {}
            }
        }
        if let Some(r) = received {
            match find(b"received") {
                Some((_, Some(v))) => {
                    let at = Span::new(base + v.start_usize(), base + v.end_usize());
                    self.replace(at, r)?;
                }
                Some((n, None)) => {
                    let at = base + n.end_usize();
                    self.push(at, at, &[b"=", r])?;
                }
                None => {
                    let at = via.span.end_usize();
                    self.push(at, at, &[b";received=", r])?;
                }
            }
        }
        Ok(())
    }

    /// Removes the first element of a multi-value header: the whole line if it holds one
    /// value, else the value and the comma after it.
    fn remove_first(&mut self, name: HeaderName, none: EditError) -> Result<Span, EditError> {
        let mut it = self.msg.elements(name);
        let (hi, first) = it.next().ok_or(none)?;
        match it.next() {
            Some((hj, second)) if hj == hi => {
                self.replace(Span::new(first.start_usize(), second.start_usize()), &[])?;
            }
            _ => {
                let line = self.msg.headers().get(hi).ok_or(none)?.line;
                self.replace(line, &[])?;
            }
        }
        Ok(first)
    }

    /// Removes the top Via value (the whole line if it holds only that value).
    pub fn remove_top_via(&mut self) -> Result<(), EditError> {
        self.remove_first(HeaderName::Via, EditError::NoVia)
            .map(|_| ())
    }

    /// Removes the first Route entry (the whole line if it holds only that entry).
    pub fn remove_top_route(&mut self) -> Result<(), EditError> {
        self.remove_first(HeaderName::Route, EditError::NoRoute)
            .map(|_| ())
    }

    /// RFC 3261 §16.4 strict-router compatibility, for a request whose Request-URI is a value
    /// this proxy placed in a Record-Route (the caller decides that, e.g. by its `did`): the
    /// Request-URI is replaced with the URI of the *last* Route entry, and that entry is
    /// removed (the whole line, or the entry and the comma before it).
    pub fn strict_route_fixup(&mut self) -> Result<(), EditError> {
        let ruri = self.msg.request_uri_span().ok_or(EditError::NotRequest)?;
        let mut it = self.msg.routes();
        let mut prev: Option<(usize, Span)> = None;
        let mut last: Option<(usize, Span, Span)> = None;
        while let Some((hi, na)) = it.next_with_index() {
            if let Some((lh, ls, _)) = last {
                prev = Some((lh, ls));
            }
            last = Some((hi, na.span, na.uri_span));
        }
        let (hi, span, uri) = last.ok_or(EditError::NoRoute)?;
        let uri_bytes = uri.get(self.msg.buf());
        self.replace(ruri, uri_bytes)?;
        match prev {
            Some((ph, pspan)) if ph == hi => {
                self.replace(Span::new(pspan.end_usize(), span.end_usize()), &[])
            }
            _ => {
                let line = self.msg.headers().get(hi).ok_or(EditError::NoRoute)?.line;
                self.replace(line, &[])
            }
        }
    }

    /// RFC 3261 §16.6 step 6: if the top Route entry is a strict router (no `;lr`), moves the
    /// Request-URI to a new last `Route: <uri>` line, puts the top Route URI in the
    /// Request-URI and removes that entry. Returns `Ok(false)` (no edit) when there is no Route
    /// or the top Route is a loose router.
    pub fn route_to_strict_router(&mut self) -> Result<bool, EditError> {
        let ruri = self.msg.request_uri_span().ok_or(EditError::NotRequest)?;
        let Some(top) = self.msg.routes().next() else {
            return Ok(false);
        };
        let loose = top.parsed_uri().is_ok_and(|u| u.has_lr());
        if loose {
            return Ok(false);
        }
        let last_line = self
            .msg
            .headers_named(HeaderName::Route)
            .last()
            .map(|h| h.line.end_usize())
            .ok_or(EditError::NoRoute)?;
        let old = ruri.get(self.msg.buf());
        self.replace(ruri, top.uri)?;
        self.remove_first(HeaderName::Route, EditError::NoRoute)?;
        self.push_line(last_line, b"Route", &[b"<", old, b">"])?;
        Ok(true)
    }

    /// Decrements Max-Forwards, or inserts `Max-Forwards: 70` if absent (RFC 3261 §16.6
    /// step 3). [`EditError::TooManyHops`] if it is already 0 (answer 483).
    pub fn decrement_max_forwards(&mut self) -> Result<(), EditError> {
        let Some(h) = self.msg.header(HeaderName::MaxForwards) else {
            let he = self.msg.headers_end() as usize;
            return self.push_line(he, b"Max-Forwards", &[b"70"]);
        };
        let n = parse_u32(h.value.get(self.msg.buf())).ok_or(EditError::BadHeader)?;
        if n == 0 {
            return Err(EditError::TooManyHops);
        }
        let mut digits = [0u8; 10];
        let k = fmt_u32(n - 1, &mut digits);
        let value = h.value;
        self.replace(value, digits.get(..k).unwrap_or(&[]))
    }

    /// Replaces the Request-URI.
    pub fn replace_request_uri(&mut self, uri: &[u8]) -> Result<(), EditError> {
        let span = self.msg.request_uri_span().ok_or(EditError::NotRequest)?;
        self.replace(span, uri)
    }

    /// Length of the serialized output.
    pub fn output_len(&self) -> usize {
        let ops = self.ops.get(..self.n).unwrap_or(&[]);
        let added: usize = ops.iter().map(|o| o.data.len()).sum();
        let removed: usize = ops.iter().map(|o| (o.end - o.start) as usize).sum();
        (self.msg.len() + added).saturating_sub(removed)
    }

    /// The operations in output order: by offset, insertions before a replacement at the
    /// same offset, equal keys in call order. Returns the indices and their count.
    fn order(&self) -> ([u8; MAX_EDITS], usize) {
        let mut order = [0u8; MAX_EDITS];
        for (i, slot) in order.iter_mut().enumerate().take(self.n) {
            *slot = i as u8;
        }
        let key = |i: &u8| {
            let o = self.ops.get(*i as usize).copied().unwrap_or_default();
            (o.start, o.end > o.start)
        };
        let sorted = order.get_mut(..self.n).unwrap_or(&mut []);
        // Insertion sort (stable, no allocation): equal keys keep call order.
        for i in 1..sorted.len() {
            let mut j = i;
            while j > 0 {
                let (Some(&a), Some(&b)) = (sorted.get(j - 1), sorted.get(j)) else {
                    break;
                };
                if key(&a) <= key(&b) {
                    break;
                }
                sorted.swap(j - 1, j);
                j -= 1;
            }
        }
        (order, self.n)
    }

    /// Appends the edited message to `out`: `bytes()` with every edit applied in offset order.
    /// Allocates only if `out` lacks capacity for [`Edits::output_len`] more bytes.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), EditError> {
        let src = self.msg.bytes();
        let (order, n) = self.order();
        out.reserve(self.output_len());
        let mut cursor = 0usize;
        for &i in order.get(..n).unwrap_or(&[]) {
            let o = self.ops.get(i as usize).copied().unwrap_or_default();
            let (s, e) = (o.start as usize, o.end as usize);
            if s < cursor {
                return Err(EditError::Overlap);
            }
            out.extend_from_slice(src.get(cursor..s).ok_or(EditError::OutOfRange)?);
            out.extend_from_slice(o.data.get(&self.scratch));
            cursor = e;
        }
        out.extend_from_slice(src.get(cursor..).unwrap_or(&[]));
        Ok(())
    }

    /// Where offset `at` of the message lands in the output of [`Edits::write`]. `after` puts
    /// it after the bytes inserted at `at` (the start of a span), else before them (the end
    /// of a span). `None` when `at` lies strictly inside a replaced range.
    fn shift(&self, at: usize, after: bool) -> Option<usize> {
        let mut out = at;
        for o in self.ops.get(..self.n).unwrap_or(&[]) {
            let (s, e, d) = (o.start as usize, o.end as usize, o.data.len());
            if s == e {
                if s < at || (s == at && after) {
                    out += d;
                }
            } else if e <= at {
                out = (out + d).checked_sub(e - s)?;
            } else if s < at {
                return None;
            }
        }
        Some(out)
    }

    fn shift_span(&self, sp: Span, after_end: bool) -> Option<Span> {
        let a = self.shift(sp.start_usize(), true)?;
        let b = self.shift(sp.end_usize(), after_end)?;
        Some(Span::new(a, b))
    }

    /// The output of [`Edits::write`] (`written`, as written) kept with its spans, computed
    /// from the message's spans and the edit list instead of parsing it again: the start
    /// line, every header line `keep` accepts (those of the message that an edit did not
    /// remove, and the lines inserted by edits) and the body. `None` if `written` is not
    /// this edit list's output, or an edit cuts across a kept span.
    pub fn kept(&self, written: &[u8], keep: impl Fn(HeaderName) -> bool) -> Option<Kept> {
        if written.len() != self.output_len() || !self.msg.is_request() {
            return None;
        }
        let ops = self.ops.get(..self.n).unwrap_or(&[]);
        let removed = |h: &Header| {
            ops.iter()
                .any(|o| o.start < o.end && o.start <= h.line.start && o.end >= h.line.end)
        };
        // Exactly as many as kept: the box is the vector's one allocation.
        let old = self.msg.headers().iter();
        let n_old = old.filter(|h| keep(h.name) && !removed(h)).count();
        let n_new = ops
            .iter()
            .filter(|o| o.line.is_some_and(|(n, _)| keep(n)))
            .count();
        let mut headers: Vec<Header> = Vec::with_capacity(n_old + n_new);
        for h in self.msg.headers().iter().filter(|h| keep(h.name)) {
            let (ls, le) = (h.line.start, h.line.end);
            let covering = ops
                .iter()
                .find(|o| o.start < o.end && o.start <= ls && o.end >= le);
            match covering {
                Some(o) if o.data.is_empty() => continue,
                Some(_) => return None,
                None => {}
            }
            headers.push(Header {
                name: h.name,
                name_span: self.shift_span(h.name_span, false)?,
                // A parameter appended at the end of a value (`;received=`) belongs to it.
                value: self.shift_span(h.value, true)?,
                line: self.shift_span(h.line, false)?,
            });
        }
        // Inserted lines, at their place in the output.
        let (order, n) = self.order();
        let (mut cin, mut cout) = (0usize, 0usize);
        for &i in order.get(..n).unwrap_or(&[]) {
            let o = self.ops.get(i as usize).copied().unwrap_or_default();
            let at = cout + (o.start as usize).checked_sub(cin)?;
            cin = o.end as usize;
            cout = at + o.data.len();
            let Some((name, nl)) = o.line.filter(|(name, _)| keep(*name)) else {
                continue;
            };
            let (nl, len) = (usize::from(nl), o.data.len());
            headers.push(Header {
                name,
                name_span: Span::new(at, at + nl),
                value: Span::new(at + nl + 2, (at + len).checked_sub(2)?),
                line: Span::new(at, at + len),
            });
        }
        headers.sort_by_key(|h| h.line.start);
        let StartLine::Request {
            method,
            method_span,
            uri,
        } = self.msg.start_line()
        else {
            return None;
        };
        let start = StartLine::Request {
            method,
            method_span: self.shift_span(method_span, false)?,
            uri: self.shift_span(uri, false)?,
        };
        let start_line = self.shift_span(self.msg.start_line_span(), false)?;
        let headers_end = u32::try_from(self.shift(self.msg.headers_end() as usize, true)?).ok()?;
        let body_start = self.shift(self.msg.body_span().start_usize(), true)?;
        let body = Span::new(body_start, written.len());
        let spans = KeptSpans {
            start,
            start_line,
            headers_end,
            body,
            content_length: self.msg.content_length(),
        };
        Some(Kept::from_parts(written, headers, spans))
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
