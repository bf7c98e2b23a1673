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
    /// `private_ports[worker][listener]`: the port of the worker's private UDP send socket
    /// for that listener (0 = none). Our Via carries it, so responses reach that worker.
    pub private_ports: Vec<Vec<u16>>,
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
        LocalAddrs {
            listeners,
            private_ports: Vec::new(),
        }
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

    /// The private UDP port of `worker` for listener `local`, if it has one.
    pub fn private_port(&self, worker: usize, local: usize) -> Option<u16> {
        self.private_ports
            .get(worker)
            .and_then(|v| v.get(local))
            .copied()
            .filter(|&p| p != 0)
    }

    /// Does `host` (as written in a URI or Via, IPv6 with brackets) and `port` (None = default
    /// 5060) name one of our listeners (or a worker's private send socket)?
    pub fn is_ours(&self, host: &[u8], port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        let ip = parse_ip(host);
        self.listeners.iter().enumerate().any(|(i, l)| {
            let port_ok = l.addr.port() == port
                || self
                    .private_ports
                    .iter()
                    .any(|w| w.get(i).is_some_and(|&p| p != 0 && p == port));
            port_ok
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
