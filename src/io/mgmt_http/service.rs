//! One management request: routing, the token, the body, and the answer.
//!
//! Owns [`handle`] (the hyper service function) and [`Ctx`]. Invariants:
//! - The token is checked from the head before any body byte is read; `/health` alone is
//!   open (see the module above for what it shows to whom).
//! - A body is read only up to [`MAX_BODY`] and within [`BODY_TIMEOUT`]; a larger one is
//!   answered 413 (after discarding at most [`DRAIN_MAX`] of it, so the client sees the
//!   answer instead of a reset), a slower one 408.
//! - Backend calls (RPC, `/metrics`) run on the runtime's blocking threads, never on the
//!   connection thread; a streamed dialog list is produced one chunk per blocking call, so
//!   a client that reads slowly holds no thread.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{BODY_TIMEOUT, MAX_BODY, NowMs, auth};
use crate::mgmt::backend::MgmtBackend;
use crate::mgmt::metrics::{self, LISTENER, ListenerEvent};
use crate::mgmt::pager::DialogStream;
use crate::mgmt::rpc::{self, Reply};

/// Most bytes of an oversized body discarded before answering 413.
pub const DRAIN_MAX: usize = 8 * MAX_BODY;
/// Bytes per frame of a streamed dialog list.
const CHUNK: usize = 64 * 1024;

/// A response body: complete, or streamed from blocking backend calls.
pub(super) type Body = Either<Full<Bytes>, Channel<Bytes, std::io::Error>>;

/// What every request needs.
pub(super) struct Ctx {
    /// The token (non-empty), if configured.
    pub token: Option<String>,
    /// The proxy.
    pub backend: Arc<dyn MgmtBackend>,
    /// The workers' clock, for the last-beat age in `/health`.
    pub now_ms: Option<NowMs>,
}

enum Route {
    Rpc,
    Metrics,
    Health,
    Other,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/jsonrpc" | "/RPC" => Route::Rpc,
            "/metrics" => Route::Metrics,
            "/health" => Route::Health,
            _ => Route::Other,
        }
    }
}

/// Answer one request.
pub(super) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Body>, Infallible> {
    let granted = auth::authorized(req.headers(), ctx.token.as_deref());
    let route = Route::of(req.uri().path());
    let method = req.method().clone();
    Ok(match (route, method) {
        (Route::Health, Method::GET | Method::HEAD) => health(&ctx, granted),
        (Route::Health, _) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ if !granted => {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sipedge\""),
            );
            r
        }
        (Route::Rpc, Method::POST) => rpc(req, &ctx).await,
        (Route::Metrics, Method::GET) => metrics(&ctx).await,
        (Route::Rpc | Route::Metrics, _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        (Route::Other, _) => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", body)
}

/// `/health`: 200 `ok`, or 503 `not ready` when a worker is dead; with `detail`, JSON with
/// each worker.
fn health(ctx: &Ctx, detail: bool) -> Response<Body> {
    let workers = ctx.backend.workers();
    let ready = workers.iter().all(|w| w.health().is_alive());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ready { "ok" } else { "not ready" };
    if !detail {
        return text(status, word);
    }
    let now = ctx.now_ms.as_ref().map(|f| f());
    let list: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let h = w.health();
            let mut o = json!({
                "index": w.worker(),
                "alive": h.is_alive(),
                "restarts": h.restarts(),
            });
            if let (Some(now), beat) = (now, h.beat_ms())
                && beat > 0
            {
                o["last_beat_ms_ago"] = json!(now.saturating_sub(beat));
            }
            o
        })
        .collect();
    let body = json!({ "status": word, "workers": list }).to_string();
    full(status, "application/json", body)
}

async fn metrics(ctx: &Ctx) -> Response<Body> {
    let backend = Arc::clone(&ctx.backend);
    match tokio::task::spawn_blocking(move || metrics::render(backend.as_ref())).await {
        Ok(body) => full(StatusCode::OK, metrics::CONTENT_TYPE, body),
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

async fn rpc(req: Request<Incoming>, ctx: &Ctx) -> Response<Body> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    let body = req.into_body();
    if body.size_hint().lower() > MAX_BODY as u64 {
        drain(body).await;
        return too_large();
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
    let body = match read {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "cannot read request body\n"),
        Err(_) => {
            LISTENER.count(ListenerEvent::Timeout);
            let mut r = text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n");
            r.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let backend = Arc::clone(&ctx.backend);
    let reply =
        tokio::task::spawn_blocking(move || rpc::handle_jsonrpc_reply(&body, &backend)).await;
    match reply {
        Ok(Reply::Full(out)) if out.is_empty() => {
            full(StatusCode::NO_CONTENT, "application/json", Bytes::new())
        }
        Ok(Reply::Full(out)) => full(StatusCode::OK, "application/json", out),
        Ok(Reply::Stream(s)) => {
            let mut r = Response::new(Either::Right(stream(s)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "management RPC failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Discard up to [`DRAIN_MAX`] bytes of a body within [`BODY_TIMEOUT`].
async fn drain(mut body: Incoming) {
    let discard = async {
        let mut seen = 0usize;
        while seen <= DRAIN_MAX {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(BODY_TIMEOUT, discard).await;
}

/// A dialog list as a chunked body: each chunk is read from the backend on a blocking thread;
/// the producer waits (holding no thread) while the client is slow.
fn stream(s: DialogStream) -> Channel<Bytes, std::io::Error> {
    let (mut tx, body) = Channel::new(2);
    tokio::spawn(async move {
        let mut s = s;
        loop {
            let next = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CHUNK];
                let mut n = 0;
                while n < CHUNK {
                    match s.read(buf.get_mut(n..).unwrap_or_default()) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return (s, Err(e)),
                    }
                }
                buf.truncate(n);
                (s, Ok(buf))
            })
            .await;
            match next {
                Ok((back, Ok(buf))) if !buf.is_empty() => {
                    s = back;
                    if tx.send_data(Bytes::from(buf)).await.is_err() {
                        return; // the client went away
                    }
                }
                Ok((_, Ok(_))) => return, // done
                Ok((_, Err(e))) => return tx.abort(e),
                Err(e) => {
                    tracing::error!(error = %e, "streaming a dialog list failed");
                    return tx.abort(std::io::Error::other("dialog list failed"));
                }
            }
        }
    });
    body
}
