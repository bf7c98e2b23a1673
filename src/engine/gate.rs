//! The edge's defences on the request path: flood control (bans, per-source rates, rate
//! pipes), admission caps (transactions, request memory) and overload control.
//!
//! ## Invariants
//! - Order: a banned source's requests are dropped before parsing (action `drop`) or before
//!   routing (action `reply`); then the per-source rate and the pipes count out-of-dialog
//!   requests; caps and overload are checked only for a *new* INVITE, after its
//!   retransmissions were matched, so retransmissions of accepted transactions, ACK, BYE and
//!   every in-dialog request always pass.
//! - Every refusal is counted by reason (`refused_*`) and either dropped or answered 503 with
//!   Retry-After; none allocates (the reply goes into the output buffer) and none panics.
//! - A new ban is logged once, with the source; nothing else here logs per packet.
//! - Overload is per worker: once the queueing delay of the receive batches has stayed above
//!   `max_delay_ms` for `max_delay_ms` (a backlog that persists, not one stall of a busy core
//!   that drains at once), the share of new INVITEs admitted falls by a fifth every 10 ms; it
//!   rises by 5 % every 10 ms while the delay is under half the bound (AIMD).

use super::settings::Overload;
use super::{Engine, Inbound, Output};
use crate::flood::{Action, Gate, Refusal};
use crate::stats::Counter;
use crate::wire::{Message, Method};

/// Retry-After of a 503 for a pipe or the per-source rate without a ban, s.
const RETRY_AFTER_RATE: u32 = 1;
/// Overload control admits all new INVITEs (per mille).
pub(crate) const ADMIT_ALL: u32 = 1000;
/// How often overload control adjusts the admitted share, ms.
pub const OVERLOAD_STEP_MS: u64 = 10;
/// How much the admitted share grows per step while the delay is low, per mille.
pub const ADMIT_INCREASE: u32 = 50;

impl Engine {
    /// Before parsing: whether to drop a request from a banned source at once (flood control
    /// on, action `drop`, the source banned). Responses always go on.
    #[inline]
    pub(crate) fn banned_early(&self, inb: &Inbound<'_>) -> bool {
        if inb.bytes.starts_with(b"SIP/") {
            return false;
        }
        let settings = self.shared.settings.load();
        let f = &settings.flood;
        if !f.enabled
            || f.action != Action::Drop
            || !self.shared.flood.banned(inb.src.ip(), inb.now_ms)
        {
            return false;
        }
        self.stats.inc(Counter::RefusedBanned);
        true
    }

    /// Flood control for an out-of-dialog request (no To-tag; not ACK or CANCEL). `false`
    /// when it was refused (dropped or answered).
    pub(crate) fn flood_gate(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        method: Method,
        out: &mut Output,
    ) -> bool {
        if matches!(method, Method::Ack | Method::Cancel) || msg.to_tag().is_some() {
            return true;
        }
        let settings = self.shared.settings.load();
        let f = &settings.flood;
        let ip = inb.src.ip();
        let refusal = match self
            .shared
            .flood
            .gate(f, ip, msg.method_bytes(), inb.now_us)
        {
            Gate::Pass => return true,
            Gate::PassUntracked => {
                self.stats.inc(Counter::FloodUntracked);
                return true;
            }
            Gate::Refuse(r) => r,
        };
        let retry_after = match refusal {
            Refusal::Banned => {
                self.stats.inc(Counter::RefusedBanned);
                u32::try_from(f.ban_ms / 1000).unwrap_or(u32::MAX)
            }
            Refusal::SourceRate { new_ban } => {
                self.stats.inc(Counter::RefusedSourceRate);
                if new_ban {
                    self.stats.inc(Counter::FloodBans);
                    tracing::warn!(
                        source = %ip,
                        ban_seconds = f.ban_ms / 1000,
                        "flood: source over its request rate, banned"
                    );
                }
                if f.ban_ms > 0 {
                    u32::try_from(f.ban_ms / 1000).unwrap_or(u32::MAX)
                } else {
                    RETRY_AFTER_RATE
                }
            }
            Refusal::Pipe => {
                self.stats.inc(Counter::RefusedPipe);
                RETRY_AFTER_RATE
            }
        };
        if f.action == Action::Reply {
            self.reply_retry_after(inb, msg, retry_after, out);
        }
        false
    }

    /// Caps and overload for a new INVITE (not a retransmission). `false` when it was refused
    /// (dropped or answered 503).
    pub(crate) fn admit_invite(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        out: &mut Output,
    ) -> bool {
        let settings = self.shared.settings.load();
        let workers = self.shared.workers.max(1);
        let (counter, reply, retry_after) =
            if self.txns.len() >= settings.max_transactions.div_ceil(workers) {
                (Counter::RefusedTxnCap, true, RETRY_AFTER_RATE)
            } else if self.txns.held_bytes() >= settings.max_request_memory.div_ceil(workers) {
                (Counter::RefusedMemoryCap, true, RETRY_AFTER_RATE)
            } else if let Some(o) = settings.overload.filter(|_| {
                self.admit_permille < ADMIT_ALL
                    && (self.next_rand() % u64::from(ADMIT_ALL)) >= u64::from(self.admit_permille)
            }) {
                (Counter::RefusedOverload, o.reply, o.retry_after)
            } else {
                return true;
            };
        self.stats.inc(counter);
        if reply {
            self.reply_retry_after(inb, msg, retry_after, out);
        }
        false
    }

    /// Count a policy refusal: a rule's `drop` (then `true`: drop the request) or a `limit`
    /// over its rate (then `false`: the caller sends the decision's reply).
    pub(crate) fn policy_refused(&mut self, decision: &super::dialogs::Decision) -> bool {
        if decision.drop {
            self.stats.inc(Counter::RefusedPolicyDrop);
            return true;
        }
        if decision.rate_limited {
            self.stats.inc(Counter::RefusedProfileRate);
        }
        false
    }

    /// `io`: the queueing delay of the receive batch about to be handled at `now_ms` (kernel
    /// receive time to now), µs. Drives overload control: the share of new INVITEs this worker
    /// admits goes down by a fifth every [`OVERLOAD_STEP_MS`] while the delay has stayed above
    /// the bound for `max_delay_ms`, and up by [`ADMIT_INCREASE`]‰ every step while it is under
    /// half of it (AIMD, so the admitted rate settles near what the worker can carry instead
    /// of swinging between all and nothing).
    pub fn note_queue_delay(&mut self, now_ms: u64, delay_us: u64) {
        let settings = self.shared.settings.load();
        let Some(Overload { max_delay_us, .. }) = settings.overload else {
            self.admit_permille = ADMIT_ALL;
            self.over_since_ms = None;
            return;
        };
        let step_due = now_ms >= self.overload_step_ms.saturating_add(OVERLOAD_STEP_MS);
        if delay_us > max_delay_us {
            let since = *self.over_since_ms.get_or_insert(now_ms);
            if step_due && now_ms.saturating_sub(since).saturating_mul(1000) >= max_delay_us {
                self.admit_permille = match self.admit_permille * 4 / 5 {
                    n if n < 10 => 0,
                    n => n,
                };
                self.overload_step_ms = now_ms;
            }
        } else {
            self.over_since_ms = None;
            if step_due && delay_us < max_delay_us / 2 && self.admit_permille < ADMIT_ALL {
                self.admit_permille = (self.admit_permille + ADMIT_INCREASE).min(ADMIT_ALL);
                self.overload_step_ms = now_ms;
            }
        }
    }

    /// Whether this worker refuses some new INVITEs for overload now.
    pub fn is_overloaded(&self) -> bool {
        self.admit_permille < ADMIT_ALL
    }

    /// The share of new INVITEs this worker admits, per mille (1000 = all).
    pub fn admit_permille(&self) -> u32 {
        self.admit_permille
    }

    /// Answer 503 Service Unavailable with `Retry-After: secs`.
    fn reply_retry_after(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        secs: u32,
        out: &mut Output,
    ) {
        let mut digits = [0u8; 10];
        let len = crate::wire::fmt_u32(secs, &mut digits);
        let n = digits.get(..len).unwrap_or(b"1");
        let tag = self.local_tag(msg);
        self.reply(
            inb,
            msg,
            503,
            b"Service Unavailable",
            Some(&tag),
            &[(b"Retry-After", n)],
            out,
        );
    }
}
