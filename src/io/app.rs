//! The process: logging, config, workers, management listener, signals.
//!
//! SIGTERM/SIGINT stop the workers and the management listener (within ~100 ms of the
//! signal, well inside 2 s); SIGHUP reloads the config file like `core.reload`.
//! Invariant: any start-up error is returned as one line before anything keeps running.

use std::path::PathBuf;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::run::{self, RunConfig};
use super::tcp::TcpLimits;
use crate::config::{Config, LiveConfig, LogFormat, LogLevel, Overrides, check_config_file};
use crate::engine::{Settings, apply_snapshot};
use crate::mgmt::engine_backend::{EngineBackend, LogHandle};

/// Everything that can stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is invalid.
    #[error("{0}")]
    Config(String),
    /// A command-line flag is invalid.
    #[error("{0}")]
    Flag(String),
    /// Sockets or threads.
    #[error("{0}")]
    Run(#[from] run::RunError),
    /// Management listener.
    #[error("{0}")]
    Mgmt(String),
}

/// The memory available now (`MemAvailable` of /proc/meminfo), bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The supervisor's config from the file config.
pub fn run_config_from(c: &Config) -> RunConfig {
    // `[limits]` defaults are derived from the memory available at start.
    if let Some(m) = available_memory() {
        crate::engine::set_available_memory(m);
    }
    RunConfig {
        listen: c
            .core
            .listen
            .iter()
            .map(|l| (l.transport, l.addr))
            .collect(),
        workers: c.core.workers,
        advertise: c.core.advertise.clone(),
        settings: Settings::from_config(c),
        profiles_no_value: c.profiles.no_value.clone(),
        profiles_with_value: c.profiles.with_value.clone(),
        node_id: c.core.node_id,
        tcp: TcpLimits {
            idle_ms: c.core.tcp_idle_timeout.saturating_mul(1000),
            message_ms: c.core.tcp_message_timeout.saturating_mul(1000),
            max_conns: c.core.tcp_max_connections,
            max_per_peer: u32::try_from(c.core.tcp_max_per_peer).unwrap_or(u32::MAX),
            max_buffer: c.core.tcp_max_buffer.max(4096),
        },
        pin: true,
        spread: match c.core.spread {
            crate::config::Spread::Adaptive => super::spread::SpreadMode::Adaptive,
            crate::config::Spread::All => super::spread::SpreadMode::All,
        },
        spread_busy: c.core.spread_busy,
        private_send_sockets: c.core.private_send_sockets,
        max_open_files: c.core.max_open_files,
        allow_shared_port: false,
        persist: (c.dialog.db_mode == 2 && !c.dialog.db_url.is_empty()).then(|| {
            super::persist::PersistConfig {
                path: c.dialog.db_url.clone().into(),
                update_period_ms: c.dialog.db_update_period,
                recover: c.dialog.db_recover,
            }
        }),
    }
}

fn init_logging(level: LogLevel, format: LogFormat) -> LogHandle {
    use tracing_subscriber::prelude::*;
    let name = format!("{level:?}").to_lowercase();
    let filter = tracing_subscriber::EnvFilter::new(name);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let reg = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => reg.with(fmt.json()).try_init(),
        LogFormat::Text => reg.with(fmt).try_init(),
    };
    LogHandle::new(handle)
}

/// Run the proxy until SIGTERM/SIGINT.
pub fn run(o: &Overrides) -> Result<(), AppError> {
    let (mut config, path): (Config, Option<PathBuf>) = match &o.config {
        Some(p) => (
            check_config_file(p)
                .map_err(|e| AppError::Config(e.to_string().trim_end().to_string()))?,
            Some(p.clone()),
        ),
        None => (Config::default(), None),
    };
    config
        .apply_overrides(o)
        .map_err(|e| AppError::Flag(e.to_string()))?;
    let log = init_logging(config.core.log_level, config.core.log_format);
    let rc = RunConfig {
        allow_shared_port: o.allow_shared_port,
        ..run_config_from(&config)
    };
    let mut mgmt_opts = super::mgmt_http::MgmtOptions::from_config(&config.mgmt);
    let live = Arc::new(LiveConfig::new(config));
    let running = run::start(&rc)?;
    apply_snapshot(&running.shared, live.load_full());
    let clock = running.clock;
    mgmt_opts.now_ms = Some(Arc::new(move || clock.now_ms()));
    let backend = Arc::new(EngineBackend::new(
        running.shared.clone(),
        Arc::new(move || clock.now_ms()),
        live.clone(),
        path.clone(),
        log,
    ));
    let mgmt = match super::mgmt_http::spawn_with(mgmt_opts, backend.clone()) {
        Ok(m) => m,
        Err(e) => {
            running.stop();
            running.join();
            return Err(AppError::Mgmt(e.to_string()));
        }
    };
    tracing::info!(
        listen = ?running.bound,
        workers = running.shared.workers,
        mgmt = %mgmt.local_addr(),
        mgmt_socket = ?mgmt.socket_path(),
        "sipedge running"
    );
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| AppError::Mgmt(format!("cannot install signal handlers: {e}")))?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            match backend.reload_now() {
                Ok(r) => tracing::info!(report = %r, "config reloaded"),
                Err(e) => tracing::error!(error = %e, "reload rejected; the running config stays"),
            }
            continue;
        }
        break;
    }
    tracing::info!("stopping");
    running.stop();
    mgmt.shutdown();
    running.join();
    Ok(())
}
