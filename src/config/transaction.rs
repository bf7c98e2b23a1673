//! `[transaction]`: the RFC 3261 §17 timer values of the proxy's own transactions (the INVITE
//! server and client transactions, and the non-INVITE client of every request it generates).
//!
//! Invariants: the defaults are RFC 3261's (T1 = 500 ms, T2 = 4 s, Timer B = 64·T1);
//! validation (`validate.rs`) keeps `t1 >= 1`, `t2 >= t1` and `timer_b >= t1`, so every
//! retransmission interval is positive and no timer gives up before the first retransmission.
//! Timer C stays `[dialog] fr_inv_timer` (its Kamailio name). Plain data: turned into
//! [`crate::txn::Timers`] by `engine::settings`.

use serde::Deserialize;

/// `[transaction]`, all in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionConfig {
    /// T1, the round-trip estimate: the first retransmission interval of Timers A, E and G
    /// (UDP only), doubled after each one.
    pub t1: u64,
    /// T2: the longest retransmission interval of a non-INVITE request and of a non-2xx final
    /// sent upstream (and of the INVITE itself here).
    pub t2: u64,
    /// Timer B: how long an INVITE branch waits for any response before it counts as 408
    /// (RFC 3261: 64·T1; set it again when `t1` changes).
    pub timer_b: u64,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            t1: crate::txn::T1,
            t2: crate::txn::T2,
            timer_b: crate::txn::TIMER_B,
        }
    }
}
