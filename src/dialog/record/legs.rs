//! The strings and sockets of a dialog's two legs: [`Strs`] (caller side, addressed by
//! [`Field`]) and [`CalleeLeg`] (set once at 2xx), both packed into one heap block each by
//! an arena with `u16` spans, and [`Socket`] (stored packed as `PackedSocket`).
//!
//! ## Invariants
//! - An arena never exceeds 65535 bytes; a part that would not fit is stored empty (never a
//!   panic, never a wrong slice). Every accessor returns a slice of the arena or `&[]`.
//! - A part inside an earlier stored part's memory, or equal to an earlier part's bytes, is a
//!   span into it and costs no bytes (From URI and tag in the From value, To URI in To, an
//!   R-URI equal to the To URI, a callee tag in the 2xx's To value).
//! - `PackedSocket::get(PackedSocket::pack(s)) == s` for every listener index below 2^32.

use std::net::SocketAddr;

use crate::wire::Transport;

/// Indexes of the caller-side strings in [`Strs`].
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub enum Field {
    /// Call-ID.
    CallId = 0,
    /// Whole From header value (display, URI, params incl. tag).
    From,
    /// From URI.
    FromUri,
    /// From tag.
    FromTag,
    /// Whole To header value of the INVITE (no tag).
    To,
    /// To URI.
    ToUri,
    /// Request-URI of the initial INVITE as received.
    Ruri,
    /// Caller Contact URI.
    CallerContact,
    /// Route set toward the caller, one name-addr per line (`\n` separated), nearest first.
    CallerRoutes,
}
pub(super) const NFIELDS: usize = 9;

/// Byte strings packed into one allocation, each addressed by a `(start, len)` span of `u16`s.
///
/// A part that lies inside an earlier part's memory (a From URI or tag sliced from the From
/// value of the same datagram) is stored as a span into that earlier part, not copied; so is
/// a part whose bytes equal an earlier stored part (an R-URI equal to the To URI). The
/// buffer never exceeds `u16::MAX` bytes (a UDP datagram's limit): a part that would not fit
/// is stored empty instead (never a panic, never a wrong slice).
#[derive(Debug)]
struct Arena<const N: usize> {
    buf: Box<[u8]>,
    spans: [(u16, u16); N],
}

impl<const N: usize> Arena<N> {
    fn new(parts: [&[u8]; N]) -> Self {
        let mut spans = [(0u16, 0u16); N];
        // Pass 1: spans and size, without copying (so the buffer is allocated once, exactly).
        let mut copied = [false; N];
        // Copied or spanned (not refused for size): its span holds its bytes.
        let mut stored = [false; N];
        let mut total = 0usize;
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            if let Some(span) = Self::inside_earlier(&parts, &spans, &copied, i) {
                spans[i] = span;
                stored[i] = true;
                continue;
            }
            // Equal bytes elsewhere (an R-URI equal to the To URI): one length compare per
            // earlier part, a byte compare only when the lengths agree.
            let same = (0..i).find(|&j| stored[j] && parts.get(j) == Some(p));
            if let Some(j) = same {
                spans[i] = spans[j];
                stored[i] = true;
                continue;
            }
            let (Ok(start), Ok(len)) = (u16::try_from(total), u16::try_from(p.len())) else {
                continue;
            };
            if usize::from(start) + usize::from(len) > usize::from(u16::MAX) {
                continue;
            }
            spans[i] = (start, len);
            copied[i] = true;
            stored[i] = true;
            total += p.len();
        }
        let mut buf = Vec::with_capacity(total);
        for (p, _) in parts.iter().zip(copied).filter(|(_, c)| *c) {
            buf.extend_from_slice(p);
        }
        Arena {
            buf: buf.into_boxed_slice(),
            spans,
        }
    }

    /// The span of part `i` inside an earlier part that was copied, if its memory lies there.
    fn inside_earlier(
        parts: &[&[u8]; N],
        spans: &[(u16, u16); N],
        copied: &[bool; N],
        i: usize,
    ) -> Option<(u16, u16)> {
        let p = parts.get(i)?;
        let (ps, pe) = (p.as_ptr() as usize, p.as_ptr() as usize + p.len());
        (0..i).find_map(|j| {
            let q = parts.get(j)?;
            let (qs, qe) = (q.as_ptr() as usize, q.as_ptr() as usize + q.len());
            if !copied.get(j).copied().unwrap_or(false) || ps < qs || pe > qe {
                return None;
            }
            let (start, _) = spans.get(j)?;
            let off = u16::try_from(ps - qs).ok()?;
            Some((start.checked_add(off)?, u16::try_from(p.len()).ok()?))
        })
    }

    fn get(&self, i: usize) -> &[u8] {
        let Some(&(s, n)) = self.spans.get(i) else {
            return &[];
        };
        let s = usize::from(s);
        self.buf.get(s..s + usize::from(n)).unwrap_or(&[])
    }

    /// Bytes held on the heap (for memory reports and tests).
    fn heap_len(&self) -> usize {
        self.buf.len()
    }
}

/// The caller-side strings of a dialog: one allocation, addressed by [`Field`]. Parts that are
/// slices of an earlier part (same memory) are stored once; see [`Strs::new`].
#[derive(Debug)]
pub struct Strs(Arena<NFIELDS>);

impl Strs {
    /// Build from the field values, in [`Field`] order. A value that is a sub-slice of an
    /// earlier value's memory (e.g. the From tag of the From header value of the same
    /// datagram) costs no bytes. Values that would push the arena past 65535 bytes are
    /// stored empty.
    pub fn new(parts: [&[u8]; NFIELDS]) -> Strs {
        Strs(Arena::new(parts))
    }
    /// One field.
    pub fn get(&self, f: Field) -> &[u8] {
        self.0.get(f as usize)
    }
    /// Bytes of the arena's heap block.
    pub fn heap_len(&self) -> usize {
        self.0.heap_len()
    }
}

/// Where a leg's requests go and came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    /// Peer address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Our listener index.
    pub local: usize,
    /// TCP connection id, if any.
    pub conn: Option<u64>,
}

/// A [`Socket`] stored in 48 bytes instead of 64 (listener index as `u32`, the connection id
/// without `Option`'s 8-byte tag). Lossless for every listener index below 2^32.
#[derive(Clone, Copy, Debug)]
pub(super) struct PackedSocket {
    addr: SocketAddr,
    conn: u64,
    local: u32,
    transport: Transport,
    has_conn: bool,
}

impl PackedSocket {
    pub(super) fn pack(s: Socket) -> Self {
        PackedSocket {
            addr: s.addr,
            conn: s.conn.unwrap_or(0),
            local: u32::try_from(s.local).unwrap_or(u32::MAX),
            transport: s.transport,
            has_conn: s.conn.is_some(),
        }
    }

    pub(super) fn get(&self) -> Socket {
        Socket {
            addr: self.addr,
            transport: self.transport,
            local: self.local as usize,
            conn: self.has_conn.then_some(self.conn),
        }
    }
}

/// The callee leg, set once when the 2xx is relayed. Its strings share one allocation (the
/// To-tag, a slice of the To value of the same 2xx, costs no bytes).
#[derive(Debug)]
pub struct CalleeLeg {
    /// `To` value, tag, contact, routes (arena order: the To value first, so the tag sliced
    /// from it is stored as a span into it).
    strs: Arena<4>,
    /// Where the INVITE went for this leg.
    socket: PackedSocket,
}

impl CalleeLeg {
    /// A leg from the 2xx's To-tag, whole To value (with tag), Contact URI and the route set
    /// toward the callee (nearest first, `\n` separated). A value past the 65535-byte arena
    /// limit is stored empty.
    pub fn new(tag: &[u8], to: &[u8], contact: &[u8], routes: &[u8], socket: Socket) -> Self {
        CalleeLeg {
            strs: Arena::new([to, tag, contact, routes]),
            socket: PackedSocket::pack(socket),
        }
    }
    /// Where the INVITE went for this leg.
    pub fn socket(&self) -> Socket {
        self.socket.get()
    }
    /// To-tag of the winning 2xx.
    pub fn tag(&self) -> &[u8] {
        self.strs.get(1)
    }
    /// Whole To header value of the 2xx (with tag).
    pub fn to(&self) -> &[u8] {
        self.strs.get(0)
    }
    /// Contact URI of the 2xx.
    pub fn contact(&self) -> &[u8] {
        self.strs.get(2)
    }
    /// Route set toward the callee, nearest first, `\n` separated.
    pub fn routes(&self) -> &[u8] {
        self.strs.get(3)
    }
    /// Bytes of the strings' heap block.
    pub fn heap_len(&self) -> usize {
        self.strs.heap_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &[u8] = b"\"Alice\" <sip:alice@a.example>;tag=1928301774";

    fn sub<'a>(whole: &'a [u8], part: &[u8]) -> &'a [u8] {
        let at = whole
            .windows(part.len())
            .position(|w| w == part)
            .unwrap_or(0);
        whole.get(at..at + part.len()).unwrap_or(&[])
    }

    #[test]
    fn sub_slices_of_an_earlier_part_are_not_copied() {
        let uri = sub(FROM, b"sip:alice@a.example");
        let tag = sub(FROM, b"1928301774");
        let to = b"<sip:bob@b.example>".to_vec();
        let to_uri = sub(&to, b"sip:bob@b.example");
        let s = Strs::new([
            b"call-1",
            FROM,
            uri,
            tag,
            &to,
            to_uri,
            b"sip:bob@b.example",
            b"",
            b"",
        ]);
        assert_eq!(s.get(Field::CallId), b"call-1");
        assert_eq!(s.get(Field::From), FROM);
        assert_eq!(s.get(Field::FromUri), b"sip:alice@a.example");
        assert_eq!(s.get(Field::FromTag), b"1928301774");
        assert_eq!(s.get(Field::To), &to[..]);
        assert_eq!(s.get(Field::ToUri), b"sip:bob@b.example");
        assert_eq!(s.get(Field::Ruri), b"sip:bob@b.example");
        assert_eq!(s.get(Field::CallerContact), b"");
        // Call-ID + From + To: the R-URI equals the To URI's bytes and shares its span.
        let want = 6 + FROM.len() + to.len();
        assert_eq!(s.heap_len(), want);
    }

    #[test]
    fn partial_overlap_and_substrings_in_other_memory_are_copied() {
        let tag_copy = b"1928301774".to_vec();
        // Overlaps the end of FROM's memory only partly: must be copied, not spanned.
        let straddle = FROM.get(6..14).unwrap_or(&[]);
        let s = Strs::new([
            b"c",
            &FROM[..10],
            b"",
            &tag_copy,
            straddle,
            b"",
            b"",
            b"",
            b"",
        ]);
        assert_eq!(s.get(Field::FromTag), b"1928301774");
        assert_eq!(s.get(Field::To), FROM.get(6..14).unwrap_or(&[]));
        assert_eq!(s.heap_len(), 1 + 10 + 10 + 8);
        // Equal bytes (not memory) share a span; a substring in other memory is copied.
        let s = Strs::new([
            b"c", b"sip:x@y", b"", b"", b"", b"sip:x@y", b"x@y", b"", b"",
        ]);
        assert_eq!(s.get(Field::ToUri), b"sip:x@y");
        assert_eq!(s.get(Field::Ruri), b"x@y");
        assert_eq!(s.heap_len(), 1 + 7 + 3);
    }

    #[test]
    fn callee_leg_tag_is_a_span_into_to() {
        let to = b"<sip:bob@b.example>;tag=xyz9".to_vec();
        let tag = sub(&to, b"xyz9");
        let sock = Socket {
            addr: SocketAddr::from(([127, 0, 0, 1], 5080)),
            transport: Transport::Udp,
            local: 0,
            conn: None,
        };
        let c = CalleeLeg::new(tag, &to, b"sip:bob@10.0.0.2", b"<sip:p1>\n", sock);
        assert_eq!(
            (c.tag(), c.to(), c.contact(), c.routes()),
            (
                &b"xyz9"[..],
                &to[..],
                &b"sip:bob@10.0.0.2"[..],
                &b"<sip:p1>\n"[..]
            )
        );
        assert_eq!(c.heap_len(), to.len() + 16 + 9);
        assert_eq!(c.socket(), sock);
        let tcp = Socket {
            addr: SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 5061)),
            transport: Transport::Tcp,
            local: 3,
            conn: Some(0),
        };
        let c = CalleeLeg::new(b"", b"", b"", b"", tcp);
        assert_eq!(c.socket(), tcp, "Some(0) stays Some(0)");
        let copy = CalleeLeg::new(b"xyz9", &to, b"", b"", sock);
        assert_eq!(copy.tag(), b"xyz9");
        assert_eq!(
            copy.heap_len(),
            to.len() + 4,
            "a tag in other memory is copied"
        );
    }
    #[test]
    fn oversize_parts_are_stored_empty() {
        let big = vec![b'x'; 40_000];
        let s = Strs::new([b"id", &big, b"", b"", &big, b"", b"ruri", b"", b""]);
        assert_eq!(s.get(Field::CallId), b"id");
        assert_eq!(s.get(Field::From).len(), 40_000);
        // The second copy of `big` is the same memory: spanned, not refused.
        assert_eq!(s.get(Field::To).len(), 40_000);
        let other = vec![b'y'; 40_000];
        let s = Strs::new([b"id", &big, b"", b"", &other, b"", b"ruri", b"", b""]);
        assert_eq!(
            s.get(Field::To),
            b"",
            "would pass 65535 bytes: stored empty"
        );
        assert_eq!(s.get(Field::Ruri), b"ruri", "later parts that fit are kept");
        let huge = vec![b'z'; 70_000];
        let s = Strs::new([&huge, b"", b"", b"", b"", b"", b"", b"", b""]);
        assert_eq!(s.get(Field::CallId), b"");
        assert_eq!(s.heap_len(), 0);
    }
}
