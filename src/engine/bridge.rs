//! dialog_ng's `dlg_bridge(from, to, op)` / RPC `dlg.bridge_dlg`: the proxy calls `from`
//! itself (INVITE with an on-hold SDP, From = `bridge_controller`), and once answered sends ACK,
//! then REFER (Refer-To `to`), then BYE: the INVITE(hold)-REFER-BYE mechanism, so `from` ends up
//! calling `to`.
//!
//! ## Invariants
//! - Bridge calls belong to the worker that started them; our Via branch (kind `b`) carries the
//!   slot, and our private UDP port brings the responses back to that worker.
//! - Every bridge call ends (its slot is freed) on the BYE's final reply, on a failed INVITE,
//!   on a BYE from the peer, or after [`BRIDGE_TIMEOUT`] at the latest.
//! - Requests from the peer to our Contact (NOTIFY for the REFER, BYE) get 200.

use std::net::SocketAddr;

use super::forward::uri_target;
use super::timers::TimerItem;
use super::{Engine, Inbound, Output};
use crate::dialog::Socket;
use crate::txn::branch::{Branch, Kind};
use crate::wire::{self, Message, Method};

/// A bridge call gives up after this long (ms).
pub const BRIDGE_TIMEOUT: u64 = 64_000;

/// User part of the Contact of bridge calls (requests to it are answered by the proxy).
pub(crate) const BRIDGE_USER: &str = "sipedge-bridge";

/// Where a bridge call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeState {
    /// INVITE sent, waiting for the answer.
    Inviting,
    /// REFER sent, waiting for its reply.
    Referring,
    /// BYE sent, waiting for its reply.
    Ending,
}

/// One call the proxy originates to bridge two parties.
#[derive(Debug)]
pub struct BridgeCall {
    /// Slot generation.
    pub generation: u32,
    /// Where it is.
    pub state: BridgeState,
    /// Call-ID.
    pub call_id: String,
    /// Our From-tag.
    pub from_tag: String,
    /// The peer's To-tag (from its 2xx).
    pub to_tag: String,
    /// The party called first (`from`).
    pub target_uri: String,
    /// The address it is referred to (`to`).
    pub refer_to: String,
    /// Remote target from the 2xx Contact (requests within the call go there).
    pub remote: String,
    /// Where requests are sent.
    pub dst: Socket,
    /// The INVITE as sent (for the ACK of a negative reply).
    pub invite: Vec<u8>,
}

/// Why a bridge could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// `from` or `op` is not a SIP URI with an IP host.
    #[error("{0}: expected a sip: URI with an IP address (DNS is not supported)")]
    BadUri(String),
}

impl Engine {
    /// Start a bridge call: INVITE `from` (through `op` when given) with an on-hold SDP.
    pub fn start_bridge(
        &mut self,
        now: u64,
        from: &str,
        to: &str,
        op: Option<&str>,
        out: &mut Output,
    ) -> Result<(), BridgeError> {
        let first_hop = op.unwrap_or(from);
        let (addr, transport) =
            uri_target(first_hop.as_bytes()).map_err(|_| BridgeError::BadUri(first_hop.into()))?;
        wire::parse_uri(from.as_bytes()).map_err(|_| BridgeError::BadUri(from.into()))?;
        let local = self.listener_for(transport, addr);
        let dst = Socket {
            addr,
            transport,
            local,
            conn: None,
        };
        let salt = self.next_rand();
        let call_id = format!("{salt:016x}-bridge@sipedge");
        let from_tag = format!("{:08x}", salt as u32 ^ 0x5eed);
        let slot = match self.bridges.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.bridges.push(None);
                self.bridges.len() - 1
            }
        };
        self.bridge_gen = self.bridge_gen.wrapping_add(1);
        let mut call = BridgeCall {
            generation: self.bridge_gen,
            state: BridgeState::Inviting,
            call_id,
            from_tag,
            to_tag: String::new(),
            target_uri: from.to_string(),
            refer_to: to.to_string(),
            remote: from.to_string(),
            dst,
            invite: Vec::new(),
        };
        let ip = self
            .shared
            .locals
            .get(local)
            .map(|l| l.addr.ip())
            .unwrap_or(addr.ip());
        let sdp = format!(
            "v=0\r\no=sipedge 0 0 IN {fam} {ip}\r\ns=bridge\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
             m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n",
            fam = if ip.is_ipv4() { "IP4" } else { "IP6" }
        );
        let start = out.buf.len();
        self.bridge_request(
            &call,
            slot,
            b"INVITE",
            1,
            b"application/sdp",
            sdp.as_bytes(),
            b"",
            out,
        );
        call.invite = out.buf.get(start..).unwrap_or(&[]).to_vec();
        let generation = call.generation;
        if let Some(s) = self.bridges.get_mut(slot) {
            *s = Some(call);
        }
        self.wheel.insert(
            now + BRIDGE_TIMEOUT,
            TimerItem::Bridge {
                slot: slot as u32,
                generation,
            },
        );
        Ok(())
    }

    /// Build and queue one request of bridge call `slot`.
    #[allow(clippy::too_many_arguments)]
    fn bridge_request(
        &mut self,
        call: &BridgeCall,
        slot: usize,
        method: &[u8],
        cseq: u32,
        content_type: &[u8],
        body: &[u8],
        extra: &[u8],
        out: &mut Output,
    ) {
        let br = Branch {
            kind: Kind::Bridge,
            worker: self.worker as u16,
            cookie: b"br",
            slot: slot as u32,
            leg: 0,
            hash: self.next_rand() as u32,
        };
        let mut via = Vec::with_capacity(128);
        self.write_via(call.dst.local, &br, &mut via);
        let controller = self.shared.settings.load().bridge_controller.clone();
        let hostport = self
            .shared
            .locals
            .get(call.dst.local)
            .map(|l| l.hostport.clone())
            .unwrap_or_default();
        let from = format!("<{controller}>;tag={}", call.from_tag);
        let to = if call.to_tag.is_empty() {
            format!("<{}>", call.target_uri)
        } else {
            format!("<{}>;tag={}", call.target_uri, call.to_tag)
        };
        let mut headers = format!("Contact: <sip:{BRIDGE_USER}@{hostport}>\r\n").into_bytes();
        headers.extend_from_slice(extra);
        let ruri = if method == b"INVITE" {
            call.target_uri.as_bytes()
        } else {
            call.remote.as_bytes()
        };
        let req = wire::build::InDialog {
            method,
            ruri,
            route_set: &[],
            via: &via,
            from: from.as_bytes(),
            to: to.as_bytes(),
            call_id: call.call_id.as_bytes(),
            cseq,
            max_forwards: 70,
            extra_headers: &headers,
            content_type: (!content_type.is_empty()).then_some(content_type),
            body,
        };
        let start = out.buf.len();
        wire::build::in_dialog_request(&req, &mut out.buf);
        out.push_from(
            start,
            call.dst.addr,
            call.dst.transport,
            call.dst.local,
            None,
        );
    }

    /// A response to one of our bridge requests.
    pub(crate) fn on_bridge_response(&mut self, msg: &Message<'_>, slot: u32, out: &mut Output) {
        let i = slot as usize;
        let Some(mut call) = self.bridges.get_mut(i).and_then(Option::take) else {
            return;
        };
        let code = msg.code().unwrap_or(0);
        let method = msg.cseq().map(|c| c.method).unwrap_or(Method::Other);
        let keep = match (call.state, method, code) {
            (_, _, 100..=199) => true,
            (_, Method::Invite, 200..=299) => {
                // Answer (or a retransmitted one): ACK it; the first one moves on to REFER.
                if call.to_tag.is_empty() {
                    call.to_tag = msg
                        .to()
                        .and_then(|t| t.tag())
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    if let Some(c) = msg.contacts().next() {
                        call.remote = String::from_utf8_lossy(c.uri).into_owned();
                    }
                    if let Ok(u) = wire::parse_uri(call.remote.as_bytes())
                        && let Some(ip) = u.host_ip()
                    {
                        call.dst.addr = SocketAddr::new(ip, u.port.unwrap_or(5060));
                    }
                }
                self.bridge_request(&call, i, b"ACK", 1, b"", b"", b"", out);
                if call.state == BridgeState::Inviting {
                    let controller = self.shared.settings.load().bridge_controller.clone();
                    let extra = format!(
                        "Refer-To: <{}>\r\nReferred-By: <{controller}>\r\n",
                        call.refer_to
                    );
                    self.bridge_request(&call, i, b"REFER", 2, b"", b"", extra.as_bytes(), out);
                    call.state = BridgeState::Referring;
                }
                true
            }
            (BridgeState::Inviting, Method::Invite, _) => {
                // Refused: ACK the final reply, and the bridge is over.
                if let Ok(inv) = wire::parse(&call.invite) {
                    let start = out.buf.len();
                    if wire::build::ack_for_non2xx(&inv, msg, &mut out.buf).is_ok() {
                        out.push_from(
                            start,
                            call.dst.addr,
                            call.dst.transport,
                            call.dst.local,
                            None,
                        );
                    } else {
                        out.buf.truncate(start);
                    }
                }
                false
            }
            (BridgeState::Referring, Method::Refer, _) => {
                self.bridge_request(&call, i, b"BYE", 3, b"", b"", b"", out);
                call.state = BridgeState::Ending;
                true
            }
            (BridgeState::Ending, Method::Bye, _) => false,
            _ => true,
        };
        if keep && let Some(s) = self.bridges.get_mut(i) {
            *s = Some(call);
        }
    }

    /// A request to our bridge Contact (NOTIFY about the REFER, BYE): 200, and a BYE ends the
    /// bridge call. True when it was one.
    pub(crate) fn on_bridge_request(
        &mut self,
        inb: &Inbound<'_>,
        msg: &Message<'_>,
        out: &mut Output,
    ) -> bool {
        let is_bridge_uri = msg
            .request_uri()
            .and_then(|u| wire::parse_uri(u).ok())
            .and_then(|u| u.user)
            .is_some_and(|u| u == BRIDGE_USER.as_bytes());
        if !is_bridge_uri {
            return false;
        }
        // Bridge calls are started on worker 0 (see `Shared::dlg_bridge`).
        if self.worker != 0 {
            out.handoff = Some(0);
            return true;
        }
        let call_id = msg.call_id().unwrap_or(&[]);
        let pos = self
            .bridges
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.call_id.as_bytes() == call_id));
        if msg.method() == Some(Method::Ack) {
            return true;
        }
        match pos {
            Some(i) => {
                self.reply(inb, msg, 200, b"OK", None, &[], out);
                if msg.method() == Some(Method::Bye)
                    && let Some(s) = self.bridges.get_mut(i)
                {
                    *s = None;
                }
            }
            None => self.reply(
                inb,
                msg,
                481,
                b"Call/Transaction Does Not Exist",
                None,
                &[],
                out,
            ),
        }
        true
    }

    /// The bridge call in `slot` timed out.
    pub(crate) fn on_bridge_timeout(&mut self, slot: u32, generation: u32) {
        if let Some(s) = self.bridges.get_mut(slot as usize)
            && s.as_ref().is_some_and(|b| b.generation == generation)
        {
            *s = None;
        }
    }

    /// Bridge calls in progress on this worker.
    pub fn bridges_active(&self) -> usize {
        self.bridges.iter().filter(|b| b.is_some()).count()
    }
}

impl super::Shared {
    /// `dlg_bridge(from, to, op)` from any thread: worker 0 calls `from` and refers it to `to`.
    /// False when the queue is unavailable; URI errors are logged by the worker.
    pub fn dlg_bridge(&self, from: &str, to: &str, op: Option<&str>) -> bool {
        self.send(
            0,
            super::Command::Bridge {
                from: from.to_string(),
                to: to.to_string(),
                op: op.map(str::to_string),
            },
        )
    }
}
