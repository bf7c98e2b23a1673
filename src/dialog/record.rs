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

/// A small arena of byte strings: one allocation, addressed by [`Field`].
#[derive(Debug)]
pub struct Strs {
    buf: Box<[u8]>,
    spans: [(u32, u32); NFIELDS],
}

impl Strs {
    /// Build from the field values, in [`Field`] order.
    pub fn new(parts: [&[u8]; NFIELDS]) -> Strs {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut spans = [(0u32, 0u32); NFIELDS];
        for (i, p) in parts.iter().enumerate() {
            let s = buf.len() as u32;
            buf.extend_from_slice(p);
            spans[i] = (s, buf.len() as u32);
        }
        Strs {
            buf: buf.into_boxed_slice(),
            spans,
        }
    }
    /// One field.
    pub fn get(&self, f: Field) -> &[u8] {
        let (s, e) = self.spans[f as usize];
        self.buf.get(s as usize..e as usize).unwrap_or(&[])
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

/// The callee leg, set once when the 2xx is relayed.
#[derive(Debug)]
pub struct CalleeLeg {
    /// To-tag of the winning 2xx.
    pub tag: Box<[u8]>,
    /// Whole To header value of the 2xx (with tag).
    pub to: Box<[u8]>,
    /// Contact URI of the 2xx.
    pub contact: Box<[u8]>,
    /// Route set toward the callee, nearest first, `\n` separated.
    pub routes: Box<[u8]>,
    /// Where the INVITE went for this leg.
    pub socket: Socket,
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
    /// Where the caller's INVITE came from.
    pub caller_socket: Socket,
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
    /// Set only on dialogs rebuilt from the store (`dialog::persist`): the boot tag their
    /// cookies were minted under, so cookies from before the restart are still accepted.
    pub loaded_boot: Option<u32>,
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
            caller_socket,
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
            loaded_boot: None,
        }
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
            Some(c) => &*c.tag == t,
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
