//! Paged dialog lists: `dlg.list`, `dlg.list_ctx`, `dlg.list_match`, `dlg.list_match_ctx`
//! and `dlg.briefing`, produced one backend page at a time.
//!
//! Owns [`DialogPager`] (validated list parameters plus a cursor) and [`DialogStream`], a
//! [`Read`] that wraps one JSON-RPC reply around a pager so the HTTP listener can send a
//! 1,000,000-dialog list with chunked encoding while holding only one page in memory.
//!
//! ## Invariants
//! - Parameters are validated in [`DialogPager::from_params`]; once a pager exists, producing
//!   the list cannot fail, so a streamed reply never needs to turn into an error midway.
//! - Each [`DialogPager::fill`] asks the backend for at most [`PAGE`] dialogs and appends
//!   their JSON; concatenating every fill yields exactly one JSON array.

use std::io::Read;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::model::DialogInfo;
use crate::mgmt::protocol::{
    INTERNAL_ERROR, INVALID_PARAMS, Params, RpcError, strip_ctx, write_value,
};

/// Dialogs fetched from the backend per page.
pub const PAGE: usize = 1000;

/// Field letters of `dlg.briefing`'s optional format.
pub const BRIEFING_LETTERS: &str = "IcftFTSsieold";
const BRIEFING_DEFAULT: &str = "IcftFTSs";

enum Shape {
    Full,
    Match(Matcher),
    Briefing(String),
}

/// A validated list request and its cursor.
pub struct DialogPager {
    shape: Shape,
    ctx: bool,
    pos: usize,
    limit: usize,
    written: usize,
    started: bool,
    done: bool,
}

fn usize_param(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl DialogPager {
    /// Whether `method` is produced by a pager.
    pub fn handles(method: &str) -> bool {
        matches!(
            method,
            "dlg.list" | "dlg.list_ctx" | "dlg.list_match" | "dlg.list_match_ctx" | "dlg.briefing"
        )
    }

    /// Validate the parameters of a list method.
    pub fn from_params(method: &str, p: Params<'_>) -> Result<Self, RpcError> {
        let ctx = method.ends_with("_ctx");
        let (shape, pos, limit) = match method {
            "dlg.list" | "dlg.list_ctx" => {
                p.at_most(&["start", "count"])?;
                let start = usize_param(p.opt_u64(0, "start")?.unwrap_or(0));
                let count = p.opt_u64(1, "count")?.map_or(usize::MAX, usize_param);
                (Shape::Full, start, count)
            }
            "dlg.list_match" | "dlg.list_match_ctx" => {
                p.at_most(&["key", "op", "value", "limit"])?;
                let m = Matcher::new(&p.str(0, "key")?, &p.str(1, "op")?, &p.str(2, "value")?)?;
                let limit = p.opt_u64(3, "limit")?.map_or(usize::MAX, usize_param);
                (Shape::Match(m), 0, limit)
            }
            "dlg.briefing" => {
                p.at_most(&["fmt"])?;
                let fmt = p
                    .opt_str(0, "fmt")?
                    .unwrap_or_else(|| BRIEFING_DEFAULT.to_owned());
                if let Some(c) = fmt.chars().find(|c| !BRIEFING_LETTERS.contains(*c)) {
                    let what = format!(
                        "unknown field letter '{c}' (expected letters of {BRIEFING_LETTERS})"
                    );
                    return Err(RpcError::param("fmt", &what));
                }
                (Shape::Briefing(fmt), 0, usize::MAX)
            }
            other => {
                return Err(RpcError::new(
                    INTERNAL_ERROR,
                    format!("{other} is not a list method"),
                ));
            }
        };
        Ok(DialogPager {
            shape,
            ctx,
            pos,
            limit,
            written: 0,
            started: false,
            done: false,
        })
    }

    /// Append the next part of the JSON array (one backend page at most). Returns true while
    /// more remains; false once the closing `]` has been written.
    pub fn fill(&mut self, b: &dyn MgmtBackend, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        if !self.started {
            out.push(b'[');
            self.started = true;
        }
        let mut more = false;
        if self.written < self.limit {
            let mut page = b.dialog_page(self.pos, PAGE, self.ctx);
            let got = page.len();
            strip_ctx(&mut page, self.ctx);
            for d in &page {
                if self.written >= self.limit {
                    break;
                }
                if let Shape::Match(m) = &self.shape
                    && !m.matches(d)
                {
                    continue;
                }
                if self.written > 0 {
                    out.push(b',');
                }
                match &self.shape {
                    Shape::Briefing(fmt) => write_value(out, &briefing(d, fmt)),
                    _ => write_value(out, d),
                }
                self.written += 1;
            }
            self.pos = self.pos.saturating_add(got);
            more = got >= PAGE && self.written < self.limit;
        }
        if !more {
            out.push(b']');
            self.done = true;
        }
        more
    }
}

/// A complete JSON-RPC reply whose `result` is produced lazily from a [`DialogPager`].
pub struct DialogStream {
    backend: Arc<dyn MgmtBackend>,
    pager: DialogPager,
    buf: Vec<u8>,
    pos: usize,
    suffix: Option<Vec<u8>>,
}

impl DialogStream {
    /// Wrap `pager` in `{"jsonrpc":"2.0","result":<list>,"id":<id>}`.
    pub fn new(backend: Arc<dyn MgmtBackend>, pager: DialogPager, id: &Value) -> Self {
        let mut suffix = br#","id":"#.to_vec();
        write_value(&mut suffix, id);
        suffix.push(b'}');
        DialogStream {
            backend,
            pager,
            buf: br#"{"jsonrpc":"2.0","result":"#.to_vec(),
            pos: 0,
            suffix: Some(suffix),
        }
    }
}

impl Read for DialogStream {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if !self.pager.fill(self.backend.as_ref(), &mut self.buf) && self.buf.is_empty() {
                match self.suffix.take() {
                    Some(s) => self.buf = s,
                    None => return Ok(0),
                }
            }
        }
        let src = self.buf.get(self.pos..).unwrap_or(&[]);
        let n = src.len().min(dst.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        self.pos += n;
        Ok(n)
    }
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
                        let msg = format!("value: invalid regular expression: {e}");
                        RpcError::new(INVALID_PARAMS, msg)
                    })?,
            ),
            "gt" | "lt" => return Err(RpcError::param("op", "gt and lt apply only to start_ts")),
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
