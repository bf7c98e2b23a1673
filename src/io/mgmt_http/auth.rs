//! The management token: `Authorization: Bearer <token>`.
//!
//! Owns [`authorized`]. Invariants: it reads only the request head (never the body); the
//! comparison takes time that depends on the lengths only, not on where the presented and
//! expected tokens differ; without a configured token everything is authorized (the
//! listener then only binds loopback addresses).

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

/// Whether the request head carries the expected token (always, when none is configured).
pub(super) fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let presented = headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(bearer)
        .unwrap_or(b"");
    ct_eq(presented, token.as_bytes())
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive).
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = (v.get(..7)?, v.get(7..)?);
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Constant-time equality (time depends on the lengths only).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        assert!(authorized(&HeaderMap::new(), None));
        assert!(!authorized(&HeaderMap::new(), Some("s3cret")));
        assert!(authorized(&with("Bearer s3cret"), Some("s3cret")));
        assert!(authorized(&with("bearer  s3cret "), Some("s3cret")));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret1",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!authorized(&with(bad), Some("s3cret")), "{bad}");
        }
        assert!(ct_eq(b"", b"") && !ct_eq(b"a", b"") && !ct_eq(b"", b"a"));
    }
}
