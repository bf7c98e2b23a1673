//! Flood control (Kamailio's `pike` and `ratelimit`): a per-source rate with bans, global and
//! per-method rate pipes, and keyed rates for policy (per-profile call rates).
//!
//! Owns [`FloodParams`] (what the `[flood]` config asks, rebuilt on reload), [`FloodState`]
//! (the shared, lock-free tables that live as long as the process) and [`Gate`], the verdict
//! for one out-of-dialog request.
//!
//! ## Invariants
//! - Sans-IO: the caller passes `now`; nothing here reads a clock or logs.
//! - The packet path ([`FloodState::gate`], [`FloodState::banned`]) takes no lock, allocates
//!   nothing and cannot panic. With no ban in force, [`FloodState::banned`] is one atomic load.
//! - Trusted sources (`[flood] trusted`, loopback by default) are never counted per source nor
//!   banned; the pipes count everyone.
//! - A banned source is refused before any pipe counts it, so a flood cannot use up the share
//!   of legitimate callers.
//! - State is freed by time: a source's slot is reusable once its bucket is full again and its
//!   ban is over (see [`table`]); the tables have a fixed size.

pub mod gcra;
pub mod table;

use std::net::IpAddr;

use ipnet::IpNet;

pub use gcra::{Gcra, Rate};
pub use table::{Check, KeyedTable};

/// What happens to a request that is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    /// Drop it silently (the default: a reply would help a scanner and cost CPU).
    #[default]
    Drop,
    /// Answer 503 with Retry-After.
    Reply,
}

/// A global (`method: None`) or per-method rate pipe.
#[derive(Debug)]
pub struct Pipe {
    /// Method it counts (upper case), or every out-of-dialog request.
    pub method: Option<Box<[u8]>>,
    /// Its rate.
    pub rate: Rate,
    /// Its cell (starts over on reload).
    pub cell: Gcra,
}

/// The `[flood]` section, ready for the packet path.
#[derive(Debug, Default)]
pub struct FloodParams {
    /// Master switch.
    pub enabled: bool,
    /// Per-source rate of out-of-dialog requests (`None` = not limited).
    pub source: Option<Rate>,
    /// Ban length in ms (0 = refuse over-rate requests, but do not ban).
    pub ban_ms: u64,
    /// What to do with refused requests.
    pub action: Action,
    /// Sources never counted nor banned.
    pub trusted: Vec<IpNet>,
    /// Rate pipes, in config order.
    pub pipes: Vec<Pipe>,
}

impl FloodParams {
    /// Whether `ip` is trusted.
    #[inline]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is banned.
    Banned,
    /// Its source went over `per_source_rps`.
    SourceRate {
        /// This request started a ban (log it once).
        new_ban: bool,
    },
    /// A pipe is over its rate.
    Pipe,
}

/// The verdict for one out-of-dialog request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Let it through.
    Pass,
    /// Let it through; its source could not be counted (table crowded).
    PassUntracked,
    /// Refuse it.
    Refuse(Refusal),
}

/// Shared flood-control state: per-source cells and bans, and keyed rates for policy.
#[derive(Debug)]
pub struct FloodState {
    sources: KeyedTable,
    keyed: KeyedTable,
}

/// Slots of the per-source table by default (40 B each: 2.5 MiB).
pub const SOURCE_SLOTS: usize = 65_536;
/// Slots of the policy keyed-rate table (per-profile call rates).
pub const KEYED_SLOTS: usize = 16_384;

impl Default for FloodState {
    fn default() -> Self {
        FloodState::new(SOURCE_SLOTS, KEYED_SLOTS)
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
#[inline]
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The table key of an address (IPv4 as its IPv4-mapped IPv6 form).
#[inline]
fn key_of(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A 128-bit key for a sequence of byte strings (e.g. a profile name and its value), for
/// [`FloodState::keyed_admit`]: two 64-bit [`crate::hash::hash64`] with different seeds, the
/// parts separated so `("ab", "c")` and `("a", "bc")` differ.
pub fn key_of_bytes(parts: &[&[u8]]) -> u128 {
    let a = crate::hash::hash64(0x6c62_272e_07bb_0142, parts);
    let b = crate::hash::hash64(0xcbf2_9ce4_8422_2325, parts);
    u128::from(a) << 64 | u128::from(b)
}

/// The address of a table key.
fn ip_of(key: u128) -> IpAddr {
    canonical(IpAddr::V6(key.into()))
}

impl FloodState {
    /// Tables of the given sizes (rounded up to powers of two).
    pub fn new(source_slots: usize, keyed_slots: usize) -> FloodState {
        FloodState {
            sources: KeyedTable::new(source_slots),
            keyed: KeyedTable::new(keyed_slots),
        }
    }

    /// Whether `ip` is banned at `now_ms` (one atomic load while no ban is in force).
    #[inline]
    pub fn banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.sources.banned(key_of(ip), now_ms)
    }

    /// The verdict for an out-of-dialog request with method `method` from `ip` at `now_us`.
    /// Order: ban, per-source rate (which may start a ban), then the pipes.
    #[inline]
    pub fn gate(&self, p: &FloodParams, ip: IpAddr, method: &[u8], now_us: u64) -> Gate {
        if !p.enabled {
            return Gate::Pass;
        }
        let now_ms = now_us / 1000;
        let mut verdict = Gate::Pass;
        if !p.is_trusted(ip) {
            let key = key_of(ip);
            if self.sources.banned(key, now_ms) {
                return Gate::Refuse(Refusal::Banned);
            }
            if let Some(rate) = &p.source {
                match self.sources.check(key, rate, now_us) {
                    Check::Admit => {}
                    Check::Untracked => verdict = Gate::PassUntracked,
                    Check::Over => {
                        let new_ban = p.ban_ms > 0
                            && self
                                .sources
                                .ban(key, now_ms, now_ms.saturating_add(p.ban_ms));
                        return Gate::Refuse(Refusal::SourceRate { new_ban });
                    }
                }
            }
        }
        for pipe in &p.pipes {
            let applies = pipe.method.as_deref().is_none_or(|m| m == method);
            if applies && !pipe.cell.admit(&pipe.rate, now_us) {
                return Gate::Refuse(Refusal::Pipe);
            }
        }
        verdict
    }

    /// Banned sources at `now_ms`, with seconds left (management).
    pub fn bans(&self, now_ms: u64) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<_> = self
            .sources
            .bans(now_ms)
            .into_iter()
            .map(|(k, until)| (ip_of(k), (until - now_ms).div_ceil(1000)))
            .collect();
        v.sort();
        v
    }

    /// Lift the ban of `ip`; `true` if it was banned (management).
    pub fn unban(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.sources.unban(key_of(ip), now_ms)
    }

    /// Count one event of `key` (e.g. a hash of a profile and its value) against `rate`.
    /// Crowded-out keys are admitted.
    #[inline]
    pub fn keyed_admit(&self, key: u128, rate: &Rate, now_us: u64) -> bool {
        self.keyed.check(key, rate, now_us) != Check::Over
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    fn params(rps: u32, burst: u32) -> FloodParams {
        FloodParams {
            enabled: true,
            source: Rate::new(rps, burst),
            ban_ms: 60_000,
            action: Action::Drop,
            trusted: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            pipes: Vec::new(),
        }
    }

    const NOW: u64 = 1_000_000_000;

    #[test]
    fn a_scanner_is_banned_once_and_a_trusted_source_never() {
        let f = FloodState::new(1024, 64);
        let p = params(10, 20);
        let bad: IpAddr = "192.0.2.7".parse().unwrap();
        let mut new_bans = 0;
        let mut passed = 0;
        for i in 0..1000 {
            match f.gate(&p, bad, b"INVITE", NOW + i * 100) {
                Gate::Pass => passed += 1,
                Gate::Refuse(Refusal::SourceRate { new_ban: true }) => new_bans += 1,
                Gate::Refuse(_) => {}
                Gate::PassUntracked => unreachable!(),
            }
        }
        assert_eq!(passed, 20);
        assert_eq!(new_bans, 1);
        assert!(f.banned(bad, NOW / 1000 + 59_000));
        assert!(!f.banned(bad, NOW / 1000 + 60_003));
        assert_eq!(f.bans(NOW / 1000 + 2), vec![(bad, 60)]);
        // IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(f.banned(mapped, NOW / 1000 + 1));
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        assert!((0..1000).all(|i| f.gate(&p, lo, b"INVITE", NOW + i) == Gate::Pass));
        assert!(f.unban(bad, NOW / 1000 + 2));
        assert!(!f.banned(bad, NOW / 1000 + 3));
    }

    #[test]
    fn disabled_passes_everything() {
        let f = FloodState::new(64, 64);
        let mut p = params(1, 1);
        p.enabled = false;
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert!((0..100).all(|_| f.gate(&p, ip, b"INVITE", NOW) == Gate::Pass));
    }

    #[test]
    fn pipes_count_methods_and_banned_sources_do_not_use_them() {
        let f = FloodState::new(1024, 64);
        let mut p = params(1, 1);
        p.pipes.push(Pipe {
            method: Some(b"INVITE".to_vec().into()),
            rate: Rate::new(1, 3).unwrap(),
            cell: Gcra::default(),
        });
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(f.gate(&p, bad, b"INVITE", NOW), Gate::Pass);
        for _ in 0..50 {
            assert!(matches!(
                f.gate(&p, bad, b"INVITE", NOW),
                Gate::Refuse(Refusal::SourceRate { .. } | Refusal::Banned)
            ));
        }
        // The pipe still has two of its three: the flood did not use them.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(f.gate(&p, lo, b"OPTIONS", NOW), Gate::Pass);
        assert_eq!(f.gate(&p, lo, b"INVITE", NOW), Gate::Pass);
        assert_eq!(f.gate(&p, lo, b"INVITE", NOW), Gate::Pass);
        assert_eq!(f.gate(&p, lo, b"INVITE", NOW), Gate::Refuse(Refusal::Pipe));
    }

    #[test]
    fn without_ban_only_the_excess_is_refused() {
        let f = FloodState::new(64, 64);
        let mut p = params(10, 1);
        p.ban_ms = 0;
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(f.gate(&p, ip, b"REGISTER", NOW), Gate::Pass);
        assert_eq!(
            f.gate(&p, ip, b"REGISTER", NOW),
            Gate::Refuse(Refusal::SourceRate { new_ban: false })
        );
        assert_eq!(f.gate(&p, ip, b"REGISTER", NOW + 100_000), Gate::Pass);
        assert!(!f.banned(ip, NOW / 1000 + 1));
    }
}
