//! Semantic validation of a parsed [`Config`]: cross-references and rules that span values.
//!
//! Invariants: all problems are collected (not just the first); each error points at the
//! offending value through a document path resolved by [`Locator`]. Checks: non-empty and
//! unique listeners, mgmt token rule, dialog parameter ranges (incl. the dialog store), unique profile and group and
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

    /// Checks a profile reference at `path` (its name under key `name_key`): the profile
    /// is declared; a `no_value` profile gets no value; a `with_value` profile gets one
    /// unless `value_optional` (conditions may test a with_value profile as a whole).
    fn profile(&mut self, r: ProfileCheck<'_, '_>) {
        let mut p = r.path.to_vec();
        let name = r.name;
        match self.config.profiles.has_value(name) {
            None => {
                p.push(Seg::Key(r.name_key));
                self.err(
                    &p,
                    format!("unknown profile `{name}` (declare it in [profiles])"),
                );
            }
            Some(true) if !r.has_value && !r.value_optional => {
                self.err(&p, format!("profile `{name}` is with_value: set `value`"));
            }
            Some(false) if r.has_value => {
                p.push(Seg::Key("value"));
                self.err(&p, format!("profile `{name}` is no_value: remove `value`"));
            }
            Some(_) => {}
        }
    }
}

/// A profile reference to check.
struct ProfileCheck<'p, 'a> {
    path: &'p [Seg<'a>],
    name_key: &'a str,
    name: &'p str,
    has_value: bool,
    value_optional: bool,
}

fn name_field_path<'a>(path: &[Seg<'a>], key: &'a str) -> Vec<Seg<'a>> {
    let mut p = path.to_vec();
    p.push(Seg::Key(key));
    p
}

/// Largest `[dialog] inv_100_delay` (ms): the deferred 100 fires on the worker's timer grid
/// (up to 10 ms late) and must still leave within RFC 3261's 200 ms.
pub const MAX_INV_100_DELAY: u64 = 190;

/// Runs every semantic check; empty result = valid.
pub(super) fn validate(config: &Config, text: &str) -> Vec<ConfigError> {
    let mut cx = Ctx {
        config,
        loc: Locator::new(text),
        errors: Vec::new(),
    };
    check_core_mgmt_dialog(&mut cx);
    check_flood(&mut cx);
    check_names(&mut cx);
    check_rules(&mut cx);
    check_transaction(&mut cx);
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
    if !(c.core.spread_busy > 0.0 && c.core.spread_busy <= 1.0) {
        cx.err(
            &[Seg::Key("core"), Seg::Key("spread_busy")],
            format!(
                "spread_busy {} out of range: a fraction of one core, 0 < x <= 1",
                c.core.spread_busy
            ),
        );
    }
    for (key, v) in [
        ("tcp_message_timeout", c.core.tcp_message_timeout),
        ("tcp_max_connections", c.core.tcp_max_connections as u64),
        ("tcp_max_per_peer", c.core.tcp_max_per_peer as u64),
    ] {
        if v == 0 {
            cx.err(
                &[Seg::Key("core"), Seg::Key(key)],
                format!("{key} must be > 0"),
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
    check_mgmt_limits(cx);
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
    if d.inv_100_delay > MAX_INV_100_DELAY {
        cx.err(
            &dp("inv_100_delay"),
            format!(
                "inv_100_delay {} ms out of range (0..={MAX_INV_100_DELAY}): RFC 3261 wants the 100 within 200 ms",
                d.inv_100_delay
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
    match d.db_mode {
        0 => {}
        2 if d.db_url.is_empty() => cx.err(&dp("db_url"), "db_mode = 2 needs db_url (a file path)"),
        2 => {}
        m => cx.err(
            &dp("db_mode"),
            format!("db_mode {m} not supported (0 = off, 2 = write-behind)"),
        ),
    }
    if !(100..=3_600_000).contains(&d.db_update_period) {
        cx.err(
            &dp("db_update_period"),
            format!(
                "db_update_period {} ms out of range (100..=3600000)",
                d.db_update_period
            ),
        );
    }
}

/// `[flood]`, `[limits]` and `[overload]`.
fn check_flood(cx: &mut Ctx<'_>) {
    let c = cx.config;
    let f = &c.flood;
    if f.enabled && f.per_source_rps > 0 && f.burst == 0 {
        cx.err(
            &[Seg::Key("flood"), Seg::Key("burst")],
            "burst must be > 0 (requests a source may send at once)",
        );
    }
    if f.ban_seconds > 86_400 * 7 {
        cx.err(
            &[Seg::Key("flood"), Seg::Key("ban_seconds")],
            format!("ban_seconds {} out of range (0..=604800)", f.ban_seconds),
        );
    }
    for (i, p) in f.pipe.iter().enumerate() {
        let at = |k| {
            [
                Seg::Key("flood"),
                Seg::Key("pipe"),
                Seg::Idx(i),
                Seg::Key(k),
            ]
        };
        if p.rps == 0 {
            cx.err(&at("rps"), "rps must be > 0");
        }
        if p.burst == Some(0) {
            cx.err(&at("burst"), "burst must be > 0");
        }
        if let Some(m) = &p.method
            && (!is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()))
        {
            cx.err(
                &at("method"),
                format!("method `{m}` must be an upper-case SIP method token, e.g. \"INVITE\""),
            );
        }
    }
    let o = &c.overload;
    if o.enabled && !(1..=10_000).contains(&o.max_delay_ms) {
        cx.err(
            &[Seg::Key("overload"), Seg::Key("max_delay_ms")],
            format!("max_delay_ms {} out of range (1..=10000)", o.max_delay_ms),
        );
    }
    if o.retry_after > 3600 {
        cx.err(
            &[Seg::Key("overload"), Seg::Key("retry_after")],
            format!("retry_after {} out of range (0..=3600)", o.retry_after),
        );
    }
}

/// `[transaction]`: positive intervals, and no timer shorter than the first retransmission.
fn check_transaction(cx: &mut Ctx<'_>) {
    let t = &cx.config.transaction;
    let (t1, t2, timer_b) = (t.t1, t.t2, t.timer_b);
    let tp = |k| [Seg::Key("transaction"), Seg::Key(k)];
    if t1 == 0 {
        cx.err(
            &tp("t1"),
            "t1 must be at least 1 ms (RFC 3261 default: 500)",
        );
    }
    if t2 < t1 {
        cx.err(
            &tp("t2"),
            format!("t2 {t2} ms must be at least t1 ({t1} ms)"),
        );
    }
    if timer_b < t1 {
        cx.err(
            &tp("timer_b"),
            format!("timer_b {timer_b} ms must be at least t1 ({t1} ms); RFC 3261: 64*T1"),
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
        cx.profile(ProfileCheck {
            path: &p,
            name_key: "name",
            name: &pr.name,
            has_value: pr.value.is_some(),
            value_optional: true,
        });
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
            cx.profile(ProfileCheck {
                path: &[m[0], m[1], m[2], Seg::Key("profile_size"), Seg::Idx(j)],
                name_key: "name",
                name,
                has_value: value.is_some(),
                value_optional: true,
            });
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
            cx.profile(ProfileCheck {
                path: &name_field_path(ap, "set_profile"),
                name_key: "name",
                name: &pr.name,
                has_value: pr.value.is_some(),
                value_optional: false,
            });
        }
        ActionSpec::UnsetProfile(pr) => {
            cx.profile(ProfileCheck {
                path: &name_field_path(ap, "unset_profile"),
                name_key: "name",
                name: &pr.name,
                has_value: pr.value.is_some(),
                value_optional: false,
            });
        }
        ActionSpec::Limit {
            profile,
            value,
            max,
            rate,
            burst,
            ..
        } => {
            let p = name_field_path(ap, "limit");
            cx.profile(ProfileCheck {
                path: &p,
                name_key: "profile",
                name: profile,
                has_value: value.is_some(),
                value_optional: false,
            });
            if max.is_none() && rate.is_none() {
                cx.err(
                    &p,
                    "limit needs `max` (concurrent calls), `rate` (calls per second) or both",
                );
            }
            if *rate == Some(0) {
                cx.err(&name_field_path(&p, "rate"), "limit rate must be > 0");
            }
            if *burst == Some(0) {
                cx.err(&name_field_path(&p, "burst"), "limit burst must be > 0");
            }
            if burst.is_some() && rate.is_none() {
                cx.err(&name_field_path(&p, "burst"), "limit burst needs `rate`");
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

/// Longest UNIX socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

fn check_mgmt_limits(cx: &mut Ctx<'_>) {
    let m = &cx.config.mgmt;
    let mp = |k| [Seg::Key("mgmt"), Seg::Key(k)];
    if m.max_connections == 0 {
        cx.err(&mp("max_connections"), "max_connections must be at least 1");
    }
    if m.max_connections_per_ip == 0 {
        cx.err(
            &mp("max_connections_per_ip"),
            "max_connections_per_ip must be at least 1",
        );
    }
    if let Some(p) = &m.socket {
        let len = p.as_os_str().len();
        if len == 0 {
            cx.err(
                &mp("socket"),
                "socket path must not be empty (omit it for none)",
            );
        } else if len > MAX_SOCKET_PATH {
            cx.err(
                &mp("socket"),
                format!(
                    "socket path is {len} bytes; a UNIX socket path holds at most {MAX_SOCKET_PATH}"
                ),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use crate::config::Config;

    const P: &str = "[profiles]\nwith_value = [\"caller\"]\nno_value = [\"calls\"]\n[[target_group]]\nname = \"g\"\ntargets = [\"udp:10.0.0.1:5060\"]\n[[rule]]\nname = \"r\"\n";

    fn errs(rule_tail: &str) -> String {
        match Config::from_toml_str(&format!("{P}{rule_tail}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mgmt_caps_and_socket_path_are_checked() {
        let long = "/".to_owned() + &"s".repeat(120);
        let t = format!(
            "[mgmt]\nmax_connections = 0\nmax_connections_per_ip = 0\nsocket = \"{long}\"\n"
        );
        let e = Config::from_toml_str(&t).unwrap_err().to_string();
        assert!(
            e.contains("<config>:2:19: max_connections must be at least 1"),
            "{e}"
        );
        assert!(
            e.contains("max_connections_per_ip must be at least 1"),
            "{e}"
        );
        assert!(e.contains("socket path is 121 bytes"), "{e}");
        let ok =
            "[mgmt]\nmax_connections = 4\nmax_connections_per_ip = 1\nsocket = \"/run/x.sock\"\n";
        let c = Config::from_toml_str(ok).unwrap();
        assert_eq!(
            (c.mgmt.max_connections, c.mgmt.socket),
            (4, Some("/run/x.sock".into()))
        );
    }

    #[test]
    fn with_value_profile_may_be_tested_without_value() {
        assert_eq!(
            errs(
                "[rule.match]\nin_profile = [{ name = \"caller\" }]\nprofile_size = [{ name = \"caller\", op = \"gt\", n = 1 }]\n"
            ),
            ""
        );
    }

    #[test]
    fn with_value_profile_needs_value_when_set_or_limited() {
        let e = errs(
            "actions = [{ set_profile = { name = \"caller\" } }, { unset_profile = { name = \"caller\" } }, { limit = { profile = \"caller\", max = 1 } }]\n",
        );
        assert_eq!(e.matches("is with_value: set `value`").count(), 3, "{e}");
    }

    #[test]
    fn limit_unknown_profile_points_at_profile_key() {
        let e = errs("actions = [{ limit = { profile = \"nope\", max = 1 } }]\n");
        assert_eq!(
            e,
            "<config>:9:34: unknown profile `nope` (declare it in [profiles])"
        );
    }

    #[test]
    fn bad_method_timeout_and_var_are_reported() {
        let e = errs(
            "actions = [{ timeout = { seconds = 0 } }, { timeout = { seconds = 5, from = \"$hdr(X)\" } }, { set_var = { name = \"\", value = \"v\" } }]\n[rule.match]\nmethod = [\"INV ITE\"]\n",
        );
        assert!(e.contains("timeout seconds must be > 0"), "{e}");
        assert!(e.contains("timeout needs exactly one"), "{e}");
        assert!(e.contains("set_var needs a non-empty name"), "{e}");
        assert!(e.contains("<config>:11:11: bad method `INV ITE`"), "{e}");
    }

    #[test]
    fn inv_100_delay_is_bounded_by_rfc_3261() {
        let ok = Config::from_toml_str("[dialog]\ninv_100_delay = 190\n").unwrap();
        assert_eq!(ok.dialog.inv_100_delay, 190);
        let e = Config::from_toml_str("[dialog]\ninv_100_delay = 191\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "<config>:2:17: inv_100_delay 191 ms out of range (0..=190): RFC 3261 wants the 100 within 200 ms"
        );
    }

    #[test]
    fn dialog_and_listener_checks() {
        let bad = "[core]\nlisten = []\n[dialog]\nrr_param = \"\"\ndefault_timeout = 0\nbye_early_code = 200\nbridge_controller = \"controller@x\"\n";
        let e = Config::from_toml_str(bad).unwrap_err();
        assert_eq!(e.errors.len(), 5, "{e}");
        let dup = "[core]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]\n";
        let e = Config::from_toml_str(dup).unwrap_err();
        assert_eq!(
            e.to_string(),
            "<config>:2:33: duplicate listener `udp:127.0.0.1:5060`"
        );
    }

    #[test]
    fn transaction_timers_are_checked() {
        let ok =
            Config::from_toml_str("[transaction]\nt1 = 100\nt2 = 100\ntimer_b = 100\n").unwrap();
        assert_eq!(
            (ok.transaction.t1, ok.transaction.t2, ok.transaction.timer_b),
            (100, 100, 100)
        );
        let e = Config::from_toml_str("[transaction]\nt1 = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "<config>:2:6: t1 must be at least 1 ms (RFC 3261 default: 500)"
        );
        let e = Config::from_toml_str("[transaction]\nt1 = 1000\nt2 = 999\ntimer_b = 999\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "<config>:3:6: t2 999 ms must be at least t1 (1000 ms)\n\
             <config>:4:11: timer_b 999 ms must be at least t1 (1000 ms); RFC 3261: 64*T1",
            "{e}"
        );
        let e = Config::from_toml_str("[transaction]\ntimer_c = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `timer_c`"), "{e}");
    }

    #[test]
    fn tcp_limits_must_be_positive() {
        let ok = Config::from_toml_str("[core]\ntcp_message_timeout = 2\nmax_open_files = 4096\n")
            .unwrap();
        assert_eq!(
            (ok.core.tcp_message_timeout, ok.core.max_open_files),
            (2, 4096)
        );
        let e = Config::from_toml_str(
            "[core]\ntcp_message_timeout = 0\ntcp_max_connections = 0\ntcp_max_per_peer = 0\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "<config>:2:23: tcp_message_timeout must be > 0\n\
             <config>:3:23: tcp_max_connections must be > 0\n\
             <config>:4:20: tcp_max_per_peer must be > 0",
            "{e}"
        );
    }
}
