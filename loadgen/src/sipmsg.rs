//! SIP message scanning and building for the load generator: the only file that knows the
//! text syntax of SIP.
//!
//! Invariants:
//! - [`Msg::parse`] never panics and never allocates: a parsed message is the datagram plus
//!   small `(start, len)` [`Span`]s into it. Every accessor goes through `get`, so a span that
//!   is out of range yields an empty slice, never a panic.
//! - Builders append to a caller-owned `Vec<u8>`; with a warmed-up capacity they do not
//!   allocate.
//! - Only what the UAC/UAS need is extracted: start line, Call-ID, CSeq, To/From tag, top Via
//!   branch, Contact URI, Record-Route entries, whole header lines that a response copies
//!   (Via, From, To, Call-ID, CSeq, Record-Route) and the `X-Loadgen-Scenario` value.

use std::net::{IpAddr, SocketAddr};

/// Maximum Via header lines copied into a response.
pub const MAX_VIA: usize = 8;
/// Maximum Record-Route header lines kept.
pub const MAX_RR: usize = 8;
/// Header carrying the scenario name from UAC to UAS.
pub const SCENARIO_HDR: &str = "X-Loadgen-Scenario";

/// A `(start, len)` window into a datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u16,
    /// Length in bytes (0 = absent).
    pub len: u16,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        let s = u16::try_from(start).unwrap_or(u16::MAX);
        let e = u16::try_from(end).unwrap_or(u16::MAX);
        Span {
            start: s,
            len: e.saturating_sub(s),
        }
    }
    /// The bytes of this span in `buf` (empty if out of range).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let s = usize::from(self.start);
        buf.get(s..s + usize::from(self.len)).unwrap_or(&[])
    }
    /// True when the span is empty (header or parameter absent).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// SIP methods the generator distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// anything else
    Other,
}

impl Method {
    fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// Request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request with its method.
    Request(Method),
    /// A response with its status code.
    Response(u16),
}

/// Why a datagram was not accepted as a SIP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No empty line ending the headers.
    Incomplete,
    /// Start line is neither a request line nor a status line.
    BadStartLine,
    /// Call-ID or CSeq missing or malformed.
    MissingHeader,
    /// Datagram larger than 64 KiB.
    TooLarge,
}

/// A parsed SIP message: the datagram plus spans.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    /// The whole datagram.
    pub buf: &'a [u8],
    /// Request (method) or response (status).
    pub kind: Kind,
    /// Call-ID value.
    pub call_id: Span,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: Method,
    /// To tag value (empty if none).
    pub to_tag: Span,
    /// From tag value (empty if none).
    pub from_tag: Span,
    /// Branch of the top Via (empty if none).
    pub branch: Span,
    /// Contact URI without angle brackets (empty if none).
    pub contact: Span,
    /// Whole Via header lines (without CRLF), top first.
    pub via_lines: [Span; MAX_VIA],
    /// Number of valid entries in `via_lines`.
    pub n_via: u8,
    /// Whole Record-Route header lines, in message order.
    pub rr_lines: [Span; MAX_RR],
    /// Number of valid entries in `rr_lines`.
    pub n_rr: u8,
    /// Whole From line.
    pub from_line: Span,
    /// Whole To line.
    pub to_line: Span,
    /// Whole Call-ID line.
    pub call_id_line: Span,
    /// Whole CSeq line.
    pub cseq_line: Span,
    /// Value of `X-Loadgen-Scenario` (empty if none).
    pub scenario: Span,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hdr {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    RecordRoute,
    Scenario,
    Other,
}

fn header_kind(name: &[u8]) -> Hdr {
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        1 => match name.first().map(u8::to_ascii_lowercase) {
            Some(b'v') => Hdr::Via,
            Some(b'f') => Hdr::From,
            Some(b't') => Hdr::To,
            Some(b'i') => Hdr::CallId,
            Some(b'm') => Hdr::Contact,
            _ => Hdr::Other,
        },
        2 if eq("To") => Hdr::To,
        3 if eq("Via") => Hdr::Via,
        4 if eq("From") => Hdr::From,
        4 if eq("CSeq") => Hdr::CSeq,
        7 if eq("Call-ID") => Hdr::CallId,
        7 if eq("Contact") => Hdr::Contact,
        12 if eq("Record-Route") => Hdr::RecordRoute,
        18 if eq(SCENARIO_HDR) => Hdr::Scenario,
        _ => Hdr::Other,
    }
}

fn trim(buf: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && matches!(buf.get(s), Some(b' ' | b'\t')) {
        s += 1;
    }
    while e > s && matches!(buf.get(e - 1), Some(b' ' | b'\t')) {
        e -= 1;
    }
    (s, e)
}

/// Finds `;name=` (case-insensitive) in `buf[s..e]` and returns the parameter value span.
fn param(buf: &[u8], s: usize, e: usize, name: &[u8]) -> Span {
    let hay = buf.get(s..e).unwrap_or(&[]);
    let n = name.len();
    let mut i = 0;
    while let Some(off) = hay.get(i..).and_then(|h| memchr::memchr(b';', h)) {
        let p = i + off + 1;
        let (ps, _) = trim(hay, p, hay.len());
        let matches = hay
            .get(ps..ps + n)
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
            && hay.get(ps + n) == Some(&b'=');
        if matches {
            let vs = ps + n + 1;
            let mut ve = vs;
            while let Some(&c) = hay.get(ve) {
                if matches!(c, b';' | b',' | b' ' | b'\t' | b'>' | b'?') {
                    break;
                }
                ve += 1;
            }
            return Span::new(s + vs, s + ve);
        }
        i = p;
    }
    Span::default()
}

/// Start of the header parameters in a name-addr value: after `>` if bracketed.
fn params_start(buf: &[u8], s: usize, e: usize) -> usize {
    let v = buf.get(s..e).unwrap_or(&[]);
    match memchr::memchr(b'<', v) {
        Some(lt) => match v.get(lt..).and_then(|r| memchr::memchr(b'>', r)) {
            Some(gt) => s + lt + gt,
            None => e,
        },
        None => s,
    }
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

impl<'a> Msg<'a> {
    /// Parses one datagram. Never panics, never allocates.
    pub fn parse(buf: &'a [u8]) -> Result<Msg<'a>, ParseError> {
        if buf.len() > usize::from(u16::MAX) {
            return Err(ParseError::TooLarge);
        }
        let (line1_end, mut pos) = next_line(buf, 0).ok_or(ParseError::Incomplete)?;
        let line1 = buf.get(..line1_end).ok_or(ParseError::BadStartLine)?;
        let kind = if let Some(rest) = line1.strip_prefix(b"SIP/2.0 ") {
            let code = rest
                .get(..3)
                .and_then(parse_u32)
                .ok_or(ParseError::BadStartLine)?;
            Kind::Response(u16::try_from(code).map_err(|_| ParseError::BadStartLine)?)
        } else {
            let sp = memchr::memchr(b' ', line1).ok_or(ParseError::BadStartLine)?;
            if !line1.ends_with(b" SIP/2.0") {
                return Err(ParseError::BadStartLine);
            }
            Kind::Request(Method::from_bytes(line1.get(..sp).unwrap_or(&[])))
        };
        let mut m = Msg {
            buf,
            kind,
            call_id: Span::default(),
            cseq: 0,
            cseq_method: Method::Other,
            to_tag: Span::default(),
            from_tag: Span::default(),
            branch: Span::default(),
            contact: Span::default(),
            via_lines: [Span::default(); MAX_VIA],
            n_via: 0,
            rr_lines: [Span::default(); MAX_RR],
            n_rr: 0,
            from_line: Span::default(),
            to_line: Span::default(),
            call_id_line: Span::default(),
            cseq_line: Span::default(),
            scenario: Span::default(),
        };
        let mut have_cseq = false;
        loop {
            let ls = pos;
            let (le, next) = next_line(buf, pos).ok_or(ParseError::Incomplete)?;
            pos = next;
            if le == ls {
                break; // empty line: end of headers
            }
            let line = buf.get(ls..le).unwrap_or(&[]);
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let (ns, ne) = trim(buf, ls, ls + colon);
            let (vs, ve) = trim(buf, ls + colon + 1, le);
            let whole = Span::new(ls, le);
            match header_kind(buf.get(ns..ne).unwrap_or(&[])) {
                Hdr::Via => {
                    if m.n_via == 0 {
                        m.branch = param(buf, vs, ve, b"branch");
                    }
                    if let Some(slot) = m.via_lines.get_mut(usize::from(m.n_via)) {
                        *slot = whole;
                        m.n_via += 1;
                    }
                }
                Hdr::RecordRoute => {
                    if let Some(slot) = m.rr_lines.get_mut(usize::from(m.n_rr)) {
                        *slot = whole;
                        m.n_rr += 1;
                    }
                }
                Hdr::From => {
                    m.from_line = whole;
                    m.from_tag = param(buf, params_start(buf, vs, ve), ve, b"tag");
                }
                Hdr::To => {
                    m.to_line = whole;
                    m.to_tag = param(buf, params_start(buf, vs, ve), ve, b"tag");
                }
                Hdr::CallId => {
                    m.call_id_line = whole;
                    m.call_id = Span::new(vs, ve);
                }
                Hdr::CSeq => {
                    m.cseq_line = whole;
                    let v = buf.get(vs..ve).unwrap_or(&[]);
                    let sp = memchr::memchr(b' ', v).ok_or(ParseError::MissingHeader)?;
                    m.cseq =
                        parse_u32(v.get(..sp).unwrap_or(&[])).ok_or(ParseError::MissingHeader)?;
                    let (ms, me) = trim(v, sp + 1, v.len());
                    m.cseq_method = Method::from_bytes(v.get(ms..me).unwrap_or(&[]));
                    have_cseq = true;
                }
                Hdr::Contact => {
                    if m.contact.is_empty() {
                        m.contact = contact_uri(buf, vs, ve);
                    }
                }
                Hdr::Scenario => m.scenario = Span::new(vs, ve),
                Hdr::Other => {}
            }
        }
        if m.call_id.is_empty() || !have_cseq {
            return Err(ParseError::MissingHeader);
        }
        Ok(m)
    }

    /// Bytes of a span of this message.
    pub fn get(&self, s: Span) -> &'a [u8] {
        s.of(self.buf)
    }

    /// Iterates the Record-Route entries (each a name-addr such as `<sip:p;lr>`) in order.
    pub fn record_routes(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let buf = self.buf;
        self.rr_lines
            .iter()
            .take(usize::from(self.n_rr))
            .flat_map(move |l| {
                let line = l.of(buf);
                let colon = memchr::memchr(b':', line).map_or(line.len(), |c| c + 1);
                split_entries(line.get(colon..).unwrap_or(&[]))
            })
    }
}

/// End of the line starting at `pos` (without CR LF) and the start of the next line.
fn next_line(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', buf.get(pos..)?)?;
    let end = if nl > pos && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

fn contact_uri(buf: &[u8], s: usize, e: usize) -> Span {
    let v = buf.get(s..e).unwrap_or(&[]);
    if let Some(lt) = memchr::memchr(b'<', v)
        && let Some(gt) = v.get(lt..).and_then(|r| memchr::memchr(b'>', r))
    {
        return Span::new(s + lt + 1, s + lt + gt);
    }
    let end = memchr::memchr2(b';', b',', v).unwrap_or(v.len());
    let (a, b) = trim(v, 0, end);
    Span::new(s + a, s + b)
}

/// Splits a header value on commas outside `<...>` and quotes, trimming each entry.
pub fn split_entries(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < v.len() {
            let start = pos;
            let (mut in_angle, mut in_quote) = (false, false);
            while let Some(&c) = v.get(pos) {
                match c {
                    b'"' => in_quote = !in_quote,
                    b'<' if !in_quote => in_angle = true,
                    b'>' if !in_quote => in_angle = false,
                    b',' if !in_angle && !in_quote => break,
                    _ => {}
                }
                pos += 1;
            }
            let (a, b) = trim(v, start, pos);
            pos += 1;
            if b > a {
                return v.get(a..b);
            }
        }
        None
    })
}

/// Length of the first complete message in a stream buffer (headers + `Content-Length`
/// body), or `None` if more bytes are needed. Leading CR/LF keep-alives form their own frame.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let ws = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if ws > 0 {
        return Some(ws);
    }
    let end = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
    let head = buf.get(..end)?;
    let mut cl = 0usize;
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or(&[]).trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = line.get(colon + 1..).unwrap_or(&[]).trim_ascii();
            cl = std::str::from_utf8(v).ok()?.parse().ok()?;
        }
    }
    let total = end + cl;
    (total <= buf.len()).then_some(total)
}

/// Socket address of a SIP URI or name-addr with a literal IP host (port defaults to 5060).
pub fn uri_addr(uri: &[u8]) -> Option<SocketAddr> {
    let u = match memchr::memchr(b'<', uri) {
        Some(lt) => {
            let r = uri.get(lt + 1..)?;
            r.get(..memchr::memchr(b'>', r)?)?
        }
        None => uri,
    };
    let u = u
        .strip_prefix(b"sip:")
        .or_else(|| u.strip_prefix(b"SIP:"))?;
    let end = memchr::memchr3(b';', b'?', b'>', u).unwrap_or(u.len());
    let hostport = u.get(..end)?;
    let hostport = match memchr::memrchr(b'@', hostport) {
        Some(at) => hostport.get(at + 1..)?,
        None => hostport,
    };
    let s = std::str::from_utf8(hostport).ok()?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = s.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// Appends the decimal form of `n`.
pub fn push_dec(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        if let Some(d) = tmp.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or(&[]));
}

/// Appends `n` as exactly 8 lowercase hex digits.
pub fn push_hex8(out: &mut Vec<u8>, n: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// `hex8(a) hex8(b)` as a fixed array (call keys and tags without allocation).
pub fn key16(a: u32, b: u32) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = (u64::from(a) << 32) | u64::from(b);
    std::array::from_fn(|i| HEX[((v >> ((15 - i) * 4)) & 0xf) as usize])
}

/// Parses exactly 8 hex digits.
pub fn parse_hex8(b: &[u8]) -> Option<u32> {
    let b = b.get(..8)?;
    let mut n = 0u32;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u32::from(d);
    }
    Some(n)
}

/// Reason phrase for the status codes the generator sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        408 => "Request Timeout",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Unknown",
    }
}

/// A short fixed SDP body (offer and answer alike).
pub const SDP: &[u8] = b"v=0\r\no=lg 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// What a response built by [`build_response`] carries besides the copied headers.
#[derive(Clone, Copy, Debug)]
pub struct ResponseOpts<'b> {
    /// Status code.
    pub code: u16,
    /// To tag to add when the request's To has none (empty = add none).
    pub to_tag: &'b [u8],
    /// Contact URI to include (empty = none).
    pub contact: &'b [u8],
    /// Copy Record-Route lines (18x/2xx to INVITE).
    pub record_route: bool,
    /// Append the SDP answer.
    pub sdp: bool,
}

/// Appends a response to `req`: Via, From, To, Call-ID, CSeq copied from the request.
pub fn build_response(out: &mut Vec<u8>, req: &Msg<'_>, o: &ResponseOpts<'_>) {
    out.extend_from_slice(b"SIP/2.0 ");
    push_dec(out, u64::from(o.code));
    out.push(b' ');
    out.extend_from_slice(reason(o.code).as_bytes());
    out.extend_from_slice(b"\r\n");
    for v in req.via_lines.iter().take(usize::from(req.n_via)) {
        out.extend_from_slice(req.get(*v));
        out.extend_from_slice(b"\r\n");
    }
    if o.record_route {
        for v in req.rr_lines.iter().take(usize::from(req.n_rr)) {
            out.extend_from_slice(req.get(*v));
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(req.get(req.from_line));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.get(req.to_line));
    if req.to_tag.is_empty() && !o.to_tag.is_empty() {
        out.extend_from_slice(b";tag=");
        out.extend_from_slice(o.to_tag);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.get(req.call_id_line));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.get(req.cseq_line));
    out.extend_from_slice(b"\r\n");
    if !o.contact.is_empty() {
        out.extend_from_slice(b"Contact: <");
        out.extend_from_slice(o.contact);
        out.extend_from_slice(b">\r\n");
    }
    if o.sdp {
        out.extend_from_slice(b"Content-Type: application/sdp\r\nContent-Length: ");
        push_dec(out, SDP.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(SDP);
    } else {
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const INV: &[u8] = b"INVITE sip:service@127.0.0.1:5090 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKold\r\n\
Record-Route: <sip:10.0.0.9;lr;did=ab>, <sip:10.0.0.8:5062;lr>\r\n\
Record-Route: <sip:10.0.0.7;lr>\r\n\
From: \"A, B\" <sip:a@x;tag=no>;tag=ft1\r\n\
t: <sip:service@127.0.0.1:5090>\r\n\
i: abc@host\r\n\
CSeq: 17 INVITE\r\n\
m: <sip:uac@127.0.0.1:5070;transport=udp>\r\n\
X-Loadgen-Scenario: reject\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_request_fields() {
        let m = Msg::parse(INV).expect("valid");
        assert_eq!(m.kind, Kind::Request(Method::Invite));
        assert_eq!(m.get(m.call_id), b"abc@host");
        assert_eq!((m.cseq, m.cseq_method), (17, Method::Invite));
        assert_eq!(m.get(m.branch), b"z9hG4bK-1");
        assert_eq!(m.get(m.from_tag), b"ft1");
        assert!(m.to_tag.is_empty());
        assert_eq!(m.n_via, 2);
        assert_eq!(m.get(m.contact), b"sip:uac@127.0.0.1:5070;transport=udp");
        assert_eq!(m.get(m.scenario), b"reject");
        let rr: Vec<&[u8]> = m.record_routes().collect();
        assert_eq!(
            rr,
            vec![
                &b"<sip:10.0.0.9;lr;did=ab>"[..],
                &b"<sip:10.0.0.8:5062;lr>"[..],
                &b"<sip:10.0.0.7;lr>"[..]
            ]
        );
        assert_eq!(uri_addr(rr[0]), "10.0.0.9:5060".parse().ok());
        assert_eq!(uri_addr(rr[1]), "10.0.0.8:5062".parse().ok());
    }

    #[test]
    fn builds_response_with_tag_and_rr() {
        let m = Msg::parse(INV).expect("valid");
        let mut out = Vec::new();
        let o = ResponseOpts {
            code: 200,
            to_tag: b"uas1",
            contact: b"sip:uas@127.0.0.1:5090",
            record_route: true,
            sdp: true,
        };
        build_response(&mut out, &m, &o);
        let r = Msg::parse(&out).expect("own response parses");
        assert_eq!(r.kind, Kind::Response(200));
        assert_eq!(r.get(r.to_tag), b"uas1");
        assert_eq!(r.n_via, 2);
        assert_eq!(r.n_rr, 2);
        assert_eq!(r.get(r.branch), b"z9hG4bK-1");
        assert_eq!(r.get(r.contact), b"sip:uas@127.0.0.1:5090");
        assert!(out.ends_with(SDP));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 2\r\n\r\n",
            b"INVITE x SIP/2.0\r\nCSeq: x INVITE\r\ni: a\r\n\r\n",
            b"INVITE x SIP/2.0\r\nVia: ;branch=\r\n\r\n",
        ] {
            assert!(Msg::parse(bad).is_err());
        }
        for cut in 0..INV.len() {
            let _ = Msg::parse(INV.get(..cut).unwrap_or(&[]));
        }
    }

    #[test]
    fn frames_a_stream_by_content_length() {
        let mut out = Vec::new();
        let m = Msg::parse(INV).expect("valid");
        let o = ResponseOpts {
            code: 200,
            to_tag: b"t",
            contact: b"",
            record_route: false,
            sdp: true,
        };
        build_response(&mut out, &m, &o);
        let one = out.len();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(INV);
        assert_eq!(frame_len(&out), Some(one));
        assert_eq!(frame_len(&out[one..]), Some(2), "keep-alive CRLF");
        assert_eq!(frame_len(&out[one + 2..]), Some(INV.len()));
        assert_eq!(frame_len(&out[..one - 1]), None, "body incomplete");
        assert_eq!(frame_len(&out[..20]), None, "headers incomplete");
    }

    #[test]
    fn numbers_round_trip() {
        let mut v = Vec::new();
        push_dec(&mut v, 0);
        push_dec(&mut v, 1234567890123);
        assert_eq!(v, b"01234567890123");
        v.clear();
        push_hex8(&mut v, 0xdeadbeef);
        assert_eq!(parse_hex8(&v), Some(0xdeadbeef));
        push_hex8(&mut v, 7);
        assert_eq!(&key16(0xdeadbeef, 7)[..], &v[..]);
        assert_eq!(uri_addr(b"sip:1.2.3.4"), "1.2.3.4:5060".parse().ok());
        assert_eq!(uri_addr(b"sip:u@[::1]:5070;lr"), "[::1]:5070".parse().ok());
    }
}
