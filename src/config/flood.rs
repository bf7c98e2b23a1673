//! `[flood]` (per-source rates, bans, rate pipes), `[limits]` (admission caps) and
//! `[overload]` (refusing new calls when a worker falls behind): the edge's defences, as read
//! from the config file.
//!
//! Invariants: every field has a default that is safe on the internet (flood control on,
//! loopback trusted, caps derived from memory); validation (`validate.rs`) names the field of
//! a bad value; these are plain data, turned into packet-path form by `engine::settings`.

use serde::Deserialize;

use crate::policy::spec::Cidr;

/// What to do with a request refused by flood or overload control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefuseAction {
    /// Drop it silently.
    #[default]
    Drop,
    /// Answer 503 Service Unavailable with Retry-After.
    Reply,
}

/// `[flood]`: Kamailio's `pike` and `ratelimit`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Master switch (default on: an edge faces the internet).
    pub enabled: bool,
    /// Out-of-dialog requests per second allowed per source IP (0 = no per-source limit).
    /// The default stops a scanner, not a PBX; carriers' SBCs belong in `trusted`.
    pub per_source_rps: u32,
    /// Requests a source may send at once above its rate.
    pub burst: u32,
    /// How long a source that went over its rate is banned, s (0 = refuse only the excess).
    pub ban_seconds: u64,
    /// `drop` (default) or `reply` (503 with Retry-After).
    pub action: RefuseAction,
    /// Sources never counted nor banned (CIDRs or addresses). Default: loopback only.
    pub trusted: Vec<Cidr>,
    /// `[[flood.pipe]]`: global and per-method rate pipes (none by default).
    pub pipe: Vec<PipeConfig>,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            enabled: true,
            per_source_rps: 100,
            burst: 200,
            ban_seconds: 300,
            action: RefuseAction::Drop,
            trusted: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|s| s.parse().ok().map(Cidr))
                .collect(),
            pipe: Vec::new(),
        }
    }
}

/// `[[flood.pipe]]`: a rate for every out-of-dialog request, or for one method.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeConfig {
    /// The method counted (e.g. "INVITE", "REGISTER"); absent = every method.
    #[serde(default)]
    pub method: Option<String>,
    /// Requests per second (> 0).
    pub rps: u32,
    /// Requests at once above the rate (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[limits]`: admission caps. Over a cap, new work gets 503; calls that are up are untouched.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live INVITE transactions, all workers together (0 = derived from `max_request_memory`
    /// at one transaction per 16 KiB).
    pub max_transactions: u64,
    /// Bytes of requests the transactions hold (the INVITE as received and each forwarded
    /// copy), all workers together (0 = an eighth of the memory available at start).
    pub max_request_memory: u64,
    /// Requests parked waiting for DNS or a remote store (0 = 1024 per worker). Nothing parks
    /// yet: the cap is here for routing and scale-out.
    pub max_parked: u64,
}

/// `[overload]`: when a worker's receive queue delay passes a bound, new initial INVITEs are
/// refused (RFC 6357); retransmissions, ACK, BYE and other in-dialog requests always pass.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Master switch.
    pub enabled: bool,
    /// Queueing delay (kernel receive to handling) above which a worker is overloaded, ms.
    pub max_delay_ms: u64,
    /// `reply` (default: 503 with Retry-After) or `drop`.
    pub action: RefuseAction,
    /// Retry-After of the 503, s.
    pub retry_after: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            enabled: true,
            max_delay_ms: 100,
            action: RefuseAction::Reply,
            retry_after: 5,
        }
    }
}
