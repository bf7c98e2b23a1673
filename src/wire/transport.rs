//! The SIP transport protocols this proxy speaks, as named in Via headers, `transport=` URI
//! parameters and the config (`udp:IP:PORT`).
//!
//! Invariant: names are matched case-insensitively on input and written in one fixed case on
//! output (lower case in the config and logs, upper case in a Via).

use std::fmt;

use serde::Deserialize;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
}

impl Transport {
    /// Lower-case name as written in the config (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// Upper-case token for a Via header (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static [u8] {
        match self {
            Transport::Udp => b"UDP",
            Transport::Tcp => b"TCP",
        }
    }

    /// Parses a `transport=` URI parameter, a Via transport token or a config scheme,
    /// case-insensitively.
    pub fn from_token(b: &[u8]) -> Option<Transport> {
        if b.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if b.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn tokens_parse_in_any_case_and_print_in_one() {
        for (t, lower, upper) in [
            (Transport::Udp, "udp", &b"UDP"[..]),
            (Transport::Tcp, "tcp", &b"TCP"[..]),
        ] {
            assert_eq!(Transport::from_token(lower.as_bytes()), Some(t));
            assert_eq!(Transport::from_token(upper), Some(t));
            assert_eq!(
                (t.as_str(), t.via_token(), t.to_string()),
                (lower, upper, lower.into())
            );
        }
        assert_eq!(Transport::from_token(b"tls"), None);
        assert_eq!(Transport::from_token(b""), None);
    }
}
