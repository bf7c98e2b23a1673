//! dialog_ng's pseudo-variables as accessors on a dialog record: `$DLG_status`,
//! `$DLG_lifetime`, `$dlg(attr)` and `$dlg_ctx(attr)` (the `$DLG_count` and `dlg_get` /
//! `is_known_dlg` lookups live on [`crate::engine::Shared`]).
//!
//! Invariant: read-only snapshots of the record's atomics and strings; they allocate (management
//! and policy paths only, never the forwarding path).

use std::sync::atomic::Ordering::Relaxed;

use super::record::{Dialog, Field, route_entries};

impl Dialog {
    /// `$DLG_status`: the state number (1 unconfirmed … 5 deleted).
    pub fn status(&self) -> u8 {
        self.state() as u8
    }

    /// `$DLG_lifetime`: seconds since the dialog was confirmed (0 if it is not).
    pub fn lifetime_secs(&self, now_ms: u64) -> u64 {
        match self.start_ms.load(Relaxed) {
            0 => 0,
            s => now_ms.saturating_sub(s) / 1000,
        }
    }

    /// `$dlg(attr)` with Kamailio's attribute names: `h_entry h_id state start_ts timeout
    /// lifetime dflags callid from_uri from_tag to_uri to_tag from_cseq to_cseq from_contact
    /// to_contact fromroute toroute from_bind_addr to_bind_addr ruri`. Times are engine ms.
    /// `None` for an unknown attribute or a callee field before the dialog is confirmed.
    pub fn attr(&self, name: &str) -> Option<String> {
        let s = |f: Field| String::from_utf8_lossy(self.strs.get(f)).into_owned();
        let callee = self.callee.get();
        let join = |r: &[u8]| {
            route_entries(r)
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        Some(match name {
            "h_entry" => self.id.h_entry.to_string(),
            "h_id" => self.id.h_id.to_string(),
            "state" => self.status().to_string(),
            "start_ts" => self.start_ms.load(Relaxed).to_string(),
            "timeout" => self.deadline_ms.load(Relaxed).to_string(),
            "lifetime" => self.lifetime_s.load(Relaxed).to_string(),
            "dflags" => self.flags.load(Relaxed).to_string(),
            "callid" => s(Field::CallId),
            "from_uri" => s(Field::FromUri),
            "from_tag" => s(Field::FromTag),
            "to_uri" => s(Field::ToUri),
            "ruri" => s(Field::Ruri),
            "from_cseq" => self.caller_cseq.load(Relaxed).to_string(),
            "to_cseq" => self.callee_cseq.load(Relaxed).to_string(),
            "from_contact" => s(Field::CallerContact),
            "fromroute" => join(self.strs.get(Field::CallerRoutes)),
            "from_bind_addr" => {
                let c = self.caller_socket();
                format!("{}:{}", c.transport.as_str(), c.addr)
            }
            "to_tag" => String::from_utf8_lossy(callee?.tag()).into_owned(),
            "to_contact" => String::from_utf8_lossy(callee?.contact()).into_owned(),
            "toroute" => join(callee?.routes()),
            "to_bind_addr" => {
                let c = callee?.socket();
                format!("{}:{}", c.transport.as_str(), c.addr)
            }
            _ => return None,
        })
    }

    /// `$dlg_ctx(attr)` as far as a record holds it: `flags`, `timeout_noreset`, `lifetime`.
    pub fn ctx_attr(&self, name: &str) -> Option<String> {
        match name {
            "flags" => Some(self.flags.load(Relaxed).to_string()),
            "timeout_noreset" => Some(u8::from(self.timeout_noreset.load(Relaxed)).to_string()),
            "lifetime" => self.attr("lifetime"),
            _ => None,
        }
    }
}
