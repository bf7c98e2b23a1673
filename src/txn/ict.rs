//! The INVITE client transaction (RFC 3261 §17.1.1), one per branch the proxy forwards an
//! INVITE on, with the proxy's Timer C (§16.6 step 11, §16.8), CANCEL (§9.1, §16.10) and
//! RFC 6026's Accepted state. A sans-IO state machine like [`super::nict`]: it is driven by
//! [`Ict::on_response`], [`Ict::on_timer`] and [`Ict::cancel`], and answers with a
//! [`Report`] for the INVITE transaction above it and [`Actions`] (send the INVITE again, arm
//! or cancel a timer, send a CANCEL, ACK a non-2xx final); the engine owns the bytes, the
//! timer keys and the table.
//!
//! # Invariants
//! - Calling: over UDP Timer A retransmits the INVITE (T1, doubling, capped at T2); over a
//!   reliable transport it is sent once. Timer B gives up; the first response of any kind
//!   stops Timer A, and a provisional swaps Timer B for Timer C; every later provisional other
//!   than 100 re-arms Timer C (RFC 3261 §16.7 step 2), until a CANCEL went.
//! - A CANCEL is never sent before a provisional arrived (§9.1): asked for earlier, it waits
//!   and goes with the first provisional. It is sent at most once; after it, Timer C is
//!   re-armed to 64·T1 so a far end that never answers the CANCEL still frees the branch.
//! - Every non-2xx final is ACKed ([`Action::SendAck`]), retransmissions too, while the branch
//!   is Completed; Timer D (32 s over UDP, none over a reliable transport) ends that.
//! - Every 2xx is reported ([`Report::Success`]): a proxy relays them all (§16.7 step 5);
//!   the first one of the branch says so, whatever came before it (a 2xx after a timeout).
//! - The first final (or Timer B/C) is reported once as [`Report::Failure`],
//!   [`Report::Success`] or [`Report::TimedOut`]; after it [`Ict::is_pending`] is false for
//!   good. Stale timers and late responses never report it again.
//! - Nothing here allocates; [`Actions`] is a fixed array; the timer values are passed in,
//!   so a branch costs a few bytes.

use super::Timers;

/// How long a Completed branch absorbs retransmitted finals over UDP (RFC 3261: > 32 s).
pub const TIMER_D: u64 = 32_000;

/// The timers of a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Retransmit the INVITE (UDP only, Calling).
    A,
    /// No response at all: give up.
    B,
    /// A provisional but no final: CANCEL and give up.
    C,
    /// Stop absorbing retransmitted non-2xx finals.
    D,
}

impl Timer {
    /// Key slot of this timer (B and C are never armed together and share one).
    pub fn slot(self) -> usize {
        match self {
            Timer::A => 0,
            Timer::B | Timer::C => 1,
            Timer::D => 2,
        }
    }
}

/// What the branch asks its owner to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the stored INVITE again.
    Send,
    /// Arm this timer at this time (ms), replacing one armed before in its slot.
    Arm(Timer, u64),
    /// Cancel this timer.
    Cancel(Timer),
    /// Send a CANCEL for the branch (built from the stored INVITE).
    SendCancel,
    /// ACK the non-2xx final just received (built from the stored INVITE and the response).
    SendAck,
}

/// What one input asks for, in order (a fixed array: no allocation).
pub type Actions = super::Actions<Action>;

/// What a response or a timer means to the INVITE transaction above the branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Nothing to do (a 100, which is hop by hop, or a timer with nothing left to do).
    Nothing,
    /// A provisional (101-199) to relay upstream.
    Provisional,
    /// A 2xx: relay it (the first one, and every retransmission or other 2xx); `first` is
    /// true for the first 2xx of this branch.
    Success {
        /// The branch had no 2xx before.
        first: bool,
    },
    /// The branch's first non-2xx final, with its code.
    Failure(u16),
    /// A response after the branch ended (a retransmitted final, a late provisional): absorbed.
    Absorbed,
    /// Timer B or C fired: the branch counts as a 408.
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Calling,
    Proceeding,
    /// A 2xx arrived (RFC 6026): later 2xx are still relayed.
    Accepted,
    /// A non-2xx final arrived, or Timer B/C fired: finals are ACKed and absorbed.
    Completed,
    /// Timer D fired.
    Terminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancel {
    No,
    /// Asked for before a provisional: goes with the first one.
    Wanted,
    Sent,
}

/// One INVITE client transaction (a branch).
#[derive(Clone, Copy, Debug)]
pub struct Ict {
    state: State,
    cancel: Cancel,
    reliable: bool,
    /// Next Timer A interval, ms.
    interval: u64,
}

impl Ict {
    /// Start: the INVITE is sent by the caller; arm Timer B and (over UDP) Timer A.
    pub fn start(now: u64, reliable: bool, t: &Timers) -> (Ict, Actions) {
        let mut a = Actions::default();
        if !reliable {
            a.push(Action::Arm(Timer::A, now.saturating_add(t.t1)));
        }
        a.push(Action::Arm(Timer::B, now.saturating_add(t.timer_b)));
        let ict = Ict {
            state: State::Calling,
            cancel: Cancel::No,
            reliable,
            interval: t.t1,
        };
        (ict, a)
    }

    /// True until the branch has its outcome (a final response, or Timer B/C).
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Calling | State::Proceeding)
    }

    /// True once a provisional arrived and no final yet.
    pub fn is_proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    /// The INVITE may still be sent again (Timer A: UDP, no response yet); once false, only
    /// its head is needed (CANCEL, ACK).
    pub fn resends(&self) -> bool {
        self.state == State::Calling && !self.reliable
    }

    /// A 2xx arrived on this branch.
    pub fn is_accepted(&self) -> bool {
        self.state == State::Accepted
    }

    /// A CANCEL went (or will go with the first provisional) for this branch.
    pub fn is_cancelled(&self) -> bool {
        self.cancel != Cancel::No
    }

    /// CANCEL the branch: at once if a provisional arrived, else with the first one.
    pub fn cancel(&mut self, now: u64, t: &Timers) -> Actions {
        let mut a = Actions::default();
        match (self.state, self.cancel) {
            (State::Calling, Cancel::No) => self.cancel = Cancel::Wanted,
            (State::Proceeding, Cancel::No | Cancel::Wanted) => self.send_cancel(now, t, &mut a),
            _ => {}
        }
        a
    }

    fn send_cancel(&mut self, now: u64, t: &Timers, a: &mut Actions) {
        self.cancel = Cancel::Sent;
        a.push(Action::SendCancel);
        // RFC 3261 §9.1: no final within 64·T1 of the CANCEL: the branch is over.
        a.push(Action::Arm(Timer::C, now.saturating_add(t.t1_x64())));
    }

    /// A response with status `code` arrived on this branch.
    pub fn on_response(&mut self, now: u64, code: u16, t: &Timers) -> (Report, Actions) {
        let mut a = Actions::default();
        let report = match (self.state, code) {
            (State::Calling, 100..=199) => {
                self.state = State::Proceeding;
                a.push(Action::Cancel(Timer::A));
                if self.cancel == Cancel::Wanted {
                    self.send_cancel(now, t, &mut a);
                } else {
                    a.push(Action::Arm(Timer::C, now.saturating_add(t.timer_c)));
                }
                provisional(code)
            }
            (State::Proceeding, 100..=199) => {
                // RFC 3261 §16.7 step 2: a provisional other than 100 resets Timer C (not after
                // a CANCEL, whose 64·T1 bound stands).
                if code > 100 && self.cancel != Cancel::Sent {
                    a.push(Action::Arm(Timer::C, now.saturating_add(t.timer_c)));
                }
                provisional(code)
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                a.push(Action::Cancel(Timer::A));
                a.push(Action::Cancel(Timer::B));
                Report::Success { first: true }
            }
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                a.push(Action::Cancel(Timer::A));
                a.push(Action::Cancel(Timer::B));
                a.push(Action::SendAck);
                if self.reliable {
                    self.state = State::Terminated;
                } else {
                    a.push(Action::Arm(Timer::D, now.saturating_add(TIMER_D)));
                }
                Report::Failure(code)
            }
            // A 100 is hop by hop, whenever it comes.
            (_, 100) => Report::Nothing,
            // Every 2xx goes upstream, whatever came before on this branch.
            (State::Accepted, 200..=299) => Report::Success { first: false },
            (_, 200..=299) => {
                self.state = State::Accepted;
                Report::Success { first: true }
            }
            (State::Accepted | State::Completed, 300..) => {
                a.push(Action::SendAck);
                Report::Absorbed
            }
            _ => Report::Absorbed,
        };
        (report, a)
    }

    /// A timer of this branch fired.
    pub fn on_timer(&mut self, now: u64, timer: Timer, t: &Timers) -> (Report, Actions) {
        let mut a = Actions::default();
        let report = match (timer, self.state) {
            (Timer::A, State::Calling) if !self.reliable => {
                a.push(Action::Send);
                self.interval = self.interval.saturating_mul(2).min(t.t2);
                a.push(Action::Arm(Timer::A, now.saturating_add(self.interval)));
                Report::Nothing
            }
            (Timer::B, State::Calling) | (Timer::C, State::Proceeding) => {
                if self.state == State::Proceeding && self.cancel != Cancel::Sent {
                    self.cancel = Cancel::Sent;
                    a.push(Action::SendCancel);
                }
                a.push(Action::Cancel(Timer::A));
                // A final that still comes (the 487 to our CANCEL) is ACKed and absorbed.
                self.state = State::Completed;
                Report::TimedOut
            }
            (Timer::D, State::Completed) => {
                self.state = State::Terminated;
                Report::Nothing
            }
            _ => Report::Nothing,
        };
        (report, a)
    }
}

fn provisional(code: u16) -> Report {
    if code == 100 {
        Report::Nothing
    } else {
        Report::Provisional
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::v;

    #[test]
    fn udp_retransmits_until_a_provisional_then_waits_timer_c() {
        let (mut b, a) = Ict::start(0, false, &Timers::RFC);
        assert_eq!(
            v(a),
            [Action::Arm(Timer::A, 500), Action::Arm(Timer::B, 32_000)]
        );
        assert!(b.resends());
        let mut at = 500;
        let mut times = Vec::new();
        while at < 10_000 {
            let (r, a) = b.on_timer(at, Timer::A, &Timers::RFC);
            assert_eq!(r, Report::Nothing);
            let a = v(a);
            assert_eq!(a.first(), Some(&Action::Send));
            times.push(at);
            let Some(Action::Arm(Timer::A, next)) = a.get(1).copied() else {
                panic!("no re-arm: {a:?}");
            };
            at = next;
        }
        assert_eq!(times, [500, 1_500, 3_500, 7_500], "T1, doubling");
        let (r, a) = b.on_response(10_000, 100, &Timers::RFC);
        assert_eq!(r, Report::Nothing, "100 is hop by hop");
        assert_eq!(
            v(a),
            [Action::Cancel(Timer::A), Action::Arm(Timer::C, 191_000)]
        );
        assert!(b.is_pending() && b.is_proceeding() && !b.resends());
        let (r, a) = b.on_timer(11_500, Timer::A, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Nothing, vec![]), "stale Timer A");
        let (r, a) = b.on_timer(32_000, Timer::B, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Nothing, vec![]), "stale Timer B");
        let (r, a) = b.on_response(10_100, 180, &Timers::RFC);
        assert_eq!(
            (r, v(a)),
            (Report::Provisional, vec![Action::Arm(Timer::C, 191_100)]),
            "a 180 re-arms Timer C (RFC 3261 §16.7 step 2)"
        );
        let (r, a) = b.on_response(10_200, 100, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Nothing, vec![]), "a 100 does not");
        // Timer C: CANCEL, and the branch counts as 408.
        let (r, a) = b.on_timer(191_100, Timer::C, &Timers::RFC);
        assert_eq!(r, Report::TimedOut);
        assert_eq!(v(a), [Action::SendCancel, Action::Cancel(Timer::A)]);
        assert!(!b.is_pending());
        // The 487 to that CANCEL is ACKed and absorbed, not reported again.
        let (r, a) = b.on_response(191_010, 487, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Absorbed, vec![Action::SendAck]));
    }

    #[test]
    fn timer_b_gives_up_without_a_cancel() {
        let (mut b, _) = Ict::start(0, false, &Timers::RFC);
        assert!(
            v(b.cancel(10, &Timers::RFC)).is_empty(),
            "no CANCEL before a provisional"
        );
        let (r, a) = b.on_timer(32_000, Timer::B, &Timers::RFC);
        assert_eq!(
            (r, v(a)),
            (Report::TimedOut, vec![Action::Cancel(Timer::A)])
        );
        let (r, _) = b.on_timer(32_000, Timer::B, &Timers::RFC);
        assert_eq!(r, Report::Nothing, "reported once");
    }

    #[test]
    fn cancel_waits_for_the_first_provisional_and_goes_once() {
        let (mut b, _) = Ict::start(0, false, &Timers::RFC);
        assert!(v(b.cancel(10, &Timers::RFC)).is_empty());
        assert!(b.is_cancelled());
        let (r, a) = b.on_response(100, 180, &Timers::RFC);
        assert_eq!(r, Report::Provisional);
        assert_eq!(
            v(a),
            [
                Action::Cancel(Timer::A),
                Action::SendCancel,
                Action::Arm(Timer::C, 32_100)
            ],
            "CANCEL with the first provisional; 64·T1 for the final"
        );
        assert!(v(b.cancel(200, &Timers::RFC)).is_empty(), "sent once");
        let (r, a) = b.on_response(300, 487, &Timers::RFC);
        assert_eq!(r, Report::Failure(487));
        assert!(v(a).contains(&Action::SendAck));
    }

    #[test]
    fn cancel_while_proceeding_goes_at_once() {
        let (mut b, _) = Ict::start(0, true, &Timers::RFC);
        b.on_response(5, 183, &Timers::RFC);
        assert_eq!(
            v(b.cancel(10, &Timers::RFC)),
            [Action::SendCancel, Action::Arm(Timer::C, 32_010)]
        );
        let (r, a) = b.on_timer(32_010, Timer::C, &Timers::RFC);
        assert_eq!(r, Report::TimedOut);
        assert_eq!(
            v(a),
            [Action::Cancel(Timer::A)],
            "the CANCEL is not sent twice"
        );
    }

    #[test]
    fn non_2xx_is_acked_every_time_until_timer_d() {
        let (mut b, _) = Ict::start(0, false, &Timers::RFC);
        let (r, a) = b.on_response(50, 486, &Timers::RFC);
        assert_eq!(r, Report::Failure(486));
        assert_eq!(
            v(a),
            [
                Action::Cancel(Timer::A),
                Action::Cancel(Timer::B),
                Action::SendAck,
                Action::Arm(Timer::D, 32_050)
            ]
        );
        let (r, a) = b.on_response(60, 486, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Absorbed, vec![Action::SendAck]));
        let (r, _) = b.on_response(70, 180, &Timers::RFC);
        assert_eq!(r, Report::Absorbed, "a late provisional");
        b.on_timer(32_050, Timer::D, &Timers::RFC);
        let (r, a) = b.on_response(40_000, 486, &Timers::RFC);
        assert_eq!(
            (r, v(a)),
            (Report::Absorbed, vec![]),
            "after Timer D: no ACK"
        );
    }

    #[test]
    fn reliable_sends_once_and_skips_timer_d() {
        let (mut b, a) = Ict::start(0, true, &Timers::RFC);
        assert_eq!(v(a), [Action::Arm(Timer::B, 32_000)]);
        assert!(!b.resends());
        let (r, _) = b.on_timer(500, Timer::A, &Timers::RFC);
        assert_eq!(r, Report::Nothing);
        let (r, a) = b.on_response(50, 603, &Timers::RFC);
        assert_eq!(r, Report::Failure(603));
        assert!(!v(a).iter().any(|x| matches!(x, Action::Arm(..))));
    }

    #[test]
    fn every_2xx_is_reported() {
        let (mut b, _) = Ict::start(0, false, &Timers::RFC);
        b.on_response(10, 180, &Timers::RFC);
        let (r, a) = b.on_response(20, 200, &Timers::RFC);
        assert_eq!(r, Report::Success { first: true });
        assert_eq!(v(a), [Action::Cancel(Timer::A), Action::Cancel(Timer::B)]);
        assert!(!b.is_pending() && b.is_accepted());
        assert_eq!(
            b.on_response(30, 200, &Timers::RFC).0,
            Report::Success { first: false },
            "retransmission"
        );
        assert_eq!(b.on_response(40, 180, &Timers::RFC).0, Report::Absorbed);
        let (r, a) = b.on_response(50, 500, &Timers::RFC);
        assert_eq!((r, v(a)), (Report::Absorbed, vec![Action::SendAck]));
        // A 2xx after the branch timed out still goes upstream, once as the first.
        let (mut b, _) = Ict::start(0, false, &Timers::RFC);
        b.on_timer(32_000, Timer::B, &Timers::RFC);
        assert_eq!(
            b.on_response(32_100, 200, &Timers::RFC).0,
            Report::Success { first: true }
        );
        assert_eq!(
            b.on_response(32_200, 200, &Timers::RFC).0,
            Report::Success { first: false }
        );
    }

    #[test]
    fn configured_timers_are_used() {
        let t = Timers {
            t1: 100,
            t2: 300,
            t4: 1_000,
            timer_b: 2_000,
            timer_c: 5_000,
        };
        let (mut b, a) = Ict::start(0, false, &t);
        assert_eq!(
            v(a),
            [Action::Arm(Timer::A, 100), Action::Arm(Timer::B, 2_000)]
        );
        let arms: Vec<_> = [100, 300, 600]
            .iter()
            .map(|&at| v(b.on_timer(at, Timer::A, &t).1)[1])
            .collect();
        assert_eq!(
            arms,
            [
                Action::Arm(Timer::A, 300),
                Action::Arm(Timer::A, 600),
                Action::Arm(Timer::A, 900)
            ],
            "doubling, capped at T2"
        );
        let (_, a) = b.on_response(700, 180, &t);
        assert_eq!(v(a)[1], Action::Arm(Timer::C, 5_700));
    }
}
