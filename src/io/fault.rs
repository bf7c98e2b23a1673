//! Fault injection for the tests of worker panic isolation and restart
//! (`tests/it/ops_safety.rs`). Not a feature: nothing here exists in a release build.
//!
//! # Invariants
//! - Compiled in only with `debug_assertions` (dev and test builds) or the cargo feature
//!   `fault-injection`; in any other build [`Faults::check`] is a constant `None` and the
//!   environment is never read.
//! - Even where compiled, it is off unless the process was started with the environment
//!   variable `SIPEDGE_FAULT_INJECTION=1`: only whoever starts the process can turn it on, never
//!   a remote peer, whatever it sends.
//! - When on, a message (received, or handed off by another worker) with the header line
//!   `X-Sipedge-Fault: panic` makes its worker panic right after the engine handled it, inside
//!   the per-message isolation (the worker drops that message's output and goes on);
//!   `X-Sipedge-Fault: die` makes it panic at the end of that loop turn, outside every
//!   isolation point, so the worker dies and the supervisor replaces it;
//!   `X-Sipedge-Fault: panic-dialog-timer` makes the next dialog timer of that worker panic.
//!   `SIPEDGE_FAULT_RESTART_DELAY_MS=<ms>` makes the supervisor wait that long before a
//!   replacement, so a test can see the worker dead.

use std::time::Duration;

/// What a marked message asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Panic while handling this message (isolated; the worker goes on).
    Panic,
    /// Panic outside the isolation points (the worker dies).
    Die,
    /// Panic in the worker's next dialog timer (isolated; the dialog is re-armed).
    PanicDialogTimer,
}

/// Whether fault injection is on in this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    #[cfg_attr(
        not(any(debug_assertions, feature = "fault-injection")),
        allow(dead_code)
    )]
    armed: bool,
}

#[cfg(any(debug_assertions, feature = "fault-injection"))]
const ENV: &str = "SIPEDGE_FAULT_INJECTION";
#[cfg(any(debug_assertions, feature = "fault-injection"))]
const MARK: &[u8] = b"\r\nX-Sipedge-Fault: ";

impl Faults {
    /// On when compiled in and `SIPEDGE_FAULT_INJECTION=1`.
    pub fn from_env() -> Faults {
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        {
            Faults {
                armed: std::env::var(ENV).is_ok_and(|v| v == "1"),
            }
        }
        #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
        {
            Faults::default()
        }
    }

    /// Injection on, whatever the environment (unit tests of the isolation).
    #[cfg(test)]
    pub(crate) fn armed() -> Faults {
        Faults { armed: true }
    }

    /// The fault `bytes` asks for, if injection is on.
    #[inline]
    pub fn check(self, bytes: &[u8]) -> Option<Fault> {
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        {
            if !self.armed {
                return None;
            }
            let at = memchr::memmem::find(bytes, MARK)? + MARK.len();
            let rest = bytes.get(at..)?;
            if rest.starts_with(b"panic-dialog-timer") {
                Some(Fault::PanicDialogTimer)
            } else if rest.starts_with(b"panic") {
                Some(Fault::Panic)
            } else if rest.starts_with(b"die") {
                Some(Fault::Die)
            } else {
                None
            }
        }
        #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
        {
            let _ = bytes;
            None
        }
    }

    /// The supervisor's extra wait before replacing a dead worker, if injection is on and
    /// `SIPEDGE_FAULT_RESTART_DELAY_MS` is set.
    pub fn restart_delay(self) -> Option<Duration> {
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        {
            if !self.armed {
                return None;
            }
            std::env::var("SIPEDGE_FAULT_RESTART_DELAY_MS")
                .ok()?
                .parse()
                .ok()
                .map(Duration::from_millis)
        }
        #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
        {
            None
        }
    }
}

#[cfg(all(test, any(debug_assertions, feature = "fault-injection")))]
mod tests {
    use super::*;

    #[test]
    fn only_an_armed_process_reacts_to_the_marker() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nX-Sipedge-Fault: panic\r\n\r\n";
        let die = b"OPTIONS sip:x SIP/2.0\r\nX-Sipedge-Fault: die\r\n\r\n";
        assert_eq!(Faults::default().check(msg), None);
        let on = Faults { armed: true };
        assert_eq!(on.check(msg), Some(Fault::Panic));
        assert_eq!(on.check(die), Some(Fault::Die));
        let t = b"OPTIONS sip:x SIP/2.0\r\nX-Sipedge-Fault: panic-dialog-timer\r\n\r\n";
        assert_eq!(on.check(t), Some(Fault::PanicDialogTimer));
        assert_eq!(on.check(b"OPTIONS sip:x SIP/2.0\r\n\r\n"), None);
        assert_eq!(on.check(b"\r\nX-Sipedge-Fault: "), None, "no value");
    }
}
