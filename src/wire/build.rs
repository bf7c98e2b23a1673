//! Builders for messages the proxy originates: local responses, CANCEL, ACK for non-2xx and
//! in-dialog requests (BYE/OPTIONS from `dlg_terminate` or keep-alive).
//!
//! Invariants: builders append to a caller-owned `Vec<u8>` (no other allocation); header
//! lines taken from a parsed message are copied byte for byte (name form and folding kept);
//! every built message ends its header section with `Content-Length` and an empty line, so it
//! parses back with [`super::parse`] and frames on a stream.

use super::error::ParseError;
use super::message::Message;
use super::names::HeaderName;
use super::scan::push_u32;

fn line(m: &Message, name: HeaderName, out: &mut Vec<u8>) -> Result<(), ParseError> {
    let h = m.header(name).ok_or(ParseError::MissingHeader(name))?;
    out.extend_from_slice(h.line.get(m.buf()));
    Ok(())
}

fn all_lines(m: &Message, name: HeaderName, out: &mut Vec<u8>) {
    for h in m.headers_named(name) {
        out.extend_from_slice(h.line.get(m.buf()));
    }
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Builds a response to `req` (RFC 3261 §8.2.6): all Via lines, From, To (with `;tag=to_tag`
/// appended when To has no tag and `to_tag` is `Some`), Call-ID, CSeq, the `extra` headers and
/// `Content-Length: 0`. Headers missing from `req` are simply omitted (the request was
/// validated or is being rejected for exactly that reason). Pass `to_tag: None` for 100.
pub fn response(
    req: &Message,
    code: u16,
    reason: &[u8],
    to_tag: Option<&[u8]>,
    extra: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"SIP/2.0 ");
    push_u32(out, u32::from(code));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    all_lines(req, HeaderName::Via, out);
    let _ = line(req, HeaderName::From, out);
    match (req.header(HeaderName::To), to_tag) {
        (Some(h), Some(tag)) if req.to().is_some_and(|t| t.tag().is_none()) => {
            out.extend_from_slice(b"To: ");
            out.extend_from_slice(h.value.get(req.buf()));
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag);
            out.extend_from_slice(b"\r\n");
        }
        (Some(h), _) => out.extend_from_slice(h.line.get(req.buf())),
        (None, _) => {}
    }
    let _ = line(req, HeaderName::CallId, out);
    let _ = line(req, HeaderName::CSeq, out);
    for (n, v) in extra {
        header(out, n, v);
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

fn request_head(
    method: &[u8],
    inv: &Message,
    out: &mut Vec<u8>,
) -> Result<(u32, usize), ParseError> {
    let ruri = inv.request_uri().ok_or(ParseError::WrongKind)?;
    let via = inv
        .top_via()
        .ok_or(ParseError::MissingHeader(HeaderName::Via))?;
    let cseq = inv
        .cseq()
        .ok_or(ParseError::BadHeaderValue(HeaderName::CSeq))?;
    let mark = out.len();
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(ruri);
    out.extend_from_slice(b" SIP/2.0\r\n");
    header(out, b"Via", via.span.get(inv.buf()));
    all_lines(inv, HeaderName::Route, out);
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    Ok((cseq.num, mark))
}

fn finish(method: &[u8], num: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, num);
    out.push(b' ');
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
}

/// The header lines [`response`] copies from the request (Via, From, To, Call-ID, CSeq):
/// what a kept request needs to be answered.
pub fn response_header(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// The header lines [`cancel`] and [`ack_for_non2xx`] read from the forwarded INVITE (Via,
/// Route, From, To, Call-ID, CSeq): what a kept copy needs for them.
pub fn cancel_ack_header(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::Route
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
    )
}

/// Builds the CANCEL for a forwarded INVITE (RFC 3261 §9.1): same Request-URI, only the top
/// Via, the Route lines, `Max-Forwards: 70`, From, To, Call-ID, and the CSeq number with method
/// CANCEL. `forwarded_invite` must be the INVITE *as sent* (parse the bytes you forwarded).
/// On error nothing is appended.
pub fn cancel(forwarded_invite: &Message, out: &mut Vec<u8>) -> Result<(), ParseError> {
    cancel_with(forwarded_invite, &[], out)
}

/// [`cancel`] with `extra` header lines (e.g. a `Reason`, RFC 3326).
pub fn cancel_with(
    forwarded_invite: &Message,
    extra: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) -> Result<(), ParseError> {
    let inv = forwarded_invite;
    let (num, mark) = request_head(b"CANCEL", inv, out)?;
    let r = line(inv, HeaderName::From, out)
        .and_then(|()| line(inv, HeaderName::To, out))
        .and_then(|()| line(inv, HeaderName::CallId, out));
    if let Err(e) = r {
        out.truncate(mark);
        return Err(e);
    }
    for (n, v) in extra {
        header(out, n, v);
    }
    finish(b"CANCEL", num, out);
    Ok(())
}

/// Builds the ACK for a non-2xx final response to a forwarded INVITE (RFC 3261 §17.1.1.3):
/// Request-URI, top Via, Route lines, From and Call-ID of the INVITE, To of the response (with
/// its tag), CSeq number with method ACK. On error nothing is appended.
pub fn ack_for_non2xx(
    forwarded_invite: &Message,
    response: &Message,
    out: &mut Vec<u8>,
) -> Result<(), ParseError> {
    let inv = forwarded_invite;
    let (num, mark) = request_head(b"ACK", inv, out)?;
    let r = line(inv, HeaderName::From, out)
        .and_then(|()| line(response, HeaderName::To, out))
        .and_then(|()| line(inv, HeaderName::CallId, out));
    if let Err(e) = r {
        out.truncate(mark);
        return Err(e);
    }
    finish(b"ACK", num, out);
    Ok(())
}

/// Everything needed to originate a request inside a dialog (BYE, OPTIONS, re-INVITE...).
/// All values are raw header values as they should appear on the wire.
#[derive(Clone, Copy, Debug)]
pub struct InDialog<'a> {
    /// Method token, e.g. `b"BYE"`.
    pub method: &'a [u8],
    /// Request-URI (the remote target, or the first strict route).
    pub ruri: &'a [u8],
    /// Route values in order, e.g. `b"<sip:p1;lr>"`; one `Route:` line each.
    pub route_set: &'a [&'a [u8]],
    /// Full Via value including the branch.
    pub via: &'a [u8],
    /// Full From value including the tag.
    pub from: &'a [u8],
    /// Full To value including the tag.
    pub to: &'a [u8],
    /// Call-ID value.
    pub call_id: &'a [u8],
    /// CSeq number.
    pub cseq: u32,
    /// Max-Forwards value.
    pub max_forwards: u32,
    /// Extra raw header lines, each CRLF-terminated (may be empty).
    pub extra_headers: &'a [u8],
    /// Content-Type of the body, if any.
    pub content_type: Option<&'a [u8]>,
    /// The body (may be empty).
    pub body: &'a [u8],
}

/// Builds an in-dialog request from `d`: request line, Via, Route lines, Max-Forwards, From,
/// To, Call-ID, CSeq, extra headers, Content-Type, Content-Length and the body.
pub fn in_dialog_request(d: &InDialog, out: &mut Vec<u8>) {
    out.extend_from_slice(d.method);
    out.push(b' ');
    out.extend_from_slice(d.ruri);
    out.extend_from_slice(b" SIP/2.0\r\n");
    header(out, b"Via", d.via);
    for r in d.route_set {
        header(out, b"Route", r);
    }
    out.extend_from_slice(b"Max-Forwards: ");
    push_u32(out, d.max_forwards);
    out.extend_from_slice(b"\r\n");
    header(out, b"From", d.from);
    header(out, b"To", d.to);
    header(out, b"Call-ID", d.call_id);
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, d.cseq);
    out.push(b' ');
    out.extend_from_slice(d.method);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(d.extra_headers);
    if let Some(ct) = d.content_type {
        header(out, b"Content-Type", ct);
    }
    out.extend_from_slice(b"Content-Length: ");
    push_u32(out, u32::try_from(d.body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(d.body);
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
