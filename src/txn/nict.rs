//! The non-INVITE client transaction (RFC 3261 §17.1.2) for the requests the proxy sends on
//! its own: BYE (dialog timeout, `dlg.end_dlg`, policy, REFER's other side, a second fork's
//! 2xx) and REFER. A sans-IO state machine: it is driven by [`Nict::on_response`] and
//! [`Nict::on_timer`] and answers with [`Actions`] (send the request again, arm a timer,
//! report the outcome); the engine owns the bytes, the timer keys and the table.
//!
//! # Invariants
//! - Over UDP the request is retransmitted by Timer E (T1, doubling up to T2; T2 once a
//!   provisional arrived) until a final response arrives or Timer F (64·T1) gives up.
//!   Reliable transports send once and arm only Timer F.
//! - The outcome is reported exactly once: [`Outcome::Answered`] with the first final code,
//!   or [`Outcome::TimedOut`]. Anything after that (a late final, a stale timer) is ignored.
//! - After a final over UDP the transaction waits Timer K (T4) to absorb retransmitted
//!   finals, then reports [`Action::Free`]; over a reliable transport it frees at once.
//! - Nothing here allocates; [`Actions`] is a fixed array.

pub use super::Timers;

/// The timers of this transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Retransmit (UDP only).
    E,
    /// Give up.
    F,
    /// Stop absorbing retransmitted finals.
    K,
}

/// How a generated request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The far end sent this final response.
    Answered(u16),
    /// No final response before Timer F.
    TimedOut,
}

/// What the transaction asks its owner to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the stored request (again).
    Send,
    /// Arm `Timer` at this time (ms); a timer of the same kind armed before is replaced.
    Arm(Timer, u64),
    /// Cancel this timer.
    Cancel(Timer),
    /// Report the outcome (exactly once).
    Report(Outcome),
    /// The transaction is over: free its slot.
    Free,
}

/// What one input asks for, in order (a fixed array: no allocation).
pub type Actions = super::Actions<Action>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// One non-INVITE client transaction.
#[derive(Clone, Copy, Debug)]
pub struct Nict {
    state: State,
    reliable: bool,
    interval: u64,
    timers: Timers,
}

impl Nict {
    /// Start: send the request, arm Timer F and (over UDP) Timer E.
    pub fn start(now: u64, reliable: bool, timers: Timers) -> (Nict, Actions) {
        let mut a = Actions::default();
        a.push(Action::Send);
        a.push(Action::Arm(Timer::F, now.saturating_add(timers.t1_x64())));
        if !reliable {
            a.push(Action::Arm(Timer::E, now.saturating_add(timers.t1)));
        }
        let nict = Nict {
            state: State::Trying,
            reliable,
            interval: timers.t1,
            timers,
        };
        (nict, a)
    }

    /// True once a final response arrived or Timer F fired.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Completed | State::Terminated)
    }

    /// A response to the request arrived.
    pub fn on_response(&mut self, now: u64, code: u16) -> Actions {
        let mut a = Actions::default();
        match self.state {
            State::Trying | State::Proceeding if code < 200 => {
                self.state = State::Proceeding;
            }
            State::Trying | State::Proceeding => {
                a.push(Action::Cancel(Timer::E));
                a.push(Action::Cancel(Timer::F));
                a.push(Action::Report(Outcome::Answered(code)));
                if self.reliable {
                    self.state = State::Terminated;
                    a.push(Action::Free);
                } else {
                    self.state = State::Completed;
                    a.push(Action::Arm(Timer::K, now.saturating_add(self.timers.t4)));
                }
            }
            // A retransmitted final is absorbed; nothing comes after Terminated.
            State::Completed | State::Terminated => {}
        }
        a
    }

    /// A timer of this transaction fired.
    pub fn on_timer(&mut self, now: u64, timer: Timer) -> Actions {
        let mut a = Actions::default();
        match (timer, self.state) {
            (Timer::E, State::Trying | State::Proceeding) if !self.reliable => {
                a.push(Action::Send);
                self.interval = if self.state == State::Proceeding {
                    self.timers.t2
                } else {
                    self.interval.saturating_mul(2).min(self.timers.t2)
                };
                a.push(Action::Arm(Timer::E, now.saturating_add(self.interval)));
            }
            (Timer::F, State::Trying | State::Proceeding) => {
                self.state = State::Terminated;
                a.push(Action::Cancel(Timer::E));
                a.push(Action::Report(Outcome::TimedOut));
                a.push(Action::Free);
            }
            (Timer::K, State::Completed) => {
                self.state = State::Terminated;
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

    fn v(a: Actions) -> Vec<Action> {
        a.iter().collect()
    }

    #[test]
    fn udp_retransmits_with_doubling_capped_at_t2_until_timer_f() {
        let t = Timers::default();
        let (mut n, a) = Nict::start(0, false, t);
        assert_eq!(
            v(a),
            [
                Action::Send,
                Action::Arm(Timer::F, 32_000),
                Action::Arm(Timer::E, 500)
            ]
        );
        let mut at = 500;
        let mut sends = 1;
        let mut intervals = Vec::new();
        while at < 32_000 {
            let a = v(n.on_timer(at, Timer::E));
            assert_eq!(a.first(), Some(&Action::Send));
            sends += 1;
            let Some(Action::Arm(Timer::E, next)) = a.get(1).copied() else {
                panic!("no re-arm: {a:?}");
            };
            intervals.push(next - at);
            at = next;
        }
        assert_eq!(&intervals[..4], &[1000, 2000, 4000, 4000]);
        assert_eq!(sends, 11, "RFC 3261 Figure 6: 11 transmissions in 32 s");
        assert_eq!(
            v(n.on_timer(32_000, Timer::F)),
            [
                Action::Cancel(Timer::E),
                Action::Report(Outcome::TimedOut),
                Action::Free
            ]
        );
        assert!(n.is_done());
        // A final after Timer F gave up is ignored.
        assert!(v(n.on_response(33_000, 200)).is_empty());
    }

    #[test]
    fn final_reports_once_then_absorbs_until_timer_k() {
        let (mut n, _) = Nict::start(0, false, Timers::default());
        assert!(v(n.on_response(100, 100)).is_empty());
        // Proceeding: retransmit every T2.
        let a = v(n.on_timer(500, Timer::E));
        assert_eq!(a, [Action::Send, Action::Arm(Timer::E, 4_500)]);
        let a = v(n.on_response(600, 200));
        assert_eq!(
            a,
            [
                Action::Cancel(Timer::E),
                Action::Cancel(Timer::F),
                Action::Report(Outcome::Answered(200)),
                Action::Arm(Timer::K, 5_600)
            ]
        );
        assert!(v(n.on_response(700, 200)).is_empty(), "retransmitted final");
        assert!(v(n.on_timer(4_500, Timer::E)).is_empty(), "stale Timer E");
        assert_eq!(v(n.on_timer(5_600, Timer::K)), [Action::Free]);
        assert!(v(n.on_timer(32_000, Timer::F)).is_empty(), "stale Timer F");
    }

    #[test]
    fn reliable_sends_once_and_frees_on_the_final() {
        let (mut n, a) = Nict::start(10, true, Timers::default());
        assert_eq!(v(a), [Action::Send, Action::Arm(Timer::F, 32_010)]);
        assert!(v(n.on_timer(510, Timer::E)).is_empty());
        let a = v(n.on_response(20, 481));
        assert_eq!(a.last(), Some(&Action::Free));
        assert!(a.contains(&Action::Report(Outcome::Answered(481))));
    }
}
