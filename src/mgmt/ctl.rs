//! `sipedge ctl`: a kamcmd-like client for the management JSON-RPC endpoint.
//!
//! Owns the CLI arguments ([`CtlArgs`]), argument typing (numeric-looking arguments are sent
//! as numbers, `s:` forces a string), where the token comes from ([`resolve_token`]), the HTTP
//! call (hyper's HTTP/1 client on a one-thread tokio runtime, over TCP or the management UNIX
//! socket) and output (pretty JSON, or aligned tables via [`crate::mgmt::table`]).
//!
//! ## Invariants
//! - Exit code 0 only when the server answered with a `result`; RPC errors, HTTP errors and
//!   connection failures print one `error: ...` line on stderr and exit 1.
//! - The token need never be on the command line: `--token-file` or `SIPEDGE_TOKEN` work
//!   (in that order, after `--token`); the token is never printed.
//! - The whole exchange (connect, request, answer) is bounded by [`TIMEOUT`].
//! - This is client code for the `ctl` subcommand; the proxy itself never calls it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::mgmt::table;

/// Environment variable read for the token when neither `--token` nor `--token-file` is given.
pub const TOKEN_ENV: &str = "SIPEDGE_TOKEN";
/// Longest the whole call may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (a 1,000,000-dialog list fits).
const MAX_ANSWER: usize = 1 << 30;

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
    /// Management UNIX socket (`[mgmt] socket`), used instead of `--mgmt`.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Bearer token (visible to other users in the process list: prefer `--token-file` or
    /// the `SIPEDGE_TOKEN` environment variable).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File whose content (surrounding whitespace trimmed) is the bearer token.
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
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

/// The token to send: `--token`, else the content of `--token-file`, else `env` (the value of
/// `SIPEDGE_TOKEN`), else none. Empty values count as none, except an empty token file,
/// which is an error (it was named, so it was meant to hold one).
pub fn resolve_token(args: &CtlArgs, env: Option<String>) -> Result<Option<String>, String> {
    if let Some(t) = args.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(t.clone()));
    }
    if let Some(p) = &args.token_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read token file {}: {e}", p.display()))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("token file {} is empty", p.display()));
        }
        return Ok(Some(t.to_owned()));
    }
    Ok(env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Where the management API is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `host:port` over TCP.
    Tcp(String),
    /// A UNIX socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => f.write_str(a),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `host:port` from `--mgmt` (`host:port`, `http://host:port`, with or without a path).
fn tcp_target(mgmt: &str) -> Result<String, String> {
    if mgmt.starts_with("https://") {
        return Err(format!(
            "{mgmt}: https is not supported (the management API is plain HTTP)"
        ));
    }
    let rest = mgmt.strip_prefix("http://").unwrap_or(mgmt);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("--mgmt {mgmt}: expected host:port"));
    }
    Ok(host.to_owned())
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "timed out".to_owned(),
        std::io::ErrorKind::NotFound => "no such socket".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// Why a call failed: before a connection existed, or after.
enum CallError {
    Connect(String),
    Http(String),
}

/// POST `body` to `/jsonrpc` at `target`; the status and the answer.
fn call(target: &Target, token: Option<&str>, body: String) -> Result<(u16, Bytes), CallError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CallError::Connect(format!("cannot start the client runtime: {e}")))?;
    rt.block_on(async {
        let exchange = async {
            match target {
                Target::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| CallError::Connect(describe(&e)))?;
                    exchange(s, addr, token, body).await
                }
                Target::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| CallError::Connect(describe(&e)))?;
                    exchange(s, "localhost", token, body).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(CallError::Connect("timed out".into())))
    })
}

async fn exchange<S>(
    io: S,
    host: &str,
    token: Option<&str>,
    body: String,
) -> Result<(u16, Bytes), CallError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: &dyn std::fmt::Display| CallError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/jsonrpc")
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status().as_u16();
    let answer = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    Ok((status, answer))
}

/// Run the command writing to the given streams; returns the process exit code.
pub fn run_to(args: &CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let token = match resolve_token(args, std::env::var(TOKEN_ENV).ok()) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 1;
        }
    };
    let target = match &args.socket {
        Some(p) => Target::Unix(p.clone()),
        None => match tcp_target(&args.mgmt) {
            Ok(a) => Target::Tcp(a),
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return 1;
            }
        },
    };
    let params: Vec<Value> = args.args.iter().map(|a| typed_arg(a)).collect();
    let req = json!({"jsonrpc": "2.0", "method": args.method, "params": params, "id": 1});
    let (status, answer) = match call(&target, token.as_deref(), req.to_string()) {
        Ok(x) => x,
        Err(CallError::Connect(why)) => {
            let _ = writeln!(
                err,
                "error: cannot reach sipedge management at {target}: {why}"
            );
            return 1;
        }
        Err(CallError::Http(why)) => {
            let _ = writeln!(err, "error: management at {target}: {why}");
            return 1;
        }
    };
    let text = String::from_utf8_lossy(&answer);
    if status == 401 {
        let _ = writeln!(
            err,
            "error: unauthorized (missing or wrong token: --token-file, {TOKEN_ENV} or --token)"
        );
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
        assert_eq!(tcp_target("127.0.0.1:7060"), Ok("127.0.0.1:7060".into()));
        assert_eq!(tcp_target("http://h:1/"), Ok("h:1".into()));
        assert!(tcp_target("https://h:1").is_err());
        assert!(tcp_target("http://").is_err());
    }

    #[test]
    fn token_from_flag_file_or_environment() {
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv) {
            Ok(c) => c.ctl,
            Err(e) => panic!("{e}"),
        };
        let env = || Some("from-env".to_owned());
        let a = parse(&["ctl", "core.version"]);
        assert_eq!(resolve_token(&a, env()), Ok(Some("from-env".into())));
        assert_eq!(resolve_token(&a, Some(" ".into())), Ok(None));
        assert_eq!(resolve_token(&a, None), Ok(None));
        let a = parse(&["ctl", "--token", "t", "core.version"]);
        assert_eq!(resolve_token(&a, env()), Ok(Some("t".into())));
        let dir = std::env::temp_dir().join(format!("sipedge-ctl-token-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("token");
        let _ = std::fs::write(&file, "s3cret\n");
        let f = file.to_string_lossy().into_owned();
        let a = parse(&[
            "ctl",
            "--token-file",
            &f,
            "--socket",
            "/x.sock",
            "core.version",
        ]);
        assert_eq!(resolve_token(&a, env()), Ok(Some("s3cret".into())));
        assert_eq!(a.socket.as_deref(), Some(std::path::Path::new("/x.sock")));
        let _ = std::fs::write(&file, "  \n");
        let e = resolve_token(&a, env());
        assert!(matches!(&e, Err(m) if m.contains("is empty")), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
        let e = resolve_token(&a, env());
        assert!(
            matches!(&e, Err(m) if m.contains("cannot read token file")),
            "{e:?}"
        );
        assert!(
            Cli::try_parse_from(["ctl", "--token", "t", "--token-file", &f, "x"]).is_err(),
            "--token and --token-file conflict"
        );
    }
}
