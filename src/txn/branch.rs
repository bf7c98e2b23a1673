//! Our Via branch parameter: what it encodes and how to read it back.
//!
//! Format (all after the RFC 3261 magic cookie `z9hG4bK`):
//! - `z9hG4bK-se.d{W}.{did}.{slot}.{leg}.{lh}` — a branch of an INVITE transaction of a tracked
//!   dialog: owner worker `W`, the dialog cookie, the transaction slot in the owner's table, the
//!   branch (leg) index and the loop-detection hash.
//! - `z9hG4bK-se.w{W}.{did}.{h}` — a request within a dialog forwarded statelessly.
//! - `z9hG4bK-se.s{W}.{h}` — any other request forwarded statelessly; `h` hashes the incoming
//!   branch so retransmissions get the same branch (RFC 3261 §16.11).
//!
//! Numbers are lower-case hex. Invariants: `write` never allocates; `parse` never panics and
//! rejects anything it did not write.

/// The prefix of every branch we generate.
pub const PREFIX: &[u8] = b"z9hG4bK-se.";

/// What kind of request a branch was generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// INVITE transaction of a tracked dialog.
    Dialog,
    /// Request within a dialog, stateless.
    Within,
    /// Stateless.
    Stateless,
    /// A call the proxy originates itself (`dlg_bridge`); `slot` indexes the bridge calls of
    /// worker `worker`.
    Bridge,
    /// A non-INVITE request the proxy originates within a dialog (BYE, REFER): `slot` indexes
    /// worker `worker`'s client transactions and `hash` holds the slot's generation.
    Client,
}

/// A parsed branch of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch<'a> {
    /// Kind.
    pub kind: Kind,
    /// Worker that forwarded the request.
    pub worker: u16,
    /// Dialog cookie (empty for `Stateless`).
    pub cookie: &'a [u8],
    /// Transaction slot (`Dialog` only).
    pub slot: u32,
    /// Leg index (`Dialog` only).
    pub leg: u8,
    /// Loop hash (`Dialog`) or retransmission hash (others).
    pub hash: u32,
}

/// A fixed buffer a branch is written into.
#[derive(Clone, Copy)]
pub struct BranchBuf {
    buf: [u8; 96],
    len: usize,
}

impl Default for BranchBuf {
    fn default() -> Self {
        BranchBuf {
            buf: [0; 96],
            len: 0,
        }
    }
}

impl BranchBuf {
    /// The written bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
    fn push(&mut self, b: &[u8]) {
        for &c in b {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = c;
                self.len += 1;
            }
        }
    }
    fn hex(&mut self, mut v: u64) {
        let mut tmp = [0u8; 16];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 || i == 0 {
                break;
            }
        }
        let digits = tmp;
        self.push(digits.get(i..).unwrap_or(&[]));
    }
}

/// Write a branch.
pub fn write(b: &Branch<'_>) -> BranchBuf {
    let mut out = BranchBuf::default();
    out.push(PREFIX);
    out.push(match b.kind {
        Kind::Dialog => b"d",
        Kind::Within => b"w",
        Kind::Stateless => b"s",
        Kind::Bridge => b"b",
        Kind::Client => b"c",
    });
    out.hex(u64::from(b.worker));
    if b.kind != Kind::Stateless {
        out.push(b".");
        out.push(b.cookie);
    }
    if matches!(b.kind, Kind::Dialog | Kind::Bridge | Kind::Client) {
        out.push(b".");
        out.hex(u64::from(b.slot));
        out.push(b".");
        out.hex(u64::from(b.leg));
    }
    out.push(b".");
    out.hex(u64::from(b.hash));
    out
}

fn parse_hex(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Read one of our branches; `None` for anything else.
pub fn parse(b: &[u8]) -> Option<Branch<'_>> {
    let rest = b.strip_prefix(PREFIX)?;
    let (&k, rest) = rest.split_first()?;
    let kind = match k {
        b'd' => Kind::Dialog,
        b'w' => Kind::Within,
        b's' => Kind::Stateless,
        b'b' => Kind::Bridge,
        b'c' => Kind::Client,
        _ => return None,
    };
    let mut parts = rest.split(|&c| c == b'.');
    let worker = u16::try_from(parse_hex(parts.next()?)?).ok()?;
    let mut out = Branch {
        kind,
        worker,
        cookie: &[],
        slot: 0,
        leg: 0,
        hash: 0,
    };
    if kind != Kind::Stateless {
        out.cookie = parts.next()?;
        if out.cookie.is_empty() {
            return None;
        }
    }
    if matches!(kind, Kind::Dialog | Kind::Bridge | Kind::Client) {
        out.slot = u32::try_from(parse_hex(parts.next()?)?).ok()?;
        out.leg = u8::try_from(parse_hex(parts.next()?)?).ok()?;
    }
    out.hash = u32::try_from(parse_hex(parts.next()?)?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// A cheap, stable 32-bit hash of several byte strings ([`crate::hash::hash64`]), for loop
/// detection and stateless branches.
pub fn hash(parts: &[&[u8]]) -> u32 {
    (crate::hash::hash64(0, parts) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_kind() {
        for kind in [
            Kind::Dialog,
            Kind::Within,
            Kind::Stateless,
            Kind::Bridge,
            Kind::Client,
        ] {
            let b = Branch {
                kind,
                worker: 3,
                cookie: if kind == Kind::Stateless {
                    b""
                } else {
                    b"00a1b2c3d4"
                },
                slot: if matches!(kind, Kind::Dialog | Kind::Bridge | Kind::Client) {
                    77
                } else {
                    0
                },
                leg: if matches!(kind, Kind::Dialog | Kind::Bridge | Kind::Client) {
                    2
                } else {
                    0
                },
                hash: 0xdead_beef,
            };
            let w = write(&b);
            assert!(w.as_bytes().starts_with(b"z9hG4bK"));
            assert_eq!(parse(w.as_bytes()), Some(b));
        }
    }

    #[test]
    fn rejects_foreign_and_garbage() {
        for g in [
            &b"z9hG4bK776asdhds"[..],
            b"z9hG4bK-se.",
            b"z9hG4bK-se.x1.2",
            b"z9hG4bK-se.d1..1.1.1",
            b"z9hG4bK-se.s1.zz",
            b"z9hG4bK-se.s1.1.2",
            b"z9hG4bK-se.d10000.ab.1.1.1",
            b"",
        ] {
            assert_eq!(parse(g), None, "{:?}", String::from_utf8_lossy(g));
        }
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
        assert_eq!(hash(&[b"x"]), hash(&[b"x"]));
    }
}
