//! [`LiveConfig`]: the running configuration and compiled policy behind one `ArcSwap`.
//!
//! Invariants: readers (`load`) never block and always see a config and policy that were
//! validated together. A reload parses and validates off the packet path and swaps in one
//! atomic store; an invalid file leaves the old snapshot in place. Settings that need a
//! restart (listeners, workers, spreading, node id, socket buffers and send sockets, the mgmt
//! listener, token, connection caps and socket, rr_param) are reported and kept at their
//! running values, so the snapshot always describes what is actually applied.

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::{Config, ConfigErrors, check_config_file};
use crate::policy::RulePolicy;

/// One consistent view: the config and the policy compiled from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The applied configuration.
    pub config: Config,
    /// Policy compiled from `config.rule`.
    pub policy: RulePolicy,
    /// 0 for the initial config, +1 per successful reload.
    pub generation: u64,
}

impl Snapshot {
    fn new(config: Config, generation: u64) -> Self {
        let policy = RulePolicy::new(&config.rule);
        Snapshot {
            config,
            policy,
            generation,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Generation now active.
    pub generation: u64,
    /// Number of rules now active.
    pub rules: usize,
    /// Changed settings that were NOT applied and need a restart (e.g. `core.listen`).
    pub restart_required: Vec<&'static str>,
}

/// The live configuration shared by workers and management.
#[derive(Debug)]
pub struct LiveConfig {
    current: ArcSwap<Snapshot>,
}

impl LiveConfig {
    /// Starts with `config` (already validated) as generation 0.
    pub fn new(config: Config) -> Self {
        LiveConfig {
            current: ArcSwap::from_pointee(Snapshot::new(config, 0)),
        }
    }

    /// The current snapshot (cheap; hold it for one batch, not forever).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// An owned handle to the current snapshot.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Validates `path` and swaps it in; on error the old snapshot stays.
    pub fn reload_from_file(&self, path: &Path) -> Result<ReloadReport, ConfigErrors> {
        let new = check_config_file(path)?;
        Ok(self.reload(new))
    }

    /// Swaps in an already validated config, keeping restart-only settings.
    pub fn reload(&self, mut new: Config) -> ReloadReport {
        let old = self.current.load_full();
        let restart_required = keep_restart_only(&old.config, &mut new);
        let snap = Snapshot::new(new, old.generation + 1);
        let report = ReloadReport {
            generation: snap.generation,
            rules: snap.policy.len(),
            restart_required,
        };
        self.current.store(Arc::new(snap));
        report
    }
}

/// Copies restart-only settings from `old` into `new`, returning the names that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($sec:ident . $field:ident),*) => {$(
            if old.$sec.$field != new.$sec.$field {
                changed.push(concat!(stringify!($sec), ".", stringify!($field)));
                new.$sec.$field = old.$sec.$field.clone();
            }
        )*};
    }
    keep!(
        core.listen,
        core.workers,
        core.spread,
        core.spread_busy,
        core.node_id,
        core.udp_rcvbuf,
        core.udp_sndbuf,
        core.private_send_sockets,
        core.tcp_idle_timeout,
        core.tcp_message_timeout,
        core.tcp_max_connections,
        core.tcp_max_per_peer,
        core.tcp_max_buffer,
        core.max_open_files,
        mgmt.listen,
        mgmt.token,
        mgmt.max_connections,
        mgmt.max_connections_per_ip,
        mgmt.socket,
        dialog.rr_param
    );
    changed
}
