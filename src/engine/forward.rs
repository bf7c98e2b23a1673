//! Forwarding helpers: where a request goes next (Route, then R-URI), where a response goes
//! back (Via, RFC 3581), our Via and Record-Route values, and locally generated replies.
//!
//! Invariants: no DNS (RFC 3263 is not implemented): a next hop must be an IP literal, else
//! the request gets 503; nothing here allocates once the output buffers are warm.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::{Engine, Inbound, Output, parse_ip};
use crate::dialog::Socket;
use crate::stats::Counter;
use crate::txn::branch::{self, Branch};
use crate::wire::{self, Edits, Message, Transport, Via};

/// Why a next hop could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HopError {
    /// The URI is malformed (400).
    BadUri,
    /// The host is a name and we do not resolve names (503).
    NeedsDns,
    /// The URI points at us and there is nowhere else to go (404).
    Ours,
}

/// Resolve a SIP URI to a socket address: maddr, then host; port default 5060.
pub(crate) fn uri_target(uri: &[u8]) -> Result<(SocketAddr, Transport), HopError> {
    let u = wire::parse_uri(uri).map_err(|_| HopError::BadUri)?;
    uri_target_parsed(&u)
}

/// [`uri_target`] for a URI already parsed.
pub(crate) fn uri_target_parsed(u: &wire::Uri<'_>) -> Result<(SocketAddr, Transport), HopError> {
    let transport = u
        .transport()
        .and_then(Transport::from_token)
        .unwrap_or(Transport::Udp);
    let host = u.maddr().unwrap_or(u.host);
    let ip = parse_ip(host).ok_or(HopError::NeedsDns)?;
    Ok((SocketAddr::new(ip, u.port.unwrap_or(5060)), transport))
}

/// Where to send a response: RFC 3261 §18.2.2 with RFC 3581 (`received`, `rport`).
pub(crate) fn via_target(v: &Via<'_>) -> Option<SocketAddr> {
    let ip: IpAddr = match v.received().and_then(parse_ip) {
        Some(ip) => ip,
        None => v.host_ip()?,
    };
    let port = match v.rport() {
        Some(Some(p)) => p,
        _ => v.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// Is this sent-by a broadcast address (never answered)?
pub(crate) fn is_broadcast(v: &Via<'_>) -> bool {
    matches!(v.host_ip(), Some(IpAddr::V4(ip)) if ip.is_broadcast())
}

impl Engine {
    /// Listener to send from for `transport`, near `dst`'s family.
    pub(crate) fn listener_for(&self, transport: Transport, dst: SocketAddr) -> usize {
        self.shared
            .locals
            .for_transport(transport, Some(dst))
            .or_else(|| self.shared.locals.for_transport(Transport::Udp, Some(dst)))
            .unwrap_or(0)
    }

    /// Our Via value for a request leaving on listener `local` with `branch`.
    pub(crate) fn write_via(&self, local: usize, br: &Branch<'_>, into: &mut Vec<u8>) {
        let b = branch::write(br);
        if let Some(l) = self.shared.locals.get(local) {
            into.extend_from_slice(b"SIP/2.0/");
            into.extend_from_slice(l.transport.via_token());
            into.push(b' ');
            match self.shared.locals.private_port(self.worker, local) {
                // UDP requests leave from this worker's private socket: responses return here.
                Some(p) if l.transport == Transport::Udp => {
                    into.extend_from_slice(l.host.as_bytes());
                    into.push(b':');
                    push_u16(into, p);
                }
                _ => into.extend_from_slice(l.hostport.as_bytes()),
            }
        }
        into.extend_from_slice(b";branch=");
        into.extend_from_slice(b.as_bytes());
        into.extend_from_slice(b";rport");
    }

    /// Our Record-Route value for listener `local`, with the dialog cookie when tracked.
    pub(crate) fn write_rr(&self, local: usize, cookie: Option<&[u8]>, into: &mut Vec<u8>) {
        if let Some(l) = self.shared.locals.get(local) {
            into.extend_from_slice(b"<sip:");
            into.extend_from_slice(l.hostport.as_bytes());
            if l.transport == Transport::Tcp {
                into.extend_from_slice(b";transport=tcp");
            }
            into.extend_from_slice(b";lr");
            if let Some(c) = cookie {
                let s = self.shared.settings.load();
                into.push(b';');
                into.extend_from_slice(s.rr_param.as_bytes());
                into.push(b'=');
                into.extend_from_slice(c);
            }
            into.push(b'>');
        }
    }

    /// Send a locally generated reply to `req` back to where it came from.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reply(
        &self,
        inb: &Inbound<'_>,
        req: &Message<'_>,
        code: u16,
        reason: &[u8],
        to_tag: Option<&[u8]>,
        extra: &[(&[u8], &[u8])],
        out: &mut Output,
    ) {
        let start = out.buf.len();
        wire::build::response(req, code, reason, to_tag, extra, &mut out.buf);
        // Responses go to the top Via (received/rport) for UDP, back on the connection for TCP.
        let dst = match inb.transport {
            Transport::Tcp => inb.src,
            Transport::Udp => match req.top_via() {
                // RFC 3581: with rport, answer to the source address and port.
                Some(v) if v.rport().is_some() => inb.src,
                Some(v) => SocketAddr::new(inb.src.ip(), v.port.unwrap_or(5060)),
                None => inb.src,
            },
        };
        out.push_from(start, dst, inb.transport, inb.local, inb.conn);
        self.stats.inc_reply(code);
    }

    /// Apply the common request edits (received/rport, Max-Forwards, our Via) and write the
    /// result to `out` as one transmit. Returns the transmit's byte range.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_request(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        edits: &mut Edits<'_, '_>,
        br: &Branch<'_>,
        to: Socket,
        rr: RecordRoute<'_>,
        out: &mut Output,
    ) -> Option<(usize, usize)> {
        // RFC 3581 / 18.2.1: received when the sent-by differs from the source, rport filled.
        let mut ipbuf = [0u8; 64];
        let recv = received_text(inb, msg, &mut ipbuf);
        let rport = msg
            .top_via()
            .and_then(|v| v.rport())
            .map(|_| inb.src.port());
        if (recv.is_some() || rport.is_some()) && edits.set_received_rport(recv, rport).is_err() {
            return None;
        }
        if edits.decrement_max_forwards().is_err() {
            return None;
        }
        self.scratch2.clear();
        let local = self.listener_for(to.transport, to.addr);
        let mut via = std::mem::take(&mut self.scratch2);
        self.write_via(local, br, &mut via);
        let ok = edits.insert_via(&via).is_ok();
        self.scratch2 = via;
        if !ok {
            return None;
        }
        if let RecordRoute::Add(cookie) = rr {
            let mut v = std::mem::take(&mut self.scratch2);
            v.clear();
            // Facing downstream first (top), then facing upstream when the interface changes.
            self.write_rr(local, cookie, &mut v);
            let mut ok = edits.insert_record_route(&v).is_ok();
            if local != inb.local {
                v.clear();
                self.write_rr(inb.local, cookie, &mut v);
                ok &= edits.insert_record_route(&v).is_ok();
            }
            self.scratch2 = v;
            if !ok {
                return None;
            }
        }
        let start = out.buf.len();
        if edits.write(&mut out.buf).is_err() {
            out.buf.truncate(start);
            return None;
        }
        let end = out.buf.len();
        out.push_from(start, to.addr, to.transport, local, None);
        self.stats.inc(Counter::Forwarded);
        Some((start, end))
    }
}

/// Whether to add Record-Route.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RecordRoute<'a> {
    /// No.
    No,
    /// Yes, with the dialog cookie when tracked.
    Add(Option<&'a [u8]>),
}

/// The `received` value for the top Via when its sent-by differs from the packet source.
fn received_text<'b>(
    inb: &Inbound<'_>,
    msg: &Message<'_>,
    buf: &'b mut [u8; 64],
) -> Option<&'b [u8]> {
    let v = msg.top_via()?;
    if v.host_ip() == Some(inb.src.ip()) {
        return None;
    }
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    write!(cur, "{}", inb.src.ip()).ok()?;
    let n = cur.position() as usize;
    buf.get(..n)
}

/// Decimal digits of `v`, without allocating.
fn push_u16(into: &mut Vec<u8>, v: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        if let Some(b) = buf.get_mut(i) {
            *b = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    into.extend_from_slice(buf.get(i..).unwrap_or(&[]));
}
