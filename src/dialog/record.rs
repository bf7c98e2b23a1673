//! The dialog record: what the proxy remembers about one dialog.
//!
//! ## Invariants
//! - Published records are shared (`Arc`) by every worker; fields that change after creation are
//!   atomics, write-once cells, or swapped as a whole (`ArcSwapOption`).
//! - `state` only moves forward, by compare-and-swap ([`Dialog::advance`]); reaching `Deleted`
//!   happens exactly once ([`Dialog::try_end`]), and only the caller that won it runs the end
//!   effects (statistics, profile release, callbacks).
//! - Caller-side strings live in one arena allocation; the callee side is set once at 2xx
//!   (both in [`legs`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};

use arc_swap::ArcSwapOption;

use super::id::DialogId;
use super::profile::Memberships;
use super::state::{DlgState, EndReason, Side};
use super::table::CallIdentity;

mod legs;
use legs::PackedSocket;
pub use legs::{CalleeLeg, Field, Socket, Strs};

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

/// [`Dialog::timer_key`] when no wheel entry is armed.
pub const NO_TIMER: u64 = u64::MAX;

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
    /// The true deadline (ms); the owning wheel re-arms lazily when it moved later. After the
    /// dialog ended it is the time by which the record leaves the table.
    pub deadline_ms: AtomicU64,
    /// Key of the dialog's one entry in its timer worker's wheel ([`crate::timer::TimerKey`]
    /// bits, [`NO_TIMER`] = none). Only that worker reads or writes it; any other worker that
    /// ends or removes the dialog asks it to re-time through a command.
    pub timer_key: AtomicU64,
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
    /// Boot tag of a dialog rebuilt from the store, valid when `loaded` ([`Dialog::loaded_boot`];
    /// a `u32` and a `bool` pack into 8 bytes fewer than an `Option<u32>` here).
    loaded_boot: u32,
    loaded: bool,
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
            timer_key: AtomicU64::new(NO_TIMER),
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
        if !self.timeout_noreset.load(Relaxed) && self.state() != DlgState::Deleted {
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
    use super::legs::NFIELDS;
    use super::*;
    use crate::wire::Transport;
    use std::net::SocketAddr;

    #[test]
    fn record_sizes_stay_within_the_memory_budget() {
        // Issue 8: ≤ 1 KiB resident per held dialog. `Arc<Dialog>` is one 16-byte-rounded
        // malloc chunk: 320 + 16 (Arc counts) + 8 (chunk header) = 344, a 352-byte chunk (the
        // timer key, which lets the dialog's wheel entry be cancelled, added 8 bytes).
        assert!(size_of::<Dialog>() <= 320, "Dialog {}", size_of::<Dialog>());
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
}
