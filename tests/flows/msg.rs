//! Test-side SIP message helpers: a sent message as text with simple header accessors, and
//! UAC/UAS builders that copy what a real user agent would copy (Via/From/To/Call-ID/CSeq and
//! Record-Route for responses; Route from Record-Route for in-dialog requests).
//!
//! Invariant: built messages are plain `format!` text with CRLF line ends and a correct
//! Content-Length of 0; nothing here depends on engine internals.

use std::net::SocketAddr;

/// One message the proxy sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Destination.
    pub dst: SocketAddr,
    /// Full text.
    pub text: String,
}

fn compact(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        _ => return None,
    })
}

impl Sent {
    /// First line.
    pub fn first(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
    /// Is it a request with this method?
    pub fn is(&self, method: &str) -> bool {
        self.first().starts_with(&format!("{method} "))
    }
    /// Response code (0 for requests).
    pub fn code(&self) -> u16 {
        let f = self.first();
        if !f.starts_with("SIP/2.0 ") {
            return 0;
        }
        f.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
    /// Is it a response with this code to a request with this CSeq method?
    pub fn is_resp(&self, code: u16, method: &str) -> bool {
        self.code() == code && self.cseq_method() == method
    }
    /// Request-URI.
    pub fn ruri(&self) -> &str {
        self.first().split(' ').nth(1).unwrap_or("")
    }
    /// Every value of header `name` (full or compact form), one per line, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        let c = compact(name);
        let mut v = Vec::new();
        for line in self.text.split("\r\n").skip(1) {
            if line.is_empty() {
                break;
            }
            let Some((n, val)) = line.split_once(':') else {
                continue;
            };
            let n = n.trim();
            if n.eq_ignore_ascii_case(name) || c.is_some_and(|c| n.eq_ignore_ascii_case(c)) {
                v.push(val.trim().to_string());
            }
        }
        v
    }
    /// First value of header `name`.
    pub fn hdr(&self, name: &str) -> String {
        self.all(name).into_iter().next().unwrap_or_default()
    }
    /// Has header `name`.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
    /// CSeq method.
    pub fn cseq_method(&self) -> String {
        self.hdr("CSeq")
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    }
    /// CSeq number.
    pub fn cseq_num(&self) -> u32 {
        self.hdr("CSeq")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
    /// Tag of the To header.
    pub fn to_tag(&self) -> Option<String> {
        tag_of(&self.hdr("To"))
    }
    /// Branch of the top Via.
    pub fn top_branch(&self) -> String {
        param(&self.hdr("Via"), "branch").unwrap_or_default()
    }
    /// URI inside `<...>` of the first Contact.
    pub fn contact_uri(&self) -> String {
        uri_of(&self.hdr("Contact"))
    }
    /// Record-Route entries (comma-separated values split), in order.
    pub fn record_routes(&self) -> Vec<String> {
        self.all("Record-Route")
            .iter()
            .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
            .collect()
    }
}

/// `;tag=` of a From/To value.
pub fn tag_of(v: &str) -> Option<String> {
    param(v, "tag")
}

/// A `;name=value` parameter (outside `<>`).
pub fn param(v: &str, name: &str) -> Option<String> {
    let after = v.rsplit_once('>').map(|(_, a)| a).unwrap_or(v);
    after.split(';').skip(1).find_map(|p| {
        let (k, val) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().to_string())
    })
}

/// The URI inside `<...>`, or the value itself.
pub fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if b > a => v[a + 1..b].to_string(),
        _ => v.to_string(),
    }
}

/// An initial INVITE from the UAC at `src` (`host:port`) to `ruri`.
pub fn invite(call: &str, ftag: &str, branch: &str, ruri: &str) -> String {
    invite_ex(call, ftag, branch, ruri, "")
}

/// An initial INVITE with extra header lines (each ending in CRLF).
pub fn invite_ex(call: &str, ftag: &str, branch: &str, ruri: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@10.0.0.1>;tag={ftag}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@10.0.0.1:5060>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// A CANCEL for the INVITE text `inv` (same Via branch, R-URI, From, To, Call-ID).
pub fn cancel_for(inv: &str) -> String {
    let s = Sent {
        dst: super::sa(super::UAC),
        text: inv.to_string(),
    };
    format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
        s.ruri(),
        s.hdr("Via"),
        s.hdr("From"),
        s.hdr("To"),
        s.hdr("Call-ID"),
        s.cseq_num()
    )
}

/// The UAS's response to a request it received (`req` as the proxy sent it): copies every Via,
/// From, To (adding `to_tag`), Call-ID, CSeq and Record-Route; adds a Contact at `contact`.
pub fn reply(req: &Sent, code: u16, reason: &str, to_tag: Option<&str>, contact: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.all("Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", req.hdr("From")));
    let to = req.hdr("To");
    match to_tag {
        Some(t) if tag_of(&to).is_none() => s.push_str(&format!("To: {to};tag={t}\r\n")),
        _ => s.push_str(&format!("To: {to}\r\n")),
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.hdr("Call-ID")));
    s.push_str(&format!("CSeq: {}\r\n", req.hdr("CSeq")));
    if code > 100 && code < 300 {
        for rr in req.all("Record-Route") {
            s.push_str(&format!("Record-Route: {rr}\r\n"));
        }
        if !contact.is_empty() {
            s.push_str(&format!("Contact: <sip:bob@{contact}>\r\n"));
        }
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// A request the caller sends within the dialog set up by `ok` (the 2xx as the caller got it):
/// R-URI = 2xx Contact, Route = 2xx Record-Route in order.
pub fn caller_req(ok: &Sent, method: &str, cseq: u32, branch: &str) -> String {
    let cm = if method == "ACK" { "ACK" } else { method };
    let mut s = format!("{method} {} SIP/2.0\r\n", ok.contact_uri());
    s.push_str(&format!(
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
    ));
    for r in ok.record_routes() {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    s.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {cm}\r\nContact: <sip:alice@10.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n",
        ok.hdr("From"),
        ok.hdr("To"),
        ok.hdr("Call-ID")
    ));
    s
}

/// A request the callee (at `uas`) sends within the dialog: `inv` is the INVITE as the callee
/// got it, `to_tag` the tag it answered with. R-URI = INVITE Contact, Route = Record-Route
/// reversed.
pub fn callee_req(
    inv: &Sent,
    to_tag: &str,
    method: &str,
    cseq: u32,
    uas: &str,
    branch: &str,
) -> String {
    let mut s = format!("{method} {} SIP/2.0\r\n", inv.contact_uri());
    s.push_str(&format!(
        "Via: SIP/2.0/UDP {uas};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
    ));
    for r in inv.record_routes().iter().rev() {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    s.push_str(&format!(
        "From: {};tag={to_tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:bob@{uas}>\r\nContent-Length: 0\r\n\r\n",
        inv.hdr("To"),
        inv.hdr("From"),
        inv.hdr("Call-ID")
    ));
    s
}

/// A generic request for tests of validation (full control over the text).
pub fn raw_request(method: &str, ruri: &str, call: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKraw{call}\r\n\
         From: <sip:alice@10.0.0.1>;tag=ft{call}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}
