//! Our own addresses: which URIs and Vias point at this proxy, and the text we put in our
//! Via and Record-Route headers.
//!
//! Invariant: built once at start (or reload) and read-only afterwards; lookups do not allocate.

use std::net::{IpAddr, SocketAddr};

pub use crate::config::Transport;

/// One listening socket as the engine sees it.
#[derive(Clone, Debug)]
pub struct Listener {
    /// Transport of the socket.
    pub transport: Transport,
    /// Bound address.
    pub addr: SocketAddr,
    /// Host text we advertise (IPv6 in brackets).
    pub host: String,
    /// `host:port` text we advertise in Via and Record-Route.
    pub hostport: String,
}

/// The set of our listeners.
#[derive(Clone, Debug, Default)]
pub struct LocalAddrs {
    /// Listeners in configuration order; an index into this is a `LocalId`.
    pub listeners: Vec<Listener>,
}

impl LocalAddrs {
    /// Build from bound addresses; `advertise` replaces the host part when set.
    pub fn new(bound: &[(Transport, SocketAddr)], advertise: Option<&str>) -> Self {
        let listeners = bound
            .iter()
            .map(|&(transport, addr)| {
                let host = match (advertise, addr.ip()) {
                    (Some(a), _) => a.to_string(),
                    (None, IpAddr::V6(v6)) => format!("[{v6}]"),
                    (None, ip) => ip.to_string(),
                };
                Listener {
                    transport,
                    addr,
                    hostport: format!("{host}:{}", addr.port()),
                    host,
                }
            })
            .collect();
        LocalAddrs { listeners }
    }

    /// The listener with this index, falling back to the first one.
    pub fn get(&self, id: usize) -> Option<&Listener> {
        self.listeners.get(id).or_else(|| self.listeners.first())
    }

    /// First listener of a transport, preferring the same IP family as `like`.
    pub fn for_transport(&self, t: Transport, like: Option<SocketAddr>) -> Option<usize> {
        let fam = like.map(|a| a.is_ipv4());
        self.listeners
            .iter()
            .position(|l| l.transport == t && fam.is_none_or(|v4| l.addr.is_ipv4() == v4))
            .or_else(|| self.listeners.iter().position(|l| l.transport == t))
    }

    /// Does `host` (as written in a URI or Via, IPv6 with brackets) and `port` (None = default
    /// 5060) name one of our listeners?
    pub fn is_ours(&self, host: &[u8], port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        let ip = parse_ip(host);
        self.listeners.iter().any(|l| {
            l.addr.port() == port
                && (l.host.as_bytes().eq_ignore_ascii_case(host)
                    || ip.is_some_and(|ip| ip == l.addr.ip() || l.addr.ip().is_unspecified()))
        })
    }
}

/// Parse an IP literal as written in SIP (IPv6 may be in brackets).
pub fn parse_ip(host: &[u8]) -> Option<IpAddr> {
    let h = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    std::str::from_utf8(h).ok()?.parse().ok()
}
