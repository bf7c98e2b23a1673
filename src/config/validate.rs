//! Semantic validation of a parsed [`Config`]: cross-references and rules that span values.
//!
//! Invariants: all problems are collected (not just the first); each error points at the
//! offending value through a document path resolved by [`Locator`]. Checks: non-empty and
//! unique listeners, mgmt token rule, dialog parameter ranges, unique profile and group and
//! rule names, known profiles with the right value-ness, known target groups, one timeout
//! source, method tokens, non-empty variable names.

use std::collections::HashSet;

use super::error::{ConfigError, Locator, Seg};
use super::{Config, MgmtConfig};
use crate::policy::spec::{ActionSpec, ProfileRef, ProfileSize, is_token};

/// True if the mgmt endpoint is loopback or protected by a non-empty token.
pub(super) fn token_ok(m: &MgmtConfig) -> bool {
    m.listen.ip().is_loopback() || m.token.as_deref().is_some_and(|t| !t.is_empty())
}

struct Ctx<'c> {
    config: &'c Config,
    loc: Locator<'c>,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &[Seg<'_>], msg: impl Into<String>) {
        let e = self.loc.error(path, msg);
        self.errors.push(e);
    }

    /// Checks a profile reference: known, and a value iff the profile is `with_value`.
    fn profile(&mut self, path: &[Seg<'_>], name: &str, has_value: bool) {
        let mut p = path.to_vec();
        match self.config.profiles.has_value(name) {
            None => {
                p.push(Seg::Key("name"));
                self.err(
                    &p,
                    format!("unknown profile `{name}` (declare it in [profiles])"),
                );
            }
            Some(true) if !has_value => {
                self.err(&p, format!("profile `{name}` is with_value: set `value`"));
            }
            Some(false) if has_value => {
                p.push(Seg::Key("value"));
                self.err(&p, format!("profile `{name}` is no_value: remove `value`"));
            }
            Some(_) => {}
        }
    }
}

fn name_field_path<'a>(path: &[Seg<'a>], key: &'a str) -> Vec<Seg<'a>> {
    let mut p = path.to_vec();
    p.push(Seg::Key(key));
    p
}

/// Runs every semantic check; empty result = valid.
pub(super) fn validate(config: &Config, text: &str) -> Vec<ConfigError> {
    let mut cx = Ctx {
        config,
        loc: Locator::new(text),
        errors: Vec::new(),
    };
    check_core_mgmt_dialog(&mut cx);
    check_names(&mut cx);
    check_rules(&mut cx);
    cx.errors
}

fn check_core_mgmt_dialog(cx: &mut Ctx<'_>) {
    let c = cx.config;
    if c.core.listen.is_empty() {
        cx.err(
            &[Seg::Key("core"), Seg::Key("listen")],
            "at least one listener is required",
        );
    }
    let mut seen = HashSet::new();
    for (i, l) in c.core.listen.iter().enumerate() {
        if !seen.insert(*l) {
            cx.err(
                &[Seg::Key("core"), Seg::Key("listen"), Seg::Idx(i)],
                format!("duplicate listener `{l}`"),
            );
        }
    }
    if !token_ok(&c.mgmt) {
        cx.err(
            &[Seg::Key("mgmt"), Seg::Key("listen")],
            format!(
                "mgmt listen {} is not a loopback address: set mgmt.token",
                c.mgmt.listen
            ),
        );
    }
    let d = &c.dialog;
    let dp = |k| [Seg::Key("dialog"), Seg::Key(k)];
    if !is_token(&d.rr_param) {
        cx.err(&dp("rr_param"), "rr_param must be a non-empty SIP token");
    }
    if d.default_timeout == 0 {
        cx.err(&dp("default_timeout"), "default_timeout must be > 0");
    }
    if !(300..=699).contains(&d.bye_early_code) {
        cx.err(
            &dp("bye_early_code"),
            format!(
                "bye_early_code {} out of range (300..=699)",
                d.bye_early_code
            ),
        );
    }
    if !d.bridge_controller.starts_with("sip:") {
        cx.err(
            &dp("bridge_controller"),
            "bridge_controller must be a sip: URI",
        );
    }
    if d.dlg_extra_hdrs
        .lines()
        .any(|l| !l.trim().is_empty() && !l.contains(':'))
    {
        cx.err(
            &dp("dlg_extra_hdrs"),
            "dlg_extra_hdrs lines must be `Name: value`",
        );
    }
}

fn check_names(cx: &mut Ctx<'_>) {
    let c = cx.config;
    let mut seen = HashSet::new();
    for (list, key) in [
        (&c.profiles.no_value, "no_value"),
        (&c.profiles.with_value, "with_value"),
    ] {
        for (i, n) in list.iter().enumerate() {
            let p = [Seg::Key("profiles"), Seg::Key(key), Seg::Idx(i)];
            if n.is_empty() {
                cx.err(&p, "empty profile name");
            } else if !seen.insert(n.as_str()) {
                cx.err(&p, format!("duplicate profile `{n}`"));
            }
        }
    }
    let mut groups = HashSet::new();
    for (i, g) in c.target_group.iter().enumerate() {
        let p = [Seg::Key("target_group"), Seg::Idx(i)];
        if !groups.insert(g.name.as_str()) {
            cx.err(
                &name_field_path(&p, "name"),
                format!("duplicate target group `{}`", g.name),
            );
        }
        if g.targets.is_empty() {
            cx.err(
                &name_field_path(&p, "targets"),
                format!("target group `{}` has no targets", g.name),
            );
        }
    }
    let mut rules = HashSet::new();
    for (i, r) in c.rule.iter().enumerate() {
        if !rules.insert(r.name.as_str()) {
            cx.err(
                &[Seg::Key("rule"), Seg::Idx(i), Seg::Key("name")],
                format!("duplicate rule name `{}`", r.name),
            );
        }
    }
}

fn check_profile_refs(cx: &mut Ctx<'_>, base: &[Seg<'_>], key: &str, refs: &[ProfileRef]) {
    for (j, pr) in refs.iter().enumerate() {
        let mut p = base.to_vec();
        p.extend([Seg::Key(key), Seg::Idx(j)]);
        cx.profile(&p, &pr.name, pr.value.is_some());
    }
}

fn check_rules(cx: &mut Ctx<'_>) {
    let c = cx.config;
    for (i, r) in c.rule.iter().enumerate() {
        let m = [Seg::Key("rule"), Seg::Idx(i), Seg::Key("match")];
        for (key, list) in [
            ("method", &r.when.method),
            ("not_method", &r.when.not_method),
        ] {
            for (j, meth) in list.iter().enumerate() {
                if !is_token(meth) {
                    cx.err(
                        &[m[0], m[1], m[2], Seg::Key(key), Seg::Idx(j)],
                        format!("bad method `{meth}`"),
                    );
                }
            }
        }
        check_profile_refs(cx, &m, "in_profile", &r.when.in_profile);
        check_profile_refs(cx, &m, "not_in_profile", &r.when.not_in_profile);
        for (j, ProfileSize { name, value, .. }) in r.when.profile_size.iter().enumerate() {
            cx.profile(
                &[m[0], m[1], m[2], Seg::Key("profile_size"), Seg::Idx(j)],
                name,
                value.is_some(),
            );
        }
        for (j, a) in r.actions.iter().enumerate() {
            let ap = [
                Seg::Key("rule"),
                Seg::Idx(i),
                Seg::Key("actions"),
                Seg::Idx(j),
            ];
            check_action(cx, &ap, a);
        }
    }
}

fn check_action(cx: &mut Ctx<'_>, ap: &[Seg<'_>], a: &ActionSpec) {
    match a {
        ActionSpec::SetProfile(pr) => {
            cx.profile(
                &name_field_path(ap, "set_profile"),
                &pr.name,
                pr.value.is_some(),
            );
        }
        ActionSpec::UnsetProfile(pr) => {
            cx.profile(
                &name_field_path(ap, "unset_profile"),
                &pr.name,
                pr.value.is_some(),
            );
        }
        ActionSpec::Limit { profile, value, .. } => {
            let p = name_field_path(ap, "limit");
            match cx.config.profiles.has_value(profile) {
                None => cx.err(
                    &name_field_path(&p, "profile"),
                    format!("unknown profile `{profile}` (declare it in [profiles])"),
                ),
                Some(true) if value.is_none() => {
                    cx.err(
                        &p,
                        format!("profile `{profile}` is with_value: set `value`"),
                    );
                }
                Some(false) if value.is_some() => cx.err(
                    &name_field_path(&p, "value"),
                    format!("profile `{profile}` is no_value: remove `value`"),
                ),
                Some(_) => {}
            }
        }
        ActionSpec::Timeout { seconds, from } => {
            let p = name_field_path(ap, "timeout");
            match (seconds, from) {
                (Some(_), Some(_)) | (None, None) => {
                    cx.err(&p, "timeout needs exactly one of `seconds` or `from`");
                }
                (Some(0), None) => cx.err(
                    &name_field_path(&p, "seconds"),
                    "timeout seconds must be > 0",
                ),
                _ => {}
            }
        }
        ActionSpec::SetVar { name, .. } if name.is_empty() => {
            cx.err(
                &name_field_path(ap, "set_var"),
                "set_var needs a non-empty name",
            );
        }
        ActionSpec::Route { group } if !cx.config.target_group.iter().any(|g| &g.name == group) => {
            let p = name_field_path(&name_field_path(ap, "route"), "group");
            cx.err(&p, format!("unknown target group `{group}`"));
        }
        _ => {}
    }
}
