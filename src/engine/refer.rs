//! dialog_ng's `dlg_refer(side, address)`: the proxy sends REFER to one side of a confirmed
//! dialog (Refer-To the new address, Referred-By the `bridge_controller`) and BYE to the other,
//! and the dialog ends (TERMINATED) through the one end path.
//!
//! Invariant: runs on the dialog's owning worker (reached through [`Command::Refer`]).

use std::sync::Arc;

use super::dialogs::Removal;
use super::{Command, Engine, Output, Shared};
use crate::dialog::id::{DialogId, worker_of};
use crate::dialog::{Dialog, EndReason, Side};

impl Engine {
    /// Refer `side` of a confirmed dialog to `address`; BYE the other side. False when the
    /// dialog is not confirmed (nothing is sent).
    pub(crate) fn refer(
        &mut self,
        now: u64,
        d: &Arc<Dialog>,
        side: Side,
        address: &str,
        out: &mut Output,
    ) -> bool {
        if !d.state().is_confirmed() || side == Side::All {
            return false;
        }
        let controller = self.shared.settings.load().bridge_controller.clone();
        let extra = format!("Refer-To: <{address}>\r\nReferred-By: <{controller}>\r\n");
        self.send_within(now, d, b"REFER", side, b"", extra.as_bytes(), out);
        let other = if side == Side::Caller {
            Side::Callee
        } else {
            Side::Caller
        };
        self.send_bye(now, d, other, b"SIP;cause=200;text=\"referred\"", b"", out);
        self.end_dialog(now, d, EndReason::Terminated, None, Removal::Later, out);
        true
    }
}

impl Shared {
    /// `dlg_refer(side, address)` from any thread: queued to the dialog's owning worker.
    /// False when the dialog is unknown or the queue is unavailable.
    pub fn dlg_refer(&self, id: DialogId, side: Side, address: &str) -> bool {
        if self.table.get(id).is_none() {
            return false;
        }
        self.send(
            worker_of(id),
            Command::Refer {
                id,
                side,
                address: address.to_string(),
            },
        )
    }
}
