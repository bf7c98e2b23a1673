//! Every shipped example config must pass `check_config_file`; broken configs must fail with
//! the right `FILE:LINE:COL` errors; live reload keeps the old config on error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};

use sipedge::config::{Config, GroupMode, LiveConfig, check_config_file};
use sipedge::wire::Transport;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn check(name: &str) -> Config {
    check_config_file(&example(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn per_caller_limit_example() {
    let c = check("per-caller-limit.toml");
    assert_eq!(c.profiles.with_value, ["caller"]);
    assert_eq!(c.rule.len(), 1);
}

#[test]
fn trunk_limit_example() {
    let c = check("trunk-limit.toml");
    assert_eq!(c.rule.len(), 4);
    assert!(c.rule.iter().filter(|r| r.stop).count() >= 2);
}

#[test]
fn timeout_from_header_example() {
    let c = check("timeout-from-header.toml");
    assert_eq!(c.rule.len(), 2);
}

#[test]
fn parallel_fork_example() {
    let c = check("parallel-fork.toml");
    let g = &c.target_group[0];
    assert_eq!(g.mode, GroupMode::Parallel);
    assert_eq!(g.targets.len(), 2);
    assert_eq!(g.targets[1].transport, Transport::Tcp);
    assert_eq!(g.targets[1].addr, "10.0.1.20:5080".parse().unwrap());
}

#[test]
fn edge_two_pbx_example() {
    let c = check("edge-two-pbx.toml");
    assert_eq!(c.mgmt.token.as_deref(), Some("change-me"));
    assert_eq!(c.target_group.len(), 2);
    assert_eq!(c.target_group[1].mode, GroupMode::Serial);
}

#[test]
fn full_example_shows_the_defaults() {
    let c = check("full.toml");
    let d = Config::default();
    assert_eq!(c.core, d.core, "full.toml [core] must equal the defaults");
    assert_eq!(c.mgmt, d.mgmt, "full.toml [mgmt] must equal the defaults");
    assert_eq!(
        c.dialog, d.dialog,
        "full.toml [dialog] must equal the defaults"
    );
    assert_eq!(
        c.flood, d.flood,
        "full.toml [flood] must equal the defaults"
    );
    assert_eq!(
        c.limits, d.limits,
        "full.toml [limits] must equal the defaults"
    );
    assert_eq!(
        c.overload, d.overload,
        "full.toml [overload] must equal the defaults"
    );
    assert_eq!(
        c.transaction, d.transaction,
        "full.toml [transaction] must equal the defaults"
    );
    assert_eq!(c.target_group[0].timeout_ms, 5000);
    assert_eq!(c.rule.len(), 1);
    assert_eq!(c.rule[0].actions.len(), 14);
}

/// Writes `text` to a unique temp file and checks it; returns the `Display` output.
fn broken(tag: &str, text: &str) -> (String, String) {
    let path = std::env::temp_dir().join(format!(
        "sipedge-policy-test-{}-{tag}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    let res = check_config_file(&path);
    std::fs::remove_file(&path).unwrap();
    let e = res.expect_err("config should be rejected");
    (path.display().to_string(), e.to_string())
}

fn assert_error(tag: &str, text: &str, line_col: &str, needle: &str) {
    let (file, out) = broken(tag, text);
    let prefix = format!("{file}:{line_col}: ");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(needle)),
        "expected `{prefix}...{needle}...` in:\n{out}"
    );
}

#[test]
fn broken_unknown_field() {
    assert_error(
        "unknown-field",
        "[dialog]\ndefault_timeout = 60\nearly_timout = 5\n",
        "3:1",
        "unknown field `early_timout`",
    );
}

#[test]
fn broken_bad_cidr() {
    let t = "[[rule]]\nname = \"r\"\n[rule.match]\nsrc_ip = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n";
    assert_error("cidr", t, "4:26", "bad CIDR `10.0.0.0/33`");
}

#[test]
fn broken_unknown_template_var() {
    let t = "[[rule]]\nname = \"r\"\nactions = [{ set_var = { name = \"x\", value = \"$fU-$xyz\" } }]\n";
    assert_error("tmpl", t, "3:51", "unknown template variable `$xyz`");
}

#[test]
fn broken_unknown_profile() {
    let t = "[profiles]\nwith_value = [\"caller\"]\n\n[[rule]]\nname = \"r\"\nactions = [{ set_profile = { name = \"callr\", value = \"$fU\" } }]\n";
    assert_error("profile", t, "6:37", "unknown profile `callr`");
}

#[test]
fn broken_hostname_target() {
    let t = "[[target_group]]\nname = \"g\"\ntargets = [\"udp:10.0.0.1:5060\", \"sip:pbx.example.com:5060\"]\n";
    assert_error("host", t, "3:38", "DNS (RFC 3263) is not supported");
}

#[test]
fn broken_mgmt_without_token() {
    let t = "[mgmt]\nlisten = \"0.0.0.0:7060\"\n";
    assert_error("mgmt", t, "2:10", "not a loopback address: set mgmt.token");
    // loopback needs no token; a token makes a public listener acceptable
    assert!(Config::from_toml_str("[mgmt]\nlisten = \"[::1]:7060\"\n").is_ok());
    assert!(Config::from_toml_str("[mgmt]\nlisten = \"0.0.0.0:7060\"\ntoken = \"t\"\n").is_ok());
}

#[test]
fn broken_reply_code_and_profile_value_mismatch() {
    let t = "[[rule]]\nname = \"r\"\nactions = [{ reply = { code = 200 } }]\n";
    assert_error("code", t, "3:31", "reply code `200` out of range");
    let t = "[profiles]\nno_value = [\"calls\"]\n[[rule]]\nname = \"r\"\nactions = [{ set_profile = { name = \"calls\", value = \"$fU\" } }]\n";
    assert_error("novalue", t, "5:54", "profile `calls` is no_value");
}

#[test]
fn broken_duplicates_are_all_reported() {
    let t = "[[target_group]]\nname = \"g\"\ntargets = [\"udp:10.0.0.1:5060\"]\n[[target_group]]\nname = \"g\"\ntargets = [\"udp:10.0.0.2:5060\"]\n[[rule]]\nname = \"r\"\n[[rule]]\nname = \"r\"\n";
    let (file, out) = broken("dups", t);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains(&format!("{file}:5:8: duplicate target group `g`")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:10:8: duplicate rule name `r`")),
        "{out}"
    );
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let e = check_config_file(Path::new("/nonexistent/sipedge.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read config"), "{e}");
}

#[test]
fn live_reload_swaps_or_keeps_the_old_config() {
    let path =
        std::env::temp_dir().join(format!("sipedge-policy-live-{}.toml", std::process::id()));
    let live = LiveConfig::new(Config::default());
    assert_eq!(live.load().generation, 0);

    let good = "[core]\nlisten = [\"udp:0.0.0.0:5070\"]\nworkers = 8\n[dialog]\ndefault_timeout = 600\n[[rule]]\nname = \"r\"\nactions = [{ track = false }]\n";
    std::fs::write(&path, good).unwrap();
    let report = live.reload_from_file(&path).unwrap();
    assert_eq!(report.generation, 1);
    assert_eq!(report.rules, 1);
    assert_eq!(report.restart_required, ["core.listen", "core.workers"]);
    let snap = live.load_full();
    assert_eq!(
        snap.config.dialog.default_timeout, 600,
        "live settings applied"
    );
    assert_eq!(
        snap.config.core.listen,
        Config::default().core.listen,
        "restart-only settings kept"
    );
    assert_eq!(snap.config.core.workers, 0);
    assert_eq!(snap.policy.len(), 1);

    std::fs::write(&path, "[dialog]\ndefault_timeout = \"soon\"\n").unwrap();
    let err = live.reload_from_file(&path).unwrap_err();
    assert!(err.to_string().contains(":2:19:"), "{err}");
    assert_eq!(
        live.load().generation,
        1,
        "old config stays after a bad reload"
    );
    assert_eq!(live.load().config.dialog.default_timeout, 600);
    std::fs::remove_file(&path).unwrap();
}
