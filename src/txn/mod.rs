//! RFC 3261 §17 transactions as sans-IO state machines, and the per-worker table of INVITE
//! transactions.
//!
//! The proxy is transaction-stateful for INVITE (RFC 3261 §16/§17): an [`InviteTxn`] joins
//! the INVITE server transaction upstream ([`ist`]: 100 Trying, absorbing retransmissions,
//! Timer G/H/I/L) and one INVITE client transaction per branch ([`ict`]: Timer A/B/C/D, CANCEL,
//! the ACK of a non-2xx final) with the proxy core's state between them (the best final,
//! §16.7; CANCEL; serial targets). Requests the proxy sends on its own run the non-INVITE
//! client ([`nict`]). Other requests go statelessly. The state machines own their state as
//! private enums and answer each input with a fixed list of actions; the engine
//! (`engine::invite`, `engine::upstream`, `engine::branches`) applies them: it owns the bytes,
//! the sockets and the wheel keys. The timer values come from [`Timers`] (`[transaction]`).
//!
//! ## Invariants
//! - A [`TxnTable`] belongs to one worker and is used through `&mut` only; the slot index and a
//!   generation are written in our Via branch, so a response finds its transaction in O(1).
//! - A slot is reused only after its transaction is dropped; a stale branch (old generation or
//!   another dialog) never matches.
//! - Buffers are allocated once per transaction and branch, never per packet; a request is
//!   kept once, with its spans ([`Kept`]), and never parsed again.
//! - Every wheel key a transaction arms is kept in it ([`Upstream::keys`],
//!   [`BranchTxn::keys`]) and cancelled when it is freed ([`InviteTxn::take_keys`]); it is
//!   freed when its server transaction ended and no branch waits for its outcome
//!   ([`InviteTxn::is_done`]).

pub mod branch;
pub mod ict;
pub mod ist;
pub mod nict;
pub mod recent;

use std::sync::Arc;

use crate::dialog::id::COOKIE_LEN;
use crate::dialog::{Dialog, Socket};
use crate::timer::TimerKey;
use crate::wire::Kept;

/// RFC 3261 T1 in ms (the default of `[transaction] t1`).
pub const T1: u64 = 500;
/// RFC 3261 T2 in ms (the default of `[transaction] t2`).
pub const T2: u64 = 4000;
/// RFC 3261 T4 in ms: how long a message may stay in the network (Timers I and K).
pub const T4: u64 = 5000;
/// Timer B (= 64*T1; the default of `[transaction] timer_b`).
pub const TIMER_B: u64 = 64 * T1;
/// Timer C (> 3 minutes; the default of `[dialog] fr_inv_timer`).
pub const TIMER_C: u64 = 181_000;

/// Up to four actions of a state machine, in order, without allocation.
#[derive(Clone, Copy, Debug)]
pub struct Actions<A: Copy> {
    buf: [Option<A>; 4],
    len: usize,
}

impl<A: Copy> Default for Actions<A> {
    fn default() -> Self {
        Actions {
            buf: [None; 4],
            len: 0,
        }
    }
}

impl<A: Copy> Actions<A> {
    /// Add one (a fifth is dropped: no state machine here asks for more than four).
    fn push(&mut self, a: A) {
        if let Some(s) = self.buf.get_mut(self.len) {
            *s = Some(a);
            self.len += 1;
        }
    }

    /// The actions in order.
    pub fn iter(&self) -> impl Iterator<Item = A> + '_ {
        self.buf.iter().take(self.len).flatten().copied()
    }
}

/// The actions as a vector (tests compare them).
#[cfg(test)]
fn v<A: Copy>(a: Actions<A>) -> Vec<A> {
    a.iter().collect()
}

/// The timer values a worker's transactions run with, in ms (`[transaction]` and `[dialog]
/// fr_inv_timer`, through `engine::Settings::txn_timers`). `Default` is RFC 3261's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// T1: round-trip estimate, the first retransmission interval (Timers A, E, G).
    pub t1: u64,
    /// T2: the longest retransmission interval.
    pub t2: u64,
    /// T4: how long a message may stay in the network (Timers I and K).
    pub t4: u64,
    /// Timer B: an INVITE branch with no response at all gives up.
    pub timer_b: u64,
    /// Timer C: an INVITE branch with a provisional but no final gives up.
    pub timer_c: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::RFC
    }
}

impl Timers {
    /// RFC 3261's values (and Kamailio's Timer C).
    pub const RFC: Timers = Timers {
        t1: T1,
        t2: T2,
        t4: T4,
        timer_b: TIMER_B,
        timer_c: TIMER_C,
    };

    /// 64·T1: Timer F of a non-INVITE client, Timer H of the INVITE server.
    pub fn t1_x64(&self) -> u64 {
        self.t1.saturating_mul(64)
    }
}
/// A dialog cookie as written in our branches (or `x` for an untracked INVITE), inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    buf: [u8; COOKIE_LEN],
    len: u8,
}

impl Cookie {
    /// `b` (cut at [`COOKIE_LEN`] bytes).
    pub fn new(b: &[u8]) -> Cookie {
        let mut c = Cookie {
            buf: [0; COOKIE_LEN],
            len: 0,
        };
        for (d, s) in c.buf.iter_mut().zip(b) {
            *d = *s;
            c.len += 1;
        }
        c
    }

    /// The cookie bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// One downstream branch (fork): its client transaction and what the engine keeps for it.
#[derive(Debug)]
pub struct BranchTxn {
    /// Where the INVITE went.
    pub socket: Socket,
    /// The forwarded INVITE as sent, with the spans its CANCEL and ACK copy (for Timer A,
    /// CANCEL and ACK); dropped once this branch's 2xx won.
    pub forwarded: Option<Kept>,
    /// The INVITE client transaction.
    pub ict: ict::Ict,
    /// Wheel keys of its timers, by [`ict::Timer::slot`].
    pub keys: [Option<TimerKey>; 3],
    /// The CANCEL's client transaction (`engine::generated` slot and generation).
    pub cancel_txn: Option<(u32, u32)>,
}

/// The upstream side: the server transaction and what the engine keeps for it.
#[derive(Debug)]
pub struct Upstream {
    /// Where the INVITE came from.
    pub socket: Socket,
    /// The INVITE as received, with its spans (to build our own responses, and further
    /// serial branches, without parsing it again); dropped once a 2xx went upstream.
    pub request: Option<Kept>,
    /// Top Via branch of the received INVITE.
    pub branch: Vec<u8>,
    /// The last provisional relayed upstream (replayed on INVITE retransmissions).
    pub last_provisional: Vec<u8>,
    /// The non-2xx final response sent upstream (empty until then).
    pub final_response: Vec<u8>,
    /// The INVITE server transaction.
    pub ist: ist::Ist,
    /// Wheel keys of its timers, by [`ist::Timer::slot`].
    pub keys: [Option<TimerKey>; 3],
}

/// The best final response so far (RFC 3261 §16.7 step 6), ready to relay upstream.
#[derive(Debug)]
pub struct Best {
    /// Its status code.
    pub code: u16,
    /// The response without our Via.
    pub bytes: Vec<u8>,
}

/// An INVITE transaction: the server transaction upstream and a client transaction per
/// branch, with the proxy core's state between them (best final, CANCEL, serial targets).
#[derive(Debug)]
pub struct InviteTxn {
    /// Generation of the slot, written in the branch.
    pub generation: u32,
    /// The dialog it belongs to (`None` for untracked INVITEs).
    pub dialog: Option<Arc<Dialog>>,
    /// Dialog cookie as written in our branches.
    pub cookie: Cookie,
    /// Upstream side.
    pub up: Upstream,
    /// Downstream branches.
    pub branches: Vec<BranchTxn>,
    /// Targets not tried yet (serial forking).
    pub pending_targets: Vec<Socket>,
    /// Best final response so far.
    pub best: Option<Best>,
    /// CANCEL received from upstream (or termination asked).
    pub cancelled: bool,
    /// Reason header text to add to CANCELs (termination), empty = none.
    pub cancel_reason: Vec<u8>,
    /// Loop-detection hash used in our branches.
    pub loop_hash: u32,
    /// When the INVITE arrived (µs, for latency histograms).
    pub started_us: u64,
    /// Local To-tag for responses we generate (408, 480, 487 ...).
    pub to_tag: [u8; 8],
    /// Bytes of requests this transaction holds, as charged against `[limits]
    /// max_request_memory` when it was created ([`TxnTable::held_bytes`]).
    pub held_bytes: usize,
    /// Its key in [`recent::InviteIndex`], remembered there when it is freed.
    pub recent_key: u64,
    /// The timer values it started with (a reload does not change a running transaction).
    pub timers: Timers,
}

impl InviteTxn {
    /// The transaction is over and may be freed: its server transaction ended and no branch
    /// waits for its outcome any more.
    pub fn is_done(&self) -> bool {
        self.up.ist.is_terminated() && !self.branches.iter().any(|b| b.ict.is_pending())
    }

    /// Every timer key it holds, taken (to cancel them when it ends).
    pub fn take_keys(&mut self) -> impl Iterator<Item = TimerKey> + '_ {
        let up = self.up.keys.iter_mut();
        let branches = self.branches.iter_mut().flat_map(|b| b.keys.iter_mut());
        up.chain(branches).filter_map(Option::take)
    }
}

/// One worker's INVITE transactions, in a slab.
#[derive(Debug, Default)]
pub struct TxnTable {
    slots: Vec<Option<InviteTxn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    held: usize,
}

impl TxnTable {
    /// Store a transaction; returns its slot. `txn.generation` is set here.
    pub fn insert(&mut self, mut txn: InviteTxn) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let i = slot as usize;
        if let Some(g) = self.gens.get_mut(i) {
            *g = g.wrapping_add(1);
            txn.generation = *g;
        }
        self.held = self.held.saturating_add(txn.held_bytes);
        if let Some(s) = self.slots.get_mut(i) {
            *s = Some(txn);
        }
        self.live += 1;
        slot
    }

    /// The transaction in `slot`, read-only.
    pub fn get(&self, slot: u32) -> Option<&InviteTxn> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// The transaction in `slot`.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut InviteTxn> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// The transaction in `slot` if it is still the one of `generation` (a timer's target).
    pub fn get_current(&mut self, slot: u32, generation: u32) -> Option<&mut InviteTxn> {
        self.get_mut(slot).filter(|t| t.generation == generation)
    }

    /// The transaction in `slot` if its cookie matches.
    pub fn get_checked(&mut self, slot: u32, cookie: &[u8]) -> Option<&mut InviteTxn> {
        self.get_mut(slot).filter(|t| t.cookie.as_bytes() == cookie)
    }

    /// Drop the transaction in `slot`.
    pub fn remove(&mut self, slot: u32) -> Option<InviteTxn> {
        let t = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        self.held = self.held.saturating_sub(t.held_bytes);
        Some(t)
    }

    /// Bytes of requests held by live transactions (their `held_bytes`).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No live transactions.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Slots of every live transaction (shutdown, tests).
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
    }
}

/// RFC 3261 §16.7 step 6: is `code` a better final response than `best`?
pub fn better_final(code: u16, best: Option<u16>) -> bool {
    let Some(best) = best else {
        return true;
    };
    let (c, b) = (code / 100, best / 100);
    if c == 2 {
        return b != 2;
    }
    if b == 2 || b == 6 {
        return false;
    }
    if c == 6 {
        return true;
    }
    // Lowest class wins; 5xx/4xx ties keep the first, but a 503 ranks as 500.
    c < b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_final_ranking() {
        assert!(better_final(486, None));
        assert!(better_final(603, Some(486)));
        assert!(!better_final(486, Some(603)));
        assert!(better_final(404, Some(503)));
        assert!(!better_final(503, Some(404)));
        assert!(better_final(200, Some(603)));
        assert!(!better_final(486, Some(200)));
        assert!(!better_final(480, Some(486)));
        assert!(better_final(302, Some(486)));
    }
}
