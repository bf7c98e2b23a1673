//! INVITE transaction state, owned by the worker that created the dialog.
//!
//! The proxy is transaction-stateful for INVITE only (RFC 3261 §16/§17): it answers 100
//! (at once, or after `inv_100_delay_ms` unless a provisional or final went upstream first),
//! absorbs retransmitted INVITEs, retransmits downstream (Timer A), gives up on Timer B/C,
//! handles CANCEL, generates the ACK for non-2xx finals, picks the best final response
//! (§16.7) and retransmits a non-2xx final upstream until the ACK (Timer G/H).
//! Other requests go statelessly.
//!
//! ## Invariants
//! - A [`TxnTable`] belongs to one worker and is used through `&mut` only; the slot index and a
//!   generation are written in our Via branch, so a response finds its transaction in O(1).
//! - A slot is reused only after its transaction is dropped; a stale branch (old generation or
//!   another dialog) never matches.
//! - Buffers are allocated once per transaction and branch, never per packet.

pub mod branch;
pub mod ict;
pub mod ist;
pub mod nict;
pub mod recent;

use std::sync::Arc;

use crate::dialog::{Dialog, Socket};
use crate::timer::TimerKey;

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
        Timers {
            t1: T1,
            t2: T2,
            t4: T4,
            timer_b: TIMER_B,
            timer_c: TIMER_C,
        }
    }
}

impl Timers {
    /// 64·T1: Timer F of a non-INVITE client, Timer H of the INVITE server.
    pub fn t1_x64(&self) -> u64 {
        self.t1.saturating_mul(64)
    }
}
/// How long a transaction lingers after a 2xx or after the ACK of a non-2xx final, to absorb
/// late responses and retransmissions.
pub const LINGER: u64 = 5_000;

/// State of one downstream branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchState {
    /// INVITE sent, nothing back yet.
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// A final arrived (or Timer B/C fired).
    Completed,
}

/// One downstream branch (fork).
#[derive(Debug)]
pub struct BranchTxn {
    /// Where the INVITE went.
    pub socket: Socket,
    /// The forwarded INVITE as sent (for Timer A, CANCEL and ACK).
    pub forwarded: Vec<u8>,
    /// State.
    pub state: BranchState,
    /// Final code (0 = none yet; 408 when a timer gave up).
    pub final_code: u16,
    /// Timer A interval (ms) for the next retransmission.
    pub a_interval: u64,
    /// Timer A / B / C keys.
    pub timer_a: Option<TimerKey>,
    /// Timer B (no provisional) or C (provisional but no final).
    pub timer_bc: Option<TimerKey>,
    /// A CANCEL is wanted (sent when the first provisional arrives).
    pub cancel_wanted: bool,
    /// CANCEL sent.
    pub cancel_sent: bool,
    /// The CANCEL's client transaction (`engine::generated` slot and generation).
    pub cancel_txn: Option<(u32, u32)>,
}

/// The upstream (server transaction) side.
#[derive(Debug)]
pub struct Upstream {
    /// Where the INVITE came from.
    pub socket: Socket,
    /// The INVITE as received (to build our own responses and match retransmissions).
    pub request: Vec<u8>,
    /// Top Via branch of the received INVITE.
    pub branch: Vec<u8>,
    /// The last provisional relayed upstream (replayed on INVITE retransmissions).
    pub last_provisional: Vec<u8>,
    /// The final response sent upstream (empty until then).
    pub final_response: Vec<u8>,
    /// Its code.
    pub final_code: u16,
    /// Timer G interval.
    pub g_interval: u64,
    /// Timer G (retransmit a non-2xx final over UDP until ACK).
    pub timer_g: Option<TimerKey>,
    /// ACK for the non-2xx final seen.
    pub acked: bool,
    /// Our 100 Trying went upstream (at once, on a retransmission, or when Timer "Trying"
    /// fired).
    pub trying_sent: bool,
}

/// An INVITE transaction.
#[derive(Debug)]
pub struct InviteTxn {
    /// Generation of the slot, written in the branch.
    pub generation: u32,
    /// The dialog it belongs to (`None` for untracked INVITEs).
    pub dialog: Option<Arc<Dialog>>,
    /// Dialog cookie as written in our branches.
    pub cookie: Vec<u8>,
    /// Upstream side.
    pub up: Upstream,
    /// Downstream branches.
    pub branches: Vec<BranchTxn>,
    /// Targets not tried yet (serial forking).
    pub pending_targets: Vec<Socket>,
    /// Best final response so far (bytes ready to relay upstream), and its code.
    pub best: Vec<u8>,
    /// Code of `best` (0 = none).
    pub best_code: u16,
    /// A 2xx was relayed.
    pub got_2xx: bool,
    /// CANCEL received from upstream (or termination asked).
    pub cancelled: bool,
    /// Reason header text to add to CANCELs (termination), empty = none.
    pub cancel_reason: Vec<u8>,
    /// Loop-detection hash used in our branches.
    pub loop_hash: u32,
    /// When the INVITE arrived (µs, for latency histograms).
    pub started_us: u64,
    /// First provisional relayed (latency recorded).
    pub first_prov_seen: bool,
    /// The transaction is over; it lingers until this timer fires.
    pub linger: Option<TimerKey>,
    /// Local To-tag for responses we generate (408, 480, 487 ...).
    pub to_tag: [u8; 8],
    /// Bytes of requests this transaction holds, as charged against `[limits]
    /// max_request_memory` when it was created ([`TxnTable::held_bytes`]).
    pub held_bytes: usize,
    /// Its key in [`recent::RecentInvites`], remembered there when it is freed.
    pub recent_key: u64,
    /// The timer values it started with (a reload does not change a running transaction).
    pub timers: Timers,
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
        if let Some(s) = self.slots.get_mut(i) {
            *s = Some(txn);
        }
        self.live += 1;
        self.held = self.held.saturating_add(txn_held(self, i));
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
        self.get_mut(slot).filter(|t| t.cookie == cookie)
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

fn txn_held(t: &TxnTable, i: usize) -> usize {
    t.slots
        .get(i)
        .and_then(Option::as_ref)
        .map_or(0, |t| t.held_bytes)
}

/// RFC 3261 §16.7 step 6: is `code` a better final response than `best` (0 = none)?
pub fn better_final(code: u16, best: u16) -> bool {
    if best == 0 {
        return true;
    }
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
        assert!(better_final(486, 0));
        assert!(better_final(603, 486));
        assert!(!better_final(486, 603));
        assert!(better_final(404, 503));
        assert!(!better_final(503, 404));
        assert!(better_final(200, 603));
        assert!(!better_final(486, 200));
        assert!(!better_final(480, 486));
        assert!(better_final(302, 486));
    }
}
