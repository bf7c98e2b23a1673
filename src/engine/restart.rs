//! What `io` needs to keep a worker going through a bug: timers fired one at a time (so a
//! panic in one timer is isolated from the others due in the same tick), the count of
//! transactions a dead engine takes with it, and the takeover by a replacement engine.
//!
//! # Invariants
//! - [`Engine::take_due_timers`] followed by [`Engine::fire_timer`] for each item is exactly
//!   [`Engine::handle_timeout`]; the caller owns the list (reused, no allocation per tick).
//! - A replacement engine ([`Engine::take_over`]) shares the table, profiles and statistics
//!   with the dead one but none of its per-worker state: INVITE transactions, requests the
//!   proxy originated, bridges and the wheel are gone. It arms one fresh wheel entry for
//!   every dialog in the table whose timer worker is its index (loaded dialogs are armed by
//!   [`Engine::adopt_loaded`], as at start), so every such dialog still expires, and it mints
//!   ids above every id of its index still in the table. Ids of dialogs that already left the
//!   table may be minted again: an in-dialog request for such an old call then fails the
//!   Call-ID/tag check (`dialog_mismatch`) instead of touching the new dialog.
//! - A dialog that left the table while the worker was dead may still hold a key of the dead
//!   wheel; `engine::dialog_timer` only trusts a key whose entry names the dialog.
//! - A dialog whose timer panicked (isolated by `io`) gets one new entry
//!   ([`Engine::rearm_after_panic`]), never a second one.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::{Engine, Output, TimerItem};
use crate::dialog::Dialog;
use crate::dialog::id::DialogId;
use crate::dialog::record::NO_TIMER;
use crate::timer::TimerKey;

impl Engine {
    /// Move the timers due at `now_ms` out of the wheel into `due` (cleared first), for a
    /// caller that fires them one at a time with [`Engine::fire_timer`].
    pub fn take_due_timers(&mut self, now_ms: u64, due: &mut Vec<(u64, TimerItem)>) {
        self.now_us = now_ms.saturating_mul(1000);
        due.clear();
        self.wheel.poll(now_ms, due);
    }

    /// Fire one timer taken by [`Engine::take_due_timers`].
    pub fn fire_timer(&mut self, now_ms: u64, item: TimerItem, out: &mut Output) {
        self.now_us = now_ms.saturating_mul(1000);
        self.on_timer(now_ms, item, out);
    }

    /// Transactions in flight on this worker: INVITE transactions and requests the proxy
    /// originated (BYE, REFER, CANCEL). What a dead engine loses.
    pub fn in_flight(&self) -> usize {
        self.txns.len() + self.generated.len()
    }

    /// After a panic while dialog `id`'s timer fired: arm its entry again at `at`, unless it
    /// left the table or already has a live entry (the panic came after it was re-armed).
    /// Without this the spent entry would be its last and the dialog would never expire.
    /// Returns whether it armed one.
    pub fn rearm_after_panic(&mut self, id: DialogId, at: u64) -> bool {
        if self.timer_worker(id) != self.worker {
            return false;
        }
        let Some(d) = self.shared.table.get(id) else {
            return false;
        };
        let bits = d.timer_key.load(Relaxed);
        if bits != NO_TIMER
            && self.wheel.get(TimerKey::from_bits(bits)) == Some(&TimerItem::Dialog(id))
        {
            return false;
        }
        self.arm_dialog_timer(&d, at);
        true
    }

    /// Take over the dialogs of a predecessor on this worker index that died: arm a wheel
    /// entry at its deadline for every dialog in the table that this worker times and that
    /// was not loaded from the store (those were armed when this engine was built), and keep
    /// new ids above those of the table. Returns how many entries it armed.
    pub fn take_over(&mut self) -> usize {
        let me = self.worker;
        let mut arm: Vec<Arc<Dialog>> = Vec::new();
        let mut max_h_id = None;
        self.shared.table.for_each(|id, d| {
            if id.worker() == me {
                max_h_id = max_h_id.max(Some(id.h_id));
            }
            if d.loaded_boot().is_none() && self.timer_worker(*id) == me {
                arm.push(d.clone());
            }
        });
        for d in &arm {
            self.arm_dialog_timer(d, d.deadline_ms.load(Acquire));
        }
        if let Some(h) = max_h_id {
            self.didgen.advance_past(h);
        }
        arm.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::dialog::profile::Profiles;
    use crate::dialog::record::{CalleeLeg, Socket, Strs};
    use crate::dialog::{DlgState, Field};
    use crate::engine::{Command, LocalAddrs, Settings, Shared};
    use crate::wire::Transport;

    fn shared() -> Arc<Shared> {
        let bound = [(Transport::Udp, "127.0.0.1:5060".parse().unwrap())];
        Shared::new(
            2,
            LocalAddrs::new(&bound, None),
            Settings::default(),
            Profiles::new(&[], &[]).unwrap(),
            1,
            7,
        )
    }

    fn sock(port: u16) -> Socket {
        Socket {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: Transport::Udp,
            local: 0,
            conn: None,
        }
    }

    /// A confirmed dialog of `worker` in the table, deadline `deadline_ms`.
    fn confirmed(s: &Shared, worker: usize, h_id: u32, deadline_ms: u64) -> Arc<Dialog> {
        let call_id = format!("c{worker}-{h_id}");
        let strs = Strs::new([
            call_id.as_bytes(),
            b"<sip:a@127.0.0.1>;tag=a",
            b"sip:a@127.0.0.1",
            b"a",
            b"<sip:b@127.0.0.1>",
            b"sip:b@127.0.0.1",
            b"sip:b@127.0.0.1",
            b"sip:a@127.0.0.1:5070",
            b"",
        ]);
        let d = Dialog::new(DialogId::new(worker, 3, h_id), strs, sock(5070), 0, 60, 1);
        d.callee
            .set(CalleeLeg::new(
                b"b",
                b"<sip:b@x>;tag=b",
                b"sip:b@127.0.0.1:5080",
                b"",
                sock(5080),
            ))
            .unwrap();
        d.advance(&[DlgState::Unconfirmed], DlgState::Confirmed);
        d.deadline_ms.store(deadline_ms, Relaxed);
        let d = Arc::new(d);
        s.table
            .insert(d.id, d.clone(), d.strs.get(Field::CallId), b"a");
        d
    }

    #[test]
    fn replacement_arms_its_dialogs_and_mints_new_ids_above_them() {
        let s = shared();
        let mine = confirmed(&s, 0, 41, 5_000);
        let other = confirmed(&s, 1, 77, 5_000);
        let mut e = Engine::new(s.clone(), 0, 100);
        assert_eq!(e.pending_timers(), 0);
        assert_eq!(e.take_over(), 1, "only worker 0's dialog");
        assert_eq!(e.pending_timers(), 1);
        assert_ne!(mine.timer_key.load(Relaxed), NO_TIMER);
        assert_eq!(other.timer_key.load(Relaxed), NO_TIMER);
        assert!(e.didgen.next_id(0).h_id > 41, "new ids above the table's");
        // The entry fires at the deadline: the dialog times out (BYE both ways).
        let mut due = Vec::new();
        let mut out = Output::with_capacity(1 << 16, 16);
        e.take_due_timers(4_999, &mut due);
        assert!(due.is_empty());
        e.take_due_timers(5_000, &mut due);
        assert_eq!(due.len(), 1);
        for (_, item) in due.drain(..) {
            e.fire_timer(5_000, item, &mut out);
        }
        assert_eq!(mine.state(), DlgState::Deleted);
        let byes = out
            .tx
            .iter()
            .filter(|t| out.bytes(t).starts_with(b"BYE "))
            .count();
        assert_eq!(byes, 2);
    }

    #[test]
    fn a_stale_key_of_a_dead_wheel_never_cancels_another_entry() {
        let s = shared();
        let live = confirmed(&s, 0, 1, 9_000);
        let gone = confirmed(&s, 0, 2, 9_000);
        let mut e = Engine::new(s.clone(), 0, 0);
        // The dead wheel: `gone` got the first slot there, as `live` gets it here.
        s.table.remove(gone.id, gone.strs.get(Field::CallId), b"a");
        assert_eq!(e.take_over(), 1);
        let live_bits = live.timer_key.load(Relaxed);
        gone.timer_key.store(live_bits, Relaxed);
        let mut out = Output::with_capacity(1 << 12, 4);
        e.handle_command(10, 10_000, Command::Retime(gone.clone()), &mut out);
        assert_eq!(gone.timer_key.load(Relaxed), NO_TIMER);
        assert_eq!(e.pending_timers(), 1, "live's entry survives");
        assert_eq!(live.timer_key.load(Relaxed), live_bits);
    }

    #[test]
    fn a_dialog_whose_timer_panicked_gets_exactly_one_new_entry() {
        let s = shared();
        let d = confirmed(&s, 0, 5, 1_000);
        let mut e = Engine::new(s.clone(), 0, 0);
        e.take_over();
        let mut due = Vec::new();
        e.take_due_timers(1_000, &mut due);
        assert_eq!(due.len(), 1);
        // The entry was taken and its handler "panicked": nothing fired it.
        assert_eq!(e.pending_timers(), 0);
        assert!(e.rearm_after_panic(d.id, 2_000));
        assert!(!e.rearm_after_panic(d.id, 2_000), "already has one");
        assert_eq!(e.pending_timers(), 1);
        assert!(
            !e.rearm_after_panic(DialogId::new(1, 3, 9), 2_000),
            "not ours"
        );
        e.take_due_timers(2_000, &mut due);
        let mut out = Output::with_capacity(1 << 16, 16);
        for (_, item) in due.drain(..) {
            e.fire_timer(2_000, item, &mut out);
        }
        assert_eq!(d.state(), DlgState::Deleted, "it expired after all");
    }
}
