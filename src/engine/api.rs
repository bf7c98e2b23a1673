//! dialog_ng's lookup functions on the shared state: `dlg_get(callid, ftag, ttag)`,
//! `is_known_dlg(msg)` and `$DLG_count`. Usable from any thread; lookups do not block workers.

use std::sync::Arc;

use super::Shared;
use crate::dialog::{Dialog, DlgState};
use crate::wire::Message;

impl Shared {
    /// `dlg_get(callid, ftag, ttag)`: the live dialog with this Call-ID whose tags match in
    /// either direction (an empty `ttag` matches a dialog by Call-ID and From-tag alone).
    /// O(1): two index probes. A dialog whose (Call-ID, From-tag) a newer dialog took over in
    /// the index (a re-sent INVITE after an auth challenge) is found only through the newer.
    pub fn dlg_get(&self, call_id: &[u8], ftag: &[u8], ttag: &[u8]) -> Option<Arc<Dialog>> {
        if ttag.is_empty() {
            let id = self.table.find_by_callid_ftag(call_id, ftag)?;
            return self
                .table
                .get(id)
                .filter(|d| d.state() != DlgState::Deleted);
        }
        // The index holds a dialog under its creator's (Call-ID, From-tag): a request from the
        // caller names that tag as From, one from the callee as To. Two O(1) probes, no scan.
        [ftag, ttag]
            .into_iter()
            .filter_map(|t| self.table.find_by_callid_ftag(call_id, t))
            .filter_map(|id| self.table.get(id))
            .find(|d| d.state() != DlgState::Deleted && d.match_tags(call_id, ftag, ttag).is_some())
    }

    /// `is_known_dlg()`: does this message belong to a dialog the proxy tracks (by Call-ID and
    /// tags, in either direction)?
    pub fn is_known_dlg(&self, msg: &Message<'_>) -> bool {
        let (Some(call_id), Some(ftag)) = (msg.call_id(), msg.from_tag()) else {
            return false;
        };
        let ttag = msg.to_tag().unwrap_or(&[]);
        self.dlg_get(call_id, ftag, ttag).is_some()
            || (!ttag.is_empty() && self.dlg_get(call_id, ttag, ftag).is_some())
    }

    /// `$DLG_count`: dialogs currently active (confirmed and not ended).
    pub fn dlg_count(&self) -> i64 {
        self.stats.snapshot().active_dialogs
    }
}
