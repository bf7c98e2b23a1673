//! The management HTTP listener: JSON-RPC (`POST /jsonrpc`, `POST /RPC`), Prometheus text
//! (`GET /metrics`) and readiness (`GET /health`), over TCP and optionally a UNIX socket, on
//! hyper (HTTP/1.1) in a small tokio runtime of its own: one OS thread (`sipedge-mgmt`)
//! runs every connection, and at most [`BLOCKING_THREADS`] more (`sipedge-mgmt-blk`) run the
//! backend calls, so a slow `dlg.list` never blocks `/metrics` or `/health` and nothing here
//! ever runs on a worker.
//!
//! Owns [`spawn`], [`spawn_with`], [`MgmtOptions`] and [`MgmtHandle`]. The request handling
//! itself is sans-IO ([`crate::mgmt::rpc::handle_jsonrpc_reply`],
//! [`crate::mgmt::metrics::render`]); this module only moves bytes and enforces HTTP-level
//! rules: [`accept`] (accept loops, connection caps, timeouts), [`limits`] (the caps and the
//! no-progress watchdog), [`auth`] (the token), [`service`] (routing, bodies, `/health`),
//! [`unix`] (the UNIX socket file).
//!
//! ## Invariants
//! - An unauthenticated client cannot exhaust the listener: a request head is at most
//!   [`MAX_HEAD`] bytes (431 beyond) and [`MAX_HEADERS`] lines and must arrive within
//!   [`HEAD_TIMEOUT`], which also bounds how long a kept-alive connection may sit idle
//!   between requests; a body must arrive within [`BODY_TIMEOUT`]; a connection on which no
//!   byte moves for [`STALL_TIMEOUT`] is closed. At most `max_connections` TCP connections are
//!   open, `max_connections_per_ip` from one address (IPv6: one /64); the UNIX socket has
//!   its own budget of `max_connections_per_ip`, so a TCP flood cannot lock `ctl` out.
//!   Connections over a cap are accepted and closed at once and counted.
//! - The listener never dies: accept errors (EMFILE, ...) are counted
//!   ([`crate::mgmt::metrics::LISTENER`]), logged at most once a second and backed off
//!   ([`ACCEPT_BACKOFF_MAX`] at most), then accepting goes on.
//! - With a token configured, every path except `/health` needs
//!   `Authorization: Bearer <token>` (else 401), checked from the request head before any
//!   of the body is read, in constant time. Without a token the listen address must be
//!   loopback ([`spawn`] refuses otherwise) and everything is open.
//! - `/health` needs no token (load balancers probe it): 200 `ok`, or 503 `not ready` when a
//!   worker is dead. Callers with the token (or any caller when none is configured) get a
//!   JSON body with per-worker detail instead.
//! - Request bodies are bounded by [`MAX_BODY`] (413 beyond), whether or not the client sent a
//!   Content-Length.
//! - [`MgmtHandle::shutdown`] (or drop) stops accepting, closes every connection and the
//!   listening sockets, removes the UNIX socket file it created, and returns within about
//!   [`SHUTDOWN_GRACE`].

mod accept;
mod auth;
mod limits;
mod service;
mod unix;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::MgmtConfig;
use crate::mgmt::backend::MgmtBackend;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1 << 20;
/// Largest request head (request line and headers); hyper answers 431 beyond.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a request head.
pub const MAX_HEADERS: usize = 64;
/// Time to receive a whole request head, counted from the first read of it; also the idle
/// time allowed between two requests on a kept-alive connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to receive a whole request body once its head was read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which no byte moved either way for this long is closed (a client that
/// stopped reading its answer, a backend call that hangs).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Threads running backend calls (RPC, `/metrics`) besides the connection thread.
pub const BLOCKING_THREADS: usize = 2;
/// Longest pause after a failed `accept` (the pause doubles from 10 ms up to this).
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long shutdown waits for backend calls in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// The engine's clock in milliseconds (the time line of [`crate::stats::WorkerHealth`]).
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the listener serves and with which limits.
#[derive(Clone)]
pub struct MgmtOptions {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// Bearer token; `None` or empty: no token (loopback only).
    pub token: Option<String>,
    /// Most TCP connections open at once.
    pub max_connections: usize,
    /// Most TCP connections open at once from one address (IPv6: one /64); also the budget
    /// of the UNIX socket.
    pub max_connections_per_ip: usize,
    /// UNIX socket path, if any.
    pub socket: Option<PathBuf>,
    /// The workers' clock, to show how long ago each worker last turned its loop in
    /// `/health`; without it the age is left out.
    pub now_ms: Option<NowMs>,
}

impl std::fmt::Debug for MgmtOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MgmtOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl MgmtOptions {
    /// `listen` and `token` with the `[mgmt]` defaults for everything else.
    pub fn new(listen: SocketAddr, token: Option<String>) -> Self {
        MgmtOptions {
            listen,
            token,
            ..Self::from_config(&MgmtConfig::default())
        }
    }

    /// The options of a `[mgmt]` section.
    pub fn from_config(c: &MgmtConfig) -> Self {
        MgmtOptions {
            listen: c.listen,
            token: c.token.clone(),
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            socket: c.socket.clone(),
            now_ms: None,
        }
    }
}

/// A running management listener. Dropping it shuts it down.
#[derive(Debug)]
pub struct MgmtHandle {
    addr: SocketAddr,
    socket: Option<unix::SocketFile>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MgmtHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UNIX socket being served, if one was configured and could be bound.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_ref().map(unix::SocketFile::path)
    }

    /// Stop accepting, close every connection and join the listener thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Removes the socket file (only if it is still the one we bound).
        self.socket = None;
    }
}

impl Drop for MgmtHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind `addr` and serve the management API with the default limits and no UNIX socket.
///
/// Fails with `InvalidInput` when `addr` is not loopback and no token is given, or with the
/// bind error.
pub fn spawn(
    addr: SocketAddr,
    token: Option<String>,
    backend: Arc<dyn MgmtBackend>,
) -> Result<MgmtHandle, std::io::Error> {
    spawn_with(MgmtOptions::new(addr, token), backend)
}

/// Bind the TCP address (and the UNIX socket, if configured) and serve the management API
/// from its own thread.
///
/// Fails with `InvalidInput` when the address is not loopback and no token is given, or
/// with the bind error. A UNIX socket that cannot be served (missing directory, path in use)
/// is logged and left out; it never fails the start.
pub fn spawn_with(
    opts: MgmtOptions,
    backend: Arc<dyn MgmtBackend>,
) -> Result<MgmtHandle, std::io::Error> {
    let token = opts.token.clone().filter(|t| !t.is_empty());
    let addr = opts.listen;
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve the management API on non-loopback address {addr} without a \
                 token; set a management token or bind to 127.0.0.1"
            ),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(BLOCKING_THREADS)
        // Keep the (at most BLOCKING_THREADS) backend threads once started: no thread, and no
        // allocator arena, is made anew every few seconds of scraping.
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .thread_name("sipedge-mgmt-blk")
        .build()?;
    let tcp = accept::bind_tcp(addr)?;
    let local = tcp.local_addr()?;
    let unix = opts.socket.as_deref().and_then(unix::bind);
    let (tcp, unix_listener, socket) = {
        let _guard = rt.enter();
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        match unix {
            Some((l, file)) => match tokio::net::UnixListener::from_std(l) {
                Ok(l) => (tcp, Some(l), Some(file)),
                Err(e) => {
                    tracing::error!(path = %file.path().display(), error = %e,
                        "cannot serve the management socket; going on without it");
                    (tcp, None, None)
                }
            },
            None => (tcp, None, None),
        }
    };
    let ctx = Arc::new(service::Ctx {
        token,
        backend,
        now_ms: opts.now_ms.clone(),
    });
    let caps = accept::Caps::new(opts.max_connections, opts.max_connections_per_ip);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sipedge-mgmt".into())
        .spawn(move || {
            rt.block_on(accept::serve(tcp, unix_listener, caps, ctx, stop_rx));
            // Drops every connection task; waits a little for backend calls in flight.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        })?;
    Ok(MgmtHandle {
        addr: local,
        socket,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
