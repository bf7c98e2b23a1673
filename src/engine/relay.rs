//! Responses: routed by our top Via branch (RFC 3261 §16.7, §18.2.2) to the INVITE branch, the
//! CANCEL or the request the proxy generated that they answer, or relayed statelessly by the
//! next Via.
//!
//! # Invariants
//! - A response is only ever handled on the worker named in our branch (others hand it off),
//!   and a branch we did not write (not ours, a worker we do not have) is dropped and counted.
//! - A response for an INVITE transaction that is gone is relayed (a late 2xx matters end to
//!   end); a response to a CANCEL or a generated request never is.
//! - Relaying removes our Via only; the next Via says where it goes (a broadcast or bad Via
//!   is dropped and counted).
//! - Past validation a handler takes the [`wire::ValidResponse`]: status code, CSeq, Call-ID
//!   and the top Via with its branch are read once and are never `Option`s.

use super::forward::{is_broadcast, via_target};
use super::{Engine, Inbound, Output};
use crate::stats::{Counter, WorkerStats};
use crate::txn::branch::{self, Kind};
use crate::wire::{self, Edits, Message, Method, Transport};

/// Remove our Via and write the response for the next Via into `into`. Returns where it goes,
/// or `None` when there is no next Via (a reply to our own request) or it is bad.
pub(crate) fn strip_via(
    msg: &Message<'_>,
    into: &mut Vec<u8>,
    stats: &WorkerStats,
) -> Option<(std::net::SocketAddr, Transport)> {
    let next = msg.second_via()?;
    if is_broadcast(&next) {
        stats.inc(Counter::Dropped);
        return None;
    }
    let dst = via_target(&next)?;
    let transport = Transport::from_token(next.transport).unwrap_or(Transport::Udp);
    let mut edits = Edits::new(msg);
    edits.remove_top_via().ok()?;
    let start = into.len();
    if edits.write(into).is_err() {
        into.truncate(start);
        return None;
    }
    Some((dst, transport))
}

impl Engine {
    /// Entry point for responses.
    pub(crate) fn on_response(&mut self, inb: &Inbound<'_>, msg: &Message<'_>, out: &mut Output) {
        self.stats.inc(Counter::ResponsesIn);
        let msg = match wire::validate_response(msg) {
            Ok(v) => v,
            Err(e) => {
                self.stats.inc_parse_error(e.kind_index());
                self.warn_malformed(inb, e, msg.call_id());
                return;
            }
        };
        // Trusted from here: the top Via, its branch, CSeq and Call-ID are fields of `msg`.
        let msg = &msg;
        let top = msg.top_via();
        let ours = self.shared.locals.is_ours(top.host, top.port);
        // A branch naming a worker we do not have was not written by this proxy instance.
        let workers = self.shared.workers;
        let Some(b) =
            branch::parse(msg.branch()).filter(|b| ours && usize::from(b.worker) < workers)
        else {
            self.stats.inc(Counter::NotOurs);
            return;
        };
        let method = msg.cseq().method;
        let owner = usize::from(b.worker);
        // Transaction state lives on the worker that wrote the branch.
        let stateful = matches!(
            (b.kind, method),
            (Kind::Dialog, Method::Invite | Method::Cancel) | (Kind::Bridge | Kind::Client, _)
        );
        if stateful && owner != self.worker {
            out.handoff = Some(owner);
            return;
        }
        match (b.kind, method) {
            (Kind::Dialog, Method::Invite) => {
                if self.txns.get_checked(b.slot, b.cookie).is_some() {
                    self.on_invite_response(inb, msg, b.slot, usize::from(b.leg), out);
                } else if (200..300).contains(&msg.code()) {
                    // The transaction is gone: a 2xx (a retransmission whose ACK was lost, or
                    // a late fork) still goes upstream statelessly (RFC 3261 §16.7 step 5).
                    self.relay_response(msg, None, out);
                } else {
                    // Anything else came after the upstream transaction had its final.
                    self.stats.inc(Counter::Absorbed);
                }
            }
            // Replies to CANCELs we generated: they end the CANCEL's client transaction.
            (Kind::Dialog, Method::Cancel) => {
                let cancel = self
                    .txns
                    .get_checked(b.slot, b.cookie)
                    .and_then(|t| t.branches.get(usize::from(b.leg)))
                    .and_then(|br| br.cancel_txn);
                match cancel {
                    Some(c) => self.on_generated_response(inb.now_ms, msg, c, method, out),
                    None => self.stats.inc(Counter::Absorbed),
                }
            }
            (Kind::Dialog, _) => self.stats.inc(Counter::Absorbed),
            (Kind::Within, _) => {
                self.on_response_within(msg, b.cookie, method, out);
                self.relay_response(msg, Some(owner), out);
            }
            (Kind::Stateless, _) => {
                self.relay_response(msg, Some(owner), out);
            }
            (Kind::Bridge, _) => self.on_bridge_response(inb.now_ms, msg, (b.slot, b.hash), out),
            // A response to a request we originated: it ends here, never relayed.
            (Kind::Client, _) => {
                self.on_generated_response(inb.now_ms, msg, (b.slot, b.hash), method, out);
            }
        }
    }

    /// Relay a response upstream by Via. `conn_owner` is the worker that forwarded the
    /// request (the owner of a TCP connection upstream).
    pub(crate) fn relay_response(
        &mut self,
        msg: &Message<'_>,
        conn_owner: Option<usize>,
        out: &mut Output,
    ) -> bool {
        if let Some(next) = msg.second_via() {
            let t = Transport::from_token(next.transport).unwrap_or(Transport::Udp);
            if t == Transport::Tcp && conn_owner.is_some_and(|w| w != self.worker) {
                out.handoff = conn_owner;
                return false;
            }
        }
        let start = out.buf.len();
        match strip_via(msg, &mut out.buf, &self.stats) {
            Some((dst, transport)) => {
                let local = self.listener_for(transport, dst);
                out.push_from(start, dst, transport, local, None);
                self.stats.inc(Counter::Relayed);
                true
            }
            None => {
                out.buf.truncate(start);
                false
            }
        }
    }
}
