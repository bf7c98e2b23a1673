//! The user agents around the proxy: loadgen's sans-IO UACs and UASes, one per host address.
//!
//! Invariants:
//! - A host only acts through its state machine: datagrams in through `handle`, timers
//!   through `handle_timeout`, and everything it sends leaves through the network.
//! - A vanished host does nothing from its vanishing time on: it receives nothing (the
//!   network blackholes it), runs no timers and sends nothing. Its state is frozen, so it is
//!   exempt from the half-open check.
//! - UAS hosts keep unanswered and confirmed calls for `UAS_MAX_CALL_US`, far beyond any run,
//!   so a call the proxy never ends stays visible instead of being forgotten by the UAS.

use std::net::SocketAddr;

use loadgen::outbox::Outbox;
use loadgen::uac::{Uac, UacConfig};
use loadgen::uas::{Uas, UasConfig};

use crate::net::Net;
use crate::rng::SimRng;

/// How long a UAS keeps an early or confirmed call, µs (~28 h of virtual time).
pub const UAS_MAX_CALL_US: u64 = 100_000_000_000;
/// How long a UAS keeps an ended call to absorb retransmissions, µs.
pub const UAS_LINGER_US: u64 = 5_000_000;
/// The UAC's INVITE timeout (Timer B), µs.
pub const UAC_INVITE_TIMEOUT_US: u64 = 32_000_000;

/// The state machine of a host.
pub enum Agent {
    /// Originates calls.
    Uac(Box<Uac>),
    /// Answers calls.
    Uas(Box<Uas>),
}

/// One host.
pub struct Host {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state machine.
    pub agent: Agent,
    /// When it vanishes, if it does (µs).
    pub vanish_at: Option<u64>,
}

impl Host {
    /// A UAC on `addr` sending every call to `proxy` with Request-URI `ruri`.
    pub fn uac(addr: SocketAddr, proxy: SocketAddr, ruri: String, run_tag: u32) -> Host {
        let mut uac = Uac::new(UacConfig {
            target: proxy,
            ruri,
            local: vec![addr],
            invite_timeout_us: UAC_INVITE_TIMEOUT_US,
            max_concurrent: 1 << 20,
            run_tag,
            reliable: false,
        });
        uac.log_outcomes(true);
        Host {
            addr,
            agent: Agent::Uac(Box::new(uac)),
            vanish_at: None,
        }
    }

    /// A UAS on `addr`, hanging up `nobye` calls after `hang_up_us` if set; `instance` makes
    /// its To-tags differ from the other UASes' (two forks of one call must not answer with
    /// the same tag).
    pub fn uas(addr: SocketAddr, send_100: bool, hang_up_us: Option<u64>, instance: u32) -> Host {
        let mut uas = Uas::new(UasConfig {
            local: vec![addr],
            send_100,
            fork_legs: 3,
            linger_us: UAS_LINGER_US,
            max_call_us: UAS_MAX_CALL_US,
            reliable: false,
        });
        uas.set_tag_salt((instance + 1) << 24);
        uas.hang_up_nobye_after(hang_up_us);
        Host {
            addr,
            agent: Agent::Uas(Box::new(uas)),
            vanish_at: None,
        }
    }

    /// Whether it has vanished by `now`.
    pub fn vanished(&self, now: u64) -> bool {
        self.vanish_at.is_some_and(|at| now >= at)
    }

    /// When it next has timer work (µs); none once vanished.
    pub fn next_at(&self, now: u64) -> Option<u64> {
        if self.vanished(now) {
            return None;
        }
        let t = match &self.agent {
            Agent::Uac(u) => u.poll_timeout(),
            Agent::Uas(u) => u.poll_timeout(),
        }?;
        // A host that vanishes before its timer never runs it.
        match self.vanish_at {
            Some(v) if t >= v => None,
            _ => Some(t),
        }
    }

    /// A datagram arrives.
    pub fn receive(&mut self, now: u64, src: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        if self.vanished(now) {
            return;
        }
        match &mut self.agent {
            Agent::Uac(u) => u.handle(now, 0, src, bytes, out),
            Agent::Uas(u) => u.handle(now, 0, src, bytes, out),
        }
    }

    /// Run its due timers.
    pub fn timeout(&mut self, now: u64, out: &mut Outbox) {
        if self.vanished(now) {
            return;
        }
        match &mut self.agent {
            Agent::Uac(u) => u.handle_timeout(now, out),
            Agent::Uas(u) => u.handle_timeout(now, out),
        }
    }

    /// Hand what the host produced to the network and empty `out`.
    pub fn flush(&self, now: u64, rng: &mut SimRng, net: &mut Net, out: &mut Outbox) {
        for t in &out.items {
            net.send(now, rng, self.addr, t.dst, out.bytes(t));
        }
        out.clear();
    }

    /// The UAC, if this is one.
    pub fn as_uac(&mut self) -> Option<&mut Uac> {
        match &mut self.agent {
            Agent::Uac(u) => Some(u),
            Agent::Uas(_) => None,
        }
    }
}
