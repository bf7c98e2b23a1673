//! The management HTTP listener: JSON-RPC (`POST /jsonrpc`, `POST /RPC`), Prometheus text
//! (`GET /metrics`) and liveness (`GET /health`), on its own threads (never a worker).
//!
//! Owns [`spawn`] and [`MgmtHandle`]. The request handling itself is sans-IO
//! ([`crate::mgmt::rpc::handle_jsonrpc`], [`crate::mgmt::metrics::render`]); this file only
//! moves bytes and enforces HTTP-level rules.
//!
//! ## Invariants
//! - With a token configured, every request (including `/health`) needs
//!   `Authorization: Bearer <token>`, else 401. The comparison is constant-time.
//! - A non-loopback bind without a token is refused at [`spawn`].
//! - Request bodies are bounded by [`MAX_BODY`] (413 beyond), whether or not the client sent a
//!   Content-Length.
//! - [`MgmtHandle::shutdown`] returns within about [`POLL`] + the time of a request in flight.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::metrics;
use crate::mgmt::rpc::{self, Reply};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1 << 20;
/// How often the listener threads check for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Number of listener threads (one slow `dlg.list` must not block `/metrics`).
pub const THREADS: usize = 2;

/// A running management listener. Dropping it shuts it down.
#[derive(Debug)]
pub struct MgmtHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl MgmtHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting requests and join the listener threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MgmtHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind `addr` and serve the management API from background threads.
///
/// Fails with `InvalidInput` when `addr` is not loopback and no token is given, or with the
/// bind error.
pub fn spawn(
    addr: SocketAddr,
    token: Option<String>,
    backend: Arc<dyn MgmtBackend>,
) -> Result<MgmtHandle, std::io::Error> {
    let token = token.filter(|t| !t.is_empty());
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve the management API on non-loopback address {addr} without a \
                 token; set a management token or bind to 127.0.0.1"
            ),
        ));
    }
    let server = Server::http(addr).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("cannot bind management API on {addr}: {e}"),
        )
    })?;
    let local = server.server_addr().to_ip().unwrap_or(addr);
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let token: Arc<Option<String>> = Arc::new(token);
    let mut threads = Vec::with_capacity(THREADS);
    for i in 0..THREADS {
        let (server, stop, token, backend) = (
            Arc::clone(&server),
            Arc::clone(&stop),
            Arc::clone(&token),
            Arc::clone(&backend),
        );
        let t = std::thread::Builder::new()
            .name(format!("sipedge-mgmt-{i}"))
            .spawn(move || serve(&server, &stop, token.as_deref(), &backend))?;
        threads.push(t);
    }
    Ok(MgmtHandle {
        addr: local,
        stop,
        threads,
    })
}

fn serve(server: &Server, stop: &AtomicBool, token: Option<&str>, backend: &Arc<dyn MgmtBackend>) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(POLL) {
            Ok(Some(req)) => handle(req, token, backend),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "management listener receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn reply(req: Request, status: u16, content_type: &str, body: Vec<u8>) {
    let mut resp = Response::from_data(body).with_status_code(status);
    if let Some(h) = header("Content-Type", content_type) {
        resp = resp.with_header(h);
    }
    if status == 401
        && let Some(h) = header("WWW-Authenticate", "Bearer realm=\"sipedge\"")
    {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!(error = %e, "management response not delivered");
    }
}

fn text(req: Request, status: u16, body: &str) {
    reply(
        req,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    );
}

/// Constant-time comparison of the presented credentials with the expected token.
fn authorized(req: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let presented = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    diff == 0
}

fn handle(mut req: Request, token: Option<&str>, backend: &Arc<dyn MgmtBackend>) {
    if !authorized(&req, token) {
        return text(req, 401, "unauthorized\n");
    }
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    match (req.method(), path.as_str()) {
        (Method::Post, "/jsonrpc" | "/RPC") => {
            if req.body_length().is_some_and(|n| n > MAX_BODY) {
                return text(req, 413, "request body too large\n");
            }
            let mut body = Vec::with_capacity(req.body_length().unwrap_or(512).min(MAX_BODY));
            let read = req
                .as_reader()
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body);
            if read.is_err() {
                return text(req, 400, "cannot read request body\n");
            }
            if body.len() > MAX_BODY {
                return text(req, 413, "request body too large\n");
            }
            match rpc::handle_jsonrpc_reply(&body, backend) {
                Reply::Full(out) if out.is_empty() => reply(req, 204, "application/json", vec![]),
                Reply::Full(out) => reply(req, 200, "application/json", out),
                Reply::Stream(stream) => {
                    // Unknown length: chunked transfer, one backend page in memory at a time.
                    let headers: Vec<Header> = header("Content-Type", "application/json")
                        .into_iter()
                        .collect();
                    let resp = Response::new(StatusCode(200), headers, stream, None, None);
                    if let Err(e) = req.respond(resp) {
                        tracing::debug!(error = %e, "management response not delivered");
                    }
                }
            }
        }
        (Method::Get, "/metrics") => {
            let body = metrics::render(backend.as_ref());
            reply(req, 200, metrics::CONTENT_TYPE, body.into_bytes());
        }
        (Method::Get, "/health") => text(req, 200, "ok"),
        (_, "/jsonrpc" | "/RPC" | "/metrics" | "/health") => {
            text(req, 405, "method not allowed\n");
        }
        _ => text(req, 404, "not found\n"),
    }
}
