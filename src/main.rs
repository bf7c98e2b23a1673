//! `sipedge` command line: `run` (the default), `ctl`, `check-config`. Nothing else lives here.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sipedge::config::Overrides;

/// sipedge: a SIP edge proxy with dialog tracking.
#[derive(Parser, Debug)]
#[command(name = "sipedge", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the proxy (the default with no subcommand: embedded defaults, no config file).
    Run(RunArgs),
    /// Call the management API (JSON-RPC), like kamcmd.
    Ctl(sipedge::mgmt::ctl::CtlArgs),
    /// Validate a config file; prints every error with line and column.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// TOML config file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, repeatable: `udp:IP:PORT`, `tcp:IP:PORT`, `udp:[::1]:5060`.
    #[arg(long)]
    listen: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Spread datagrams over `adaptive` (as many workers as the load needs) or `all` workers.
    #[arg(long)]
    spread: Option<String>,
    /// Management HTTP address `IP:PORT`.
    #[arg(long)]
    mgmt: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long)]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long = "log-format")]
    log_format: Option<String>,
    /// Start even when another process already serves a listen address, sharing its traffic
    /// through SO_REUSEPORT (e.g. a hand-over between two instances). Default: refuse.
    #[arg(long = "allow-shared-port")]
    allow_shared_port: bool,
    /// If the dialog store file is corrupt, move it aside (`<file>.corrupt-<unix time>`) and
    /// start with an empty store (like `dialog.db_recover = true`). Default: refuse to start.
    #[arg(long = "db-recover")]
    db_recover: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        None => run(RunArgs::default()),
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Ctl(a)) => sipedge::mgmt::ctl::run(&a),
        Some(Cmd::CheckConfig { file }) => match sipedge::config::check_config_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(a: RunArgs) -> ExitCode {
    let o = Overrides {
        config: a.config,
        listen: a.listen,
        workers: a.workers,
        spread: a.spread,
        mgmt: a.mgmt,
        log: a.log,
        log_format: a.log_format,
        allow_shared_port: a.allow_shared_port,
        db_recover: a.db_recover,
    };
    match sipedge::io::app::run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipedge: {e}");
            ExitCode::FAILURE
        }
    }
}
