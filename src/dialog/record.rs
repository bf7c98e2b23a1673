//! The dialog record: what the proxy remembers about one dialog.
//!
//! ## Invariants
//! - Published records are shared (`Arc`) by every worker; fields that change after creation are
//!   atomics, write-once cells, or swapped as a whole (`ArcSwapOption`).
//! - `state` only moves forward, by compare-and-swap ([`Dialog::advance`]); reaching `Deleted`
//!   happens exactly once ([`Dialog::try_end`]), and only the caller that won it runs the end
//!   effects (statistics, profile release, callbacks).
//! - Caller-side strings live in one arena allocation; the callee side is set once at 2xx.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};

use arc_swap::ArcSwapOption;

use super::id::DialogId;
use super::profile::Memberships;
use super::state::{DlgState, EndReason, Side};
use super::table::CallIdentity;
use crate::engine::Transport;

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
const NFIELDS: usize = 9;

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
struct PackedSocket {
    addr: SocketAddr,
    conn: u64,
    local: u32,
    transport: Transport,
    has_conn: bool,
}

impl PackedSocket {
    fn pack(s: Socket) -> Self {
        PackedSocket {
            addr: s.addr,
            conn: s.conn.unwrap_or(0),
            local: u32::try_from(s.local).unwrap_or(u32::MAX),
            transport: s.transport,
            has_conn: s.conn.is_some(),
        }
    }

    fn get(&self) -> Socket {
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

/// One early leg (a distinct To-tag seen in a 1xx), for listings.
#[derive(Debug, Clone)]
pub struct EarlyLeg {
    /// To-tag.
    pub tag: Box<[u8]>,
    /// Contact of the 1xx, if any.
    pub contact: Box<[u8]>,
    /// Branch index it came from.
    pub branch: u8,
}

/// A dialog variable list, swapped as a whole.
pub type Vars = Vec<(Box<[u8]>, Box<[u8]>)>;

/// One dialog.
#[derive(Debug)]
pub struct Dialog {
    /// Identity (`h_entry`, `h_id`).
    pub id: DialogId,
    /// Caller-side strings.
    pub strs: Strs,
    /// Where the caller's INVITE came from ([`Dialog::caller_socket`]).
    caller_socket: PackedSocket,
    /// When the INVITE arrived (ms, engine clock).
    pub init_ms: u64,
    state: AtomicU8,
    end_reason: AtomicU8,
    /// When it was confirmed (ms, 0 = not yet).
    pub start_ms: AtomicU64,
    /// When it ended (ms, 0 = not yet).
    pub end_ms: AtomicU64,
    /// The true deadline (ms); the owning wheel re-arms lazily when it moved.
    pub deadline_ms: AtomicU64,
    /// Lifetime in seconds (the dialog timeout).
    pub lifetime_s: AtomicU32,
    /// Dialog flags 0..=31.
    pub flags: AtomicU32,
    /// Last CSeq seen from the caller.
    pub caller_cseq: AtomicU32,
    /// Last CSeq seen from the callee (0 = none yet).
    pub callee_cseq: AtomicU32,
    /// 2xx received from a second fork (200/200 race) or after CANCEL.
    pub races: AtomicU32,
    /// Do not reset the timeout on in-dialog requests.
    pub timeout_noreset: std::sync::atomic::AtomicBool,
    /// The callee leg, once confirmed.
    pub callee: OnceLock<CalleeLeg>,
    /// Early legs seen so far (forks), for listings.
    pub early_legs: ArcSwapOption<Vec<EarlyLeg>>,
    /// Dialog variables.
    pub vars: ArcSwapOption<Vars>,
    /// Profile memberships (released exactly once on end).
    pub profiles: Memberships,
    /// Slot of the INVITE transaction in the owning worker's table (`u32::MAX` = none).
    pub txn_slot: AtomicU32,
    // persist: begin
    /// Boot tag of a dialog rebuilt from the store, valid when `loaded` ([`Dialog::loaded_boot`];
    /// a `u32` and a `bool` pack into 8 bytes fewer than an `Option<u32>` here).
    loaded_boot: u32,
    loaded: bool,
    // persist: end
}

impl Dialog {
    /// A new dialog in state `Unconfirmed`.
    pub fn new(
        id: DialogId,
        strs: Strs,
        caller_socket: Socket,
        now_ms: u64,
        lifetime_s: u32,
        caller_cseq: u32,
    ) -> Dialog {
        Dialog {
            id,
            strs,
            caller_socket: PackedSocket::pack(caller_socket),
            init_ms: now_ms,
            state: AtomicU8::new(DlgState::Unconfirmed as u8),
            end_reason: AtomicU8::new(EndReason::None as u8),
            start_ms: AtomicU64::new(0),
            end_ms: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(0),
            lifetime_s: AtomicU32::new(lifetime_s),
            flags: AtomicU32::new(0),
            caller_cseq: AtomicU32::new(caller_cseq),
            callee_cseq: AtomicU32::new(0),
            races: AtomicU32::new(0),
            timeout_noreset: std::sync::atomic::AtomicBool::new(false),
            callee: OnceLock::new(),
            early_legs: ArcSwapOption::empty(),
            vars: ArcSwapOption::empty(),
            profiles: Memberships::default(),
            txn_slot: AtomicU32::new(u32::MAX),
            loaded_boot: 0,
            loaded: false,
        }
    }

    /// Set only on dialogs rebuilt from the store (`dialog::persist`): the boot tag their
    /// cookies were minted under, so cookies from before the restart are still accepted.
    pub fn loaded_boot(&self) -> Option<u32> {
        self.loaded.then_some(self.loaded_boot)
    }

    /// Marks the dialog as rebuilt from the store under `boot` (before it is published).
    pub fn set_loaded_boot(&mut self, boot: u32) {
        self.loaded_boot = boot;
        self.loaded = true;
    }

    /// Where the caller's INVITE came from.
    pub fn caller_socket(&self) -> Socket {
        self.caller_socket.get()
    }

    /// Current state.
    pub fn state(&self) -> DlgState {
        DlgState::from_u8(self.state.load(Acquire))
    }

    /// Why it ended (`None` while running).
    pub fn end_reason(&self) -> EndReason {
        EndReason::from_u8(self.end_reason.load(Acquire))
    }

    /// Move forward to `to` if the current state is one of `from`. Returns the previous state
    /// when this call made the change.
    pub fn advance(&self, from: &[DlgState], to: DlgState) -> Option<DlgState> {
        let mut cur = self.state.load(Acquire);
        loop {
            let s = DlgState::from_u8(cur);
            if !from.contains(&s) || s == DlgState::Deleted {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(cur, to as u8, AcqRel, Acquire)
            {
                Ok(_) => return Some(s),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Move to `Deleted` if not there yet. Exactly one caller ever gets `Some(previous)`.
    pub fn try_end(&self, reason: EndReason, now_ms: u64) -> Option<DlgState> {
        let prev = self.state.swap(DlgState::Deleted as u8, AcqRel);
        let prev = DlgState::from_u8(prev);
        if prev == DlgState::Deleted {
            return None;
        }
        self.end_reason.store(reason as u8, Release);
        self.end_ms.store(now_ms, Release);
        Some(prev)
    }

    /// Push the deadline to `now + lifetime` (unless `timeout_noreset`).
    pub fn refresh_deadline(&self, now_ms: u64) {
        if !self.timeout_noreset.load(Relaxed) {
            let life = u64::from(self.lifetime_s.load(Relaxed));
            self.deadline_ms
                .fetch_max(now_ms.saturating_add(life * 1000), AcqRel);
        }
    }

    /// Set a new lifetime and deadline (`dlg.set_timeout`, policy).
    pub fn set_timeout(&self, now_ms: u64, secs: u32) {
        self.lifetime_s.store(secs, Relaxed);
        self.deadline_ms
            .store(now_ms.saturating_add(u64::from(secs) * 1000), Release);
    }

    /// Set flag `n` (0..=31); out-of-range flags are ignored.
    pub fn set_flag(&self, n: u8) {
        if n < 32 {
            self.flags.fetch_or(1 << n, AcqRel);
        }
    }
    /// Reset flag `n`.
    pub fn reset_flag(&self, n: u8) {
        if n < 32 {
            self.flags.fetch_and(!(1 << n), AcqRel);
        }
    }
    /// Is flag `n` set?
    pub fn is_flag_set(&self, n: u8) -> bool {
        n < 32 && self.flags.load(Acquire) & (1 << n) != 0
    }

    /// Set (or replace) a variable.
    pub fn set_var(&self, key: &[u8], value: &[u8]) {
        self.vars.rcu(|cur| {
            let mut v: Vars = cur.as_deref().cloned().unwrap_or_default();
            match v.iter_mut().find(|(k, _)| &**k == key) {
                Some(e) => e.1 = value.into(),
                None => v.push((key.into(), value.into())),
            }
            Some(std::sync::Arc::new(v))
        });
    }
    /// Remove a variable.
    pub fn unset_var(&self, key: &[u8]) {
        self.vars.rcu(|cur| {
            let mut v: Vars = cur.as_deref().cloned().unwrap_or_default();
            v.retain(|(k, _)| &**k != key);
            if v.is_empty() {
                None
            } else {
                Some(std::sync::Arc::new(v))
            }
        });
    }
    /// Read a variable (copied out).
    pub fn get_var(&self, key: &[u8]) -> Option<Box<[u8]>> {
        let g = self.vars.load();
        g.as_deref()
            .and_then(|v| v.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.clone()))
    }

    /// Record an early leg (new To-tag); returns false if the tag was known already.
    pub fn add_early_leg(&self, tag: &[u8], contact: &[u8], branch: u8) -> bool {
        if self
            .early_legs
            .load()
            .as_deref()
            .is_some_and(|v| v.iter().any(|l| &*l.tag == tag))
        {
            return false;
        }
        self.early_legs.rcu(|cur| {
            let mut v = cur.as_deref().cloned().unwrap_or_default();
            if !v.iter().any(|l| &*l.tag == tag) {
                v.push(EarlyLeg {
                    tag: tag.into(),
                    contact: contact.into(),
                    branch,
                });
            }
            Some(std::sync::Arc::new(v))
        });
        true
    }

    /// Which side sent a request with these tags (tight match), or `None` if the tags do not
    /// belong to this dialog. `to_tag` must be the confirmed callee tag, or any early leg's tag
    /// while the dialog is early.
    pub fn match_tags(&self, call_id: &[u8], from_tag: &[u8], to_tag: &[u8]) -> Option<Side> {
        if self.strs.get(Field::CallId) != call_id {
            return None;
        }
        let ftag = self.strs.get(Field::FromTag);
        let callee_tag_ok = |t: &[u8]| match self.callee.get() {
            Some(c) => c.tag() == t,
            None => self
                .early_legs
                .load()
                .as_deref()
                .is_some_and(|v| v.iter().any(|l| &*l.tag == t)),
        };
        if from_tag == ftag && callee_tag_ok(to_tag) {
            Some(Side::Caller)
        } else if to_tag == ftag && callee_tag_ok(from_tag) {
            Some(Side::Callee)
        } else {
            None
        }
    }
}

impl CallIdentity for Dialog {
    fn call_id(&self) -> &[u8] {
        self.strs.get(Field::CallId)
    }
    fn ftag(&self) -> &[u8] {
        self.strs.get(Field::FromTag)
    }
}

/// Split a stored `\n`-separated route set into entries.
pub fn route_entries(routes: &[u8]) -> impl Iterator<Item = &[u8]> {
    routes.split(|&c| c == b'\n').filter(|e| !e.is_empty())
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
    fn record_sizes_stay_within_the_memory_budget() {
        // Issue 8: ≤ 1 KiB resident per held dialog. `Arc<Dialog>` is one 16-byte-rounded
        // malloc chunk: 312 + 16 (Arc counts) + 8 (chunk header) = 336.
        assert!(size_of::<Dialog>() <= 312, "Dialog {}", size_of::<Dialog>());
        assert!(size_of::<Strs>() <= 56, "Strs {}", size_of::<Strs>());
        assert!(
            size_of::<CalleeLeg>() <= 80,
            "CalleeLeg {}",
            size_of::<CalleeLeg>()
        );
        assert!(size_of::<PackedSocket>() <= 48);
        let mut d = Dialog::new(
            DialogId::new(0, 1, 1),
            Strs::new([&[]; NFIELDS]),
            Socket {
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                transport: Transport::Udp,
                local: usize::MAX,
                conn: Some(u64::MAX),
            },
            0,
            60,
            1,
        );
        assert_eq!(d.loaded_boot(), None);
        d.set_loaded_boot(0);
        assert_eq!(d.loaded_boot(), Some(0));
        assert_eq!(d.caller_socket().conn, Some(u64::MAX));
        assert_eq!(
            d.caller_socket().local,
            u32::MAX as usize,
            "saturates, never wraps"
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
