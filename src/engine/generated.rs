//! Requests the proxy sends on its own (BYE and REFER within a dialog or a `dlg_bridge` call,
//! CANCEL of a branch), each carried by a non-INVITE client transaction
//! ([`crate::txn::nict`]) in a per-worker table.
//!
//! # Invariants
//! - Our Via branch of such a request is of kind [`Kind::Client`]: it names the worker, the
//!   dialog cookie (`br` for a bridge call), the table slot and its generation, so a response
//!   finds its transaction in O(1) on the worker that sent it (another worker hands it off),
//!   and a stale or foreign branch never matches. A CANCEL shares its INVITE's branch; its
//!   owner (the INVITE transaction or bridge call) keeps the slot and hands responses over.
//! - Its outcome (answered, or Timer F) is counted once; its dialog sees the first final
//!   response, and its bridge call takes its next step on either outcome.
//! - The request bytes are stored once per transaction and sent again only by Timer E.
//! - Every timer key of a transaction is kept and cancelled when it ends; the slot is freed
//!   when the state machine says [`Action::Free`] (after Timer K, Timer F, or at once over a
//!   reliable transport). So the table and the wheel hold nothing for a finished request.
//! - A response that matches no live transaction (a late final after Timer F, a forged
//!   branch) is counted and dropped, and creates no state.

use std::sync::Arc;

use super::{Engine, Output};
use crate::dialog::id::{COOKIE_LEN, DialogId};
use crate::dialog::{Dialog, Socket};
use crate::stats::Counter;
use crate::timer::TimerKey;
use crate::txn::branch::{Branch, Kind};
use crate::txn::nict::{Action, Actions, Nict, Outcome, Timer};
use crate::wire::Transport;
use crate::wire::{Method, ValidResponse};

/// One generated request in flight.
#[derive(Debug)]
pub(crate) struct Generated {
    generation: u32,
    nict: Nict,
    /// The request as sent.
    bytes: Vec<u8>,
    dst: Socket,
    /// Timer E, F, K keys.
    keys: [Option<TimerKey>; 3],
    /// The dialog it belongs to (callbacks and removal on its final response).
    dialog: Option<Arc<Dialog>>,
    /// The bridge call told of its outcome (`engine::bridge`), as (slot, generation).
    bridge: Option<(u32, u32)>,
    method: Method,
}

/// A request the proxy originates, ready to go: its slot (from [`Engine::client_via`]), its
/// bytes and where they go.
#[derive(Debug)]
pub(crate) struct NewRequest {
    /// `(slot, generation)` reserved by [`Engine::client_via`].
    pub txn: (u32, u32),
    /// The request.
    pub bytes: Vec<u8>,
    /// Where it goes.
    pub dst: Socket,
    /// The dialog whose callbacks and removal its final response drives, if any.
    pub dialog: Option<Arc<Dialog>>,
    /// Its method.
    pub method: Method,
    /// The bridge call whose next step its outcome drives, as (slot, generation).
    pub bridge: Option<(u32, u32)>,
}

impl NewRequest {
    /// A request that belongs to no dialog and no bridge call (a CANCEL, a BYE to a losing
    /// fork).
    pub(crate) fn plain(txn: (u32, u32), bytes: Vec<u8>, dst: Socket, method: Method) -> Self {
        NewRequest {
            txn,
            bytes,
            dst,
            dialog: None,
            method,
            bridge: None,
        }
    }
}

/// The per-worker table of generated requests (slot + generation, free list).
#[derive(Debug, Default)]
pub(crate) struct GeneratedTable {
    slots: Vec<Option<Generated>>,
    free: Vec<u32>,
    generation: u32,
}

impl GeneratedTable {
    /// Requests in flight.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn reserve(&mut self) -> (u32, u32) {
        self.generation = self.generation.wrapping_add(1);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        (slot, self.generation)
    }

    fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Generated> {
        self.slots
            .get_mut(slot as usize)?
            .as_mut()
            .filter(|g| g.generation == generation)
    }

    fn release(&mut self, slot: u32) -> Option<Generated> {
        let g = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(g)
    }
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::E => 0,
        Timer::F => 1,
        Timer::K => 2,
    }
}

impl Engine {
    /// Our Via for a request the proxy originates within dialog `id`, naming the transaction
    /// slot reserved for it. Returns the Via and `(slot, generation)`.
    pub(crate) fn client_via(&mut self, id: DialogId, local: usize) -> (Vec<u8>, (u32, u32)) {
        let mut cookie_buf = [0u8; COOKIE_LEN];
        let cookie = self.encode_cookie(id, &mut cookie_buf);
        self.client_via_cookie(cookie, local)
    }

    /// [`Engine::client_via`] with a given cookie (a bridge call has no dialog of ours).
    pub(crate) fn client_via_cookie(
        &mut self,
        cookie: &[u8],
        local: usize,
    ) -> (Vec<u8>, (u32, u32)) {
        let (slot, generation) = self.reserve_generated();
        let br = Branch {
            kind: Kind::Client,
            worker: self.worker as u16,
            cookie,
            slot,
            leg: 0,
            hash: generation,
        };
        let mut via = Vec::with_capacity(128);
        self.write_via(local, &br, &mut via);
        (via, (slot, generation))
    }

    /// Reserve a slot for a request whose Via is not [`Kind::Client`] (a CANCEL carries its
    /// INVITE's branch); start it with [`Engine::start_generated`] right away.
    pub(crate) fn reserve_generated(&mut self) -> (u32, u32) {
        self.generated.reserve()
    }

    /// End a generated request early, quietly (its INVITE transaction is gone, so its
    /// answers can no longer be matched): cancel its timers and free its slot.
    pub(crate) fn drop_generated(&mut self, (slot, generation): (u32, u32)) {
        if self.generated.get_mut(slot, generation).is_some() {
            self.free_generated(slot);
        }
    }

    /// Free a slot and cancel every timer it still holds.
    fn free_generated(&mut self, slot: u32) {
        if let Some(g) = self.generated.release(slot) {
            for k in g.keys.into_iter().flatten() {
                self.wheel.cancel(k);
            }
        }
    }

    /// Start the client transaction of a request built with [`Engine::client_via`]'s Via.
    pub(crate) fn start_generated(&mut self, now: u64, req: NewRequest, out: &mut Output) {
        let NewRequest {
            txn: (slot, generation),
            bytes,
            dst,
            dialog,
            method,
            bridge,
        } = req;
        let reliable = dst.transport != Transport::Udp;
        let timers = self.shared.settings.load().txn_timers();
        let (nict, actions) = Nict::start(now, reliable, timers);
        if let Some(s) = self.generated.slots.get_mut(slot as usize) {
            *s = Some(Generated {
                generation,
                nict,
                bytes,
                dst,
                keys: [None; 3],
                dialog,
                bridge,
                method,
            });
        }
        self.apply_nict(now, slot, generation, actions, out);
    }

    /// A timer of a generated request fired.
    pub(crate) fn on_generated_timer(
        &mut self,
        now: u64,
        slot: u32,
        generation: u32,
        timer: Timer,
        out: &mut Output,
    ) {
        let Some(g) = self.generated.get_mut(slot, generation) else {
            return;
        };
        if let Some(k) = g.keys.get_mut(timer_index(timer)) {
            *k = None;
        }
        let actions = g.nict.on_timer(now, timer);
        if timer == Timer::E && actions.iter().any(|a| a == Action::Send) {
            self.stats.inc(Counter::RetransSent);
        }
        self.apply_nict(now, slot, generation, actions, out);
    }

    /// A response to generated request `(slot, generation)` of this worker (from a
    /// [`Kind::Client`] branch, or the INVITE branch a CANCEL shares).
    pub(crate) fn on_generated_response(
        &mut self,
        now: u64,
        msg: &ValidResponse<'_, '_>,
        (slot, generation): (u32, u32),
        method: Method,
        out: &mut Output,
    ) {
        let code = msg.code();
        let Some(g) = self.generated.get_mut(slot, generation) else {
            self.stats.inc(Counter::Absorbed);
            return;
        };
        if g.method != method {
            self.stats.inc(Counter::Absorbed);
            return;
        }
        let first_final = code >= 200 && !g.nict.is_done();
        let dialog = g.dialog.clone();
        let actions = g.nict.on_response(now, code);
        self.apply_nict(now, slot, generation, actions, out);
        if first_final {
            if let Some(d) = dialog {
                self.on_response_within_dialog(msg, code, &d, method, out);
            }
        } else {
            self.stats.inc(Counter::Absorbed);
        }
    }

    /// Carry out what a client transaction asked for.
    fn apply_nict(
        &mut self,
        now: u64,
        slot: u32,
        generation: u32,
        actions: Actions,
        out: &mut Output,
    ) {
        let mut bridge_outcome = None;
        for a in actions.iter() {
            let Some(g) = self.generated.get_mut(slot, generation) else {
                return;
            };
            match a {
                Action::Send => {
                    let d = g.dst;
                    out.push_bytes(&g.bytes, d.addr, d.transport, d.local, d.conn);
                }
                Action::Arm(t, at) => {
                    if let Some(k) = g.keys.get_mut(timer_index(t)) {
                        let item = super::TimerItem::Client {
                            slot,
                            generation,
                            timer: t,
                        };
                        super::timers::arm(&mut self.wheel, k, at, item);
                    }
                }
                Action::Cancel(t) => {
                    if let Some(k) = g.keys.get_mut(timer_index(t)) {
                        super::timers::disarm(&mut self.wheel, k);
                    }
                }
                Action::Report(outcome) => {
                    let m = g.method;
                    bridge_outcome = g.bridge.map(|b| (b, m));
                    match outcome {
                        Outcome::Answered(_) => self.stats.inc(Counter::GeneratedAnswered),
                        Outcome::TimedOut => {
                            self.stats.inc(Counter::GeneratedTimedOut);
                            tracing::debug!(method = ?m, "generated request got no final response");
                        }
                    }
                }
                Action::Free => self.free_generated(slot),
            }
        }
        if let Some((b, m)) = bridge_outcome {
            self.on_bridge_outcome(now, b, m, out);
        }
    }

    /// Generated requests in flight on this worker.
    pub fn generated_in_flight(&self) -> usize {
        self.generated.len()
    }
}
