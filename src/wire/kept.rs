//! A message kept past its datagram: the bytes and the spans a parse found in them, so it can
//! be looked at again as a [`Message`] without scanning it. A transaction keeps the INVITE it
//! received this way (to build its own responses and further serial branches), and each
//! forwarded copy with the spans [`super::Edits::kept`] maps from the edit list (to build its
//! CANCEL and the ACK of a non-2xx final).
//!
//! Invariants:
//! - The bytes are private and never change after they are kept, so the stored spans always
//!   describe them. A copy made by [`Kept::head`] or [`super::Edits::kept`] may hold only some
//!   header lines (those it was asked to keep), and one made by [`Kept::head`] no body.
//! - [`Kept::view`] copies spans and scans nothing; a memoised view is recomputed lazily on
//!   the new [`Message`], from the same bytes, so it equals what a fresh parse gives.
//! - One allocation for the bytes and one for the header spans, per kept message.

use super::Span;
use super::message::{Header, Message, StartLine};
use super::names::HeaderName;

/// The spans of a kept message other than its header lines.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeptSpans {
    pub(super) start: StartLine,
    pub(super) start_line: Span,
    pub(super) headers_end: u32,
    pub(super) body: Span,
    pub(super) content_length: Option<u32>,
}

/// A message with its spans (see the module docs).
#[derive(Clone, Debug)]
pub struct Kept {
    bytes: Box<[u8]>,
    headers: Box<[Header]>,
    start: StartLine,
    start_line: Span,
    headers_end: u32,
    body: Span,
    content_length: Option<u32>,
}

impl Kept {
    /// Keep `msg`: a copy of [`Message::bytes`] and of its spans.
    pub fn new(msg: &Message<'_>) -> Kept {
        Kept {
            bytes: msg.bytes().into(),
            headers: msg.headers().into(),
            start: msg.start_line(),
            start_line: msg.start_line_span(),
            headers_end: msg.headers_end(),
            body: msg.body_span(),
            content_length: msg.content_length(),
        }
    }

    /// Keep only the head of `msg` (start line and header lines, no body) and the header
    /// lines `keep` accepts: enough to build replies, at a fraction of the bytes. A view of it
    /// has an empty body (its Content-Length line, if kept, still says the original length).
    pub fn head(msg: &Message<'_>, keep: impl Fn(HeaderName) -> bool) -> Kept {
        let body_start = msg.body_span().start_usize();
        let kept = || msg.headers().iter().filter(|h| keep(h.name)).copied();
        // Exactly as many as kept: the box is the vector's one allocation.
        let mut headers = Vec::with_capacity(kept().count());
        headers.extend(kept());
        Kept {
            bytes: msg.bytes().get(..body_start).unwrap_or(&[]).into(),
            headers: headers.into_boxed_slice(),
            start: msg.start_line(),
            start_line: msg.start_line_span(),
            headers_end: msg.headers_end(),
            body: Span::new(body_start, body_start),
            content_length: msg.content_length(),
        }
    }

    /// A kept message from bytes and spans computed for them (by [`super::Edits::kept`]).
    pub(super) fn from_parts(bytes: &[u8], headers: Vec<Header>, s: KeptSpans) -> Kept {
        Kept {
            bytes: bytes.into(),
            headers: headers.into_boxed_slice(),
            start: s.start,
            start_line: s.start_line,
            headers_end: s.headers_end,
            body: s.body,
            content_length: s.content_length,
        }
    }

    /// Forget the body (the message is only needed for its head from now on, e.g. a forwarded
    /// INVITE that will not be sent again). No-op without a body.
    pub fn drop_body(&mut self) {
        let at = self.body.start_usize();
        if self.body.is_empty() || at > self.bytes.len() {
            return;
        }
        let mut v = std::mem::take(&mut self.bytes).into_vec();
        v.truncate(at);
        self.bytes = v.into_boxed_slice();
        self.body = Span::new(at, at);
    }

    /// The message again, without parsing.
    pub fn view(&self) -> Message<'_> {
        Message::from_spans(
            &self.bytes,
            self.start,
            self.start_line,
            &self.headers,
            self.headers_end,
            self.body,
            u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
            self.content_length,
        )
    }

    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes it holds (the message and its header spans).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len() + std::mem::size_of_val::<[Header]>(&self.headers)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::wire::{Method, parse};

    const INVITE: &[u8] = b"\r\nINVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0\r\n\
Max-Forwards: 70\r\nRoute: <sip:p1;lr>, <sip:p2;lr>\r\n\
To: <sip:bob@example.com>\r\nFrom: \"A\" <sip:alice@example.com>;tag=1\r\n\
Call-ID: c1\r\nCSeq: 7 INVITE\r\nContact: <sip:a@192.0.2.1>\r\n\
Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";

    fn same(a: &Message<'_>, b: &Message<'_>) {
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.method(), b.method());
        assert_eq!(a.request_uri(), b.request_uri());
        assert_eq!(a.headers().len(), b.headers().len());
        for (x, y) in a.headers().iter().zip(b.headers()) {
            assert_eq!(x.name, y.name);
            assert_eq!(x.line.get(a.buf()), y.line.get(b.buf()));
            assert_eq!(x.value.get(a.buf()), y.value.get(b.buf()));
            assert_eq!(x.name_span.get(a.buf()), y.name_span.get(b.buf()));
        }
        assert_eq!(a.headers_end(), b.headers_end());
        assert_eq!(a.body(), b.body());
        assert_eq!(a.content_length(), b.content_length());
    }

    #[test]
    fn a_view_is_the_parsed_message() {
        // Trailing datagram bytes are not kept.
        let mut dgram = INVITE.to_vec();
        dgram.extend_from_slice(b"junk");
        let msg = parse(INVITE).unwrap();
        let kept = Kept::new(&parse(&dgram).unwrap());
        drop(dgram);
        let view = kept.view();
        same(&view, &msg);
        assert_eq!(view.method(), Some(Method::Invite));
        assert_eq!(view.top_via().unwrap().branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(view.cseq().unwrap().num, 7);
        assert_eq!(view.routes().count(), 2);
        assert_eq!(view.header_value(HeaderName::CallId), Some(&b"c1"[..]));
        assert_eq!(kept.bytes(), INVITE);
        // Builders work on a view as on the parsed message.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        crate::wire::build::response(&msg, 486, b"Busy", Some(b"t"), &[], &mut a);
        crate::wire::build::response(&view, 486, b"Busy", Some(b"t"), &[], &mut b);
        assert_eq!(a, b);
        assert!(kept.heap_bytes() > INVITE.len());
    }

    #[test]
    fn a_head_builds_the_same_replies_with_fewer_bytes() {
        let msg = parse(INVITE).unwrap();
        let head = Kept::head(&msg, crate::wire::build::response_header);
        let view = head.view();
        assert!(view.body().is_empty());
        assert!(head.bytes().ends_with(b"Content-Length: 4\r\n\r\n"));
        assert_eq!(view.headers().len(), 6, "2 Via, To, From, Call-ID, CSeq");
        for (code, tag) in [(100, None), (487, Some(&b"x"[..]))] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            crate::wire::build::response(&msg, code, b"R", tag, &[], &mut a);
            crate::wire::build::response(&view, code, b"R", tag, &[], &mut b);
            assert_eq!(a, b);
        }
        let full = Kept::new(&msg);
        let mut bodiless = full.clone();
        bodiless.drop_body();
        assert_eq!(bodiless.bytes(), head.bytes());
        assert_eq!(bodiless.view().headers().len(), 11);
        assert!(bodiless.view().body().is_empty());
        bodiless.drop_body();
        assert_eq!(bodiless.bytes(), head.bytes(), "twice is once");
        let full = full.heap_bytes();
        assert_eq!(
            head.heap_bytes(),
            full - 4 - 5 * size_of::<Header>(),
            "no body, 5 lines fewer"
        );
    }

    #[test]
    fn more_headers_than_the_inline_array() {
        let mut text =
            String::from("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n");
        for i in 0..100 {
            text.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        text.push_str("Call-ID: many\r\nContent-Length: 0\r\n\r\n");
        let msg = parse(text.as_bytes()).unwrap();
        let kept = Kept::new(&msg);
        let view = kept.view();
        same(&view, &msg);
        assert_eq!(view.find_header(b"X-H99"), Some(&b"99"[..]));
        assert_eq!(view.header_value(HeaderName::CallId), Some(&b"many"[..]));
    }

    fn forward(text: &[u8], edit: impl Fn(&mut crate::wire::Edits<'_, '_>)) {
        let msg = parse(text).unwrap();
        let mut e = crate::wire::Edits::new(&msg);
        edit(&mut e);
        let mut out = b"prefix".to_vec();
        e.write(&mut out).unwrap();
        let written = &out[6..];
        let kept = e.kept(written, |_| true).unwrap();
        let fresh = parse(written).unwrap();
        same(&kept.view(), &fresh);
        // Only some lines kept: the same lines as the fresh parse's, in order.
        let some = |n| matches!(n, HeaderName::Via | HeaderName::To | HeaderName::Route);
        let part = e.kept(written, some).unwrap();
        let view = part.view();
        let want: Vec<_> = fresh.headers().iter().filter(|h| some(h.name)).collect();
        assert_eq!(view.headers().len(), want.len());
        for (x, y) in view.headers().iter().zip(want) {
            assert_eq!(x.line.get(view.buf()), y.line.get(fresh.buf()));
        }
        // Not this edit list's output.
        assert!(e.kept(&written[1..], |_| true).is_none());
    }

    #[test]
    fn spans_of_a_forwarded_copy_come_from_the_edit_list() {
        forward(INVITE, |e| {
            e.set_received_rport(Some(b"198.51.100.7"), Some(5062))
                .unwrap();
            e.decrement_max_forwards().unwrap();
            e.remove_top_route().unwrap();
            e.insert_via(b"SIP/2.0/UDP 203.0.113.1;branch=z9hG4bK-se.d0.x.1.0.2;rport")
                .unwrap();
            e.insert_record_route(b"<sip:203.0.113.1;lr;did=x>")
                .unwrap();
            e.insert_record_route(b"<sip:10.0.0.1;lr;did=x>").unwrap();
            e.add_header(b"X-Added", b"1").unwrap();
        });
        // Both Route entries gone, a strict-router fixup, Max-Forwards added, a header removed.
        let strict = b"INVITE sip:proxy;lr SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n\
Route: <sip:p1;lr>\r\nRoute: <sip:bob@example.com>\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=2\r\nX-Drop: y\r\n\
Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        forward(strict, |e| {
            e.strict_route_fixup().unwrap();
            e.remove_top_route().unwrap();
            e.decrement_max_forwards().unwrap();
            let m = e.message();
            let x = *m
                .headers()
                .iter()
                .find(|h| h.name == HeaderName::Other)
                .unwrap();
            e.remove_header(&x).unwrap();
            e.insert_via(b"SIP/2.0/TCP 203.0.113.1;branch=z9hG4bK3")
                .unwrap();
            e.set_received_rport(Some(b"198.51.100.8"), None).unwrap();
        });
        forward(INVITE, |_| {});
    }

    #[test]
    fn a_forwarded_copy_builds_cancel_and_ack_like_its_parse() {
        let msg = parse(INVITE).unwrap();
        let mut e = crate::wire::Edits::new(&msg);
        e.decrement_max_forwards().unwrap();
        e.insert_via(b"SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKp")
            .unwrap();
        let mut out = Vec::new();
        e.write(&mut out).unwrap();
        let kept = e.kept(&out, crate::wire::build::cancel_ack_header).unwrap();
        let fresh = parse(&out).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        crate::wire::build::cancel(&fresh, &mut a).unwrap();
        crate::wire::build::cancel(&kept.view(), &mut b).unwrap();
        assert_eq!(a, b);
        assert!(String::from_utf8_lossy(&b).contains("branch=z9hG4bKp"));
        assert_eq!(
            kept.heap_bytes(),
            out.len() + 8 * std::mem::size_of::<Header>()
        );
    }
}
