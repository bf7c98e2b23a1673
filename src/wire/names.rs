//! SIP method and header-name recognition.
//!
//! Invariants: [`Method::from_bytes`] is case-sensitive (RFC 3261 §7.1: methods are
//! case-sensitive); [`HeaderName::from_bytes`] is case-insensitive, recognises every compact
//! form, and dispatches on length then first byte, so it never lowercases or allocates.

/// A SIP request method. Extension methods are [`Method::Other`]; their text stays a span in
/// the message (see `Message::method_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// INFO (RFC 6086)
    Info,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any extension method.
    Other,
}

impl Method {
    /// Recognises a method token (exact, case-sensitive).
    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }

    /// The canonical token; `b""` for [`Method::Other`].
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Options => b"OPTIONS",
            Method::Register => b"REGISTER",
            Method::Prack => b"PRACK",
            Method::Update => b"UPDATE",
            Method::Info => b"INFO",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Publish => b"PUBLISH",
            Method::Other => b"",
        }
    }
}

/// A header name the proxy cares about; everything else is [`HeaderName::Other`] (compare the
/// name span yourself, or use `Message::find_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// Via / v
    Via,
    /// From / f
    From,
    /// To / t
    To,
    /// Call-ID / i
    CallId,
    /// CSeq
    CSeq,
    /// Max-Forwards
    MaxForwards,
    /// Route
    Route,
    /// Record-Route
    RecordRoute,
    /// Contact / m
    Contact,
    /// Content-Length / l
    ContentLength,
    /// Content-Type / c
    ContentType,
    /// Content-Encoding / e
    ContentEncoding,
    /// Require
    Require,
    /// Proxy-Require
    ProxyRequire,
    /// Supported / k
    Supported,
    /// Unsupported
    Unsupported,
    /// Allow
    Allow,
    /// Expires
    Expires,
    /// Event / o (RFC 6665)
    Event,
    /// Allow-Events / u (RFC 6665)
    AllowEvents,
    /// Subject / s
    Subject,
    /// Refer-To / r (RFC 3515)
    ReferTo,
    /// Referred-By / b (RFC 3892)
    ReferredBy,
    /// Session-Expires / x (RFC 4028)
    SessionExpires,
    /// Identity / y (RFC 8224)
    Identity,
    /// Reason (RFC 3326)
    Reason,
    /// User-Agent
    UserAgent,
    /// Server
    Server,
    /// Any other header.
    Other,
}

/// `canonical` is the usual spelling: an exact match (one memcmp) is the common fast path.
#[inline]
fn eq(a: &[u8], canonical: &[u8]) -> bool {
    a == canonical || a.eq_ignore_ascii_case(canonical)
}

impl HeaderName {
    /// Recognises a header name, full or compact, case-insensitively.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let Some(&first) = name.first() else {
            return HeaderName::Other;
        };
        let f = first.to_ascii_lowercase();
        match name.len() {
            1 => match f {
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'e' => HeaderName::ContentEncoding,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'f' => HeaderName::From,
                b's' => HeaderName::Subject,
                b'k' => HeaderName::Supported,
                b't' => HeaderName::To,
                b'v' => HeaderName::Via,
                b'o' => HeaderName::Event,
                b'u' => HeaderName::AllowEvents,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'x' => HeaderName::SessionExpires,
                b'y' => HeaderName::Identity,
                _ => HeaderName::Other,
            },
            2 if eq(name, b"To") => HeaderName::To,
            3 if eq(name, b"Via") => HeaderName::Via,
            4 => match f {
                b'f' if eq(name, b"From") => HeaderName::From,
                b'c' if eq(name, b"CSeq") => HeaderName::CSeq,
                _ => HeaderName::Other,
            },
            5 => match f {
                b'r' if eq(name, b"Route") => HeaderName::Route,
                b'a' if eq(name, b"Allow") => HeaderName::Allow,
                b'e' if eq(name, b"Event") => HeaderName::Event,
                _ => HeaderName::Other,
            },
            6 => match f {
                b'r' if eq(name, b"Reason") => HeaderName::Reason,
                b's' if eq(name, b"Server") => HeaderName::Server,
                _ => HeaderName::Other,
            },
            7 => match f {
                b'c' if eq(name, b"Call-ID") => HeaderName::CallId,
                b'c' if eq(name, b"Contact") => HeaderName::Contact,
                b'e' if eq(name, b"Expires") => HeaderName::Expires,
                b'r' if eq(name, b"Require") => HeaderName::Require,
                b's' if eq(name, b"Subject") => HeaderName::Subject,
                _ => HeaderName::Other,
            },
            8 => match f {
                b'i' if eq(name, b"Identity") => HeaderName::Identity,
                b'r' if eq(name, b"Refer-To") => HeaderName::ReferTo,
                _ => HeaderName::Other,
            },
            9 if eq(name, b"Supported") => HeaderName::Supported,
            10 if eq(name, b"User-Agent") => HeaderName::UserAgent,
            11 => match f {
                b'u' if eq(name, b"Unsupported") => HeaderName::Unsupported,
                b'r' if eq(name, b"Referred-By") => HeaderName::ReferredBy,
                _ => HeaderName::Other,
            },
            12 => match f {
                b'm' if eq(name, b"Max-Forwards") => HeaderName::MaxForwards,
                b'r' if eq(name, b"Record-Route") => HeaderName::RecordRoute,
                b'c' if eq(name, b"Content-Type") => HeaderName::ContentType,
                b'a' if eq(name, b"Allow-Events") => HeaderName::AllowEvents,
                _ => HeaderName::Other,
            },
            13 if eq(name, b"Proxy-Require") => HeaderName::ProxyRequire,
            14 if eq(name, b"Content-Length") => HeaderName::ContentLength,
            15 if eq(name, b"Session-Expires") => HeaderName::SessionExpires,
            16 if eq(name, b"Content-Encoding") => HeaderName::ContentEncoding,
            _ => HeaderName::Other,
        }
    }

    /// The canonical full name (`b""` for [`HeaderName::Other`]).
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            HeaderName::Via => b"Via",
            HeaderName::From => b"From",
            HeaderName::To => b"To",
            HeaderName::CallId => b"Call-ID",
            HeaderName::CSeq => b"CSeq",
            HeaderName::MaxForwards => b"Max-Forwards",
            HeaderName::Route => b"Route",
            HeaderName::RecordRoute => b"Record-Route",
            HeaderName::Contact => b"Contact",
            HeaderName::ContentLength => b"Content-Length",
            HeaderName::ContentType => b"Content-Type",
            HeaderName::ContentEncoding => b"Content-Encoding",
            HeaderName::Require => b"Require",
            HeaderName::ProxyRequire => b"Proxy-Require",
            HeaderName::Supported => b"Supported",
            HeaderName::Unsupported => b"Unsupported",
            HeaderName::Allow => b"Allow",
            HeaderName::Expires => b"Expires",
            HeaderName::Event => b"Event",
            HeaderName::AllowEvents => b"Allow-Events",
            HeaderName::Subject => b"Subject",
            HeaderName::ReferTo => b"Refer-To",
            HeaderName::ReferredBy => b"Referred-By",
            HeaderName::SessionExpires => b"Session-Expires",
            HeaderName::Identity => b"Identity",
            HeaderName::Reason => b"Reason",
            HeaderName::UserAgent => b"User-Agent",
            HeaderName::Server => b"Server",
            HeaderName::Other => b"",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip() {
        for m in [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
            Method::Register,
            Method::Prack,
            Method::Update,
            Method::Info,
            Method::Subscribe,
            Method::Notify,
            Method::Refer,
            Method::Message,
            Method::Publish,
        ] {
            assert_eq!(Method::from_bytes(m.as_bytes()), m);
        }
        assert_eq!(Method::from_bytes(b"invite"), Method::Other);
        assert_eq!(Method::from_bytes(b"FOO"), Method::Other);
        assert_eq!(Method::Other.as_bytes(), b"");
    }

    #[test]
    fn compact_forms() {
        let table: &[(&[u8], HeaderName)] = &[
            (b"i", HeaderName::CallId),
            (b"m", HeaderName::Contact),
            (b"e", HeaderName::ContentEncoding),
            (b"l", HeaderName::ContentLength),
            (b"c", HeaderName::ContentType),
            (b"f", HeaderName::From),
            (b"s", HeaderName::Subject),
            (b"k", HeaderName::Supported),
            (b"t", HeaderName::To),
            (b"V", HeaderName::Via),
            (b"o", HeaderName::Event),
            (b"u", HeaderName::AllowEvents),
            (b"r", HeaderName::ReferTo),
            (b"b", HeaderName::ReferredBy),
            (b"x", HeaderName::SessionExpires),
            (b"y", HeaderName::Identity),
            (b"z", HeaderName::Other),
            (b"", HeaderName::Other),
        ];
        for (n, h) in table {
            assert_eq!(
                HeaderName::from_bytes(n),
                *h,
                "{}",
                String::from_utf8_lossy(n)
            );
        }
    }

    #[test]
    fn full_names_case_insensitive_round_trip() {
        let all = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::MaxForwards,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Contact,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::ContentEncoding,
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Supported,
            HeaderName::Unsupported,
            HeaderName::Allow,
            HeaderName::Expires,
            HeaderName::Event,
            HeaderName::AllowEvents,
            HeaderName::Subject,
            HeaderName::ReferTo,
            HeaderName::ReferredBy,
            HeaderName::SessionExpires,
            HeaderName::Identity,
            HeaderName::Reason,
            HeaderName::UserAgent,
            HeaderName::Server,
        ];
        for h in all {
            assert_eq!(HeaderName::from_bytes(h.as_bytes()), h);
            let upper = h.as_bytes().to_ascii_uppercase();
            assert_eq!(HeaderName::from_bytes(&upper), h);
            let lower = h.as_bytes().to_ascii_lowercase();
            assert_eq!(HeaderName::from_bytes(&lower), h);
        }
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call-IDx"), HeaderName::Other);
    }
}
