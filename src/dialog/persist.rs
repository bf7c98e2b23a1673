//! The stored form of a dialog (dialog_ng `db_mode` equivalent): a confirmed [`Dialog`] to
//! bytes and back. Sans-IO: no store, no clock; the IO side (`io::persist`) owns the database,
//! the writer thread and the loader.
//!
//! # Format (version [`VERSION`], little-endian)
//! `version u8 | boot u32 | h_entry u32 | h_id u32 | init, start, deadline: unix ms u64 |
//! lifetime_s, flags, caller_cseq, callee_cseq u32 | timeout_noreset u8 | caller socket |
//! 9 caller strings | callee tag, to, contact, routes | callee socket | vars | profiles`.
//! Byte strings are `u32 length + bytes`; lists are `u16 count + items`; a socket is
//! `transport u8 (0 udp, 1 tcp) | family u8 (4, 6) | ip | port u16 | listener u16`.
//!
//! # Invariants
//! - Only dialogs that reached a confirmed state are encoded ([`encode`] refuses others); a
//!   dialog ended by `shutdown` is still encoded, because the call goes on without us.
//! - Times are stored as unix ms, so a record survives the engine clock restarting at 0.
//! - [`decode`] never panics on any input; unknown versions, truncation and trailing bytes are
//!   errors. TCP connection ids are not stored (they die with the process).
//! - The key of a record is [`key_of`] its id, so every dialog has at most one record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::id::DialogId;
use super::record::{CalleeLeg, Dialog, Field, Socket, Strs};
use super::state::{DlgState, EndReason};
use crate::wire::Transport;

/// Version byte written first in every record.
pub const VERSION: u8 = 1;

/// The caller-side strings in stored order.
const FIELDS: [Field; 9] = [
    Field::CallId,
    Field::From,
    Field::FromUri,
    Field::FromTag,
    Field::To,
    Field::ToUri,
    Field::Ruri,
    Field::CallerContact,
    Field::CallerRoutes,
];

/// The store key of a dialog: `h_entry << 32 | h_id`.
pub fn key_of(id: DialogId) -> u64 {
    (u64::from(id.h_entry) << 32) | u64::from(id.h_id)
}

/// The dialog id of a store key.
pub fn id_of_key(k: u64) -> DialogId {
    DialogId {
        h_entry: (k >> 32) as u32,
        h_id: k as u32,
    }
}

/// Why a dialog was not encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Not confirmed (yet): early dialogs are not stored.
    #[error("dialog is not confirmed")]
    NotConfirmed,
    /// It ended (other than by shutdown): its record should be deleted instead.
    #[error("dialog has ended")]
    Ended,
    /// A string or list is too long for the format.
    #[error("field too long")]
    TooLong,
}

/// Why a stored record was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes.
    #[error("empty record")]
    Empty,
    /// A version this build does not read.
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    /// The record ends early.
    #[error("truncated record")]
    Truncated,
    /// Unknown transport code.
    #[error("bad transport {0}")]
    BadTransport(u8),
    /// Unknown address family.
    #[error("bad address family {0}")]
    BadFamily(u8),
    /// Bytes after the last field.
    #[error("trailing bytes")]
    Trailing,
}

/// A dialog rebuilt from its record, not yet published.
#[derive(Debug)]
pub struct Loaded {
    /// The dialog, in state `Confirmed`, times on the new engine clock, `loaded_boot` set.
    pub dialog: Dialog,
    /// The stored deadline, unix ms (the caller drops the record when it has passed).
    pub deadline_unix_ms: u64,
    /// Profile memberships to re-take: (profile name, value).
    pub profiles: Vec<(String, Option<Box<[u8]>>)>,
}

/// Encode `d` into `out` (cleared first). `boot` is the current boot tag (used unless the
/// dialog was itself loaded, then its original tag is kept); `unix_base_ms` is unix time at
/// engine time 0.
pub fn encode(
    d: &Dialog,
    boot: u32,
    unix_base_ms: u64,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match d.state() {
        DlgState::ConfirmedNa | DlgState::Confirmed => {}
        DlgState::Deleted if d.end_reason() == EndReason::Shutdown => {}
        DlgState::Deleted => return Err(EncodeError::Ended),
        _ => return Err(EncodeError::NotConfirmed),
    }
    let Some(callee) = d.callee.get() else {
        return Err(EncodeError::NotConfirmed);
    };
    out.clear();
    out.push(VERSION);
    put_u32(out, d.loaded_boot().unwrap_or(boot));
    put_u32(out, d.id.h_entry);
    put_u32(out, d.id.h_id);
    let unix = |ms: u64| if ms == 0 { 0 } else { unix_base_ms + ms };
    put_u64(out, unix(d.init_ms));
    put_u64(out, unix(d.start_ms.load(Acquire)));
    put_u64(out, unix(d.deadline_ms.load(Acquire)));
    put_u32(out, d.lifetime_s.load(Relaxed));
    put_u32(out, d.flags.load(Relaxed));
    put_u32(out, d.caller_cseq.load(Relaxed));
    put_u32(out, d.callee_cseq.load(Relaxed));
    out.push(u8::from(d.timeout_noreset.load(Relaxed)));
    put_socket(out, &d.caller_socket());
    for f in FIELDS {
        put_bytes(out, d.strs.get(f))?;
    }
    for b in [callee.tag(), callee.to(), callee.contact(), callee.routes()] {
        put_bytes(out, b)?;
    }
    put_socket(out, &callee.socket());
    let vars = d.vars.load();
    let vars = vars.as_deref().map(Vec::as_slice).unwrap_or(&[]);
    put_count(out, vars.len())?;
    for (k, v) in vars {
        put_bytes(out, k)?;
        put_bytes(out, v)?;
    }
    let mut profiles: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    d.profiles
        .for_each(|n, v| profiles.push((n.as_bytes().to_vec(), v.map(<[u8]>::to_vec))));
    put_count(out, profiles.len())?;
    for (n, v) in &profiles {
        put_bytes(out, n)?;
        out.push(u8::from(v.is_some()));
        put_bytes(out, v.as_deref().unwrap_or(&[]))?;
    }
    Ok(())
}

/// Rebuild a dialog from `b`. `unix_base_ms` is unix time at engine time 0 of this run;
/// `listeners` is how many listeners this run has (a stored listener index beyond it becomes
/// 0).
pub fn decode(b: &[u8], unix_base_ms: u64, listeners: usize) -> Result<Loaded, DecodeError> {
    let mut r = Reader { b };
    let version = r.u8().map_err(|_| DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let boot = r.u32()?;
    let id = DialogId {
        h_entry: r.u32()?,
        h_id: r.u32()?,
    };
    let engine = |ms: u64| {
        if ms == 0 {
            0
        } else {
            ms.saturating_sub(unix_base_ms)
        }
    };
    let init = r.u64()?;
    let start = r.u64()?;
    let deadline = r.u64()?;
    let lifetime = r.u32()?;
    let flags = r.u32()?;
    let caller_cseq = r.u32()?;
    let callee_cseq = r.u32()?;
    let noreset = r.u8()? != 0;
    let caller_socket = r.socket(listeners)?;
    let mut parts: [&[u8]; 9] = [&[]; 9];
    for p in parts.iter_mut() {
        *p = r.bytes()?;
    }
    let tag = r.bytes()?;
    let to = r.bytes()?;
    let contact = r.bytes()?;
    let routes = r.bytes()?;
    let callee_socket = r.socket(listeners)?;
    // Point the derived fields into their whole values where they occur there, so the
    // record's arena stores them once, as it does for a dialog built from a datagram.
    let [call_id, from, from_uri, from_tag, to_val, to_uri, rest @ ..] = parts;
    let [ruri, contact_c, routes_c] = rest;
    let parts = [
        call_id,
        from,
        within(from, from_uri),
        within(from, from_tag),
        to_val,
        within(to_val, to_uri),
        ruri,
        contact_c,
        routes_c,
    ];
    let d = Dialog::new(
        id,
        Strs::new(parts),
        caller_socket,
        engine(init),
        lifetime,
        caller_cseq,
    );
    let nvars = r.u16()?;
    for _ in 0..nvars {
        let k = r.bytes()?;
        let v = r.bytes()?;
        d.set_var(k, v);
    }
    let nprof = r.u16()?;
    let mut profiles = Vec::with_capacity(usize::from(nprof));
    for _ in 0..nprof {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        let has = r.u8()? != 0;
        let v = r.bytes()?;
        profiles.push((name, has.then(|| v.into())));
    }
    if !r.b.is_empty() {
        return Err(DecodeError::Trailing);
    }
    let mut d = d;
    d.set_loaded_boot(boot);
    d.start_ms.store(engine(start), Relaxed);
    d.deadline_ms.store(engine(deadline), Relaxed);
    d.flags.store(flags, Relaxed);
    d.callee_cseq.store(callee_cseq, Relaxed);
    d.timeout_noreset.store(noreset, Relaxed);
    let _ = d.callee.set(CalleeLeg::new(
        within(to, tag),
        to,
        contact,
        routes,
        callee_socket,
    ));
    d.advance(&[DlgState::Unconfirmed], DlgState::Confirmed);
    Ok(Loaded {
        dialog: d,
        deadline_unix_ms: deadline,
        profiles,
    })
}

/// The occurrence of `part` inside `whole` (same bytes, `whole`'s memory), or `part` itself.
fn within<'a>(whole: &'a [u8], part: &'a [u8]) -> &'a [u8] {
    if part.is_empty() {
        return part;
    }
    memchr::memmem::find(whole, part)
        .and_then(|at| whole.get(at..at + part.len()))
        .unwrap_or(part)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), EncodeError> {
    let n = u32::try_from(b.len()).map_err(|_| EncodeError::TooLong)?;
    put_u32(out, n);
    out.extend_from_slice(b);
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    let n = u16::try_from(n).map_err(|_| EncodeError::TooLong)?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn put_socket(out: &mut Vec<u8>, s: &Socket) {
    out.push(match s.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    });
    match s.addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&s.addr.port().to_le_bytes());
    let local = u16::try_from(s.local).unwrap_or(0);
    out.extend_from_slice(&local.to_le_bytes());
}

/// A cursor over a record; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.b.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.b = tail;
        Ok(head)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.arr()?))
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()?;
        self.take(usize::try_from(n).map_err(|_| DecodeError::Truncated)?)
    }
    fn socket(&mut self, listeners: usize) -> Result<Socket, DecodeError> {
        let transport = match self.u8()? {
            0 => Transport::Udp,
            1 => Transport::Tcp,
            t => return Err(DecodeError::BadTransport(t)),
        };
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.arr::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.arr::<16>()?)),
            f => return Err(DecodeError::BadFamily(f)),
        };
        let port = self.u16()?;
        let local = usize::from(self.u16()?);
        Ok(Socket {
            addr: SocketAddr::new(ip, port),
            transport,
            local: if local < listeners { local } else { 0 },
            conn: None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::dialog::profile::Profiles;
    use proptest::prelude::*;

    type Bytes = Vec<u8>;

    fn sock(v6: bool, port: u16, tcp: bool, local: usize) -> Socket {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, port))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, (port >> 8) as u8, port as u8))
        };
        Socket {
            addr: SocketAddr::new(ip, port),
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
            local,
            conn: Some(7),
        }
    }

    /// A confirmed dialog built from arbitrary field bytes.
    fn dialog(strs: &[Bytes], callee: &[Bytes], vars: &[(Bytes, Bytes)], n: u32) -> Dialog {
        let mut parts: [&[u8]; 9] = [&[]; 9];
        for (p, s) in parts.iter_mut().zip(strs) {
            *p = s;
        }
        let d = Dialog::new(
            DialogId::new(3, n, n.wrapping_mul(7)),
            Strs::new(parts),
            sock(n.is_multiple_of(2), n as u16, n.is_multiple_of(3), 1),
            1_000 + u64::from(n),
            600 + n,
            n,
        );
        let leg = |i: usize| callee.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let _ = d.callee.set(CalleeLeg::new(
            leg(0),
            leg(1),
            leg(2),
            leg(3),
            sock(!n.is_multiple_of(2), 5060, n.is_multiple_of(5), 0),
        ));
        d.advance(&[DlgState::Unconfirmed], DlgState::ConfirmedNa);
        d.start_ms.store(2_000, Relaxed);
        d.deadline_ms.store(9_000 + u64::from(n), Relaxed);
        d.flags.store(n ^ 0xA5A5, Relaxed);
        d.callee_cseq.store(n / 2, Relaxed);
        for (k, v) in vars {
            d.set_var(k, v);
        }
        d
    }

    fn assert_same(a: &Dialog, b: &Dialog) {
        assert_eq!(a.id, b.id);
        for f in FIELDS {
            assert_eq!(a.strs.get(f), b.strs.get(f), "{f:?}");
        }
        let strip = |s: Socket| Socket { conn: None, ..s };
        assert_eq!(strip(a.caller_socket()), b.caller_socket());
        assert_eq!(a.init_ms, b.init_ms);
        for (x, y) in [(&a.start_ms, &b.start_ms), (&a.deadline_ms, &b.deadline_ms)] {
            assert_eq!(x.load(Relaxed), y.load(Relaxed));
        }
        for (x, y) in [
            (&a.lifetime_s, &b.lifetime_s),
            (&a.flags, &b.flags),
            (&a.caller_cseq, &b.caller_cseq),
            (&a.callee_cseq, &b.callee_cseq),
        ] {
            assert_eq!(x.load(Relaxed), y.load(Relaxed));
        }
        let (ca, cb) = (a.callee.get().unwrap(), b.callee.get().unwrap());
        assert_eq!(
            (ca.tag(), ca.to(), ca.contact(), ca.routes()),
            (cb.tag(), cb.to(), cb.contact(), cb.routes())
        );
        assert_eq!(strip(ca.socket()), cb.socket());
        assert_eq!(a.vars.load().as_deref(), b.vars.load().as_deref());
        assert_eq!(b.state(), DlgState::Confirmed);
    }

    #[test]
    fn round_trip_with_profiles_and_clock_shift() {
        let d = dialog(&[b"cid".to_vec(), b"<sip:a@x>;tag=1".to_vec()], &[], &[], 4);
        let p = Profiles::new(&["calls"], &["caller"]).unwrap();
        p.set(&d.profiles, p.index("calls").unwrap(), None).unwrap();
        p.set(&d.profiles, p.index("caller").unwrap(), Some(b"alice"))
            .unwrap();
        let mut buf = Vec::new();
        encode(&d, 0xB007, 1_700_000_000_000, &mut buf).unwrap();
        // The next run started 5 s later: engine times shift down by 5000 ms.
        let l = decode(&buf, 1_700_000_005_000, 4).unwrap();
        assert_eq!(l.dialog.loaded_boot(), Some(0xB007));
        assert_eq!(l.deadline_unix_ms, 1_700_000_009_004);
        assert_eq!(l.dialog.deadline_ms.load(Relaxed), 4_004);
        assert_eq!(l.dialog.init_ms, 0, "init before this run saturates to 0");
        assert_eq!(
            l.profiles,
            vec![
                ("calls".to_string(), None),
                (
                    "caller".to_string(),
                    Some(b"alice".to_vec().into_boxed_slice())
                )
            ]
        );
        // A loaded dialog keeps its original boot tag when stored again.
        let mut again = Vec::new();
        encode(&l.dialog, 0x1111, 1_700_000_005_000, &mut again).unwrap();
        assert_eq!(again.get(1..5), Some(&0xB007u32.to_le_bytes()[..]));
    }

    #[test]
    fn refuses_unconfirmed_and_ended() {
        let early = Dialog::new(
            DialogId::new(0, 1, 1),
            Strs::new([&[]; 9]),
            sock(false, 1, false, 0),
            0,
            60,
            1,
        );
        let mut buf = Vec::new();
        assert_eq!(
            encode(&early, 1, 0, &mut buf),
            Err(EncodeError::NotConfirmed)
        );
        let d = dialog(&[], &[], &[], 1);
        d.try_end(EndReason::ByeCaller, 5);
        assert_eq!(encode(&d, 1, 0, &mut buf), Err(EncodeError::Ended));
        let s = dialog(&[], &[], &[], 2);
        s.try_end(EndReason::Shutdown, 5);
        assert_eq!(
            encode(&s, 1, 0, &mut buf),
            Ok(()),
            "shutdown keeps the record"
        );
    }

    #[test]
    fn rejects_versions_truncation_and_trailing() {
        let d = dialog(
            &[b"c".to_vec()],
            &[b"t".to_vec()],
            &[(b"k".to_vec(), b"v".to_vec())],
            9,
        );
        let mut buf = Vec::new();
        encode(&d, 1, 0, &mut buf).unwrap();
        assert!(decode(&buf, 0, 2).is_ok());
        assert_eq!(decode(&[], 0, 2).err(), Some(DecodeError::Empty));
        for v in [0u8, 2, 255] {
            let mut b = buf.clone();
            if let Some(x) = b.first_mut() {
                *x = v;
            }
            assert_eq!(decode(&b, 0, 2).err(), Some(DecodeError::UnknownVersion(v)));
        }
        for n in 1..buf.len() {
            assert!(decode(&buf[..n], 0, 2).is_err(), "prefix {n} accepted");
        }
        let mut b = buf.clone();
        b.push(0);
        assert_eq!(decode(&b, 0, 2).err(), Some(DecodeError::Trailing));
        // Listener indexes beyond this run's listeners fall back to 0.
        assert_eq!(decode(&buf, 0, 1).unwrap().dialog.caller_socket().local, 0);
        assert_eq!(decode(&buf, 0, 2).unwrap().dialog.caller_socket().local, 1);
    }

    #[test]
    fn key_round_trip() {
        let id = DialogId::new(255, 0xFF_FFFF, u32::MAX);
        assert_eq!(id_of_key(key_of(id)), id);
        assert!(key_of(DialogId::new(1, 0, 0)) > key_of(DialogId::new(0, 5, u32::MAX)));
    }

    fn field() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    proptest! {
        #[test]
        fn round_trip(
            strs in proptest::collection::vec(field(), 9),
            callee in proptest::collection::vec(field(), 4),
            vars in proptest::collection::vec((field(), field()), 0..4),
            n: u32,
        ) {
            // Variables are a map: later duplicates replace earlier ones.
            let d = dialog(&strs, &callee, &vars, n);
            let mut buf = Vec::new();
            prop_assert_eq!(encode(&d, 42, 0, &mut buf), Ok(()));
            let l = decode(&buf, 0, 4);
            prop_assert!(l.is_ok());
            if let Ok(l) = l {
                assert_same(&d, &l.dialog);
                prop_assert_eq!(l.dialog.loaded_boot(), Some(42));
            }
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&b, 0, 2);
        }

        #[test]
        fn mutated_records_never_panic(i in 0usize..400, x: u8, n: u32) {
            let d = dialog(&[b"call".to_vec()], &[b"tag".to_vec()], &[], n);
            let mut buf = Vec::new();
            prop_assert_eq!(encode(&d, 1, 0, &mut buf), Ok(()));
            let len = buf.len();
            if let Some(b) = buf.get_mut(i % len) {
                *b = x;
            }
            let _ = decode(&buf, 0, 2);
        }
    }
}
