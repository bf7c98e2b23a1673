//! Transport addresses in the config: listeners (`udp:IP:PORT`) and forwarding targets
//! (`udp:IP:PORT`, `tcp:IP:PORT`, `sip:IP[:PORT][;transport=tcp]`).
//!
//! Invariants: every parsed address is an IP literal. A hostname is rejected with an error
//! that says DNS (RFC 3263) is not supported, so loading a config never blocks on a resolver.
//! Parsing happens at config load only (never on the packet path), so it may allocate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer};

use crate::wire::Transport;

/// A socket to listen on: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listen {
    /// Transport of the listening socket.
    pub transport: Transport,
    /// Local address and port.
    pub addr: SocketAddr,
}

/// A forwarding target: `udp:10.0.0.5:5060`, `tcp:10.0.0.5:5060`,
/// `sip:10.0.0.5:5080;transport=tcp`, `sip:10.0.0.5` (UDP, port 5060).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Transport used to reach the target.
    pub transport: Transport,
    /// Destination address and port.
    pub addr: SocketAddr,
}

const NO_DNS: &str = "is not an IP literal: DNS (RFC 3263) is not supported, use an IP address";

/// Parses `HOST[:PORT]` where HOST is an IPv4 literal or a bracketed IPv6 literal.
fn parse_host_port(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("`{s}`: unterminated `[` in IPv6 address"));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("`{s}`: unexpected text after `]`")),
        };
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        if host.is_empty() {
            format!("`{s}`: missing host")
        } else {
            format!("host `{host}` {NO_DNS}")
        }
    })?;
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .map_err(|_| format!("`{s}`: bad port `{p}`"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("`{s}`: missing port")),
    };
    Ok(SocketAddr::new(ip, port))
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// Parses `udp:IP:PORT` or `tcp:IP:PORT` (IPv6 in brackets).
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((proto, rest)) = s.split_once(':') else {
            return Err(format!(
                "listen `{s}`: expected `udp:IP:PORT` or `tcp:IP:PORT`"
            ));
        };
        let transport = Transport::from_token(proto.as_bytes()).ok_or_else(|| {
            format!("listen `{s}`: unknown transport `{proto}` (expected udp or tcp)")
        })?;
        let addr = parse_host_port(rest, None).map_err(|e| format!("listen {e}"))?;
        Ok(Listen { transport, addr })
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    /// Parses `udp:IP:PORT`, `tcp:IP:PORT` or `sip:IP[:PORT][;transport=udp|tcp]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!(
                "target `{s}`: expected `udp:IP:PORT`, `tcp:IP:PORT` or `sip:IP:PORT;transport=tcp`"
            ));
        };
        if scheme.eq_ignore_ascii_case("sip") {
            let mut parts = rest.split(';');
            let hostport = parts.next().unwrap_or_default();
            let mut transport = Transport::Udp;
            for param in parts {
                let (k, v) = param.split_once('=').unwrap_or((param, ""));
                if k.eq_ignore_ascii_case("transport") {
                    transport = Transport::from_token(v.as_bytes()).ok_or_else(|| {
                        format!("target `{s}`: unsupported transport `{v}` (expected udp or tcp)")
                    })?;
                } else if k.eq_ignore_ascii_case("lr") {
                } else {
                    return Err(format!("target `{s}`: unsupported URI parameter `{k}`"));
                }
            }
            let addr = parse_host_port(hostport, Some(5060)).map_err(|e| format!("target {e}"))?;
            return Ok(Target { transport, addr });
        }
        let transport = Transport::from_token(scheme.as_bytes()).ok_or_else(|| {
            format!("target `{s}`: unknown scheme `{scheme}` (expected udp, tcp or sip)")
        })?;
        let addr = parse_host_port(rest, None).map_err(|e| format!("target {e}"))?;
        Ok(Target { transport, addr })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(Listen);
deserialize_from_str!(Target);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let l: Listen = "udp:127.0.0.1:5060".parse().unwrap();
        assert_eq!(l.transport, Transport::Udp);
        assert_eq!(l.addr, "127.0.0.1:5060".parse().unwrap());
        let l: Listen = "tcp:[::1]:5070".parse().unwrap();
        assert_eq!(l.transport, Transport::Tcp);
        assert_eq!(l.addr, "[::1]:5070".parse().unwrap());
        assert!("udp:127.0.0.1".parse::<Listen>().is_err());
        assert!("sctp:127.0.0.1:5060".parse::<Listen>().is_err());
        assert!("127.0.0.1:5060".parse::<Listen>().is_err());
    }

    #[test]
    fn target_forms() {
        let t: Target = "sip:10.0.0.1:5080;transport=tcp".parse().unwrap();
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.addr.port(), 5080);
        let t: Target = "sip:10.0.0.1".parse().unwrap();
        assert_eq!(t.transport, Transport::Udp);
        assert_eq!(t.addr.port(), 5060);
        let t: Target = "sip:[2001:db8::1];transport=udp".parse().unwrap();
        assert_eq!(t.addr, "[2001:db8::1]:5060".parse().unwrap());
        let t: Target = "tcp:10.0.0.2:5060".parse().unwrap();
        assert_eq!(t.transport, Transport::Tcp);
    }

    #[test]
    fn hostname_is_a_dns_error() {
        let e = "sip:pbx.example.com:5060".parse::<Target>().unwrap_err();
        assert!(e.contains("DNS (RFC 3263)"), "{e}");
        let e = "udp:pbx.local:5060".parse::<Target>().unwrap_err();
        assert!(e.contains("DNS"), "{e}");
        let e = "udp:localhost:5060".parse::<Listen>().unwrap_err();
        assert!(e.contains("DNS"), "{e}");
    }
}
