//! Dialog persistence (dialog_ng `db_mode = 2`, write-behind) on a redb file: the loader that
//! rebuilds confirmed dialogs at start, the observer that queues changes from the workers, and
//! the writer thread that stores them in batches.
//!
//! # Invariants
//! - Nothing here runs on the packet path except [`Observer::on_event`], which only
//!   `try_send`s a 9-byte message into a bounded channel (a full channel counts a drop; the
//!   record then lags until the dialog's next event).
//! - The writer applies each batch in one redb write transaction, every `db_update_period` ms.
//!   For an upsert it reads the dialog's *current* record from the table at flush time, so a
//!   batch holds at most one operation per dialog; a dialog no longer in the table, or ended,
//!   is deleted instead.
//! - Shutdown keeps the records: [`PersistWriter::stop`] closes the observer, drains and
//!   flushes, and must run *before* the workers' `Engine::shutdown` (which ends every dialog
//!   with reason `Shutdown`). [`super::run::Running::stop`] does this. As a second guard the
//!   observer ignores end events whose reason is `Shutdown`.
//! - The loader runs before any worker starts: it drops records that are expired or do not
//!   decode, publishes the rest in state `Confirmed` with their original ids, re-takes their
//!   profile memberships, counts them active and fires `Loaded`. Workers arm their timers in
//!   `Engine::adopt_loaded`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, ReadableTable, TableDefinition};

use crate::dialog::persist::{self, EncodeError, id_of_key, key_of};
use crate::dialog::{DialogObserver, DlgEvent, DlgState, EndReason, EventData, Field};
use crate::engine::Shared;

/// The one table: dialog key ([`key_of`]) → encoded record.
const DIALOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("dialogs");
/// Capacity of the observer → writer channel.
const QUEUE: usize = 65_536;
/// Longest the writer sleeps before looking at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Where and how often to store dialogs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistConfig {
    /// The redb file (created when missing).
    pub path: PathBuf,
    /// Write-behind period in ms (dialog_ng `db_update_period`, in ms here).
    pub update_period_ms: u64,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The database file could not be opened or created.
    #[error("dialog db {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's reason.
        source: redb::DatabaseError,
    },
    /// A transaction failed.
    #[error("dialog db: {0}")]
    Db(#[from] redb::Error),
    /// The writer thread could not start.
    #[error("dialog db writer: {0}")]
    Thread(std::io::Error),
}

fn db_err(e: impl Into<redb::Error>) -> PersistError {
    PersistError::Db(e.into())
}

/// What the loader found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Dialogs published into the table.
    pub loaded: usize,
    /// Records dropped because their deadline had passed.
    pub expired: usize,
    /// Records dropped because they did not decode.
    pub corrupt: usize,
}

/// Writer counters.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Records written (upserts).
    pub written: AtomicU64,
    /// Records deleted.
    pub deleted: AtomicU64,
    /// Committed batches.
    pub flushes: AtomicU64,
    /// Failed batches.
    pub errors: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// A change to store: `true` = upsert, `false` = delete.
type Op = (u64, bool);

/// The dialog observer registered in `Shared::callbacks`.
struct Observer {
    tx: Sender<Op>,
    closed: Arc<AtomicBool>,
    stats: Arc<PersistStats>,
}

impl DialogObserver for Observer {
    fn on_event(&self, ev: &EventData<'_>) {
        if self.closed.load(Relaxed) {
            return;
        }
        let d = ev.dialog;
        let upsert = match ev.event {
            DlgEvent::ConfirmedNa | DlgEvent::Confirmed | DlgEvent::ReqWithin => true,
            DlgEvent::Terminated | DlgEvent::Failed | DlgEvent::Expired => {
                // Early dialogs were never stored; shutdown keeps the record.
                if d.callee.get().is_none() || d.end_reason() == EndReason::Shutdown {
                    return;
                }
                false
            }
            _ => return,
        };
        if self.tx.try_send((key_of(d.id), upsert)).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Mask of the events the observer wants.
fn mask() -> u32 {
    [
        DlgEvent::ConfirmedNa,
        DlgEvent::Confirmed,
        DlgEvent::ReqWithin,
        DlgEvent::Terminated,
        DlgEvent::Failed,
        DlgEvent::Expired,
    ]
    .iter()
    .fold(0, |m, e| m | e.bit())
}

/// The running writer. [`stop`](Self::stop) flushes everything queued and returns.
pub struct PersistWriter {
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Counters.
    pub stats: Arc<PersistStats>,
}

impl std::fmt::Debug for PersistWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistWriter")
            .field("stats", &self.stats)
            .finish()
    }
}

impl PersistWriter {
    /// Stop queueing, flush what is queued, and wait for the writer (idempotent).
    pub fn stop(&self) {
        self.closed.store(true, Relaxed);
        self.stop.store(true, Relaxed);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Open (or create) the store, load its dialogs into `shared` (engine time `now_ms`), register
/// the observer and start the writer. Call before any worker starts.
pub fn start(
    shared: &Arc<Shared>,
    cfg: &PersistConfig,
    now_ms: u64,
) -> Result<(PersistWriter, LoadReport), PersistError> {
    let db = Database::create(&cfg.path).map_err(|source| PersistError::Open {
        path: cfg.path.clone(),
        source,
    })?;
    let report = load(&db, shared, now_ms)?;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let closed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(PersistStats::default());
    shared.callbacks.register(
        mask(),
        Arc::new(Observer {
            tx,
            closed: closed.clone(),
            stats: stats.clone(),
        }),
    );
    let w = Writer {
        db,
        shared: shared.clone(),
        rx,
        stats: stats.clone(),
        scratch: Vec::with_capacity(1024),
        pending: HashMap::new(),
    };
    let period = Duration::from_millis(cfg.update_period_ms.max(1));
    let st = stop.clone();
    let thread = std::thread::Builder::new()
        .name("sipedge-dlgdb".into())
        .spawn(move || w.run(period, &st))
        .map_err(PersistError::Thread)?;
    Ok((
        PersistWriter {
            closed,
            stop,
            thread: Mutex::new(Some(thread)),
            stats,
        },
        report,
    ))
}

/// Read every record, drop the stale ones, publish the rest.
pub fn load(db: &Database, shared: &Shared, now_ms: u64) -> Result<LoadReport, PersistError> {
    let base = shared.unix_base_ms.load(Relaxed);
    let now_unix = shared.unix_ms(now_ms);
    let listeners = shared.locals.listeners.len();
    let mut report = LoadReport::default();
    let mut loaded = Vec::new();
    let mut stale = Vec::new();
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(DIALOGS).map_err(db_err)?;
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value();
            match persist::decode(v.value(), base, listeners) {
                Ok(l) if key_of(l.dialog.id) != key => {
                    tracing::warn!(key, "dialog db: record under a foreign key dropped");
                    report.corrupt += 1;
                    stale.push(key);
                }
                Ok(l) if l.deadline_unix_ms <= now_unix => {
                    report.expired += 1;
                    stale.push(key);
                }
                Ok(l) => loaded.push(l),
                Err(e) => {
                    tracing::warn!(key, error = %e, "dialog db: bad record dropped");
                    report.corrupt += 1;
                    stale.push(key);
                }
            }
        }
        for k in stale {
            table.remove(k).map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)?;
    let profiles = shared.profiles.load();
    for l in loaded {
        let d = Arc::new(l.dialog);
        if shared.table.get(d.id).is_some() {
            continue;
        }
        for (name, value) in &l.profiles {
            if let Some(idx) = profiles.index(name)
                && let Err(e) = profiles.set(&d.profiles, idx, value.as_deref())
            {
                tracing::warn!(profile = %name, error = %e, "loaded dialog not re-added to profile");
            }
        }
        let (call_id, ftag) = (d.strs.get(Field::CallId), d.strs.get(Field::FromTag));
        shared.table.insert(d.id, d.clone(), call_id, ftag);
        shared
            .stats
            .transition(DlgState::Unconfirmed, DlgState::Confirmed);
        shared.callbacks.fire(&EventData {
            event: DlgEvent::Loaded,
            dialog: &d,
            msg: None,
            code: 0,
            side: None,
        });
        report.loaded += 1;
    }
    Ok(report)
}

/// The writer thread's state.
struct Writer {
    db: Database,
    shared: Arc<Shared>,
    rx: Receiver<Op>,
    stats: Arc<PersistStats>,
    scratch: Vec<u8>,
    /// Last operation per key since the previous flush.
    pending: HashMap<u64, bool>,
}

impl Writer {
    fn run(mut self, period: Duration, stop: &AtomicBool) {
        let mut last = Instant::now();
        loop {
            let stopping = stop.load(Relaxed);
            let wait = period.saturating_sub(last.elapsed()).min(TICK);
            match self.rx.recv_timeout(wait) {
                Ok((k, up)) => {
                    self.pending.insert(k, up);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.final_flush(),
            }
            while let Ok((k, up)) = self.rx.try_recv() {
                self.pending.insert(k, up);
            }
            if stopping {
                return self.final_flush();
            }
            if last.elapsed() >= period {
                self.flush();
                last = Instant::now();
            }
        }
    }

    fn final_flush(&mut self) {
        while let Ok((k, up)) = self.rx.try_recv() {
            self.pending.insert(k, up);
        }
        self.flush();
    }

    /// Apply the pending operations in one write transaction.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.write_batch() {
            Ok((w, d)) => {
                self.stats.written.fetch_add(w, Relaxed);
                self.stats.deleted.fetch_add(d, Relaxed);
                self.stats.flushes.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "dialog db: batch not written");
            }
        }
        self.pending.clear();
    }

    fn write_batch(&mut self) -> Result<(u64, u64), PersistError> {
        let boot = self.shared.boot;
        let base = self.shared.unix_base_ms.load(Relaxed);
        let (mut written, mut deleted) = (0, 0);
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(DIALOGS).map_err(db_err)?;
            for (&k, &upsert) in &self.pending {
                let d = upsert
                    .then(|| self.shared.table.get(id_of_key(k)))
                    .flatten();
                let enc = match &d {
                    Some(d) => persist::encode(d, boot, base, &mut self.scratch),
                    None => Err(EncodeError::Ended),
                };
                match enc {
                    Ok(()) => {
                        table.insert(k, self.scratch.as_slice()).map_err(db_err)?;
                        written += 1;
                    }
                    Err(EncodeError::NotConfirmed) => {}
                    Err(EncodeError::TooLong) => {
                        tracing::warn!(key = k, "dialog db: record too long, not stored");
                    }
                    Err(EncodeError::Ended) => {
                        if table.remove(k).map_err(db_err)?.is_some() {
                            deleted += 1;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok((written, deleted))
    }
}
