//! Plain data exchanged between the management layer and the dialog engine.
//!
//! Owns the serde structs that RPC results are made of. Field names (after serde renames)
//! follow Kamailio's `dialog` module RPC output (`dlg.list`, `dlg.stats_active`, ...), so
//! operators' scripts keep working. These types are built only on the management thread,
//! never on the packet path, so they own their strings.
//!
//! ## Invariants
//! - `DialogInfo::profiles` and `DialogInfo::variables` are `None` unless the caller asked for
//!   context (`*_ctx` RPCs); `None` fields are omitted from the JSON.
//! - `state` uses Kamailio's numbering (see [`DialogState`]).

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Kamailio dialog state numbers, as printed in the `state` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DialogState {
    /// INVITE seen, no reply yet.
    Unconfirmed = 1,
    /// Provisional reply with To-tag seen.
    Early = 2,
    /// 2xx seen, ACK not yet.
    ConfirmedNa = 3,
    /// Confirmed by ACK.
    Confirmed = 4,
    /// Ended.
    Deleted = 5,
}

/// One side of a dialog (`caller` or `callee`, and each early leg).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LegInfo {
    /// From-tag (caller) or To-tag (callee).
    pub tag: String,
    /// Contact URI of this side.
    pub contact: String,
    /// Last CSeq number seen from this side.
    pub cseq: String,
    /// Route set towards this side, comma separated.
    pub route_set: String,
    /// Local socket this side talks to, `proto:ip:port`.
    pub socket: String,
}

/// A `name: value` pair printed as a one-key JSON object (Kamailio's profile/variable form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameValue {
    /// Profile or variable name.
    pub name: String,
    /// Value (empty for profiles without value).
    pub value: String,
}

impl Serialize for NameValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.name, &self.value)?;
        m.end()
    }
}

/// One dialog as printed by `dlg.list` / `dlg.dlg_list` (Kamailio field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DialogInfo {
    /// Hash table bucket of the dialog.
    pub h_entry: u32,
    /// Id inside the bucket.
    pub h_id: u32,
    /// Call-ID.
    #[serde(rename = "call-id")]
    pub call_id: String,
    /// From URI.
    pub from_uri: String,
    /// To URI.
    pub to_uri: String,
    /// Request-URI of the initial INVITE (used by `dlg.list_match ruri`).
    pub req_uri: String,
    /// State number ([`DialogState`] as `u8`).
    pub state: u8,
    /// Unix time (s) the dialog was confirmed, 0 if not yet.
    pub start_ts: u64,
    /// Unix time (s) the initial INVITE was seen.
    pub init_ts: u64,
    /// Unix time (s) the dialog ended, 0 if still running.
    pub end_ts: u64,
    /// Unix time (s) the dialog times out.
    pub timeout: u64,
    /// Lifetime in seconds.
    pub lifetime: u32,
    /// Dialog flags.
    pub dflags: u32,
    /// Script flags.
    pub sflags: u32,
    /// Caller side.
    pub caller: LegInfo,
    /// Callee side (the confirmed leg; empty tag while early).
    pub callee: LegInfo,
    /// Early legs, one per To-tag seen in 1xx, while the dialog is forked and early.
    pub early_legs: Vec<LegInfo>,
    /// Profile memberships (context only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<NameValue>>,
    /// Dialog variables (context only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<NameValue>>,
}

/// Which dialog a termination refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogSelector<'a> {
    /// By Call-ID and tags (`dlg.terminate_dlg`).
    ByTags {
        /// Call-ID.
        callid: &'a str,
        /// From-tag.
        ftag: &'a str,
        /// To-tag.
        ttag: &'a str,
    },
    /// By hash ids (`dlg.end_dlg`).
    ById {
        /// Bucket.
        h_entry: u32,
        /// Id.
        h_id: u32,
    },
}

/// Dialog counters (Kamailio `dialog:` statistics group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DialogStats {
    /// Dialogs currently confirmed or early.
    pub active_dialogs: u64,
    /// Dialogs currently early.
    pub early_dialogs: u64,
    /// Dialogs processed since start.
    pub processed_dialogs: u64,
    /// Dialogs that ended by timeout.
    pub expired_dialogs: u64,
    /// Dialogs that failed (non-2xx final).
    pub failed_dialogs: u64,
}

/// `dlg.stats_active` result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActiveStats {
    /// State 1 (unconfirmed).
    pub starting: u64,
    /// State 2 (early).
    pub connecting: u64,
    /// State 3 (confirmed, not ACKed).
    pub answering: u64,
    /// State 4 (confirmed).
    pub ongoing: u64,
    /// Sum of the above.
    pub all: u64,
}

/// Errors a backend reports for a management operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No dialog matches the selector.
    #[error("Dialog not found")]
    DialogNotFound,
    /// No such profile is configured.
    #[error("Profile not found: {0}")]
    ProfileNotFound(String),
    /// The dialog exists but the operation does not apply in its state.
    #[error("Invalid dialog state: {0}")]
    InvalidState(String),
    /// The operation failed inside the engine.
    #[error("Internal error: {0}")]
    Internal(String),
}

impl BackendError {
    /// JSON-RPC error code: 404 not found, 409 invalid state, 500 internal (Kamailio-style
    /// HTTP-like codes, outside the JSON-RPC reserved range).
    pub fn code(&self) -> i64 {
        match self {
            BackendError::DialogNotFound | BackendError::ProfileNotFound(_) => 404,
            BackendError::InvalidState(_) => 409,
            BackendError::Internal(_) => 500,
        }
    }
}
