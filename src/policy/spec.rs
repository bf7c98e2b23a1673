//! The `[[rule]]` section as parsed from TOML: match conditions and ordered actions.
//!
//! Invariants: everything that can be checked from one value alone (CIDRs, regexes, templates,
//! flag numbers, reply codes, header names) is checked while deserializing, so its error points
//! at that value. Cross-references (profiles, target groups, duplicate names) are checked by
//! `config::validate`. These types are immutable once loaded; `RulePolicy` compiles them.

use std::fmt;

use ipnet::IpNet;
use regex::bytes::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::template::Template;
use crate::wire::Transport;

/// One rule: if every condition in `when` holds, run `actions` in order; then stop if `stop`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique rule name (for logs and errors).
    pub name: String,
    /// Conditions, all AND-ed; an empty table matches every request.
    #[serde(default, rename = "match")]
    pub when: MatchSpec,
    /// Actions, run in order.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    /// Stop evaluating later rules when this one matched.
    #[serde(default)]
    pub stop: bool,
}

/// Conditions of a rule (`[rule.match]`). Every field is optional; set fields are AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSpec {
    /// Method is one of these (case-sensitive, e.g. `["INVITE"]`).
    pub method: Vec<String>,
    /// Method is none of these.
    pub not_method: Vec<String>,
    /// `true`: initial requests only (no To-tag); `false`: sequential (in-dialog) only.
    pub initial: Option<bool>,
    /// R-URI user.
    pub ruri_user: Option<StrMatch>,
    /// R-URI host (case-insensitive).
    pub ruri_host: Option<StrMatch>,
    /// From user.
    pub from_user: Option<StrMatch>,
    /// From host (case-insensitive).
    pub from_host: Option<StrMatch>,
    /// To user.
    pub to_user: Option<StrMatch>,
    /// To host (case-insensitive).
    pub to_host: Option<StrMatch>,
    /// Source IP is inside one of these networks (`"10.0.0.0/8"`, or a bare IP).
    pub src_ip: Vec<Cidr>,
    /// Source IP is inside none of these networks.
    pub not_src_ip: Vec<Cidr>,
    /// Request arrived over this transport.
    pub transport: Option<Transport>,
    /// Every one of these headers is present.
    pub header_present: Vec<HeaderName>,
    /// None of these headers is present.
    pub header_absent: Vec<HeaderName>,
    /// Header value conditions (`{ name = "X-Trunk", value = { prefix = "acme" } }`).
    pub header: Vec<HeaderMatch>,
    /// The dialog is in each of these profiles (dialog_ng `is_in_profile`).
    pub in_profile: Vec<ProfileRef>,
    /// The dialog is in none of these profiles.
    pub not_in_profile: Vec<ProfileRef>,
    /// Profile size comparisons (dialog_ng `get_profile_size`).
    pub profile_size: Vec<ProfileSize>,
    /// Each of these dialog flags is set.
    pub flag_set: Vec<Flag>,
    /// None of these dialog flags is set.
    pub flag_unset: Vec<Flag>,
}

/// A string condition: `"alice"` (exact) or `{ exact | prefix | regex = "...", not = bool }`.
#[derive(Clone)]
pub struct StrMatch {
    /// The comparison.
    pub kind: StrMatchKind,
    /// Invert the result.
    pub negate: bool,
}

/// How a [`StrMatch`] compares.
#[derive(Clone, Debug)]
pub enum StrMatchKind {
    /// Whole value equals.
    Exact(Box<[u8]>),
    /// Value starts with.
    Prefix(Box<[u8]>),
    /// Regex (bytes, unanchored unless the pattern anchors itself).
    Regex(Regex),
}

impl StrMatch {
    /// Tests `v`; `ignore_case` applies to exact and prefix (hosts are case-insensitive).
    pub fn matches(&self, v: &[u8], ignore_case: bool) -> bool {
        let hit = match &self.kind {
            StrMatchKind::Exact(e) => {
                if ignore_case {
                    v.eq_ignore_ascii_case(e)
                } else {
                    **e == *v
                }
            }
            StrMatchKind::Prefix(p) => match v.get(..p.len()) {
                Some(head) if ignore_case => head.eq_ignore_ascii_case(p),
                Some(head) => head == &**p,
                None => false,
            },
            StrMatchKind::Regex(r) => r.is_match(v),
        };
        hit != self.negate
    }

    fn describe(&self) -> (&'static str, String) {
        match &self.kind {
            StrMatchKind::Exact(e) => ("exact", String::from_utf8_lossy(e).into_owned()),
            StrMatchKind::Prefix(p) => ("prefix", String::from_utf8_lossy(p).into_owned()),
            StrMatchKind::Regex(r) => ("regex", r.as_str().to_owned()),
        }
    }
}

impl PartialEq for StrMatch {
    fn eq(&self, other: &Self) -> bool {
        self.negate == other.negate && self.describe() == other.describe()
    }
}

impl fmt::Debug for StrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, v) = self.describe();
        write!(f, "{}{k}({v:?})", if self.negate { "not " } else { "" })
    }
}

impl<'de> Deserialize<'de> for StrMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrMatchVisitor)
    }
}

struct StrMatchVisitor;

const STR_MATCH_FIELDS: &[&str] = &["exact", "prefix", "regex", "not"];

impl<'de> Visitor<'de> for StrMatchVisitor {
    type Value = StrMatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a string or a table with one of `exact`, `prefix`, `regex` (and optional `not`)",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrMatch, E> {
        Ok(StrMatch {
            kind: StrMatchKind::Exact(v.as_bytes().into()),
            negate: false,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrMatch, A::Error> {
        let mut kind = None;
        let mut negate = false;
        while let Some(key) = map.next_key::<String>()? {
            let k = match key.as_str() {
                "not" => {
                    negate = map.next_value()?;
                    continue;
                }
                "exact" => StrMatchKind::Exact(map.next_value::<String>()?.into_bytes().into()),
                "prefix" => StrMatchKind::Prefix(map.next_value::<String>()?.into_bytes().into()),
                "regex" => {
                    let src: String = map.next_value()?;
                    StrMatchKind::Regex(
                        Regex::new(&src)
                            .map_err(|e| de::Error::custom(format!("bad regex `{src}`: {e}")))?,
                    )
                }
                other => return Err(de::Error::unknown_field(other, STR_MATCH_FIELDS)),
            };
            if kind.replace(k).is_some() {
                return Err(de::Error::custom(
                    "use only one of `exact`, `prefix`, `regex` per condition",
                ));
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("exact, prefix or regex"))?;
        Ok(StrMatch { kind, negate })
    }
}

/// An IP network; a bare address means a single host (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| {
                de::Error::custom(format!(
                    "bad CIDR `{s}` (expected e.g. `10.0.0.0/8`, `2001:db8::/32` or an IP address)"
                ))
            })
    }
}

/// A dialog flag number, 0..=31 (dialog_ng flags are a 32-bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Flag(pub u8);

impl TryFrom<i64> for Flag {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        u8::try_from(n)
            .ok()
            .filter(|n| *n < 32)
            .map(Flag)
            .ok_or_else(|| format!("flag `{n}` out of range (0..=31)"))
    }
}

/// A SIP final reply code for rejecting a request, 300..=699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct ReplyCode(pub u16);

impl TryFrom<i64> for ReplyCode {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        u16::try_from(n)
            .ok()
            .filter(|n| (300..=699).contains(n))
            .map(ReplyCode)
            .ok_or_else(|| format!("reply code `{n}` out of range (300..=699)"))
    }
}

/// A SIP header name: a non-empty RFC 3261 token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderName(pub String);

/// True for RFC 3261 `token` characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

impl TryFrom<String> for HeaderName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if is_token(&s) {
            Ok(HeaderName(s))
        } else {
            Err(format!("bad header name `{s}` (must be a SIP token)"))
        }
    }
}

/// A header value condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive); the first occurrence is tested.
    pub name: HeaderName,
    /// The value condition; an absent header never matches (even with `not`).
    pub value: StrMatch,
}

/// A profile reference with an optional value template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRef {
    /// Profile name, declared in `[profiles]`.
    pub name: String,
    /// Value (required for `with_value` profiles, forbidden for `no_value` ones).
    #[serde(default)]
    pub value: Option<Template>,
}

/// Comparison operator for `profile_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl CmpOp {
    /// Applies the operator: `a op b`.
    pub fn test(self, a: u64, b: u64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
        }
    }
}

/// `profile_size = [{ name, value?, op, n }]`: the profile's size compared with `n`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSize {
    /// Profile name.
    pub name: String,
    /// Value for `with_value` profiles.
    #[serde(default)]
    pub value: Option<Template>,
    /// Operator.
    pub op: CmpOp,
    /// Right-hand side.
    pub n: u64,
}

/// One action, written as a one-key inline table, e.g. `{ track = true }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    /// Track (or not) this request's dialog; the dialog_ng `dlg_flag` equivalent.
    Track(bool),
    /// Add the dialog to a profile.
    SetProfile(ProfileRef),
    /// Remove the dialog from a profile.
    UnsetProfile(ProfileRef),
    /// Add to a profile unless that would exceed `max`; otherwise reply `code reason`.
    Limit {
        /// Profile name.
        profile: String,
        /// Value template (with_value profiles).
        #[serde(default)]
        value: Option<Template>,
        /// Maximum number of dialogs in the profile (value); absent = no concurrency limit
        /// (then `rate` is required).
        #[serde(default)]
        max: Option<u64>,
        /// Calls per second admitted into the profile (value); absent = no rate limit.
        #[serde(default)]
        rate: Option<u32>,
        /// Calls at once above `rate` (default: one second's worth, `rate`).
        #[serde(default)]
        burst: Option<u32>,
        /// Reply code when over the limit (default 503).
        #[serde(default = "default_limit_code")]
        code: ReplyCode,
        /// Reason phrase (default: the standard phrase for `code`).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Dialog lifetime: fixed `seconds`, or parsed `from` a template (invalid → unchanged).
    Timeout {
        /// Fixed lifetime in seconds.
        #[serde(default)]
        seconds: Option<u32>,
        /// Template expanding to decimal seconds, e.g. `"$hdr(X-Timeout)"`.
        #[serde(default)]
        from: Option<Template>,
    },
    /// Set dialog flag n.
    SetFlag(Flag),
    /// Clear dialog flag n.
    ResetFlag(Flag),
    /// Set a dialog variable.
    SetVar {
        /// Variable name.
        name: String,
        /// Value template.
        value: Template,
    },
    /// Add a header to the forwarded request.
    AddHeader {
        /// Header name.
        name: HeaderName,
        /// Value template.
        value: Template,
    },
    /// Remove every header with this name from the forwarded request.
    RemoveHeader(HeaderName),
    /// Answer the request with a final reply and stop evaluating.
    Reply {
        /// Code, 300..=699.
        code: ReplyCode,
        /// Reason phrase (default: the standard phrase for `code`).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Forward to a `[[target_group]]`.
    Route {
        /// Target group name.
        group: String,
    },
    /// Drop the request silently and stop evaluating (`{ drop = true }`): for known scanners.
    /// `{ drop = false }` does nothing.
    Drop(bool),
    /// Terminate the current dialog (dialog_ng `dlg_terminate`) and stop evaluating.
    Terminate {
        /// Reason (put in the BYE / final reply); default "Terminated by policy".
        #[serde(default)]
        reason: Option<String>,
    },
}

fn default_limit_code() -> ReplyCode {
    ReplyCode(503)
}

/// Standard reason phrase for common codes; `"Rejected"` otherwise.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Rejected",
    }
}
