//! JSON-RPC 2.0 envelope: parsing, batches, notifications, error objects, parameters.
//!
//! Owns [`handle_jsonrpc`], the sans-IO entry point the HTTP listener calls with a request
//! body, and [`Params`], the positional-or-named parameter reader used by the methods.
//!
//! ## Invariants
//! - Never panics on any input; every failure becomes a JSON-RPC error object.
//! - A notification (a request object without `id`) never produces output, even on error.
//!   A batch of only notifications produces an empty body (the listener answers 204).
//! - Results are written straight into the response buffer by the methods, so large lists are
//!   serialized page by page; on error the partial result is cut off before the error object
//!   is written.

use serde_json::{Map, Value};

use std::sync::Arc;

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::methods;
use crate::mgmt::pager::{DialogPager, DialogStream};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error (code + human message naming the problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// JSON-RPC error code (negative reserved codes, or 404/409/500 for backend outcomes).
    pub code: i64,
    /// Message naming the parameter or object and what was expected.
    pub message: String,
}

impl RpcError {
    /// Build an error.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// Invalid params error: `"{name}: {what}"`.
    pub fn param(name: &str, what: &str) -> Self {
        RpcError::new(INVALID_PARAMS, format!("{name}: {what}"))
    }
}

impl From<crate::mgmt::model::BackendError> for RpcError {
    fn from(e: crate::mgmt::model::BackendError) -> Self {
        RpcError::new(e.code(), e.to_string())
    }
}

/// Method parameters: positional (array, as kamcmd sends) or named (object).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    positional: &'a [Value],
    named: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    /// Parameters from a positional list.
    pub fn positional(values: &'a [Value]) -> Self {
        Params {
            positional: values,
            named: None,
        }
    }

    /// Parameters from a named object.
    pub fn named(map: &'a Map<String, Value>) -> Self {
        Params {
            positional: &[],
            named: Some(map),
        }
    }

    fn raw(&self, idx: usize, name: &str) -> Option<&'a Value> {
        match self.named {
            Some(m) => m.get(name),
            None => self.positional.get(idx),
        }
        .filter(|v| !v.is_null())
    }

    /// Fail when more than `max` positional parameters, or unknown named ones, were given.
    pub fn at_most(&self, names: &[&str]) -> Result<(), RpcError> {
        if let Some(m) = self.named {
            if let Some(k) = m.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(RpcError::param(
                    k,
                    &format!("unknown parameter (expected one of: {})", names.join(", ")),
                ));
            }
        } else if self.positional.len() > names.len() {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!(
                    "too many parameters: expected at most {} ({})",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Optional string; numbers are accepted and printed (kamcmd sends numeric-looking text
    /// as numbers).
    pub fn opt_str(&self, idx: usize, name: &str) -> Result<Option<String>, RpcError> {
        match self.raw(idx, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(RpcError::param(name, "expected a string")),
        }
    }

    /// Required string.
    pub fn str(&self, idx: usize, name: &str) -> Result<String, RpcError> {
        self.opt_str(idx, name)?
            .ok_or_else(|| RpcError::param(name, "missing required parameter (string)"))
    }

    /// Optional unsigned integer; numeric strings are accepted.
    pub fn opt_u64(&self, idx: usize, name: &str) -> Result<Option<u64>, RpcError> {
        let bad = || RpcError::param(name, "expected an unsigned integer");
        match self.raw(idx, name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// Required unsigned integer.
    pub fn u64(&self, idx: usize, name: &str) -> Result<u64, RpcError> {
        self.opt_u64(idx, name)?.ok_or_else(|| {
            RpcError::param(
                name,
                "missing required parameter (expected an unsigned integer)",
            )
        })
    }

    /// Required unsigned 32-bit integer.
    pub fn u32(&self, idx: usize, name: &str) -> Result<u32, RpcError> {
        u32::try_from(self.u64(idx, name)?)
            .map_err(|_| RpcError::param(name, "expected an unsigned 32-bit integer"))
    }

    /// All positional values from `idx` on, as strings (named: the array under `name`, or a
    /// single string).
    pub fn rest_str(&self, idx: usize, name: &str) -> Result<Vec<String>, RpcError> {
        let as_str = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(RpcError::param(name, "expected strings")),
        };
        match self.named {
            Some(m) => match m.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a.iter().map(as_str).collect(),
                Some(v) => Ok(vec![as_str(v)?]),
            },
            None => self
                .positional
                .get(idx..)
                .unwrap_or(&[])
                .iter()
                .map(as_str)
                .collect(),
        }
    }
}

/// Handle one HTTP request body. Returns the response body; empty when nothing must be sent
/// (notifications only).
pub fn handle_jsonrpc(body: &[u8], backend: &dyn MgmtBackend) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => handle_value(v, backend),
        Err(e) => parse_error(&e),
    }
}

fn parse_error(e: &serde_json::Error) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let err = RpcError::new(PARSE_ERROR, format!("Parse error: {e}"));
    write_error(&mut out, &Value::Null, &err);
    out
}

fn handle_value(parsed: Value, backend: &dyn MgmtBackend) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match parsed {
        Value::Array(items) if items.is_empty() => {
            let err = RpcError::new(INVALID_REQUEST, "Invalid Request: empty batch");
            write_error(&mut out, &Value::Null, &err);
        }
        Value::Array(items) => {
            out.push(b'[');
            let mut any = false;
            for item in &items {
                let mark = out.len();
                if any {
                    out.push(b',');
                }
                if handle_one(item, backend, &mut out) {
                    any = true;
                } else {
                    out.truncate(mark);
                }
            }
            if any {
                out.push(b']');
            } else {
                out.clear();
            }
        }
        other => {
            handle_one(&other, backend, &mut out);
        }
    }
    out
}

/// A validated request: method, parameters, and id (`None` for a notification).
type Parsed<'a> = (&'a str, Params<'a>, Option<&'a Value>);

/// Validate the envelope of one request object. On failure returns the error and the id to
/// answer with.
fn parse_request(req: &Value) -> Result<Parsed<'_>, (RpcError, Value)> {
    let invalid = |what: &str| RpcError::new(INVALID_REQUEST, format!("Invalid Request: {what}"));
    let Value::Object(obj) = req else {
        return Err((invalid("expected an object"), Value::Null));
    };
    let id = obj.get("id");
    if !matches!(
        id,
        None | Some(Value::Null | Value::String(_) | Value::Number(_))
    ) {
        return Err((invalid("id must be a string, number or null"), Value::Null));
    }
    let reply_id = id.cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((invalid("jsonrpc must be \"2.0\""), reply_id));
    }
    match (obj.get("method"), obj.get("params")) {
        (Some(Value::String(m)), None) => Ok((m.as_str(), Params::positional(&[]), id)),
        (Some(Value::String(m)), Some(Value::Array(a))) => {
            Ok((m.as_str(), Params::positional(a), id))
        }
        (Some(Value::String(m)), Some(Value::Object(o))) => Ok((m.as_str(), Params::named(o), id)),
        (Some(Value::String(_)), Some(_)) => {
            Err((invalid("params must be an array or object"), reply_id))
        }
        _ => Err((invalid("method must be a string"), reply_id)),
    }
}

/// Handle one request object, appending its response. Returns false if nothing was written
/// (a notification).
fn handle_one(req: &Value, backend: &dyn MgmtBackend, out: &mut Vec<u8>) -> bool {
    let (method, params, id) = match parse_request(req) {
        Ok(x) => x,
        Err((e, reply_id)) => {
            // An invalid request is answered even without id (we cannot tell it is a
            // notification).
            write_error(out, &reply_id, &e);
            return true;
        }
    };
    let mark = out.len();
    out.extend_from_slice(br#"{"jsonrpc":"2.0","result":"#);
    let result = methods::call(method, params, backend, out);
    match (result, id) {
        (Ok(()), Some(id)) => {
            out.extend_from_slice(br#","id":"#);
            write_value(out, id);
            out.push(b'}');
            true
        }
        (Err(e), Some(id)) => {
            out.truncate(mark);
            write_error(out, id, &e);
            true
        }
        (_, None) => {
            out.truncate(mark);
            false
        }
    }
}

/// A reply body: complete bytes, or a lazily produced dialog list.
pub enum Reply {
    /// The whole body (empty: nothing to send, answer 204).
    Full(Vec<u8>),
    /// A single list request (`dlg.list*`, `dlg.list_match*`, `dlg.briefing`) streamed one
    /// backend page at a time.
    Stream(DialogStream),
}

/// Like [`handle_jsonrpc`], but a single valid list request is returned as a stream so the
/// listener never holds a whole 1,000,000-dialog reply in memory.
pub fn handle_jsonrpc_reply(body: &[u8], backend: &Arc<dyn MgmtBackend>) -> Reply {
    let req = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(e) => return Reply::Full(parse_error(&e)),
    };
    if let Ok((method, params, Some(id))) = parse_request(&req)
        && DialogPager::handles(method)
        && let Ok(pager) = DialogPager::from_params(method, params)
    {
        return Reply::Stream(DialogStream::new(Arc::clone(backend), pager, id));
    }
    Reply::Full(handle_value(req, backend.as_ref()))
}

/// Append `v` as JSON (serializing a `Value` into a `Vec` cannot fail).
pub fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn write_error(out: &mut Vec<u8>, id: &Value, e: &RpcError) {
    let obj = serde_json::json!({
        "jsonrpc": "2.0",
        "error": { "code": e.code, "message": e.message },
        "id": id,
    });
    write_value(out, &obj);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_read_positional_and_named_alike() {
        let pos = json!([7, "8", "x", null]);
        let Value::Object(named) = json!({"h_entry": 7, "h_id": "8", "name": "x"}) else {
            unreachable!("object literal")
        };
        let p = Params::positional(pos.as_array().map(Vec::as_slice).unwrap_or(&[]));
        let n = Params::named(&named);
        for (params, name_idx) in [(p, 2), (n, 2)] {
            assert_eq!(params.u32(0, "h_entry"), Ok(7));
            assert_eq!(params.u64(1, "h_id"), Ok(8), "numeric strings accepted");
            assert_eq!(params.str(name_idx, "name").as_deref(), Ok("x"));
            assert_eq!(
                params.opt_str(3, "missing"),
                Ok(None),
                "null counts as absent"
            );
        }
        let err = p.u64(2, "h_id").map_err(|e| e.message);
        assert_eq!(err, Err("h_id: expected an unsigned integer".to_owned()));
        let big = json!([4_294_967_296u64]);
        let b = Params::positional(big.as_array().map(Vec::as_slice).unwrap_or(&[]));
        assert_eq!(b.u32(0, "h_id").map_err(|e| e.code), Err(INVALID_PARAMS));
        assert!(p.at_most(&["a", "b"]).is_err() && p.at_most(&["a", "b", "c", "d"]).is_ok());
        assert!(
            n.at_most(&["h_entry", "h_id"]).is_err(),
            "unknown named parameter"
        );
    }
}
