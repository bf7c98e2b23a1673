//! The RPC methods: Kamailio `dlg.*`, `stats.*`, `core.*` and `system.listMethods`.
//!
//! Owns the method table ([`METHODS`]) and dispatch ([`call`]). Each method reads its
//! parameters through [`Params`], asks the backend, and writes its result JSON straight into
//! the response buffer.
//!
//! ## Invariants
//! - Dialog lists are streamed in pages of [`PAGE`] dialogs; no method holds more than one
//!   page of `DialogInfo` at a time, whatever the table size.
//! - Parameter errors are `-32602` with a message `"<param>: <what was expected>"`; backend
//!   outcomes map through [`crate::mgmt::model::BackendError::code`].
//! - Without context (`dlg.list`, `dlg.dlg_list`, `dlg.profile_list`) `profiles` and
//!   `variables` are never printed.

use regex::Regex;
use serde_json::{Value, json};

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::model::{DialogInfo, DialogSelector};
use crate::mgmt::rpc::{INVALID_PARAMS, METHOD_NOT_FOUND, Params, RpcError, write_value};
use crate::mgmt::statistics;

/// Dialogs fetched from the backend per page when streaming a list.
pub const PAGE: usize = 1000;

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
    "stats.get_statistics",
    "stats.fetch",
    "stats.fetchn",
    "stats.reset_statistics",
    "stats.latency",
    "core.version",
    "core.uptime",
    "core.reload",
    "core.loglevel",
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
        "dlg.list" | "dlg.list_ctx" => {
            p.at_most(&["start", "count"])?;
            let start = usize_param(p.opt_u64(0, "start")?.unwrap_or(0));
            let count = p.opt_u64(1, "count")?.map_or(usize::MAX, usize_param);
            let ctx = method.ends_with("_ctx");
            stream_dialogs(b, out, start, count, ctx, |_| true);
            Ok(())
        }
        "dlg.list_match" | "dlg.list_match_ctx" => {
            p.at_most(&["key", "op", "value", "limit"])?;
            let filter = Matcher::new(&p.str(0, "key")?, &p.str(1, "op")?, &p.str(2, "value")?)?;
            let limit = p.opt_u64(3, "limit")?.map_or(usize::MAX, usize_param);
            let ctx = method.ends_with("_ctx");
            stream_dialogs(b, out, 0, limit, ctx, |d| filter.matches(d));
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
        "dlg.briefing" => {
            p.at_most(&["fmt"])?;
            let fmt = p
                .opt_str(0, "fmt")?
                .unwrap_or_else(|| "IcftFTSs".to_owned());
            if let Some(c) = fmt.chars().find(|c| !"IcftFTSsieold".contains(*c)) {
                return Err(RpcError::param(
                    "fmt",
                    &format!("unknown field letter '{c}' (expected letters of IcftFTSsieold)"),
                ));
            }
            out.push(b'[');
            let mut first = true;
            let mut pos = 0;
            loop {
                let page = b.dialog_page(pos, PAGE, false);
                for d in &page {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_value(out, &briefing(d, &fmt));
                }
                pos += page.len();
                if page.len() < PAGE {
                    break;
                }
            }
            out.push(b']');
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

fn usize_param(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn strip_ctx(list: &mut [DialogInfo], ctx: bool) {
    if !ctx {
        for d in list {
            d.profiles = None;
            d.variables = None;
        }
    }
}

/// Write a JSON array of up to `limit` dialogs passing `keep`, starting at position `start`,
/// fetching one page at a time.
fn stream_dialogs(
    b: &dyn MgmtBackend,
    out: &mut Vec<u8>,
    start: usize,
    limit: usize,
    ctx: bool,
    mut keep: impl FnMut(&DialogInfo) -> bool,
) {
    out.push(b'[');
    let mut written = 0usize;
    let mut pos = start;
    while written < limit {
        let mut page = b.dialog_page(pos, PAGE, ctx);
        let got = page.len();
        strip_ctx(&mut page, ctx);
        for d in page.iter().filter(|d| keep(d)) {
            if written >= limit {
                break;
            }
            if written > 0 {
                out.push(b',');
            }
            write_value(out, d);
            written += 1;
        }
        pos = pos.saturating_add(got);
        if got < PAGE {
            break;
        }
    }
    out.push(b']');
}

fn briefing(d: &DialogInfo, fmt: &str) -> Value {
    let mut m = serde_json::Map::new();
    for c in fmt.chars() {
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        match c {
            'I' => {
                put("h_entry", d.h_entry.into());
                put("h_id", d.h_id.into());
            }
            'c' => put("call-id", d.call_id.clone().into()),
            'f' => put("from_uri", d.from_uri.clone().into()),
            't' => put("to_uri", d.to_uri.clone().into()),
            'F' => put("from_tag", d.caller.tag.clone().into()),
            'T' => put("to_tag", d.callee.tag.clone().into()),
            'S' => put("state", d.state.into()),
            's' => put("start_ts", d.start_ts.into()),
            'i' => put("init_ts", d.init_ts.into()),
            'e' => put("end_ts", d.end_ts.into()),
            'o' => put("timeout", d.timeout.into()),
            'l' => put("lifetime", d.lifetime.into()),
            'd' => put("dflags", d.dflags.into()),
            _ => {}
        }
    }
    Value::Object(m)
}

/// A `dlg.list_match` filter.
enum Matcher {
    Str(fn(&DialogInfo) -> &str, StrOp),
    StartTs(std::cmp::Ordering, u64),
}

enum StrOp {
    Eq(String),
    Sw(String),
    Re(Regex),
}

impl Matcher {
    fn new(key: &str, op: &str, value: &str) -> Result<Self, RpcError> {
        let field: fn(&DialogInfo) -> &str = match key {
            "ruri" => |d| &d.req_uri,
            "furi" => |d| &d.from_uri,
            "turi" => |d| &d.to_uri,
            "callid" => |d| &d.call_id,
            "start_ts" => {
                let ord = match op {
                    "eq" => std::cmp::Ordering::Equal,
                    "gt" => std::cmp::Ordering::Greater,
                    "lt" => std::cmp::Ordering::Less,
                    _ => return Err(RpcError::param("op", "expected eq, gt or lt for start_ts")),
                };
                let v = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| RpcError::param("value", "expected an unsigned integer"))?;
                return Ok(Matcher::StartTs(ord, v));
            }
            _ => {
                return Err(RpcError::param(
                    "key",
                    "expected one of ruri, furi, turi, callid, start_ts",
                ));
            }
        };
        let op = match op {
            "eq" => StrOp::Eq(value.to_owned()),
            "sw" => StrOp::Sw(value.to_owned()),
            "re" => StrOp::Re(
                regex::RegexBuilder::new(value)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        RpcError::new(
                            INVALID_PARAMS,
                            format!("value: invalid regular expression: {e}"),
                        )
                    })?,
            ),
            "gt" | "lt" => {
                return Err(RpcError::param("op", "gt and lt apply only to start_ts"));
            }
            _ => return Err(RpcError::param("op", "expected one of eq, re, sw, gt, lt")),
        };
        Ok(Matcher::Str(field, op))
    }

    fn matches(&self, d: &DialogInfo) -> bool {
        match self {
            Matcher::Str(field, StrOp::Eq(v)) => field(d) == v,
            Matcher::Str(field, StrOp::Sw(v)) => field(d).starts_with(v.as_str()),
            Matcher::Str(field, StrOp::Re(re)) => re.is_match(field(d)),
            Matcher::StartTs(ord, v) => d.start_ts.cmp(v) == *ord,
        }
    }
}
