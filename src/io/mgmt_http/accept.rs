//! Accept loops (TCP and UNIX socket) and the life of one connection.
//!
//! Owns [`bind_tcp`], [`Caps`] and [`serve`]. Invariants:
//! - The accept loops end only when the stop signal comes: an accept error is counted, logged
//!   at most once a second, and followed by a pause that doubles from 10 ms up to
//!   [`ACCEPT_BACKOFF_MAX`] (reset by the next success), so running out of descriptors
//!   neither spins nor kills the listener.
//! - A connection over a cap is closed right after accept, before any byte is read from it.
//! - Every served connection runs hyper's HTTP/1 server with the head limits and timeouts of
//!   the module above, raced against the no-progress watchdog; whichever ends first ends
//!   the connection and frees its cap slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;

use super::limits::{ConnLimits, Key, Progress, Refusal, Slot, Watched};
use super::service::{self, Ctx};
use super::{ACCEPT_BACKOFF_MAX, HEAD_TIMEOUT, MAX_HEAD, MAX_HEADERS, STALL_TIMEOUT};
use crate::mgmt::metrics::{LISTENER, ListenerEvent};

/// Listen backlog of the TCP socket (connections waiting for accept).
const BACKLOG: i32 = 1024;
/// First pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Bind the TCP listener (non-blocking, SO_REUSEADDR).
pub(super) fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind management API on {addr}: {e}"),
        )
    };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    s.set_reuse_address(true).map_err(fail)?;
    s.bind(&addr.into()).map_err(fail)?;
    s.listen(BACKLOG).map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    Ok(s.into())
}

/// The connection caps of both listeners.
pub(super) struct Caps {
    tcp: Arc<ConnLimits>,
    unix: Arc<ConnLimits>,
}

impl Caps {
    /// `total` TCP connections, `per_ip` per client; the UNIX socket gets `per_ip` of its own.
    pub(super) fn new(total: usize, per_ip: usize) -> Self {
        Caps {
            tcp: ConnLimits::new(total, per_ip),
            unix: ConnLimits::new(per_ip, per_ip),
        }
    }
}

/// Serve both listeners until `stop` fires (or its sender is dropped).
pub(super) async fn serve(
    tcp: TcpListener,
    unix: Option<UnixListener>,
    caps: Caps,
    ctx: Arc<Ctx>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let tcp_loop = accept_tcp(tcp, caps.tcp, Arc::clone(&ctx));
    let unix_loop = async {
        match unix {
            Some(l) => accept_unix(l, caps.unix, ctx).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = tcp_loop => {}
        _ = unix_loop => {}
    }
}

/// Rate-limited accounting of accept errors with exponential backoff.
struct Backoff {
    pause: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            pause: BACKOFF_MIN,
            last_log: None,
            unlogged: 0,
        }
    }

    fn ok(&mut self) {
        self.pause = BACKOFF_MIN;
    }

    /// Count and maybe log `e`, then pause. Per-connection failures (the peer reset before
    /// accept, a signal) only retry.
    async fn failed(&mut self, what: &str, e: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, WouldBlock};
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
        ) {
            return;
        }
        LISTENER.count(ListenerEvent::AcceptError);
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(listener = what, error = %e, failures = self.unlogged,
                pause_ms = self.pause.as_millis() as u64,
                "management accept failed; backing off");
            self.last_log = Some(now);
            self.unlogged = 0;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(ACCEPT_BACKOFF_MAX);
    }
}

fn refused(r: Refusal, peer: &dyn std::fmt::Display) {
    let e = match r {
        Refusal::PerKey => ListenerEvent::RefusedPerIp,
        Refusal::Total => ListenerEvent::RefusedTotal,
    };
    LISTENER.count(e);
    tracing::debug!(peer = %peer, cap = ?r, "management connection over the cap closed");
}

async fn accept_tcp(l: TcpListener, caps: Arc<ConnLimits>, ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new();
    loop {
        match l.accept().await {
            Ok((stream, peer)) => {
                backoff.ok();
                match caps.try_acquire(Key::of(peer.ip())) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(connection(stream, slot, Arc::clone(&ctx)));
                    }
                    Err(r) => refused(r, &peer),
                }
            }
            Err(e) => backoff.failed("tcp", &e).await,
        }
    }
}

async fn accept_unix(l: UnixListener, caps: Arc<ConnLimits>, ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new();
    loop {
        match l.accept().await {
            Ok((stream, _)) => {
                backoff.ok();
                match caps.try_acquire(Key::Local) {
                    Ok(slot) => {
                        tokio::spawn(connection(stream, slot, Arc::clone(&ctx)));
                    }
                    Err(r) => refused(r, &"unix socket"),
                }
            }
            Err(e) => backoff.failed("unix", &e).await,
        }
    }
}

/// Serve one connection until it ends, times out or stalls; then free its slot.
async fn connection<S>(stream: S, slot: Slot, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let progress = Progress::new();
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&progress)));
    let svc = service_fn(move |req| service::handle(req, Arc::clone(&ctx)));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, svc);
    tokio::select! {
        r = conn => match r {
            Ok(()) => {}
            Err(e) if e.is_timeout() => LISTENER.count(ListenerEvent::Timeout),
            Err(e) => tracing::debug!(error = %e, "management connection ended with an error"),
        },
        () = progress.stalled(STALL_TIMEOUT) => {
            LISTENER.count(ListenerEvent::Timeout);
            tracing::debug!("management connection closed: no progress");
        }
    }
    drop(slot);
}
