//! The proxy core between the branches and upstream (RFC 3261 §16.7 steps 6-8): the best
//! non-2xx final over all branches, the next serial target, and the one final that goes
//! upstream when every branch has its outcome.
//!
//! # Invariants
//! - A non-2xx final goes upstream once ([`crate::txn::ist::Ist::on_final`] acts once), and
//!   only after no branch is pending and no serial target is left (a 6xx stops serial
//!   forking and CANCELs the other branches).
//! - The best response is kept as relayed (our Via removed); a branch that timed out counts
//!   as 408 without a stored response, so with no response at all the final is ours: 487 after
//!   a CANCEL, else 408.
//! - A 503 chosen as the best goes upstream as 500 (§16.7 step 6), so the caller does not take
//!   this proxy for the overloaded one.

use super::relay::strip_via;
use super::{Engine, Output};
use crate::txn::{Best, better_final};
use crate::wire::Message;

impl Engine {
    /// The first non-2xx final of a branch (its ACK went already): keep it if it is the best
    /// so far, then see whether the transaction can finish.
    pub(crate) fn on_negative(
        &mut self,
        now: u64,
        msg: &Message<'_>,
        slot: u32,
        code: u16,
        out: &mut Output,
    ) {
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        if t.up.ist.has_final() {
            return;
        }
        if better_final(code, t.best.as_ref().map(|b| b.code)) {
            let mut bytes = t.best.take().map(|b| b.bytes).unwrap_or_default();
            bytes.clear();
            if strip_via(msg, &mut bytes, &self.stats).is_some() {
                t.best = Some(Best { code, bytes });
            }
        }
        if code >= 600 {
            self.cancel_txn(now, slot, b"", out);
        }
        self.maybe_finish(now, slot, out);
    }

    /// Every branch has its outcome and no 2xx came: try the next serial target, or send the
    /// best final upstream and end the dialog.
    pub(crate) fn maybe_finish(&mut self, now: u64, slot: u32, out: &mut Output) {
        let Some(t) = self.txns.get(slot) else {
            return;
        };
        if t.up.ist.has_final() || t.branches.iter().any(|b| b.ict.is_pending()) {
            return;
        }
        let global_failure = t.best.as_ref().is_some_and(|b| b.code >= 600);
        if !global_failure && self.next_serial_branch(now, slot, out) {
            return;
        }
        let Some(t) = self.txns.get_mut(slot) else {
            return;
        };
        let Some(Best { code, bytes }) = t.best.take() else {
            let (code, reason): (u16, &[u8]) = if t.cancelled {
                (487, b"Request Terminated")
            } else {
                (408, b"Request Timeout")
            };
            return self.synthesize_final(now, slot, code, reason, out);
        };
        let (code, bytes) = if code == 503 {
            (500, status_500(bytes))
        } else {
            (code, bytes)
        };
        self.send_final_upstream(now, slot, code, bytes, out);
    }
}

/// `resp` with its status line replaced by `SIP/2.0 500 Server Internal Error`.
fn status_500(resp: Vec<u8>) -> Vec<u8> {
    let Some(eol) = memchr::memchr(b'\n', &resp) else {
        return resp;
    };
    let mut out = Vec::with_capacity(resp.len() + 16);
    out.extend_from_slice(b"SIP/2.0 500 Server Internal Error\r\n");
    out.extend_from_slice(resp.get(eol + 1..).unwrap_or(&[]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_becomes_a_500_with_its_headers() {
        let r = status_500(b"SIP/2.0 503 Busy Here\r\nCall-ID: x\r\n\r\n".to_vec());
        assert_eq!(
            r,
            b"SIP/2.0 500 Server Internal Error\r\nCall-ID: x\r\n\r\n"
        );
        assert_eq!(status_500(b"junk".to_vec()), b"junk");
    }
}
