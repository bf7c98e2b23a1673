//! JSON-RPC 2.0 envelope: parsing, batches, notifications, error objects.
//!
//! Owns [`handle_jsonrpc`] and [`handle_jsonrpc_reply`], the sans-IO entry points the HTTP
//! listener calls with a request body. The methods run in [`methods`]; the vocabulary they
//! share (error codes, [`RpcError`], [`Params`]) is in [`crate::mgmt::protocol`].
//!
//! ## Invariants
//! - Never panics on any input; every failure becomes a JSON-RPC error object.
//! - A notification (a request object without `id`) never produces output, even on error.
//!   A batch of only notifications produces an empty body (the listener answers 204).
//! - Results are written straight into the response buffer by the methods, so large lists are
//!   serialized page by page; on error the partial result is cut off before the error object
//!   is written.
//! - A batch holds at most [`MAX_BATCH`] entries; a longer one runs none of them and is
//!   answered with one `Invalid Request` error naming the limit.

use std::sync::Arc;

use serde_json::Value;

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::methods;
use crate::mgmt::pager::{DialogPager, DialogStream};
use crate::mgmt::protocol::{INVALID_REQUEST, PARSE_ERROR, Params, RpcError, write_value};

/// Most entries in one JSON-RPC batch.
pub const MAX_BATCH: usize = 100;

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
        Value::Array(items) if items.len() > MAX_BATCH => {
            let err = RpcError::new(
                INVALID_REQUEST,
                format!(
                    "Invalid Request: batch of {} entries exceeds the limit of {MAX_BATCH}",
                    items.len()
                ),
            );
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

fn write_error(out: &mut Vec<u8>, id: &Value, e: &RpcError) {
    let obj = serde_json::json!({
        "jsonrpc": "2.0",
        "error": { "code": e.code, "message": e.message },
        "id": id,
    });
    write_value(out, &obj);
}
