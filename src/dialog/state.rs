//! Dialog states (Kamailio numbering) and end reasons.
//!
//! Invariant: states only move forward (`Unconfirmed → Early → ConfirmedNa → Confirmed →
//! Deleted`), and `Deleted` is terminal; the record enforces this with compare-and-swap.

/// Dialog state, numbered as in Kamailio's dialog module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum DlgState {
    /// Initial INVITE seen, no reply with a To-tag yet.
    Unconfirmed = 1,
    /// A provisional reply with a To-tag was relayed.
    Early = 2,
    /// A 2xx was relayed; the ACK has not been seen.
    ConfirmedNa = 3,
    /// The ACK for the 2xx was seen.
    Confirmed = 4,
    /// Ended (BYE, failure, CANCEL, timeout, termination, shutdown).
    Deleted = 5,
}

impl DlgState {
    /// From the stored `u8`; unknown values read as `Deleted`.
    pub fn from_u8(v: u8) -> DlgState {
        match v {
            1 => DlgState::Unconfirmed,
            2 => DlgState::Early,
            3 => DlgState::ConfirmedNa,
            4 => DlgState::Confirmed,
            _ => DlgState::Deleted,
        }
    }
    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            DlgState::Unconfirmed => "unconfirmed",
            DlgState::Early => "early",
            DlgState::ConfirmedNa => "confirmed_na",
            DlgState::Confirmed => "confirmed",
            DlgState::Deleted => "deleted",
        }
    }
    /// Confirmed (with or without ACK).
    pub fn is_confirmed(self) -> bool {
        matches!(self, DlgState::ConfirmedNa | DlgState::Confirmed)
    }
}

/// Why a dialog ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// Still running.
    None = 0,
    /// BYE from the caller.
    ByeCaller = 1,
    /// BYE from the callee.
    ByeCallee = 2,
    /// A negative final response ended the INVITE.
    Failed = 3,
    /// CANCEL from the caller.
    Cancelled = 4,
    /// The dialog timeout (or a safety sweeper) fired.
    Expired = 5,
    /// Terminated by API, RPC or policy.
    Terminated = 6,
    /// The proxy shut down.
    Shutdown = 7,
    /// A second 2xx (fork race) was ended with ACK+BYE.
    Race = 8,
}

impl EndReason {
    /// From the stored `u8`.
    pub fn from_u8(v: u8) -> EndReason {
        match v {
            1 => EndReason::ByeCaller,
            2 => EndReason::ByeCallee,
            3 => EndReason::Failed,
            4 => EndReason::Cancelled,
            5 => EndReason::Expired,
            6 => EndReason::Terminated,
            7 => EndReason::Shutdown,
            8 => EndReason::Race,
            _ => EndReason::None,
        }
    }
    /// Short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::None => "",
            EndReason::ByeCaller => "bye_caller",
            EndReason::ByeCallee => "bye_callee",
            EndReason::Failed => "failed",
            EndReason::Cancelled => "cancelled",
            EndReason::Expired => "expired",
            EndReason::Terminated => "terminated",
            EndReason::Shutdown => "shutdown",
            EndReason::Race => "race",
        }
    }
}

/// Which side of a dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The UAC that sent the initial INVITE.
    Caller,
    /// The UAS that answered.
    Callee,
    /// Both.
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_order() {
        for s in [
            DlgState::Unconfirmed,
            DlgState::Early,
            DlgState::ConfirmedNa,
            DlgState::Confirmed,
            DlgState::Deleted,
        ] {
            assert_eq!(DlgState::from_u8(s as u8), s);
        }
        assert!(DlgState::Early < DlgState::ConfirmedNa);
        assert_eq!(DlgState::from_u8(99), DlgState::Deleted);
        assert!(DlgState::Confirmed.is_confirmed() && !DlgState::Early.is_confirmed());
    }

    #[test]
    fn end_reason_round_trip() {
        for v in 0..=8u8 {
            assert_eq!(EndReason::from_u8(v) as u8, v);
        }
    }
}
