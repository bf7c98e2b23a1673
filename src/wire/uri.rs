//! SIP/SIPS/TEL URI parsing into borrowed parts.
//!
//! Invariants: parsing borrows the input and never allocates; `%` escapes in the user part are
//! kept as written; IPv6 hosts keep their brackets; the scheme is matched case-insensitively;
//! an unknown scheme is [`ParseError::UnsupportedUriScheme`] (416), anything else malformed is
//! [`ParseError::BadUri`]. For `tel:` the number is in `user` and `host` is empty.

use std::net::IpAddr;

use memchr::memchr;

use super::error::ParseError;
use super::scan::{param_lookup, parse_u16};

/// A URI scheme this proxy routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
}

/// A parsed URI; all parts borrow the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// User part as written (escapes kept); for `tel:` the number.
    pub user: Option<&'a [u8]>,
    /// Password after `user:`.
    pub password: Option<&'a [u8]>,
    /// Host: a name, IPv4, or `[IPv6]` with brackets. Empty for `tel:`.
    pub host: &'a [u8],
    /// Port if present.
    pub port: Option<u16>,
    /// Raw URI parameters starting at `;` (or empty).
    pub params: &'a [u8],
    /// Raw headers after `?`, without the `?`.
    pub headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    /// A URI parameter by name (case-insensitive); `Some(None)` when present without value.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        param_lookup(self.params, name)
    }

    /// True when the `lr` parameter is present (loose router).
    pub fn has_lr(&self) -> bool {
        self.param(b"lr").is_some()
    }

    /// The `transport` parameter value.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.param(b"transport").flatten()
    }

    /// The `maddr` parameter value.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.param(b"maddr").flatten()
    }

    /// The host as an IP address, if it is one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_to_ip(self.host)
    }
}

/// Parses a host (`1.2.3.4`, `[::1]`) as an IP address; `None` for names.
pub(crate) fn host_to_ip(host: &[u8]) -> Option<IpAddr> {
    let h = match (host.first(), host.last()) {
        (Some(b'['), Some(b']')) => host.get(1..host.len() - 1)?,
        _ => host,
    };
    if h.is_empty() || h.len() > 45 {
        return None;
    }
    std::str::from_utf8(h).ok()?.parse().ok()
}

/// A byte of a SIP URI's userinfo (RFC 3261 §25.1: unreserved, escaped, user-unreserved,
/// password characters and the `:` between user and password).
fn is_userinfo_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')' | b'%' | b'&' | b'='
                | b'+' | b'$' | b',' | b';' | b'?' | b'/' | b':'
                // Not in the grammar, but common from phones (`sip:*72#123@host`).
                | b'#'
        )
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Parses a `sip:`, `sips:` or `tel:` URI.
pub fn parse_uri(b: &[u8]) -> Result<Uri<'_>, ParseError> {
    let colon = memchr(b':', b).ok_or(ParseError::BadUri)?;
    let scheme_b = b.get(..colon).unwrap_or(&[]);
    let scheme = if scheme_b.eq_ignore_ascii_case(b"sip") {
        Scheme::Sip
    } else if scheme_b.eq_ignore_ascii_case(b"sips") {
        Scheme::Sips
    } else if scheme_b.eq_ignore_ascii_case(b"tel") {
        Scheme::Tel
    } else if !scheme_b.is_empty()
        && scheme_b.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme_b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return Err(ParseError::UnsupportedUriScheme);
    } else {
        return Err(ParseError::BadUri);
    };
    let rest = b.get(colon + 1..).unwrap_or(&[]);
    // The userinfo ends at the first `@`: `?` and `;` are legal inside it (RFC 3261
    // user-unreserved; RFC 4475 §3.1.1.2), and neither parameters nor headers may hold an
    // unescaped `@`. So the user part is split off before headers and parameters.
    let (userinfo, rest) = match (scheme, memchr(b'@', rest)) {
        (Scheme::Tel, _) | (_, None) => (None, rest),
        (_, Some(at)) => (rest.get(..at), rest.get(at + 1..).unwrap_or(&[])),
    };
    let (rest, headers) = match memchr(b'?', rest) {
        Some(q) => (rest.get(..q).unwrap_or(&[]), rest.get(q + 1..)),
        None => (rest, None),
    };
    if scheme == Scheme::Tel {
        let semi = memchr(b';', rest).unwrap_or(rest.len());
        let num = rest.get(..semi).unwrap_or(&[]);
        if num.is_empty() {
            return Err(ParseError::BadUri);
        }
        return Ok(Uri {
            scheme,
            user: Some(num),
            password: None,
            host: &[],
            port: None,
            params: rest.get(semi..).unwrap_or(&[]),
            headers,
        });
    }
    let (user, password, hostpart) = match userinfo {
        Some(ui) => {
            let (u, p) = match memchr(b':', ui) {
                Some(c) => (ui.get(..c).unwrap_or(&[]), ui.get(c + 1..)),
                None => (ui, None),
            };
            if u.is_empty() || !ui.iter().all(|&c| is_userinfo_byte(c)) {
                return Err(ParseError::BadUri);
            }
            (Some(u), p, rest)
        }
        None => (None, None, rest),
    };
    let host_end = if hostpart.first() == Some(&b'[') {
        let end = memchr(b']', hostpart).ok_or(ParseError::BadUri)? + 1;
        // An IPv6 reference must be an IPv6 address (RFC 5118 §4.10: three colons is not).
        let inner = hostpart.get(1..end - 1).unwrap_or(&[]);
        let ok = std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return Err(ParseError::BadUri);
        }
        end
    } else {
        hostpart
            .iter()
            .position(|&c| !is_host_byte(c))
            .unwrap_or(hostpart.len())
    };
    let host = hostpart.get(..host_end).unwrap_or(&[]);
    if host.is_empty() || host == b"[]" {
        return Err(ParseError::BadUri);
    }
    let mut i = host_end;
    let mut port = None;
    if hostpart.get(i) == Some(&b':') {
        let p0 = i + 1;
        let mut p1 = p0;
        while hostpart.get(p1).is_some_and(u8::is_ascii_digit) {
            p1 += 1;
        }
        port = Some(parse_u16(hostpart.get(p0..p1).unwrap_or(&[])).ok_or(ParseError::BadUri)?);
        i = p1;
    }
    let params = hostpart.get(i..).unwrap_or(&[]);
    if !params.is_empty() && params.first() != Some(&b';') {
        return Err(ParseError::BadUri);
    }
    Ok(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn sip_uris() {
        let u = parse_uri(b"sip:alice:secret@Example.COM:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, b"Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, b";transport=tcp;lr");
        assert_eq!(u.headers, Some(&b"subject=x"[..]));
        assert!(u.has_lr());
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert_eq!(u.host_ip(), None);

        let u = parse_uri(b"SIPS:%61lice@[2001:db8::1]:5061;MADDR=10.0.0.1;did=ab.1").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some(&b"%61lice"[..]));
        assert_eq!(u.host, b"[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.maddr(), Some(&b"10.0.0.1"[..]));
        assert_eq!(u.param(b"DID"), Some(Some(&b"ab.1"[..])));
        assert_eq!(u.host_ip(), "2001:db8::1".parse().ok());
        assert!(!u.has_lr());

        let u = parse_uri(b"sip:192.0.2.4").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.port, None);
        assert_eq!(u.params, b"");
        assert_eq!(u.host_ip(), "192.0.2.4".parse().ok());

        let u = parse_uri(b"sip:+1-212;npdi@gw.example.com;user=phone").unwrap();
        assert_eq!(u.user, Some(&b"+1-212;npdi"[..]));
        assert_eq!(u.host, b"gw.example.com");
        assert_eq!(u.param(b"user"), Some(Some(&b"phone"[..])));
    }

    #[test]
    fn tel_uri() {
        let u = parse_uri(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user, Some(&b"+1-201-555-0123"[..]));
        assert_eq!(u.host, b"");
        assert_eq!(u.param(b"phone-context"), Some(Some(&b"example.com"[..])));
    }

    #[test]
    fn uri_errors() {
        let table: &[(&[u8], ParseError)] = &[
            (b"http://example.com", ParseError::UnsupportedUriScheme),
            (b"urn:service:sos", ParseError::UnsupportedUriScheme),
            (b"example.com", ParseError::BadUri),
            (b":foo", ParseError::BadUri),
            (b"sip:", ParseError::BadUri),
            (b"sip:@host", ParseError::BadUri),
            (b"sip:host:99999", ParseError::BadUri),
            (b"sip:host:", ParseError::BadUri),
            (b"sip:[::1", ParseError::BadUri),
            (b"sip:[]", ParseError::BadUri),
            (b"sip:host junk", ParseError::BadUri),
            (b"tel:", ParseError::BadUri),
        ];
        for (u, e) in table {
            assert_eq!(parse_uri(u), Err(*e), "{}", String::from_utf8_lossy(u));
        }
        assert_eq!(parse_uri(b"http://x").unwrap_err().status(), 416);
    }
}
