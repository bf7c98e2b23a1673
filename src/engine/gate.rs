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
//! - Overload is per worker, with hysteresis: on when the queueing delay of the receive
//!   batches has stayed above `max_delay_ms` for `max_delay_ms` (a backlog that persists, not
//!   one stall of a busy core that drains at once), off again once it falls under half of it.

use super::settings::Overload;
use super::{Engine, Inbound, Output};
use crate::flood::{Action, Gate, Refusal};
use crate::stats::Counter;
use crate::wire::{Message, Method};

/// Retry-After of a 503 for a pipe or the per-source rate without a ban, s.
const RETRY_AFTER_RATE: u32 = 1;

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
            } else if let Some(o) = settings.overload.filter(|_| self.overloaded) {
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
    /// receive time to now), µs. Drives overload control.
    pub fn note_queue_delay(&mut self, now_ms: u64, delay_us: u64) {
        let settings = self.shared.settings.load();
        let Some(Overload { max_delay_us, .. }) = settings.overload else {
            self.overloaded = false;
            self.over_since_ms = None;
            return;
        };
        if self.overloaded {
            if delay_us < max_delay_us / 2 {
                self.overloaded = false;
                self.over_since_ms = None;
            }
        } else if delay_us > max_delay_us {
            let since = *self.over_since_ms.get_or_insert(now_ms);
            self.overloaded = now_ms.saturating_sub(since) * 1000 >= max_delay_us;
        } else {
            self.over_since_ms = None;
        }
    }

    /// Whether this worker refuses new INVITEs for overload now.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded
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
        // Flood control refuses before validation: Call-ID and From-tag may be missing here.
        let tag = self.local_tag_of(msg.call_id().unwrap_or(&[]), msg.from_tag().unwrap_or(&[]));
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
