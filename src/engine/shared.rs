//! State shared by every worker: the dialog table, profiles, statistics, callbacks, settings
//! and the command queues that reach the owning worker of a dialog.
//!
//! Invariants: everything here is safe to read from any thread without locks on the packet
//! path; settings are swapped as a whole (`ArcSwap`); a command for a dialog always goes to
//! the worker that owns the dialog's INVITE transaction and timers; a handed-off packet
//! travels in a buffer from the sending worker's bounded spare pool and goes back to that
//! pool once handled, so hand-offs do not allocate in the steady state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};

use super::{LocalAddrs, Settings};
use crate::dialog::id::DialogId;
use crate::dialog::profile::Profiles;
use crate::dialog::table::DialogTable;
use crate::dialog::{Callbacks, Dialog, DialogStats, Side};
use crate::stats::{LatencyHub, StoreStats, WorkerStats};
use crate::wire::Transport;

/// A request for the owning worker of a dialog.
#[derive(Debug)]
pub enum Command {
    /// End a dialog (`dlg.end_dlg`, `dlg.terminate_dlg`, policy).
    Terminate {
        /// Which dialog.
        id: DialogId,
        /// Which side(s) get a BYE.
        side: Side,
        /// Reason header value.
        reason: String,
        /// Extra header lines for the BYE.
        extra_hdrs: String,
    },
    /// Refer one side of a confirmed dialog to a new address and BYE the other
    /// (dialog_ng `dlg_refer`).
    Refer {
        /// Which dialog.
        id: DialogId,
        /// The side that receives the REFER.
        side: Side,
        /// The Refer-To address (a SIP URI).
        address: String,
    },
    /// Bridge two parties (dialog_ng `dlg_bridge`): call `from` (through `op`), then refer it to
    /// `to`.
    Bridge {
        /// First party (SIP URI with an IP host).
        from: String,
        /// Second party (Refer-To).
        to: String,
        /// Outbound proxy for the first call.
        op: Option<String>,
    },
    /// The deadline moved (`dlg.set_timeout`): re-arm the dialog timer.
    Rearm(DialogId),
    /// A dialog ended or left the table on another worker: move or cancel its wheel entry on
    /// the timer worker, so no entry outlives the dialog.
    Retime(Arc<Dialog>),
    /// A packet received by another worker that belongs to this worker's transaction.
    Packet {
        /// Source address.
        src: SocketAddr,
        /// Listener index.
        local: usize,
        /// Transport.
        transport: Transport,
        /// TCP connection.
        conn: Option<u64>,
        /// Bytes, in a buffer from worker `from`'s hand-off pool ([`Shared::handoff_buffer`]),
        /// given back with [`Shared::recycle`] once handled.
        bytes: Vec<u8>,
        /// The worker that handed the packet off.
        from: usize,
    },
}

impl Command {
    /// Whether the target worker must be woken for it. A [`Command::Retime`] can wait for the
    /// worker's next wake-up (at most the 100 ms poll cap of `io`): it only moves or cancels
    /// a wheel entry, and waking a sleeping worker for every call that ended elsewhere costs a
    /// syscall and a context switch each.
    pub fn wants_wake(&self) -> bool {
        !matches!(self, Command::Retime(_))
    }
}

/// Wakes a worker after a command was queued.
pub type Notifier = Box<dyn Fn() + Send + Sync>;

/// What every worker shares.
pub struct Shared {
    /// The dialog table (the only papaya user is behind this).
    pub table: DialogTable<Dialog>,
    /// Dialog profiles.
    pub profiles: ArcSwap<Profiles>,
    /// Dialog statistics.
    pub stats: DialogStats,
    /// Dialog callbacks.
    pub callbacks: Callbacks,
    /// Our addresses.
    pub locals: LocalAddrs,
    /// Settings, swapped on reload.
    pub settings: ArcSwap<Settings>,
    /// The request policy, swapped on reload.
    pub policy: ArcSwap<Option<Arc<dyn crate::policy::Policy>>>,
    /// Number of workers.
    pub workers: usize,
    /// Node id (part of every dialog id).
    pub node_id: u16,
    /// Boot epoch (part of every dialog id), from the caller.
    pub boot: u32,
    /// Unix time in ms at engine time 0 (set by `io`; used only for display timestamps).
    pub unix_base_ms: AtomicU64,
    /// Workers the shared listen sockets currently feed (set by `io`'s adaptive spreading;
    /// `workers` when spreading is fixed). Shown as a metric.
    pub active_workers: AtomicUsize,
    /// Per-worker statistics.
    pub worker_stats: Vec<Arc<WorkerStats>>,
    /// Where workers' latency histograms are merged.
    pub latency: LatencyHub,
    /// Flood control: per-source cells and bans, keyed rates for policy.
    pub flood: crate::flood::FloodState,
    /// INVITE server transactions of every worker by upstream key, and those freed recently.
    pub invites: crate::txn::recent::InviteIndex,
    /// Counters of the dialog store's writer (`io::persist`; all zero and hidden when off).
    pub store: Arc<StoreStats>,
    queues: OnceLock<Vec<(Sender<Command>, Notifier)>>,
    /// Spare hand-off buffers, one pool per worker: a worker copies a packet it hands off into
    /// a buffer from its own pool, and the worker that handled it gives the buffer back, so
    /// hand-offs do not allocate in the steady state.
    spares: Vec<SparePool>,
}

/// One worker's spare hand-off buffers: both ends of a bounded channel.
type SparePool = (Sender<Vec<u8>>, Receiver<Vec<u8>>);

/// Spare hand-off buffers kept per worker; more are dropped when given back.
pub const SPARE_BUFFERS: usize = 1024;
/// A buffer that grew past this (a large TCP message) is dropped rather than kept as a spare.
pub const SPARE_MAX_CAPACITY: usize = 16 * 1024;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("workers", &self.workers)
            .field("dialogs", &self.table.len())
            .finish()
    }
}

impl Shared {
    /// Build the shared state for `workers` workers.
    pub fn new(
        workers: usize,
        locals: LocalAddrs,
        settings: Settings,
        profiles: Profiles,
        node_id: u16,
        boot: u32,
    ) -> Arc<Shared> {
        let workers = workers.max(1);
        Arc::new(Shared {
            table: DialogTable::default(),
            profiles: ArcSwap::from_pointee(profiles),
            stats: DialogStats::default(),
            callbacks: Callbacks::default(),
            locals,
            settings: ArcSwap::from_pointee(settings),
            policy: ArcSwap::from_pointee(None),
            workers,
            node_id,
            boot,
            unix_base_ms: AtomicU64::new(0),
            active_workers: AtomicUsize::new(workers),
            worker_stats: (0..workers)
                .map(|w| Arc::new(WorkerStats::new(w, crate::wire::KINDS)))
                .collect(),
            latency: LatencyHub::default(),
            flood: crate::flood::FloodState::default(),
            invites: Default::default(),
            store: Arc::default(),
            queues: OnceLock::new(),
            spares: (0..workers)
                .map(|_| crossbeam_channel::bounded(SPARE_BUFFERS))
                .collect(),
        })
    }

    /// Create the command queues; returns the receivers, one per worker, in order. `notify`
    /// builds the waker of each worker. Call once, before workers start.
    pub fn make_queues(
        &self,
        notify: impl Fn(usize) -> Notifier,
    ) -> Option<Vec<Receiver<Command>>> {
        let mut senders = Vec::with_capacity(self.workers);
        let mut receivers = Vec::with_capacity(self.workers);
        for w in 0..self.workers {
            let (tx, rx) = crossbeam_channel::bounded(65_536);
            senders.push((tx, notify(w)));
            receivers.push(rx);
        }
        self.queues.set(senders).ok()?;
        Some(receivers)
    }

    /// Queue a command for worker `w` and wake it. False when it cannot be queued (no
    /// queues, full).
    pub fn send(&self, w: usize, cmd: Command) -> bool {
        if !self.queue(w, cmd) {
            return false;
        }
        self.wake(w);
        true
    }

    /// Queue a command for worker `w` without waking it (the caller wakes each worker once per
    /// batch with [`Shared::wake`]). False when it cannot be queued.
    pub fn queue(&self, w: usize, cmd: Command) -> bool {
        self.queues
            .get()
            .and_then(|q| q.get(w))
            .is_some_and(|(tx, _)| tx.try_send(cmd).is_ok())
    }

    /// Wake worker `w` (no-op for an unknown worker).
    pub fn wake(&self, w: usize) {
        if let Some((_, wake)) = self.queues.get().and_then(|q| q.get(w)) {
            wake();
        }
    }

    /// A copy of `bytes` for worker `from` to hand off: in a spare buffer from its pool when
    /// there is one (no allocation), else in a new one.
    pub fn handoff_buffer(&self, from: usize, bytes: &[u8]) -> Vec<u8> {
        let mut buf = self
            .spares
            .get(from)
            .and_then(|(_, rx)| rx.try_recv().ok())
            .unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        buf
    }

    /// Give a handled hand-off buffer back to worker `from`'s pool. It is dropped when the
    /// pool is full or the buffer grew past [`SPARE_MAX_CAPACITY`].
    pub fn recycle(&self, from: usize, buf: Vec<u8>) {
        if buf.capacity() > SPARE_MAX_CAPACITY {
            return;
        }
        if let Some((tx, _)) = self.spares.get(from) {
            let _ = tx.try_send(buf);
        }
    }

    /// Unix time in ms for an engine time.
    pub fn unix_ms(&self, now_ms: u64) -> u64 {
        self.unix_base_ms.load(Relaxed).saturating_add(now_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shared(workers: usize) -> Arc<Shared> {
        let addr: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let locals = LocalAddrs::new(&[(Transport::Udp, addr)], None);
        let profiles = Profiles::new(&[], &[]).unwrap();
        Shared::new(workers, locals, Settings::default(), profiles, 1, 1)
    }

    #[test]
    fn handoff_buffers_are_reused_per_worker_and_bounded() {
        let s = shared(2);
        let a = s.handoff_buffer(0, b"INVITE 1");
        assert_eq!(a, b"INVITE 1");
        let ptr = a.as_ptr();
        s.recycle(0, a);
        let b = s.handoff_buffer(0, b"CANCEL");
        assert_eq!(b, b"CANCEL", "the copy holds only the new bytes");
        assert_eq!(
            b.as_ptr(),
            ptr,
            "the spare buffer was reused, not a new one"
        );
        let c = s.handoff_buffer(1, b"ACK");
        assert_ne!(c.as_ptr(), ptr, "worker 1 has its own pool");
        // A buffer that grew past the cap is not kept.
        let big = s.handoff_buffer(0, &vec![7u8; SPARE_MAX_CAPACITY + 1]);
        s.recycle(0, big);
        assert!(s.spares[0].1.is_empty());
        // The pool is bounded.
        for _ in 0..SPARE_BUFFERS + 10 {
            s.recycle(1, Vec::with_capacity(8));
        }
        assert_eq!(s.spares[1].1.len(), SPARE_BUFFERS);
        // A worker index out of range neither panics nor keeps anything.
        s.recycle(9, Vec::with_capacity(8));
        assert_eq!(s.handoff_buffer(9, b"x"), b"x");
    }
}
