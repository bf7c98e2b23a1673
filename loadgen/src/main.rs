//! `loadgen` command line: parses flags into a [`loadgen::io::RunConfig`], runs it, prints
//! the summary and writes the optional `.hgrm`, JSON and SVG outputs. Exit code 1 when more
//! than `--max-failed` calls failed, 2 on setup errors.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use loadgen::io::{self, Mode, RunConfig, Transport};
use loadgen::report;
use loadgen::scenario::{HoldDist, Mix};

/// Open-loop SIP load generator (UAC/UAS). Latencies in µs from intended send times.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Cli {
    /// uac: originate calls; uas: answer calls; both: UAC calls its own UAS through --target.
    #[arg(value_enum)]
    mode: Mode,
    /// Where initial requests go (the proxy, or the UAS directly).
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Address of the UAS (used in the default R-URI).
    #[arg(long, default_value = "127.0.0.1:5090")]
    uas: SocketAddr,
    /// Request-URI (default sip:service@UAS).
    #[arg(long)]
    ruri: Option<String>,
    /// UAS listen address (default: --uas).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Calls per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Number of calls.
    #[arg(long)]
    calls: Option<u64>,
    /// Stop starting calls after this long (e.g. 30s, 500ms); UAS mode: run this long.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Mean hold time between ACK and BYE (e.g. 0ms, 1s).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    hold: Duration,
    /// Hold-time distribution.
    #[arg(long, value_enum, default_value = "fixed")]
    hold_dist: HoldDist,
    /// Maximum calls in progress.
    #[arg(long, default_value_t = 1_000_000)]
    max_concurrent: usize,
    /// Transport.
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Local UDP sockets of the UAC (spread load over the proxy's workers).
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// Local IP of the UAC sockets.
    #[arg(long, default_value = "127.0.0.1")]
    local: IpAddr,
    /// Scenario mix, e.g. basic=90,cancel=5,reject=5.
    #[arg(long, default_value = "basic")]
    mix: Mix,
    /// Give up on an INVITE without final response after this long (Timer B).
    #[arg(long, value_parser = parse_duration, default_value = "32s")]
    invite_timeout: Duration,
    /// UAS does not send 100 Trying (only 180/200).
    #[arg(long)]
    no_trying: bool,
    /// Write HdrHistogram percentile files PREFIX.<metric>.hgrm.
    #[arg(long)]
    hgrm: Option<String>,
    /// Write a JSON summary.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG latency-by-percentile plot.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Exit 1 when more than N calls failed.
    #[arg(long)]
    max_failed: Option<u64>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Seed for scenario picks and hold times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let secs = match unit {
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?}: unit must be us, ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    let cli = Cli::parse();
    let listen = cli.listen.unwrap_or(cli.uas);
    let target = match (cli.target, cli.mode) {
        (Some(t), _) => t,
        (None, Mode::Uas) => listen,
        (None, Mode::Both) => cli.uas,
        (None, Mode::Uac) => {
            eprintln!("loadgen: uac needs --target IP:PORT");
            std::process::exit(2);
        }
    };
    let calls = cli.calls.unwrap_or(u64::MAX);
    if cli.mode != Mode::Uas && cli.calls.is_none() && cli.duration.is_none() {
        eprintln!("loadgen: no --calls or --duration; running until Ctrl-C");
    }
    let uas_port_per_thread = cli.mode == Mode::Both
        && cli.transport == Transport::Udp
        && cli.threads > 1
        && cli.ruri.is_none()
        && listen == cli.uas;
    let cfg = RunConfig {
        uas_port_per_thread,
        mode: cli.mode,
        target,
        ruri: cli
            .ruri
            .unwrap_or_else(|| format!("sip:service@{}", cli.uas)),
        listen,
        local_ip: cli.local,
        rate: cli.rate,
        calls,
        duration: cli.duration,
        hold_us: cli.hold.as_micros() as u64,
        hold_dist: cli.hold_dist,
        max_concurrent: cli.max_concurrent,
        threads: cli.threads,
        sockets: cli.sockets,
        mix: cli.mix,
        invite_timeout_us: cli.invite_timeout.as_micros() as u64,
        uas_100: !cli.no_trying,
        progress: !cli.quiet,
        seed: cli.seed,
        transport: cli.transport,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("loadgen: cannot handle signal {sig}: {e}");
        }
    }
    let res = match io::run(&cfg, stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let s = report::summary(&res);
    print!("{}", report::table(&s));
    if let Some(p) = &cli.hgrm {
        match report::write_hgrm(p, &res) {
            Ok(paths) => eprintln!("wrote {}", paths.join(", ")),
            Err(e) => eprintln!("loadgen: --hgrm {p}: {e}"),
        }
    }
    if let Some(p) = &cli.json
        && let Err(e) = report::write_json(p, &s)
    {
        eprintln!("loadgen: --json {}: {e}", p.display());
    }
    if let Some(p) = &cli.plot
        && let Err(e) = report::write_plot(p, &res)
    {
        eprintln!("loadgen: --plot {}: {e}", p.display());
    }
    if cli.max_failed.is_some_and(|m| s.failed_total > m) {
        std::process::exit(1);
    }
}
