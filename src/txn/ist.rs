//! The INVITE server transaction (RFC 3261 §17.2.1, with RFC 6026's Accepted state): the
//! upstream side of a proxied INVITE. A sans-IO state machine like [`super::nict`]: it is told
//! what the proxy core sends upstream ([`Ist::on_provisional`], [`Ist::on_final`]) and what
//! arrives from upstream ([`Ist::on_retransmission`], [`Ist::on_ack`]), and fires
//! [`Ist::on_timer`]; it answers with [`Actions`] (send our 100, replay the last provisional or
//! the final, arm or cancel a timer, free). The engine owns the bytes, the keys and the table.
//!
//! # Invariants
//! - Our 100 Trying goes at most once by itself: at once, or when Timer "Trying" fires
//!   (`[dialog] inv_100_delay`) unless a provisional or a final went upstream first. A
//!   retransmitted INVITE before any provisional is answered with a 100 again.
//! - A retransmitted INVITE is absorbed: answered with the last provisional while proceeding,
//!   with the final while Completed, and silently after that.
//! - One final goes upstream ([`Ist::on_final`] acts only while proceeding). A non-2xx final is
//!   retransmitted by Timer G over UDP (T1, doubling, capped at T2) until the ACK; Timer H
//!   (64·T1) ends the wait for it. The ACK stops Timer G; Timer I (T4 over UDP, none over a
//!   reliable transport) absorbs its copies. After a 2xx the transaction stays [`TIMER_L`]
//!   (Accepted) for late responses of other branches; late INVITE copies after that are
//!   absorbed by [`super::recent`], which remembers a freed transaction for 64·T1.
//! - [`Action::Free`] is given exactly once, when Timer H, I or L ends the transaction.
//! - Nothing here allocates; the timer values are passed in.

use super::Timers;

/// How long the transaction stays after a 2xx went upstream (RFC 6026 Timer L, shortened:
/// the shared index absorbs later INVITE copies), ms.
pub const TIMER_L: u64 = 5_000;

/// The timers of the server transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Send the held-back 100 Trying if nothing went upstream yet.
    Trying,
    /// Retransmit the non-2xx final (UDP only).
    G,
    /// Give up waiting for the ACK of the non-2xx final.
    H,
    /// Stop absorbing ACK copies.
    I,
    /// Stop absorbing after a 2xx.
    L,
}

impl Timer {
    /// Key slot of this timer (H, I and L are never armed together and share one).
    pub fn slot(self) -> usize {
        match self {
            Timer::Trying => 0,
            Timer::G => 1,
            Timer::H | Timer::I | Timer::L => 2,
        }
    }
}

/// What the server transaction asks its owner to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send our 100 Trying upstream (built from the stored INVITE).
    SendTrying,
    /// Send the last provisional relayed upstream again.
    SendProvisional,
    /// Send the stored non-2xx final upstream (first time or again).
    SendFinal,
    /// Arm this timer at this time (ms), replacing one armed before in its slot.
    Arm(Timer, u64),
    /// Cancel this timer.
    Cancel(Timer),
    /// The transaction is over: free it (once its branches have their outcome).
    Free,
}

/// What one input asks for, in order (a fixed array: no allocation).
pub type Actions = super::Actions<Action>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Proceeding,
    /// A 2xx went upstream.
    Accepted,
    /// A non-2xx final went upstream; waiting for its ACK.
    Completed,
    /// The ACK came.
    Confirmed,
    /// Over; `accepted` tells which way.
    Terminated {
        accepted: bool,
    },
}

/// One INVITE server transaction.
#[derive(Clone, Copy, Debug)]
pub struct Ist {
    state: State,
    reliable: bool,
    trying_sent: bool,
    provisional_sent: bool,
    /// Next Timer G interval, ms.
    g_interval: u64,
}

impl Ist {
    /// Start: answer 100 at once (`trying_delay == 0`) or arm Timer "Trying".
    pub fn start(now: u64, reliable: bool, trying_delay: u64, t: &Timers) -> (Ist, Actions) {
        let mut a = Actions::default();
        let mut ist = Ist {
            state: State::Proceeding,
            reliable,
            trying_sent: false,
            provisional_sent: false,
            g_interval: t.t1,
        };
        if trying_delay == 0 {
            ist.trying_sent = true;
            a.push(Action::SendTrying);
        } else {
            a.push(Action::Arm(Timer::Trying, now.saturating_add(trying_delay)));
        }
        (ist, a)
    }

    /// A final response went upstream (or the transaction was accepted without relaying it).
    pub fn has_final(&self) -> bool {
        self.state != State::Proceeding
    }

    /// A 2xx went upstream.
    pub fn is_accepted(&self) -> bool {
        matches!(
            self.state,
            State::Accepted | State::Terminated { accepted: true }
        )
    }

    /// A provisional went upstream.
    pub fn provisional_sent(&self) -> bool {
        self.provisional_sent
    }

    /// Over: the transaction waits only for its branches before it is freed.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated { .. })
    }

    /// A retransmission of the INVITE arrived from upstream.
    pub fn on_retransmission(&mut self) -> Actions {
        let mut a = Actions::default();
        match self.state {
            State::Proceeding if self.provisional_sent => a.push(Action::SendProvisional),
            State::Proceeding => {
                if !self.trying_sent {
                    self.trying_sent = true;
                    a.push(Action::Cancel(Timer::Trying));
                }
                a.push(Action::SendTrying);
            }
            State::Completed => a.push(Action::SendFinal),
            _ => {}
        }
        a
    }

    /// Whether a provisional may go upstream now (none after a final).
    pub fn may_send_provisional(&self) -> bool {
        self.state == State::Proceeding
    }

    /// A provisional went upstream (the engine stored it for [`Action::SendProvisional`]).
    pub fn on_provisional(&mut self) -> Actions {
        let mut a = Actions::default();
        if self.state == State::Proceeding && !self.provisional_sent {
            self.provisional_sent = true;
            if !self.trying_sent {
                // The held-back 100 is not needed any more.
                a.push(Action::Cancel(Timer::Trying));
            }
        }
        a
    }

    /// The final response `code` goes upstream: a non-2xx one through [`Action::SendFinal`]
    /// (store it first), a 2xx is relayed by the caller.
    pub fn on_final(&mut self, now: u64, code: u16, t: &Timers) -> Actions {
        let mut a = Actions::default();
        if self.state != State::Proceeding {
            return a;
        }
        if !self.trying_sent && !self.provisional_sent {
            a.push(Action::Cancel(Timer::Trying));
        }
        if (200..300).contains(&code) {
            self.state = State::Accepted;
            a.push(Action::Arm(Timer::L, now.saturating_add(TIMER_L)));
            return a;
        }
        self.state = State::Completed;
        a.push(Action::SendFinal);
        if !self.reliable {
            self.g_interval = t.t1;
            a.push(Action::Arm(Timer::G, now.saturating_add(t.t1)));
        }
        a.push(Action::Arm(Timer::H, now.saturating_add(t.t1_x64())));
        a
    }

    /// An ACK without a dialog arrived for this transaction. Returns whether it is the ACK of
    /// our non-2xx final (absorbed here) and what to do.
    pub fn on_ack(&mut self, now: u64, t: &Timers) -> (bool, Actions) {
        let mut a = Actions::default();
        let ours = match self.state {
            State::Completed => {
                a.push(Action::Cancel(Timer::G));
                if self.reliable {
                    self.state = State::Terminated { accepted: false };
                    a.push(Action::Cancel(Timer::H));
                    a.push(Action::Free);
                } else {
                    self.state = State::Confirmed;
                    a.push(Action::Arm(Timer::I, now.saturating_add(t.t4)));
                }
                true
            }
            State::Confirmed | State::Terminated { accepted: false } => true,
            _ => false,
        };
        (ours, a)
    }

    /// A timer of this transaction fired.
    pub fn on_timer(&mut self, now: u64, timer: Timer, t: &Timers) -> Actions {
        let mut a = Actions::default();
        match (timer, self.state) {
            (Timer::Trying, State::Proceeding) if !self.trying_sent && !self.provisional_sent => {
                self.trying_sent = true;
                a.push(Action::SendTrying);
            }
            (Timer::G, State::Completed) if !self.reliable => {
                a.push(Action::SendFinal);
                self.g_interval = self.g_interval.saturating_mul(2).min(t.t2);
                a.push(Action::Arm(Timer::G, now.saturating_add(self.g_interval)));
            }
            (Timer::H, State::Completed) => {
                self.state = State::Terminated { accepted: false };
                a.push(Action::Cancel(Timer::G));
                a.push(Action::Free);
            }
            (Timer::I, State::Confirmed) => {
                self.state = State::Terminated { accepted: false };
                a.push(Action::Free);
            }
            (Timer::L, State::Accepted) => {
                self.state = State::Terminated { accepted: true };
                a.push(Action::Free);
            }
            _ => {}
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::v;

    #[test]
    fn trying_at_once_then_retransmissions_get_the_latest_answer() {
        let (mut s, a) = Ist::start(0, false, 0, &Timers::RFC);
        assert_eq!(v(a), [Action::SendTrying]);
        assert_eq!(v(s.on_retransmission()), [Action::SendTrying]);
        assert!(s.may_send_provisional());
        assert!(v(s.on_provisional()).is_empty());
        assert!(s.provisional_sent());
        assert_eq!(v(s.on_retransmission()), [Action::SendProvisional]);
        let a = v(s.on_final(100, 486, &Timers::RFC));
        assert_eq!(
            a,
            [
                Action::SendFinal,
                Action::Arm(Timer::G, 600),
                Action::Arm(Timer::H, 32_100)
            ]
        );
        assert!(s.has_final() && !s.is_accepted() && !s.may_send_provisional());
        assert_eq!(v(s.on_retransmission()), [Action::SendFinal]);
        assert!(
            v(s.on_final(150, 200, &Timers::RFC)).is_empty(),
            "one final"
        );
    }

    #[test]
    fn held_back_trying_goes_only_if_nothing_went_first() {
        let (mut s, a) = Ist::start(0, false, 100, &Timers::RFC);
        assert_eq!(v(a), [Action::Arm(Timer::Trying, 100)]);
        assert_eq!(
            v(s.on_timer(100, Timer::Trying, &Timers::RFC)),
            [Action::SendTrying]
        );
        assert!(
            v(s.on_timer(100, Timer::Trying, &Timers::RFC)).is_empty(),
            "once"
        );
        // A provisional first: the timer is cancelled and would do nothing anyway.
        let (mut s, _) = Ist::start(0, false, 100, &Timers::RFC);
        assert_eq!(v(s.on_provisional()), [Action::Cancel(Timer::Trying)]);
        assert!(v(s.on_timer(100, Timer::Trying, &Timers::RFC)).is_empty());
        // A retransmission first: 100 at once, not again later.
        let (mut s, _) = Ist::start(0, false, 100, &Timers::RFC);
        assert_eq!(
            v(s.on_retransmission()),
            [Action::Cancel(Timer::Trying), Action::SendTrying]
        );
        assert!(v(s.on_timer(100, Timer::Trying, &Timers::RFC)).is_empty());
        // A final first.
        let (mut s, _) = Ist::start(0, true, 100, &Timers::RFC);
        let a = v(s.on_final(50, 200, &Timers::RFC));
        assert_eq!(
            a,
            [Action::Cancel(Timer::Trying), Action::Arm(Timer::L, 5_050)]
        );
        assert!(v(s.on_timer(100, Timer::Trying, &Timers::RFC)).is_empty());
    }

    #[test]
    fn timer_g_until_the_ack_then_timer_i() {
        let (mut s, _) = Ist::start(0, false, 0, &Timers::RFC);
        s.on_final(0, 480, &Timers::RFC);
        let mut at = 500;
        let mut times = Vec::new();
        for _ in 0..5 {
            let a = v(s.on_timer(at, Timer::G, &Timers::RFC));
            assert_eq!(a[0], Action::SendFinal);
            times.push(at);
            let Action::Arm(Timer::G, next) = a[1] else {
                panic!("{a:?}");
            };
            at = next;
        }
        assert_eq!(times, [500, 1_500, 3_500, 7_500, 11_500], "capped at T2");
        let (ours, a) = s.on_ack(12_000, &Timers::RFC);
        assert!(ours);
        assert_eq!(
            v(a),
            [Action::Cancel(Timer::G), Action::Arm(Timer::I, 17_000)]
        );
        assert!(
            v(s.on_timer(15_500, Timer::G, &Timers::RFC)).is_empty(),
            "stale G"
        );
        assert!(v(s.on_retransmission()).is_empty(), "absorbed silently");
        let (ours, a) = s.on_ack(12_100, &Timers::RFC);
        assert!(ours && v(a).is_empty(), "an ACK copy is absorbed");
        assert_eq!(
            v(s.on_timer(17_000, Timer::I, &Timers::RFC)),
            [Action::Free]
        );
        assert!(s.is_terminated());
        assert!(
            v(s.on_timer(32_000, Timer::H, &Timers::RFC)).is_empty(),
            "freed once"
        );
        assert!(s.on_ack(20_000, &Timers::RFC).0, "still its ACK");
    }

    #[test]
    fn timer_h_gives_up_on_the_ack() {
        let (mut s, _) = Ist::start(0, false, 0, &Timers::RFC);
        s.on_final(0, 503, &Timers::RFC);
        assert_eq!(
            v(s.on_timer(32_000, Timer::H, &Timers::RFC)),
            [Action::Cancel(Timer::G), Action::Free]
        );
        assert!(v(s.on_timer(32_000, Timer::G, &Timers::RFC)).is_empty());
    }

    #[test]
    fn reliable_skips_timer_g_and_frees_on_the_ack() {
        let (mut s, _) = Ist::start(0, true, 0, &Timers::RFC);
        assert_eq!(
            v(s.on_final(10, 404, &Timers::RFC)),
            [Action::SendFinal, Action::Arm(Timer::H, 32_010)]
        );
        let (ours, a) = s.on_ack(20, &Timers::RFC);
        assert!(ours);
        assert_eq!(
            v(a),
            [
                Action::Cancel(Timer::G),
                Action::Cancel(Timer::H),
                Action::Free
            ]
        );
    }

    #[test]
    fn after_a_2xx_retransmissions_and_acks_are_not_ours_and_timer_l_frees() {
        let (mut s, _) = Ist::start(0, false, 0, &Timers::RFC);
        s.on_provisional();
        assert_eq!(
            v(s.on_final(1_000, 200, &Timers::RFC)),
            [Action::Arm(Timer::L, 6_000)]
        );
        assert!(s.is_accepted());
        assert!(v(s.on_retransmission()).is_empty());
        assert!(
            !s.on_ack(1_100, &Timers::RFC).0,
            "the ACK of a 2xx is end to end"
        );
        assert_eq!(v(s.on_timer(6_000, Timer::L, &Timers::RFC)), [Action::Free]);
        assert!(s.is_accepted() && s.is_terminated());
    }

    #[test]
    fn configured_timers_are_used() {
        let t = Timers {
            t1: 50,
            t2: 150,
            t4: 700,
            ..Timers::default()
        };
        let (mut s, _) = Ist::start(0, false, 0, &t);
        assert_eq!(
            v(s.on_final(0, 408, &t)),
            [
                Action::SendFinal,
                Action::Arm(Timer::G, 50),
                Action::Arm(Timer::H, 3_200)
            ]
        );
        assert_eq!(
            v(s.on_timer(50, Timer::G, &t))[1],
            Action::Arm(Timer::G, 150)
        );
        assert_eq!(
            v(s.on_timer(150, Timer::G, &t))[1],
            Action::Arm(Timer::G, 300)
        );
        assert_eq!(v(s.on_ack(200, &t).1)[1], Action::Arm(Timer::I, 900));
    }
}
