//! Lazy typed views of header values: name-addr (From/To/Route/Contact), Via, CSeq, option
//! tags, and the iterators that walk multi-value headers across lines and comma lists.
//!
//! Invariants: every view borrows the message buffer and nothing is allocated. Views are
//! computed on call, except the top two Vias, From and To and their tags, which are memoised in the message
//! on first use (same bytes, same result). Spans in views are absolute offsets into `Message::buf`. Iterators
//! visit header lines in order and, within a line, comma elements left to right (commas inside
//! quotes or `<...>` do not split); an iterator stops at the first element that does not parse,
//! so a malformed hop is never skipped over silently.

use std::net::IpAddr;

use super::Span;
use super::error::ParseError;
use super::message::{MemoCell, Message};
use super::names::{HeaderName, Method};
use super::scan::{
    is_lws, is_token, next_element, param_lookup, parse_u16, parse_u32, skip_lws, skip_quoted,
    trim_range,
};
use super::uri::{Uri, host_to_ip, parse_uri};

/// A `name-addr` or `addr-spec` with header parameters (From, To, Route, Record-Route,
/// Contact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: quoted form without the quotes (escapes kept), or the token form trimmed.
    pub display: Option<&'a [u8]>,
    /// The URI (inside `<>` when present); `*` for a star Contact.
    pub uri: &'a [u8],
    /// Absolute span of `uri`.
    pub uri_span: Span,
    /// Raw header parameters after the URI or `>`, starting at `;` (or empty).
    pub params: &'a [u8],
    /// Absolute span of `params`.
    pub params_span: Span,
    /// Absolute span of the whole entry.
    pub span: Span,
}

impl<'a> NameAddr<'a> {
    /// The `tag` parameter value.
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag").flatten()
    }

    /// A header parameter by name (case-insensitive); `Some(None)` if present without value.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        param_lookup(self.params, name)
    }

    /// True for the `*` Contact of a REGISTER.
    pub fn is_star(&self) -> bool {
        self.uri == b"*"
    }

    /// Parses the URI.
    pub fn parsed_uri(&self) -> Result<Uri<'a>, ParseError> {
        parse_uri(self.uri)
    }
}

/// Parses one name-addr element `buf[a..b]` (already trimmed).
pub(crate) fn parse_name_addr(buf: &[u8], a: usize, b: usize) -> Option<NameAddr<'_>> {
    let s = buf.get(a..b)?;
    let at = |x: usize, y: usize| {
        (
            buf.get(a + x..a + y).unwrap_or(&[]),
            Span::new(a + x, a + y),
        )
    };
    if s == b"*" {
        let (uri, uri_span) = at(0, 1);
        let (params, params_span) = at(1, 1);
        return Some(NameAddr {
            display: None,
            uri,
            uri_span,
            params,
            params_span,
            span: Span::new(a, b),
        });
    }
    let (display, lt) = if s.first() == Some(&b'"') {
        let q = skip_quoted(s, 0)?;
        let lt = skip_lws(s, q);
        if s.get(lt) != Some(&b'<') {
            return None;
        }
        (Some(s.get(1..q - 1).unwrap_or(&[])), Some(lt))
    } else {
        match memchr::memchr(b'<', s) {
            Some(lt) => {
                let (da, db) = trim_range(s, 0, lt);
                (s.get(da..db).filter(|d| !d.is_empty()), Some(lt))
            }
            None => (None, None),
        }
    };
    let (ua, ub, rest) = match lt {
        Some(lt) => {
            let gt = lt + 1 + memchr::memchr(b'>', s.get(lt + 1..)?)?;
            (lt + 1, gt, gt + 1)
        }
        None => {
            let semi = memchr::memchr(b';', s).unwrap_or(s.len());
            let (ua, ub) = trim_range(s, 0, semi);
            (ua, ub, semi)
        }
    };
    if ua >= ub {
        return None;
    }
    let pa = skip_lws(s, rest);
    if pa < s.len() && s.get(pa) != Some(&b';') {
        return None;
    }
    let (uri, uri_span) = at(ua, ub);
    let (params, params_span) = at(pa, s.len());
    Some(NameAddr {
        display,
        uri,
        uri_span,
        params,
        params_span,
        span: Span::new(a, b),
    })
}

/// One Via value: `SIP/2.0/transport sent-by;params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `WS`, ...).
    pub transport: &'a [u8],
    /// Sent-by host; IPv6 keeps its brackets.
    pub host: &'a [u8],
    /// Sent-by port if present.
    pub port: Option<u16>,
    /// Raw parameters starting at `;` (or empty).
    pub params: &'a [u8],
    /// Absolute span of `params`.
    pub params_span: Span,
    /// Absolute span of this Via value.
    pub span: Span,
    /// Index into `Message::headers()` of the line holding this value.
    pub header_index: usize,
}

impl<'a> Via<'a> {
    /// Whether the parameters are well formed (`;;`, a trailing `;`, `;=x` and `;branch=` are
    /// not); validation checks the top Via once.
    pub fn params_well_formed(&self) -> bool {
        via_params_ok(self.params)
    }

    /// The `branch` parameter value.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param(b"branch").flatten()
    }

    /// The `received` parameter value.
    pub fn received(&self) -> Option<&'a [u8]> {
        self.param(b"received").flatten()
    }

    /// `None`: no rport; `Some(None)`: `;rport` without (valid) value; `Some(Some(p))`: port.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param(b"rport").map(|v| v.and_then(parse_u16))
    }

    /// The `maddr` parameter value.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.param(b"maddr").flatten()
    }

    /// The `ttl` parameter value.
    pub fn ttl(&self) -> Option<u8> {
        self.param(b"ttl")
            .flatten()
            .and_then(parse_u32)
            .and_then(|t| u8::try_from(t).ok())
    }

    /// Any parameter by name (case-insensitive).
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        param_lookup(self.params, name)
    }

    /// The sent-by host as an IP address, if it is one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_to_ip(self.host)
    }
}

fn take_token(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_token(b)) {
        i += 1;
    }
    i
}

fn expect(s: &[u8], i: usize, c: u8) -> Option<usize> {
    let i = skip_lws(s, i);
    (s.get(i) == Some(&c)).then(|| skip_lws(s, i + 1))
}

/// Parses one Via element `buf[a..b]`.
pub(crate) fn parse_via(buf: &[u8], a: usize, b: usize, header_index: usize) -> Option<Via<'_>> {
    let s = buf.get(a..b)?;
    let p_end = take_token(s, 0);
    let i = expect(s, p_end, b'/')?;
    let v_end = take_token(s, i);
    if v_end == i || p_end == 0 {
        return None;
    }
    let t0 = expect(s, v_end, b'/')?;
    let t1 = take_token(s, t0);
    if t1 == t0 {
        return None;
    }
    let h0 = skip_lws(s, t1);
    if h0 == t1 {
        return None;
    }
    let h1 = if s.get(h0) == Some(&b'[') {
        let end = h0 + memchr::memchr(b']', s.get(h0..)?)? + 1;
        // An IPv6 reference must hold an IPv6 address (RFC 5118: not three colons).
        host_to_ip(s.get(h0..end)?).filter(IpAddr::is_ipv6)?;
        end
    } else {
        let mut j = h0;
        while s
            .get(j)
            .is_some_and(|&c| !is_lws(c) && c != b':' && c != b';' && c != b',')
        {
            j += 1;
        }
        j
    };
    if h1 == h0 {
        return None;
    }
    let mut i = skip_lws(s, h1);
    let mut port = None;
    if s.get(i) == Some(&b':') {
        let p0 = skip_lws(s, i + 1);
        let mut p1 = p0;
        while s.get(p1).is_some_and(u8::is_ascii_digit) {
            p1 += 1;
        }
        port = Some(parse_u16(s.get(p0..p1)?)?);
        i = skip_lws(s, p1);
    }
    if i < s.len() && s.get(i) != Some(&b';') {
        return None;
    }
    Some(Via {
        transport: s.get(t0..t1)?,
        host: s.get(h0..h1)?,
        port,
        params: s.get(i..)?,
        params_span: Span::new(a + i, b),
        span: Span::new(a, b),
        header_index,
    })
}

/// Whether Via parameters (`;name[=value]...`, or nothing) are well formed (RFC 3261 §20.42),
/// checked once per message by validation (not by [`parse_via`], which every Via accessor
/// calls):
/// every name a non-empty token, every `=` followed by a non-empty token, host or quoted
/// string; so `;;`, a trailing `;`, `;=x` and `;branch=` are not.
fn via_params_ok(p: &[u8]) -> bool {
    let mut i = 0;
    while i < p.len() {
        if p.get(i) != Some(&b';') {
            return false;
        }
        let n0 = skip_lws(p, i + 1);
        let n1 = take_token(p, n0);
        if n1 == n0 {
            return false;
        }
        i = skip_lws(p, n1);
        if p.get(i) == Some(&b'=') {
            let v0 = skip_lws(p, i + 1);
            let v1 = match p.get(v0) {
                Some(b'"') => {
                    let mut j = v0 + 1;
                    loop {
                        match p.get(j) {
                            None => return false,
                            Some(b'\\') => j += 2,
                            Some(b'"') => break j + 1,
                            Some(_) => j += 1,
                        }
                    }
                }
                Some(b'[') => match memchr::memchr(b']', p.get(v0..).unwrap_or(&[])) {
                    Some(k) => v0 + k + 1,
                    None => return false,
                },
                _ => {
                    let mut j = v0;
                    while p.get(j).is_some_and(|&c| is_token(c) || c == b':') {
                        j += 1;
                    }
                    j
                }
            };
            if v1 == v0 {
                return false;
            }
            i = skip_lws(p, v1);
        }
    }
    true
}

/// A parsed CSeq value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number.
    pub num: u32,
    /// Recognised method.
    pub method: Method,
    /// Method token as written.
    pub method_bytes: &'a [u8],
}

pub(crate) fn parse_cseq(v: &[u8]) -> Option<CSeq<'_>> {
    let mut d = 0;
    while v.get(d).is_some_and(u8::is_ascii_digit) {
        d += 1;
    }
    let num = parse_u32(v.get(..d)?)?;
    let m0 = skip_lws(v, d);
    if m0 == d {
        return None;
    }
    let m1 = take_token(v, m0);
    if m1 == m0 || m1 != v.len() {
        return None;
    }
    let method_bytes = v.get(m0..m1)?;
    Some(CSeq {
        num,
        method: Method::from_bytes(method_bytes),
        method_bytes,
    })
}

/// Walks the comma elements of every header with one name: `(header index, absolute span)`.
#[derive(Clone, Debug)]
pub(crate) struct ElemIter<'a, 'm> {
    msg: &'m Message<'a>,
    name: HeaderName,
    hi: usize,
    pos: usize,
}

impl<'a, 'm> ElemIter<'a, 'm> {
    pub(crate) fn new(msg: &'m Message<'a>, name: HeaderName) -> Self {
        ElemIter {
            msg,
            name,
            hi: 0,
            pos: 0,
        }
    }
}

impl Iterator for ElemIter<'_, '_> {
    type Item = (usize, Span);

    fn next(&mut self) -> Option<(usize, Span)> {
        loop {
            let h = self.msg.headers().get(self.hi)?;
            if h.name == self.name {
                let v = h.value.get(self.msg.buf());
                if let Some((a, b, n)) = next_element(v, self.pos) {
                    self.pos = n;
                    let base = h.value.start_usize();
                    return Some((self.hi, Span::new(base + a, base + b)));
                }
            }
            self.hi += 1;
            self.pos = 0;
        }
    }
}

/// Iterator over every Via value, top first. Stops at the first malformed value.
#[derive(Clone, Debug)]
pub struct ViaIter<'a, 'm> {
    inner: ElemIter<'a, 'm>,
    done: bool,
}

impl<'a> Iterator for ViaIter<'a, '_> {
    type Item = Via<'a>;

    fn next(&mut self) -> Option<Via<'a>> {
        if self.done {
            return None;
        }
        let (hi, sp) = self.inner.next()?;
        let v = parse_via(self.inner.msg.buf(), sp.start_usize(), sp.end_usize(), hi);
        self.done = v.is_none();
        v
    }
}

/// Iterator over name-addr entries (Route, Record-Route, Contact), top first. Stops at the
/// first malformed entry.
#[derive(Clone, Debug)]
pub struct NameAddrIter<'a, 'm> {
    inner: ElemIter<'a, 'm>,
    done: bool,
}

impl<'a> NameAddrIter<'a, '_> {
    /// Like `next`, but also yields the index of the header line holding the entry.
    pub fn next_with_index(&mut self) -> Option<(usize, NameAddr<'a>)> {
        if self.done {
            return None;
        }
        let (hi, sp) = self.inner.next()?;
        let v = parse_name_addr(self.inner.msg.buf(), sp.start_usize(), sp.end_usize());
        self.done = v.is_none();
        v.map(|v| (hi, v))
    }
}

impl<'a> Iterator for NameAddrIter<'a, '_> {
    type Item = NameAddr<'a>;

    fn next(&mut self) -> Option<NameAddr<'a>> {
        self.next_with_index().map(|(_, v)| v)
    }
}

/// Iterator over comma-separated tokens (option tags, Allow methods), trimmed.
#[derive(Clone, Debug)]
pub struct TokenIter<'a, 'm> {
    inner: ElemIter<'a, 'm>,
}

impl<'a> Iterator for TokenIter<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (_, sp) = self.inner.next()?;
        Some(sp.get(self.inner.msg.buf()))
    }
}

impl<'a> Message<'a> {
    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&'a [u8]> {
        self.header_value(HeaderName::CallId)
    }

    fn name_addr_of(&self, name: HeaderName) -> Option<NameAddr<'a>> {
        let cell = match name {
            HeaderName::From => &self.memo.from,
            HeaderName::To => &self.memo.to,
            _ => return self.parse_name_addr_of(name),
        };
        cell.get_or(|| self.parse_name_addr_of(name))
    }

    fn parse_name_addr_of(&self, name: HeaderName) -> Option<NameAddr<'a>> {
        let h = self.header(name)?;
        parse_name_addr(self.buf(), h.value.start_usize(), h.value.end_usize())
    }

    /// The From header (the first one), parsed.
    pub fn from(&self) -> Option<NameAddr<'a>> {
        self.name_addr_of(HeaderName::From)
    }

    /// The To header (the first one), parsed.
    pub fn to(&self) -> Option<NameAddr<'a>> {
        self.name_addr_of(HeaderName::To)
    }

    /// The From tag (memoised: the proxy reads it several times per message).
    pub fn from_tag(&self) -> Option<&'a [u8]> {
        self.memo
            .from_tag
            .get_or(|| self.from().and_then(|f| f.tag()))
    }

    /// The To tag (memoised like [`Message::from_tag`]).
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.memo.to_tag.get_or(|| self.to().and_then(|t| t.tag()))
    }

    /// The CSeq header, parsed.
    pub fn cseq(&self) -> Option<CSeq<'a>> {
        parse_cseq(self.header_value(HeaderName::CSeq)?)
    }

    /// Max-Forwards as a number (any `u32`; range is checked by validation).
    pub fn max_forwards(&self) -> Option<u32> {
        parse_u32(self.header_value(HeaderName::MaxForwards)?)
    }

    /// The topmost Via value (parsed once per message, then memoised).
    pub fn top_via(&self) -> Option<Via<'a>> {
        self.memo.top_via.get_or(|| self.vias().next())
    }

    /// The second Via value: where a proxy sends a response after removing its own Via
    /// (parsed once per message, then memoised).
    pub fn second_via(&self) -> Option<Via<'a>> {
        self.memo.second_via.get_or(|| self.vias().nth(1))
    }

    /// Every Via value across lines and commas, top first.
    pub fn vias(&self) -> ViaIter<'a, '_> {
        ViaIter {
            inner: ElemIter::new(self, HeaderName::Via),
            done: false,
        }
    }

    /// Every entry of a name-addr multi-value header (Route, Record-Route, Contact, ...).
    pub fn name_addrs(&self, name: HeaderName) -> NameAddrIter<'a, '_> {
        NameAddrIter {
            inner: ElemIter::new(self, name),
            done: false,
        }
    }

    /// Route entries, top first.
    pub fn routes(&self) -> NameAddrIter<'a, '_> {
        self.name_addrs(HeaderName::Route)
    }

    /// Record-Route entries, top first.
    pub fn record_routes(&self) -> NameAddrIter<'a, '_> {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// Contact entries; a `*` Contact has `is_star()`.
    pub fn contacts(&self) -> NameAddrIter<'a, '_> {
        self.name_addrs(HeaderName::Contact)
    }

    /// Tokens of Require, Proxy-Require, Supported, Unsupported, Allow (any header, really).
    pub fn option_tags(&self, name: HeaderName) -> TokenIter<'a, '_> {
        TokenIter {
            inner: ElemIter::new(self, name),
        }
    }

    /// Raw comma elements of a header as `(header index, span)`.
    pub(crate) fn elements(&self, name: HeaderName) -> ElemIter<'a, '_> {
        ElemIter::new(self, name)
    }
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
