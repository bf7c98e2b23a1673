//! The JSON-RPC vocabulary every management method shares: error codes, [`RpcError`],
//! the positional-or-named parameter reader [`Params`], and the writers of result JSON
//! ([`write_value`], [`strip_ctx`]).
//!
//! The bottom of the RPC modules: `rpc` (the envelope) -> `methods` (dispatch) -> `pager`,
//! `statistics` -> this. It imports none of them.
//!
//! ## Invariants
//! - Parameter errors are [`INVALID_PARAMS`] with a message `"<param>: <what was expected>"`.
//! - Writing a result never fails: a value that cannot be serialized is written as `null`.

use serde_json::{Map, Value};

use crate::mgmt::model::{BackendError, DialogInfo};

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

impl From<BackendError> for RpcError {
    fn from(e: BackendError) -> Self {
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

/// Append `v` as JSON (serializing a `Value` into a `Vec` cannot fail).
pub fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Drop context fields (profiles, variables) unless asked for (backends may fill them anyway).
pub fn strip_ctx(list: &mut [DialogInfo], ctx: bool) {
    if !ctx {
        for d in list {
            d.profiles = None;
            d.variables = None;
        }
    }
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
