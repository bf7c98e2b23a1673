//! [`RulePolicy`]: the declarative policy compiled from `[[rule]]`, evaluated in file order.
//!
//! Invariants: evaluation only reads the compiled rules (shared, immutable), never panics and
//! allocates nothing beyond growing the caller's `scratch`. Conditions are tested cheapest
//! first (method, initial, transport, flags, CIDRs, exact/prefix strings) before regexes,
//! headers and profile lookups.

use super::spec::{ActionSpec, MatchSpec, ProfileRef, RuleSpec, default_reason};
use super::template::Template;
use super::{DialogOps, Policy, RequestView, Verdict};

/// Rules compiled from the config; cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct RulePolicy {
    rules: Box<[RuleSpec]>,
}

const DEFAULT_TERMINATE_REASON: &str = "Terminated by policy";

impl RulePolicy {
    /// Builds the policy from validated rules (see `Config::from_toml_str`).
    pub fn new(rules: &[RuleSpec]) -> Self {
        RulePolicy {
            rules: rules.into(),
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Expands an optional template into `scratch` (cleared first); `None` stays `None`.
fn expand_opt<'s>(
    t: Option<&Template>,
    req: &dyn RequestView,
    scratch: &'s mut Vec<u8>,
) -> Option<&'s [u8]> {
    let t = t?;
    scratch.clear();
    t.expand(req, scratch);
    Some(scratch.as_slice())
}

fn in_profile(p: &ProfileRef, req: &dyn RequestView, ops: &dyn DialogOps, s: &mut Vec<u8>) -> bool {
    let v = expand_opt(p.value.as_ref(), req, s);
    ops.is_in_profile(&p.name, v)
}

fn matches(m: &MatchSpec, req: &dyn RequestView, ops: &dyn DialogOps, s: &mut Vec<u8>) -> bool {
    let method = req.method();
    if !m.method.is_empty() && !m.method.iter().any(|x| x.as_bytes() == method) {
        return false;
    }
    if m.not_method.iter().any(|x| x.as_bytes() == method) {
        return false;
    }
    if m.initial.is_some_and(|i| i != req.is_initial()) {
        return false;
    }
    if m.transport.is_some_and(|t| t != req.transport()) {
        return false;
    }
    if !m.flag_set.iter().all(|f| ops.is_flag_set(f.0)) {
        return false;
    }
    if m.flag_unset.iter().any(|f| ops.is_flag_set(f.0)) {
        return false;
    }
    if !m.src_ip.is_empty() || !m.not_src_ip.is_empty() {
        let ip = req.src_ip();
        if !m.src_ip.is_empty() && !m.src_ip.iter().any(|c| c.0.contains(&ip)) {
            return false;
        }
        if m.not_src_ip.iter().any(|c| c.0.contains(&ip)) {
            return false;
        }
    }
    let strs = [
        (&m.ruri_user, req.ruri_user(), false),
        (&m.ruri_host, req.ruri_host(), true),
        (&m.from_user, req.from_user(), false),
        (&m.from_host, req.from_host(), true),
        (&m.to_user, req.to_user(), false),
        (&m.to_host, req.to_host(), true),
    ];
    for (cond, value, ci) in strs {
        if cond.as_ref().is_some_and(|c| !c.matches(value, ci)) {
            return false;
        }
    }
    if !m
        .header_present
        .iter()
        .all(|h| req.header(h.0.as_bytes()).is_some())
    {
        return false;
    }
    if m.header_absent
        .iter()
        .any(|h| req.header(h.0.as_bytes()).is_some())
    {
        return false;
    }
    for h in &m.header {
        match req.header(h.name.0.as_bytes()) {
            Some(v) if h.value.matches(v, false) => {}
            _ => return false,
        }
    }
    if !m.in_profile.iter().all(|p| in_profile(p, req, ops, s)) {
        return false;
    }
    if m.not_in_profile.iter().any(|p| in_profile(p, req, ops, s)) {
        return false;
    }
    m.profile_size.iter().all(|p| {
        let v = expand_opt(p.value.as_ref(), req, s);
        p.op.test(ops.profile_size(&p.name, v), p.n)
    })
}

/// Parses trimmed ASCII decimal seconds; `None` for empty, zero, junk or overflow.
fn parse_secs(b: &[u8]) -> Option<u32> {
    let b = b.trim_ascii();
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// What an action asks of the rule loop.
enum Flow<'a> {
    Next,
    Done(Verdict<'a>),
}

fn run_action<'a>(
    a: &'a ActionSpec,
    req: &dyn RequestView,
    ops: &mut dyn DialogOps,
    s: &mut Vec<u8>,
) -> Flow<'a> {
    match a {
        ActionSpec::Track(on) => ops.set_track(*on),
        ActionSpec::SetProfile(p) => {
            let v = expand_opt(p.value.as_ref(), req, s);
            ops.set_profile(&p.name, v);
        }
        ActionSpec::UnsetProfile(p) => {
            let v = expand_opt(p.value.as_ref(), req, s);
            ops.unset_profile(&p.name, v);
        }
        ActionSpec::Limit {
            profile,
            value,
            max,
            rate,
            burst,
            code,
            reason,
        } => {
            let v = expand_opt(value.as_ref(), req, s);
            // The rate first: a call refused by it takes no concurrency slot.
            let within_rate =
                rate.is_none_or(|r| ops.profile_rate_ok(profile, v, r, burst.unwrap_or(r)));
            if !within_rate || max.is_some_and(|m| !ops.set_profile_limited(profile, v, m)) {
                let reason = reason.as_deref().unwrap_or(default_reason(code.0));
                return Flow::Done(Verdict::Reply {
                    code: code.0,
                    reason,
                });
            }
        }
        ActionSpec::Timeout { seconds, from } => {
            let secs = match (seconds, from) {
                (Some(n), _) => Some(*n),
                (None, Some(t)) => expand_opt(Some(t), req, s).and_then(parse_secs),
                (None, None) => None,
            };
            if let Some(n) = secs {
                ops.set_timeout(n);
            }
        }
        ActionSpec::SetFlag(f) => ops.set_flag(f.0),
        ActionSpec::ResetFlag(f) => ops.reset_flag(f.0),
        ActionSpec::SetVar { name, value } => {
            s.clear();
            value.expand(req, s);
            ops.set_var(name.as_bytes(), s);
        }
        ActionSpec::AddHeader { name, value } => {
            s.clear();
            value.expand(req, s);
            ops.add_header(name.0.as_bytes(), s);
        }
        ActionSpec::RemoveHeader(name) => ops.remove_header(name.0.as_bytes()),
        ActionSpec::Reply { code, reason } => {
            let reason = reason.as_deref().unwrap_or(default_reason(code.0));
            return Flow::Done(Verdict::Reply {
                code: code.0,
                reason,
            });
        }
        ActionSpec::Route { group } => ops.route_to_group(group),
        ActionSpec::Drop(true) => return Flow::Done(Verdict::Drop),
        ActionSpec::Drop(false) => {}
        ActionSpec::Terminate { reason } => {
            let r = reason.as_deref().unwrap_or(DEFAULT_TERMINATE_REASON);
            ops.terminate(r.as_bytes());
            return Flow::Done(Verdict::Continue);
        }
    }
    Flow::Next
}

impl Policy for RulePolicy {
    fn on_request<'a>(
        &'a self,
        req: &dyn RequestView,
        ops: &mut dyn DialogOps,
        scratch: &mut Vec<u8>,
    ) -> Verdict<'a> {
        for rule in self.rules.iter() {
            if !matches(&rule.when, req, ops, scratch) {
                continue;
            }
            for a in &rule.actions {
                if let Flow::Done(v) = run_action(a, req, ops, scratch) {
                    return v;
                }
            }
            if rule.stop {
                break;
            }
        }
        Verdict::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::parse_secs;

    #[test]
    fn secs_parsing() {
        assert_eq!(parse_secs(b" 90 "), Some(90));
        assert_eq!(parse_secs(b"0"), None);
        assert_eq!(parse_secs(b""), None);
        assert_eq!(parse_secs(b"12a"), None);
        assert_eq!(parse_secs(b"99999999999"), None);
        assert_eq!(parse_secs(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_secs(b"4294967296"), None);
    }
}
