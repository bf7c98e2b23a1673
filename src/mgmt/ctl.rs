//! `sipedge ctl`: a kamcmd-like client for the management JSON-RPC endpoint.
//!
//! Owns the CLI arguments ([`CtlArgs`]), argument typing (numeric-looking arguments are sent
//! as numbers, `s:` forces a string), the HTTP call (ureq, plain HTTP) and output (pretty
//! JSON, or aligned tables via [`crate::mgmt::table`]).
//!
//! ## Invariants
//! - Exit code 0 only when the server answered with a `result`; RPC errors, HTTP errors and
//!   connection failures print one `error: ...` line on stderr and exit 1.
//! - This is client code for the `ctl` subcommand; the proxy itself never calls it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::mgmt::table;

/// Output format of `sipedge ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty-printed JSON of the result.
    Json,
    /// Aligned text tables.
    Table,
}

/// Arguments of `sipedge ctl`.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Management address (`host:port` or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:7060")]
    pub mgmt: String,
    /// Bearer token, if the management API requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// RPC method, e.g. `dlg.list` or `stats.latency`.
    pub method: String,
    /// Method arguments; numeric-looking ones are sent as numbers, `s:` forces a string.
    pub args: Vec<String>,
}

/// Run the command, printing to stdout/stderr.
pub fn run(args: &CtlArgs) -> ExitCode {
    let code = run_to(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}

/// Type one command-line argument the way kamcmd does.
pub fn typed_arg(a: &str) -> Value {
    if let Some(s) = a.strip_prefix("s:") {
        return Value::String(s.to_owned());
    }
    if let Ok(u) = a.parse::<u64>() {
        return json!(u);
    }
    if let Ok(i) = a.parse::<i64>() {
        return json!(i);
    }
    if a.contains('.')
        && !a.contains(char::is_alphabetic)
        && let Ok(f) = a.parse::<f64>()
        && f.is_finite()
    {
        return json!(f);
    }
    Value::String(a.to_owned())
}

fn endpoint(mgmt: &str) -> String {
    let base = mgmt.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}/jsonrpc")
    } else {
        format!("http://{base}/jsonrpc")
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => io.to_string(),
        },
        ureq::Error::ConnectionFailed => "connection refused".to_owned(),
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        other => other.to_string(),
    }
}

/// Run the command writing to the given streams; returns the process exit code.
pub fn run_to(args: &CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let params: Vec<Value> = args.args.iter().map(|a| typed_arg(a)).collect();
    let req = json!({"jsonrpc": "2.0", "method": args.method, "params": params, "id": 1});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut builder = agent
        .post(endpoint(&args.mgmt))
        .header("Content-Type", "application/json");
    if let Some(t) = &args.token {
        builder = builder.header("Authorization", format!("Bearer {t}"));
    }
    let body = req.to_string();
    let mut resp = match builder.send(body.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                err,
                "error: cannot reach sipedge management at {}: {}",
                args.mgmt,
                describe(&e)
            );
            return 1;
        }
    };
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    if status == 401 {
        let _ = writeln!(err, "error: unauthorized (missing or wrong --token)");
        return 1;
    }
    let reply: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            let _ = writeln!(err, "error: HTTP {status}: {}", text.trim());
            return 1;
        }
    };
    if let Some(e) = reply.get("error") {
        let code = e.get("code").cloned().unwrap_or(Value::Null);
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(err, "error: {code}: {msg}");
        return 1;
    }
    let result = reply.get("result").cloned().unwrap_or(Value::Null);
    let printed = match args.format {
        Format::Json => serde_json::to_string_pretty(&result).unwrap_or_default() + "\n",
        Format::Table => table::render(&result),
    };
    if out.write_all(printed.as_bytes()).is_err() {
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    #[test]
    fn parses_like_kamcmd_and_types_arguments() {
        let cli = Cli::try_parse_from([
            "ctl",
            "--format",
            "table",
            "--token",
            "t",
            "dlg.end_dlg",
            "1",
            "s:2",
            "x",
        ]);
        let Ok(Cli { ctl }) = cli else {
            panic!("clap rejected valid arguments");
        };
        assert_eq!(
            (ctl.mgmt.as_str(), ctl.format),
            ("127.0.0.1:7060", Format::Table)
        );
        assert_eq!(
            (ctl.method.as_str(), ctl.token.as_deref()),
            ("dlg.end_dlg", Some("t"))
        );
        let typed: Vec<Value> = ctl.args.iter().map(|a| typed_arg(a)).collect();
        assert_eq!(typed, vec![json!(1), json!("2"), json!("x")]);
        assert_eq!(typed_arg("1.5"), json!(1.5));
        assert_eq!(typed_arg("1.2.3.4"), json!("1.2.3.4"));
        assert!(Cli::try_parse_from(["ctl", "--format", "xml", "core.version"]).is_err());
        assert_eq!(endpoint("127.0.0.1:7060"), "http://127.0.0.1:7060/jsonrpc");
        assert_eq!(endpoint("http://h:1/"), "http://h:1/jsonrpc");
    }
}
