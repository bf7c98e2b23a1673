//! Connection caps and the no-progress watchdog of the management listener.
//!
//! Owns [`ConnLimits`] (open connections in total and per client key), its [`Slot`]s, and
//! [`Watched`], an IO wrapper that stamps [`Progress`] whenever a byte moves.
//!
//! ## Invariants
//! - A [`Slot`] is held for exactly as long as its connection is served: taking one counts
//!   the connection against both caps, dropping it gives both back (and counts the close).
//! - The caps are checked and taken under one lock, so concurrent accepts never overshoot.
//! - Per-client keys: an IPv4 address, an IPv6 /64 (IPv4-mapped IPv6 counts as IPv4), or
//!   [`Key::Local`] for the UNIX socket.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::mgmt::metrics::{LISTENER, ListenerEvent};

/// Whom a per-client cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// One IPv4 address.
    V4([u8; 4]),
    /// One IPv6 /64.
    V6([u8; 8]),
    /// The UNIX socket (one local client class).
    Local,
}

impl Key {
    /// The key of a TCP client address.
    pub(super) fn of(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Key::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its key had `per_key` connections open.
    PerKey,
    /// `total` connections were open.
    Total,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_key: HashMap<Key, usize>,
}

/// Open-connection caps.
#[derive(Debug)]
pub(super) struct ConnLimits {
    total: usize,
    per_key: usize,
    counts: Mutex<Counts>,
}

impl ConnLimits {
    /// At most `total` connections, `per_key` of them from one key (both at least 1).
    pub(super) fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            total: total.max(1),
            per_key: per_key.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot for a connection from `key`, or say which cap is full.
    pub(super) fn try_acquire(self: &Arc<Self>, key: Key) -> Result<Slot, Refusal> {
        let mut c = self.counts();
        if c.total >= self.total {
            return Err(Refusal::Total);
        }
        let n = c.per_key.entry(key).or_insert(0);
        if *n >= self.per_key {
            return Err(Refusal::PerKey);
        }
        *n += 1;
        c.total += 1;
        LISTENER.count(ListenerEvent::Accepted);
        Ok(Slot {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Connections open now (total, from `key`).
    #[cfg(test)]
    fn open(&self, key: Key) -> (usize, usize) {
        let c = self.counts();
        (c.total, c.per_key.get(&key).copied().unwrap_or(0))
    }
}

/// One open connection's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Slot {
    limits: Arc<ConnLimits>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_key.remove(&self.key);
            }
        }
        LISTENER.count(ListenerEvent::Closed);
    }
}

/// When a connection last moved a byte.
#[derive(Debug)]
pub(super) struct Progress {
    base: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    /// Progress stamped now.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Progress {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte moved for `limit`.
    pub(super) async fn stalled(&self, limit: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An IO stream that stamps [`Progress`] whenever bytes are read or written.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S> Watched<S> {
    /// Wrap `inner`.
    pub(super) fn new(inner: S, progress: Arc<Progress>) -> Self {
        Watched { inner, progress }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_total_are_given_back_on_drop() {
        let l = ConnLimits::new(3, 2);
        let a = Key::of("127.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        let b = Key::of(
            "::ffff:127.0.0.3"
                .parse()
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        );
        assert_eq!(b, Key::V4([127, 0, 0, 3]), "IPv4-mapped counts as IPv4");
        let s1 = l.try_acquire(a);
        let s2 = l.try_acquire(a);
        assert!(s1.is_ok() && s2.is_ok());
        assert_eq!(l.try_acquire(a).err(), Some(Refusal::PerKey));
        let s3 = l.try_acquire(b);
        assert!(s3.is_ok());
        assert_eq!(l.try_acquire(b).err(), Some(Refusal::Total));
        drop(s1);
        assert_eq!(l.open(a), (2, 1));
        let s4 = l.try_acquire(b);
        assert!(s4.is_ok(), "a freed slot is usable by another key");
        drop((s2, s3, s4));
        assert_eq!(l.open(a), (0, 0));
        assert!(
            l.counts().per_key.is_empty(),
            "no key kept after its last close"
        );
    }

    #[test]
    fn ipv6_clients_share_a_slash_64() {
        let p = |s: &str| Key::of(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:2:ffff::9"));
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
    }
}
