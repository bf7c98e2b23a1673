//! Configuration: one strict TOML file, parsed and validated away from the packet path.
//!
//! `Config::default()` is exactly what `sipedge` runs with no config file. Every table uses
//! `deny_unknown_fields`; every error carries `line:col` ([`ConfigErrors`]). See
//! `examples/full.toml` for every field with its default. Sections:
//!
//! - `[core]`: `listen` (list of `udp:IP:PORT` / `tcp:[IPv6]:PORT`, default
//!   `["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]`), `workers` (0 = one per core),
//!   `spread` (`adaptive`: as many workers as the load needs, default; `all`: every worker),
//!   `spread_busy` (0.8: the fraction of a core per active worker above which adaptive
//!   spreading adds a worker; it drops one when the load fits under half of it),
//!   `node_id` (u16, part of every dialog id), `log_level` (`trace|debug|info|warn|error`,
//!   default `info`), `log_format` (`text|json`), `advertise` (optional IP/host written in
//!   Via and Record-Route instead of the socket address), `udp_rcvbuf` / `udp_sndbuf` (bytes,
//!   0 = OS default), `tcp_idle_timeout` (seconds between messages, 300),
//!   `tcp_message_timeout` (seconds from a message's first byte to its last, 10),
//!   `tcp_max_connections` (10000, whole process), `tcp_max_per_peer` (100, whole process),
//!   `tcp_max_buffer` (bytes per connection, 65536), `max_open_files` (soft RLIMIT_NOFILE set
//!   at start; 0 = the hard limit).
//! - `[mgmt]`: `listen` (`127.0.0.1:7060`), `token` (bearer token; required when `listen` is
//!   not a loopback address), `metrics_top_n` (10: values per profile in `/metrics`),
//!   `max_connections` (256) and `max_connections_per_ip` (16) open management connections,
//!   `socket` (optional UNIX socket path for `sipedge ctl --socket`, mode 0600).
//! - `[dialog]`: dialog_ng parameters (`rr_param`, `default_timeout`, `early_timeout`,
//!   `noack_timeout`, `end_timeout`, `detect_spirals`, `send_bye`, `bye_early_code`,
//!   `bye_early_reason`, `dlg_extra_hdrs`, `timeout_noreset`, `end_on_race`,
//!   `bridge_controller`) plus `track_all_invites` (true) and `max_dialogs` (0 = unlimited);
//!   the INVITE transaction's `fr_inv_timer` (Timer C) and `inv_100_delay`; the dialog store
//!   (`db_url`, `db_mode`, `db_update_period`). INVITE transaction state is not part of the
//!   dialog: it lives in the owning worker's transaction table ([`crate::txn`]), found from our
//!   Via branch, and a dialog keeps only its slot.
//! - `[profiles]`: `no_value` and `with_value` name lists (dialog_ng `profiles_*`).
//! - `[[target_group]]`: `name`, `mode` (`parallel|serial|round_robin`), `targets`
//!   (IP literals only: DNS is not supported), `timeout_ms` (serial per-branch, 5000).
//! - `[[rule]]`: see [`crate::policy::spec::RuleSpec`].
//! - `[transaction]`: `t1` (500), `t2` (4000) and `timer_b` (32000), in ms: RFC 3261's timers
//!   of the proxy's own transactions ([`TransactionConfig`]).
//!
//! Invariants: a `Config` returned by [`Config::from_toml_str`] has passed semantic validation
//! (all cross-references resolve); nothing here runs on the packet path.

mod addr;
mod error;
mod flood;
mod live;
mod transaction;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use addr::{Listen, Target};
pub use error::{ConfigError, ConfigErrors, line_col};
pub use flood::{FloodConfig, LimitsConfig, OverloadConfig, PipeConfig, RefuseAction};
pub use live::{LiveConfig, ReloadReport, Snapshot};
pub use transaction::TransactionConfig;

use crate::policy::RuleSpec;
use crate::wire::Transport;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[core]`: sockets, workers, logging.
    pub core: CoreConfig,
    /// `[mgmt]`: management HTTP endpoint.
    pub mgmt: MgmtConfig,
    /// `[dialog]`: dialog tracking parameters.
    pub dialog: DialogConfig,
    /// `[profiles]`: declared dialog profiles.
    pub profiles: ProfilesConfig,
    /// `[[target_group]]`: named forwarding destinations.
    pub target_group: Vec<TargetGroup>,
    /// `[[rule]]`: policy rules, in evaluation order.
    pub rule: Vec<RuleSpec>,
    /// `[flood]`: per-source rates, bans and rate pipes.
    pub flood: FloodConfig,
    /// `[limits]`: admission caps.
    pub limits: LimitsConfig,
    /// `[overload]`: refusing new calls when a worker falls behind.
    pub overload: OverloadConfig,
    /// `[transaction]`: RFC 3261 timer values (T1, T2, Timer B).
    pub transaction: TransactionConfig,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (default).
    #[default]
    Info,
    /// Problems only.
    Warn,
    /// Errors only.
    Error,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How datagrams on the shared listen sockets are spread over the workers (`core.spread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Over as many workers as the load needs, at random among them (default): one worker
    /// while it is under `spread_busy` (80%) of a core, more as they get busy.
    #[default]
    Adaptive,
    /// Always over every worker, at random.
    All,
}

/// `[core]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Sockets to listen on.
    pub listen: Vec<Listen>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// How datagrams from the shared listen sockets are spread over the workers.
    pub spread: Spread,
    /// Adaptive spreading adds a worker when the active ones average more than this fraction
    /// of a core, and drops one when the load would fit under half of it (0 < x <= 1).
    pub spread_busy: f64,
    /// Node id, part of every dialog id (unique per node in a cluster).
    pub node_id: u16,
    /// Log level.
    pub log_level: LogLevel,
    /// Log format.
    pub log_format: LogFormat,
    /// Address or host to advertise in Via / Record-Route (default: the socket address).
    pub advertise: Option<String>,
    /// UDP receive buffer in bytes (0 = OS default).
    pub udp_rcvbuf: usize,
    /// UDP send buffer in bytes (0 = OS default).
    pub udp_sndbuf: usize,
    /// Close TCP connections idle this long between messages (seconds).
    pub tcp_idle_timeout: u64,
    /// Maximum concurrent TCP connections in the whole process (all workers together, accepted
    /// and opened); one more is closed at once and counted (`tcp_refused_global`).
    pub tcp_max_connections: usize,
    /// Maximum concurrent TCP connections from one peer IP in the whole process (all workers
    /// together; an IPv6 peer counts by its /64); one more is closed at once and counted
    /// (`tcp_refused_per_peer`).
    pub tcp_max_per_peer: usize,
    /// Maximum buffered bytes per TCP connection (a larger message closes it).
    pub tcp_max_buffer: usize,
    /// UDP requests leave from a private socket per worker (a kernel-chosen port, written in
    /// our Via, so responses come straight back to the worker that owns the transaction).
    /// `false`: they leave from the listen socket (port 5060, as Kamailio sends), for peers that
    /// filter on source port; responses then reach any worker and are handed to the owner.
    pub private_send_sockets: bool,
    /// A TCP message must be complete this long after its first byte arrived (seconds), however
    /// slowly it trickles in; else the connection is reset and counted
    /// (`tcp_message_timeouts`). `tcp_idle_timeout` applies between messages only.
    pub tcp_message_timeout: u64,
    /// Soft open-file limit (RLIMIT_NOFILE) set at start; 0 = raise it to the hard limit. The
    /// result is logged; failing to set it is logged, not fatal.
    pub max_open_files: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 5060));
        CoreConfig {
            listen: vec![
                Listen {
                    transport: Transport::Udp,
                    addr: lo,
                },
                Listen {
                    transport: Transport::Tcp,
                    addr: lo,
                },
            ],
            workers: 0,
            spread: Spread::Adaptive,
            spread_busy: 0.8,
            node_id: 0,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            advertise: None,
            udp_rcvbuf: 0,
            udp_sndbuf: 0,
            tcp_idle_timeout: 300,
            tcp_max_connections: 10_000,
            tcp_max_per_peer: 100,
            tcp_max_buffer: 65_536,
            private_send_sockets: true,
            tcp_message_timeout: 10,
            max_open_files: 0,
        }
    }
}

/// `[mgmt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MgmtConfig {
    /// HTTP listen address for JSON-RPC and `/metrics`.
    pub listen: SocketAddr,
    /// Bearer token; required when `listen` is not loopback.
    pub token: Option<String>,
    /// How many values per profile `/metrics` exports as `sipedge_profile_size`, largest first
    /// (each profile's total is exported as well). Read at every scrape, so a reload applies.
    pub metrics_top_n: usize,
    /// Most management connections open at once (TCP); more are accepted and closed at once.
    pub max_connections: usize,
    /// Most management connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// UNIX socket (mode 0600) serving the same HTTP JSON-RPC for `sipedge ctl --socket`;
    /// none by default. A missing directory is logged and start goes on without it.
    pub socket: Option<std::path::PathBuf>,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        MgmtConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7060)),
            token: None,
            metrics_top_n: 10,
            max_connections: 256,
            max_connections_per_ip: 16,
            socket: None,
        }
    }
}

/// `[dialog]`: dialog_ng parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialogConfig {
    /// Record-Route URI parameter carrying the dialog id.
    pub rr_param: String,
    /// Confirmed dialog lifetime, seconds.
    pub default_timeout: u32,
    /// Early (unconfirmed) dialog lifetime, seconds.
    pub early_timeout: u32,
    /// Wait for ACK after 2xx, seconds.
    pub noack_timeout: u32,
    /// Keep ended dialogs (for late requests), seconds.
    pub end_timeout: u32,
    /// Recognise spirals (same dialog through us twice) instead of creating a second dialog.
    pub detect_spirals: bool,
    /// Send BYE both ways when a confirmed dialog times out.
    pub send_bye: bool,
    /// Final reply code sent upstream when an early dialog is terminated.
    pub bye_early_code: u16,
    /// Reason phrase for `bye_early_code`.
    pub bye_early_reason: String,
    /// Extra headers (CRLF-separated) added to generated BYEs.
    pub dlg_extra_hdrs: String,
    /// Sequential requests do not push the timeout later.
    pub timeout_noreset: bool,
    /// A 2xx from a second fork, after the first fork's 2xx confirmed the dialog: `false`
    /// relays it upstream (the caller ends that leg); `true` makes the proxy ACK and BYE it
    /// itself and not relay it. Either way the race is counted.
    pub end_on_race: bool,
    /// From/Contact URI of generated requests.
    pub bridge_controller: String,
    /// Track a dialog for every initial INVITE (rules can still `track = false`).
    pub track_all_invites: bool,
    /// Maximum tracked dialogs, 0 = unlimited.
    pub max_dialogs: u64,
    /// INVITE transaction timeout after a provisional reply (Timer C, Kamailio `fr_inv_timer`),
    /// in milliseconds (at least 1000 is used): the branch is cancelled and counts as a 408
    /// final (RFC 3261 §16.7 then picks the best final over all branches).
    pub fr_inv_timer: u64,
    /// How long our own 100 Trying to an INVITE waits for a provisional or final reply from
    /// downstream that makes it unneeded, in ms (RFC 3261 §17.2.1: a server transaction sends
    /// 100 unless the TU answers within 200 ms). 0 = answer 100 at once, like Kamailio's
    /// `auto_inv_100`, and the default. At most 190, so the 100 still leaves within 200 ms.
    pub inv_100_delay: u64,
    /// Dialog store: a redb file path; empty = none (dialog_ng `db_url`).
    pub db_url: String,
    /// 0 = dialogs are not stored, 2 = write-behind every `db_update_period` (dialog_ng).
    pub db_mode: u8,
    /// Write-behind period in milliseconds (dialog_ng `db_update_period`, in ms here).
    pub db_update_period: u64,
    /// At start, a corrupt store file is moved aside (`<file>.corrupt-<unix time>`) and the
    /// proxy starts with an empty store; `false`: a corrupt file stops the start
    /// (`sipedge run --db-recover` sets it for one start).
    pub db_recover: bool,
}

impl Default for DialogConfig {
    fn default() -> Self {
        DialogConfig {
            rr_param: "did".into(),
            default_timeout: 43_200,
            early_timeout: 300,
            noack_timeout: 60,
            end_timeout: 300,
            detect_spirals: true,
            send_bye: true,
            bye_early_code: 480,
            bye_early_reason: "Temporarily Unavailable".into(),
            dlg_extra_hdrs: String::new(),
            timeout_noreset: false,
            end_on_race: false,
            bridge_controller: "sip:controller@127.0.0.1".into(),
            track_all_invites: true,
            max_dialogs: 0,
            fr_inv_timer: 181_000,
            inv_100_delay: 0,
            db_url: String::new(),
            db_mode: 0,
            db_update_period: 1000,
            db_recover: false,
        }
    }
}

/// `[profiles]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Profiles without values (a plain counter).
    pub no_value: Vec<String>,
    /// Profiles keyed by a value (a counter per value).
    pub with_value: Vec<String>,
}

impl ProfilesConfig {
    /// `Some(true)` for a with_value profile, `Some(false)` for no_value, `None` if unknown.
    pub fn has_value(&self, name: &str) -> Option<bool> {
        if self.with_value.iter().any(|n| n == name) {
            Some(true)
        } else if self.no_value.iter().any(|n| n == name) {
            Some(false)
        } else {
            None
        }
    }
}

/// How a target group forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// Fork to every target at once; first 2xx wins.
    #[default]
    Parallel,
    /// Try targets in order; next on failure or `timeout_ms`.
    Serial,
    /// One target per call, rotating.
    RoundRobin,
}

/// `[[target_group]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// Unique name referenced by `route` actions.
    pub name: String,
    /// Forwarding mode.
    #[serde(default)]
    pub mode: GroupMode,
    /// Destinations (IP literals).
    pub targets: Vec<Target>,
    /// Serial mode: per-branch timeout before trying the next target, ms.
    #[serde(default = "default_branch_timeout")]
    pub timeout_ms: u64,
}

fn default_branch_timeout() -> u64 {
    5_000
}

/// Command-line overrides, merged over the file by [`Config::apply_overrides`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Config file path (read by the caller, not applied here).
    pub config: Option<PathBuf>,
    /// Replaces `core.listen` when non-empty.
    pub listen: Vec<String>,
    /// Replaces `core.workers`.
    pub workers: Option<usize>,
    /// Replaces `core.spread`.
    pub spread: Option<String>,
    /// Replaces `mgmt.listen`.
    pub mgmt: Option<String>,
    /// Replaces `core.log_level`.
    pub log: Option<String>,
    /// Replaces `core.log_format`.
    pub log_format: Option<String>,
    /// `--allow-shared-port`: start even when another process already serves a listen
    /// address (not a file setting; read by `io::app`, not applied by `apply_overrides`).
    pub allow_shared_port: bool,
    /// `--db-recover`: sets `dialog.db_recover` (a corrupt dialog store is moved aside).
    pub db_recover: bool,
}

/// An invalid command-line override.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// `--listen` value did not parse.
    #[error("--listen: {0}")]
    Listen(String),
    /// `--mgmt` value did not parse.
    #[error("--mgmt `{0}`: expected IP:PORT")]
    Mgmt(String),
    /// `--mgmt` is not loopback and no token is configured.
    #[error("--mgmt {0} is not a loopback address: set mgmt.token in the config file")]
    MgmtToken(SocketAddr),
    /// `--log` value is not a level.
    #[error("--log `{0}`: expected trace, debug, info, warn or error")]
    Log(String),
    /// `--log-format` value is not a format.
    #[error("--log-format `{0}`: expected text or json")]
    LogFormat(String),
    /// `--spread` value is not a mode.
    #[error("--spread `{0}`: expected adaptive or all")]
    Spread(String),
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).ok()
}

/// Collapses a multi-line message (e.g. a regex syntax error) to one line, with a hint for
/// the one confusing `toml` message.
fn one_line(message: &str) -> String {
    let mut out = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.contains("wanted exactly 1 element") {
        out.push_str(" (each action is a one-key table, e.g. `{ track = true }`)");
    }
    out
}

impl Config {
    /// Parses and validates a TOML document. Errors are positioned; file name `<config>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        Self::parse_named(text, "<config>")
    }

    fn parse_named(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((1, 1), |s| {
                error::line_col(text, error::refine(text, s, e.message()))
            });
            ConfigErrors {
                file: file.to_owned(),
                errors: vec![ConfigError {
                    line,
                    col,
                    message: one_line(e.message()),
                }],
            }
        })?;
        let errors = validate::validate(&config, text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                file: file.to_owned(),
                errors,
            })
        }
    }

    /// Applies command-line overrides; on error `self` is unchanged.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), OverrideError> {
        let mut next = self.clone();
        if !o.listen.is_empty() {
            next.core.listen = o
                .listen
                .iter()
                .map(|s| s.parse::<Listen>())
                .collect::<Result<_, _>>()
                .map_err(OverrideError::Listen)?;
        }
        if let Some(w) = o.workers {
            next.core.workers = w;
        }
        if let Some(m) = &o.spread {
            next.core.spread = parse_enum(m).ok_or_else(|| OverrideError::Spread(m.clone()))?;
        }
        if let Some(m) = &o.mgmt {
            next.mgmt.listen = m.parse().map_err(|_| OverrideError::Mgmt(m.clone()))?;
            if !validate::token_ok(&next.mgmt) {
                return Err(OverrideError::MgmtToken(next.mgmt.listen));
            }
        }
        if let Some(l) = &o.log {
            next.core.log_level = parse_enum(l).ok_or_else(|| OverrideError::Log(l.clone()))?;
        }
        if let Some(f) = &o.log_format {
            next.core.log_format =
                parse_enum(f).ok_or_else(|| OverrideError::LogFormat(f.clone()))?;
        }
        if o.db_recover {
            next.dialog.db_recover = true;
        }
        *self = next;
        Ok(())
    }
}

/// Reads, parses and validates a config file; errors are prefixed with `path`.
pub fn check_config_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(name.clone(), format!("cannot read config: {e}")))?;
    Config::parse_named(&text, &name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.core.listen.len(), 2);
        assert_eq!(c.mgmt.listen, "127.0.0.1:7060".parse().unwrap());
        assert!(c.dialog.track_all_invites);
        assert_eq!(c.dialog.default_timeout, 43_200);
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        let e = Config::from_toml_str(
            "[[rule]]\nname = \"r\"\n[rule.match]\nruri_user = { regex = \"(\" }\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert_eq!(s.lines().count(), 1, "{s}");
        assert!(s.starts_with("<config>:4:24: bad regex `(`"), "{s}");
        let e = Config::from_toml_str(
            "[[rule]]\nname = \"r\"\nactions = [{ track = true, set_flag = 1 }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("one-key table"), "{e}");
        let e = Config::from_toml_str("[[rule]]\nname = \"r\"\nactions = [{ set_flag = 40 }]\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("<config>:3:25: flag `40` out of range"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_has_position() {
        let e = Config::from_toml_str("[core]\nworkers = 2\nwokers = 3\n").unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!((e.errors[0].line, e.errors[0].col), (3, 1), "{e}");
        assert!(
            e.to_string()
                .starts_with("<config>:3:1: unknown field `wokers`"),
            "{e}"
        );
    }

    #[test]
    fn overrides_apply_and_validate() {
        let mut c = Config::default();
        let o = Overrides {
            listen: vec!["udp:0.0.0.0:5070".into()],
            workers: Some(4),
            log: Some("debug".into()),
            log_format: Some("json".into()),
            ..Overrides::default()
        };
        c.apply_overrides(&o).unwrap();
        assert_eq!(c.core.listen[0].addr.port(), 5070);
        assert_eq!(c.core.workers, 4);
        assert_eq!(c.core.log_level, LogLevel::Debug);
        assert_eq!(c.core.log_format, LogFormat::Json);

        let before = c.clone();
        let bad = Overrides {
            mgmt: Some("0.0.0.0:7060".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            c.apply_overrides(&bad),
            Err(OverrideError::MgmtToken(_))
        ));
        assert_eq!(c, before, "failed override must not change the config");
        let bad = Overrides {
            log: Some("loud".into()),
            ..Overrides::default()
        };
        assert_eq!(
            c.apply_overrides(&bad),
            Err(OverrideError::Log("loud".into()))
        );
        let bad = Overrides {
            listen: vec!["udp:host.example:5060".into()],
            ..Overrides::default()
        };
        assert!(
            matches!(c.apply_overrides(&bad), Err(OverrideError::Listen(m)) if m.contains("DNS"))
        );
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let t = r#"
[mgmt]
listen = "0.0.0.0:7060"

[profiles]
with_value = ["caller", "caller"]

[[rule]]
name = "r"
actions = [{ route = { group = "nope" } }, { timeout = {} }]
"#;
        let e = Config::from_toml_str(t).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.errors.len(), 4, "{s}");
        assert!(s.contains("<config>:3:10: mgmt listen"), "{s}");
        assert!(
            s.contains("<config>:6:25: duplicate profile `caller`"),
            "{s}"
        );
        assert!(
            s.contains("<config>:10:32: unknown target group `nope`"),
            "{s}"
        );
        assert!(s.contains("timeout needs exactly one"), "{s}");
    }
}
