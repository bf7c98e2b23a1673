//! Our own addresses: which URIs and Vias point at this proxy, and the text we put in our
//! Via and Record-Route headers.
//!
//! Invariant: built once at start (or reload) and read-only afterwards; lookups do not allocate.

use std::net::{IpAddr, SocketAddr};

use crate::wire::Transport;

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
        // The host is parsed as an IP only when a listener's port matches and its host text
        // does not (most hosts a proxy checks are its peers', on other ports).
        let mut ip: Option<Option<IpAddr>> = None;
        for (i, l) in self.listeners.iter().enumerate() {
            let port_ok = l.addr.port() == port
                || self
                    .private_ports
                    .iter()
                    .any(|w| w.get(i).is_some_and(|&p| p != 0 && p == port));
            if !port_ok {
                continue;
            }
            if l.host.as_bytes().eq_ignore_ascii_case(host) {
                return true;
            }
            let ip = *ip.get_or_insert_with(|| parse_ip(host));
            if ip.is_some_and(|ip| ip == l.addr.ip() || l.addr.ip().is_unspecified()) {
                return true;
            }
        }
        false
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn is_ours_matches_host_text_ip_private_ports_and_wildcards() {
        let mut l = LocalAddrs::new(
            &[
                (Transport::Udp, sa("127.0.0.1:5060")),
                (Transport::Udp, sa("[::1]:5070")),
            ],
            None,
        );
        l.private_ports = vec![vec![41000, 0], vec![41001, 0]];
        assert!(l.is_ours(b"127.0.0.1", Some(5060)));
        assert!(l.is_ours(b"127.0.0.1", None), "no port means 5060");
        assert!(
            l.is_ours(b"127.0.0.1", Some(41001)),
            "a worker's private port"
        );
        assert!(!l.is_ours(b"127.0.0.1", Some(5061)));
        assert!(!l.is_ours(b"10.0.0.2", Some(5060)), "a peer on our port");
        assert!(!l.is_ours(b"example.com", Some(5060)));
        assert!(l.is_ours(b"[::1]", Some(5070)));
        assert!(
            l.is_ours(b"[0:0:0:0:0:0:0:1]", Some(5070)),
            "same IP, other text"
        );
        assert!(!l.is_ours(b"[::1]", Some(5060)));
        assert!(!l.is_ours(b"", Some(5060)));

        let any = LocalAddrs::new(&[(Transport::Udp, sa("0.0.0.0:5060"))], None);
        assert!(
            any.is_ours(b"192.0.2.7", Some(5060)),
            "wildcard listener owns every IP"
        );
        assert!(
            !any.is_ours(b"pbx.example.com", Some(5060)),
            "names are not resolved"
        );

        let adv = LocalAddrs::new(
            &[(Transport::Udp, sa("0.0.0.0:5060"))],
            Some("sip.example.com"),
        );
        assert!(
            adv.is_ours(b"SIP.example.com", Some(5060)),
            "advertised name, any case"
        );
    }
}
