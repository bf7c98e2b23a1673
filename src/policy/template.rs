//! Templates: literal text mixed with request variables, e.g. `"$fU@$fd"` or `"$hdr(X-Trunk)"`.
//!
//! Invariants: a template is compiled once at config load into a short list of parts; an
//! unknown variable is a load error. [`Template::expand`] appends to a caller-owned buffer and
//! allocates nothing once that buffer has enough capacity; it never panics, and a missing header
//! or dialog variable expands to nothing.
//!
//! Variables: `$fu $fU $fd` (From URI, user, host), `$tu $tU $td` (To), `$ru $rU $rd` (R-URI),
//! `$si $sp` (source IP and port), `$ci` (Call-ID), `$hdr(Name)` (first header value),
//! `$dlg_var(key)` (dialog variable). `$$` is a literal `$`.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

use super::RequestView;

/// A request variable usable in templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `$fu`: From URI.
    FromUri,
    /// `$fU`: From user.
    FromUser,
    /// `$fd`: From host.
    FromHost,
    /// `$tu`: To URI.
    ToUri,
    /// `$tU`: To user.
    ToUser,
    /// `$td`: To host.
    ToHost,
    /// `$ru`: Request-URI.
    RUri,
    /// `$rU`: Request-URI user.
    RUser,
    /// `$rd`: Request-URI host.
    RHost,
    /// `$si`: source IP.
    SrcIp,
    /// `$sp`: source port.
    SrcPort,
    /// `$ci`: Call-ID.
    CallId,
    /// `$hdr(Name)`: value of the first header `Name` (case-insensitive).
    Hdr(Box<[u8]>),
    /// `$dlg_var(key)`: dialog variable.
    DlgVar(Box<[u8]>),
}

const SHORT_VARS: [(&str, Var); 12] = [
    ("fu", Var::FromUri),
    ("fU", Var::FromUser),
    ("fd", Var::FromHost),
    ("tu", Var::ToUri),
    ("tU", Var::ToUser),
    ("td", Var::ToHost),
    ("ru", Var::RUri),
    ("rU", Var::RUser),
    ("rd", Var::RHost),
    ("si", Var::SrcIp),
    ("sp", Var::SrcPort),
    ("ci", Var::CallId),
];

/// One compiled piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<[u8]>),
    Var(Var),
}

/// A compiled template. Equality compares the source text.
#[derive(Clone)]
pub struct Template {
    src: Box<str>,
    parts: Box<[Part]>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.src)
    }
}

/// Why a template failed to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `$xx` is not a known variable.
    #[error(
        "unknown template variable `${0}` (known: $fu $fU $fd $tu $tU $td $ru $rU $rd $si $sp $ci $hdr(Name) $dlg_var(key); `$$` is a literal `$`)"
    )]
    UnknownVar(String),
    /// `$hdr(` or `$dlg_var(` without a closing `)` or with an empty name.
    #[error("template variable `${0}(...)` needs a non-empty name and a closing `)`")]
    BadArg(&'static str),
}

impl Template {
    /// Compiles `src`.
    pub fn compile(src: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(pos) = rest.find('$') {
            lit.push_str(rest.get(..pos).unwrap_or_default());
            let after = rest.get(pos + 1..).unwrap_or_default();
            if let Some(r) = after.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let (var, r) = if let Some(r) = after.strip_prefix("hdr(") {
                let (name, r) = take_arg(r).ok_or(TemplateError::BadArg("hdr"))?;
                (Var::Hdr(name.as_bytes().into()), r)
            } else if let Some(r) = after.strip_prefix("dlg_var(") {
                let (name, r) = take_arg(r).ok_or(TemplateError::BadArg("dlg_var"))?;
                (Var::DlgVar(name.as_bytes().into()), r)
            } else {
                let name: String = after.chars().take(2).collect();
                let var = SHORT_VARS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        let word: String = after
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        TemplateError::UnknownVar(word)
                    })?;
                (var, after.get(name.len()..).unwrap_or_default())
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into_bytes().into()));
            }
            parts.push(Part::Var(var));
            rest = r;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into_bytes().into()));
        }
        Ok(Template {
            src: src.into(),
            parts: parts.into(),
        })
    }

    /// The source text as written in the config.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// The bytes of a template without variables (`None` if it has any).
    pub fn literal(&self) -> Option<&[u8]> {
        match &*self.parts {
            [] => Some(b""),
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// The variables this template reads, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Appends the expansion for `req` to `out`. Allocates only if `out` must grow.
    pub fn expand(&self, req: &dyn RequestView, out: &mut Vec<u8>) {
        for part in self.parts.iter() {
            match part {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Var(v) => expand_var(v, req, out),
            }
        }
    }
}

fn take_arg(s: &str) -> Option<(&str, &str)> {
    let (name, rest) = s.split_once(')')?;
    let name = name.trim();
    (!name.is_empty()).then_some((name, rest))
}

fn expand_var(v: &Var, req: &dyn RequestView, out: &mut Vec<u8>) {
    let bytes: &[u8] = match v {
        Var::FromUri => req.from_uri(),
        Var::FromUser => req.from_user(),
        Var::FromHost => req.from_host(),
        Var::ToUri => req.to_uri(),
        Var::ToUser => req.to_user(),
        Var::ToHost => req.to_host(),
        Var::RUri => req.ruri(),
        Var::RUser => req.ruri_user(),
        Var::RHost => req.ruri_host(),
        Var::CallId => req.call_id(),
        Var::Hdr(name) => req.header(name).unwrap_or_default(),
        Var::DlgVar(key) => req.dlg_var(key).unwrap_or_default(),
        Var::SrcIp => {
            match req.src_ip() {
                IpAddr::V4(v4) => {
                    for (i, octet) in v4.octets().into_iter().enumerate() {
                        if i > 0 {
                            out.push(b'.');
                        }
                        push_decimal(out, u32::from(octet));
                    }
                }
                // Writing to a Vec cannot fail.
                ip @ IpAddr::V6(_) => drop(write!(out, "{ip}")),
            }
            return;
        }
        Var::SrcPort => {
            push_decimal(out, u32::from(req.src_port()));
            return;
        }
    };
    out.extend_from_slice(bytes);
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            // n % 10 < 10, so the cast cannot truncate.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::compile(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn compiles_parts() {
        let t = Template::compile("a$fU@$fd$$x$hdr( X-A )").unwrap();
        assert_eq!(t.vars().count(), 3);
        assert_eq!(t.literal(), None);
        let t = Template::compile("plain $$5").unwrap();
        assert_eq!(t.literal(), Some(&b"plain $5"[..]));
    }

    #[test]
    fn decimal_formatting() {
        for n in [0, 7, 10, 255, 5060, 65535, u32::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn rejects_unknown_and_bad_args() {
        assert_eq!(
            Template::compile("$foo").unwrap_err(),
            TemplateError::UnknownVar("foo".into())
        );
        assert!(Template::compile("$").is_err());
        assert!(Template::compile("$hdr(X").is_err());
        assert!(Template::compile("$dlg_var()").is_err());
        assert!(Template::compile("$fé").is_err());
    }
}
