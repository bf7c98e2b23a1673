//! The RPC methods: Kamailio `dlg.*`, `stats.*`, `core.*` and `system.listMethods`.
//!
//! Owns the method table ([`METHODS`]) and dispatch ([`call`]). Each method reads its
//! parameters through [`Params`], asks the backend, and writes its result JSON straight into
//! the response buffer.
//!
//! ## Invariants
//! - Dialog lists (`dlg.list*`, `dlg.list_match*`, `dlg.briefing`) go through
//!   [`DialogPager`]: no method holds more than one page of `DialogInfo` at a time, whatever
//!   the table size.
//! - Parameter errors are `-32602` with a message `"<param>: <what was expected>"`; backend
//!   outcomes map through [`crate::mgmt::model::BackendError::code`].
//! - Without context (`dlg.list`, `dlg.dlg_list`, `dlg.profile_list`) `profiles` and
//!   `variables` are never printed.

use serde_json::json;

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::model::DialogSelector;
use crate::mgmt::pager::DialogPager;
use crate::mgmt::protocol::{METHOD_NOT_FOUND, Params, RpcError, strip_ctx, write_value};
use crate::mgmt::statistics;

/// Every method name, as returned by `system.listMethods`.
pub const METHODS: &[&str] = &[
    "dlg.list",
    "dlg.list_ctx",
    "dlg.list_match",
    "dlg.list_match_ctx",
    "dlg.dlg_list",
    "dlg.dlg_list_ctx",
    "dlg.briefing",
    "dlg.terminate_dlg",
    "dlg.end_dlg",
    "dlg.is_alive",
    "dlg.set_timeout",
    "dlg.profile_get_size",
    "dlg.profile_list",
    "dlg.profile_end_dlgs",
    "dlg.stats_active",
    "dlg.bridge_dlg",
    "stats.get_statistics",
    "stats.fetch",
    "stats.fetchn",
    "stats.reset_statistics",
    "stats.latency",
    "core.version",
    "core.uptime",
    "core.reload",
    "core.loglevel",
    "pike.list",
    "pike.unban",
    "system.listMethods",
];

/// Run `method`, appending its result JSON to `out` (left partial on error; the caller
/// truncates).
pub fn call(
    method: &str,
    p: Params<'_>,
    b: &dyn MgmtBackend,
    out: &mut Vec<u8>,
) -> Result<(), RpcError> {
    match method {
        "dlg.list" | "dlg.list_ctx" | "dlg.list_match" | "dlg.list_match_ctx" | "dlg.briefing" => {
            let mut pager = DialogPager::from_params(method, p)?;
            while pager.fill(b, out) {}
            Ok(())
        }
        "dlg.dlg_list" | "dlg.dlg_list_ctx" => {
            p.at_most(&["callid", "from_tag"])?;
            let callid = p.str(0, "callid")?;
            let ftag = p.opt_str(1, "from_tag")?;
            let ctx = method.ends_with("_ctx");
            let mut list = b.dialogs_by_callid(&callid, ftag.as_deref(), ctx);
            strip_ctx(&mut list, ctx);
            write_value(out, &list);
            Ok(())
        }
        "dlg.terminate_dlg" => {
            p.at_most(&["callid", "from_tag", "to_tag"])?;
            let (callid, ftag, ttag) = (
                p.str(0, "callid")?,
                p.str(1, "from_tag")?,
                p.str(2, "to_tag")?,
            );
            let sel = DialogSelector::ByTags {
                callid: &callid,
                ftag: &ftag,
                ttag: &ttag,
            };
            b.terminate(sel, None)?;
            write_value(out, "Dialog terminated");
            Ok(())
        }
        "dlg.end_dlg" => {
            p.at_most(&["h_entry", "h_id", "extra_hdrs"])?;
            let h_entry = p.u32(0, "h_entry")?;
            let h_id = p.u32(1, "h_id")?;
            let extra = p.opt_str(2, "extra_hdrs")?;
            if let Some(h) = &extra
                && h.contains('\0')
            {
                return Err(RpcError::param("extra_hdrs", "must not contain NUL bytes"));
            }
            b.terminate(DialogSelector::ById { h_entry, h_id }, extra.as_deref())?;
            write_value(out, "Dialog terminated");
            Ok(())
        }
        "dlg.bridge_dlg" => {
            p.at_most(&["from", "to", "op"])?;
            let (from, to, op) = (p.str(0, "from")?, p.str(1, "to")?, p.opt_str(2, "op")?);
            for (name, v) in [
                ("from", Some(&from)),
                ("to", Some(&to)),
                ("op", op.as_ref()),
            ] {
                if let Some(v) = v
                    && !(v.starts_with("sip:") || v.starts_with("sips:"))
                {
                    return Err(RpcError::param(name, "expected a sip: URI"));
                }
            }
            b.bridge(&from, &to, op.as_deref())?;
            write_value(out, "Bridge started");
            Ok(())
        }
        "dlg.is_alive" => {
            p.at_most(&["callid", "from_tag", "to_tag"])?;
            let alive = b.is_alive(
                &p.str(0, "callid")?,
                &p.str(1, "from_tag")?,
                &p.str(2, "to_tag")?,
            )?;
            if !alive {
                return Err(RpcError::new(500, "Dialog not alive (not confirmed)"));
            }
            write_value(out, "Alive");
            Ok(())
        }
        "dlg.set_timeout" => {
            p.at_most(&["h_entry", "h_id", "timeout"])?;
            let (e, i, t) = (
                p.u32(0, "h_entry")?,
                p.u32(1, "h_id")?,
                p.u32(2, "timeout")?,
            );
            b.set_timeout(e, i, t)?;
            write_value(out, "Timeout set");
            Ok(())
        }
        "dlg.profile_get_size" => {
            p.at_most(&["profile", "value"])?;
            let (name, value) = (p.str(0, "profile")?, p.opt_str(1, "value")?);
            let n = b.profile_size(&name, value.as_deref())?;
            write_value(
                out,
                &json!({"profile": name, "value": value.unwrap_or_default(), "count": n}),
            );
            Ok(())
        }
        "dlg.profile_list" => {
            p.at_most(&["profile", "value"])?;
            let (name, value) = (p.str(0, "profile")?, p.opt_str(1, "value")?);
            let mut list = b.profile_dialogs(&name, value.as_deref())?;
            strip_ctx(&mut list, false);
            write_value(out, &list);
            Ok(())
        }
        "dlg.profile_end_dlgs" => {
            p.at_most(&["profile", "value"])?;
            let (name, value) = (p.str(0, "profile")?, p.opt_str(1, "value")?);
            let n = b.profile_end_dlgs(&name, value.as_deref())?;
            write_value(out, &json!({ "ended": n }));
            Ok(())
        }
        "dlg.stats_active" => {
            p.at_most(&[])?;
            write_value(out, &b.stats_active());
            Ok(())
        }
        "stats.get_statistics" | "stats.fetch" | "stats.fetchn" | "stats.reset_statistics" => {
            let selectors = p.rest_str(0, "names")?;
            statistics::call(method, &selectors, b, out)
        }
        "stats.latency" => {
            p.at_most(&[])?;
            write_value(out, &statistics::latency_json(&b.latency()));
            Ok(())
        }
        "core.version" => {
            p.at_most(&[])?;
            write_value(out, &b.version());
            Ok(())
        }
        "pike.list" => {
            p.at_most(&[])?;
            let bans: Vec<_> = b
                .flood_bans()
                .into_iter()
                .map(|(ip, secs)| json!({ "ip": ip.to_string(), "expires_in": secs }))
                .collect();
            write_value(out, &json!({ "banned": bans }));
            Ok(())
        }
        "pike.unban" => {
            p.at_most(&["ip"])?;
            let ip: std::net::IpAddr = p
                .str(0, "ip")?
                .trim()
                .parse()
                .map_err(|_| RpcError::param("ip", "expected an IP address"))?;
            let was = b.flood_unban(ip);
            write_value(out, &json!({ "ip": ip.to_string(), "unbanned": was }));
            Ok(())
        }
        "core.uptime" => {
            p.at_most(&[])?;
            write_value(out, &json!({ "uptime": b.uptime_secs() }));
            Ok(())
        }
        "core.reload" => {
            p.at_most(&[])?;
            let msg = b
                .reload()
                .map_err(|e| RpcError::new(500, format!("Reload failed: {e}")))?;
            write_value(out, &msg);
            Ok(())
        }
        "core.loglevel" => {
            p.at_most(&["level"])?;
            if let Some(level) = p.opt_str(0, "level")? {
                b.set_log_level(&level)
                    .map_err(|e| RpcError::param("level", &e))?;
            }
            write_value(out, &json!({ "loglevel": b.log_level() }));
            Ok(())
        }
        "system.listMethods" => {
            p.at_most(&[])?;
            write_value(out, METHODS);
            Ok(())
        }
        _ => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )),
    }
}
