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
//! - A batch that fails (disk full, I/O error) is kept, not dropped: the writer reopens the
//!   file (redb refuses every operation after an I/O error until it is reopened) and retries
//!   after 100 ms, doubling up to 5 s, until a write succeeds. Meanwhile newer changes merge
//!   into the kept batch (one entry per dialog, the last operation wins), which is bounded by
//!   [`MAX_PENDING`] dialogs; a change for another dialog beyond that is dropped and counted.
//!   A failure streak logs one error when it starts and one line when writes recover; the
//!   counters are in [`crate::stats::StoreStats`] (`Shared::store`, exported as metrics).
//! - Shutdown keeps the records: [`PersistWriter::stop`] closes the observer, drains and
//!   flushes (retrying a failing store for up to [`STOP_GRACE`]), and must run *before* the
//!   workers' `Engine::shutdown` (which ends every dialog with reason `Shutdown`).
//!   [`super::run::Running::stop`] does this. As a second guard the observer ignores end
//!   events whose reason is `Shutdown`.
//! - The loader runs before any worker starts: it drops records that are expired or do not
//!   decode, publishes the rest in state `Confirmed` with their original ids, re-takes their
//!   profile memberships, counts them active and fires `Loaded`. Workers arm their timers in
//!   `Engine::adopt_loaded`. Nothing is published unless the whole file was read.
//! - A store file that is not a readable redb database (garbage, torn, an unknown format, or
//!   one that makes redb panic) stops the start with [`PersistError::Corrupt`], which names
//!   the file and the way out; with [`PersistConfig::recover`] (`--db-recover`,
//!   `dialog.db_recover`) the file is renamed to `<file>.corrupt-<unix time>`, never deleted,
//!   and the proxy starts on an empty store. Other open errors (permissions, a lock held by
//!   another process) are never treated as corruption.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, ReadableTable, TableDefinition};

use crate::dialog::persist::{self, EncodeError, Loaded, id_of_key, key_of};
use crate::dialog::{DialogObserver, DlgEvent, DlgState, EndReason, EventData, Field};
use crate::engine::Shared;

/// The one table: dialog key ([`key_of`]) → encoded record.
const DIALOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("dialogs");
/// Capacity of the observer → writer channel.
const QUEUE: usize = 65_536;
/// Longest the writer sleeps before looking at its stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Most dialogs a kept (unwritten) batch holds; changes of further dialogs are dropped while
/// the store fails. A full batch of this size takes a few tens of MB.
pub const MAX_PENDING: usize = 1 << 20;
/// First wait before retrying a failed batch; it doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts while the store fails.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long [`PersistWriter::stop`] keeps retrying a failing store before giving up.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where and how often to store dialogs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistConfig {
    /// The redb file (created when missing).
    pub path: PathBuf,
    /// Write-behind period in ms (dialog_ng `db_update_period`, in ms here).
    pub update_period_ms: u64,
    /// A corrupt file is moved aside and the store starts empty (`--db-recover`,
    /// `dialog.db_recover`); `false`: a corrupt file stops the start.
    pub recover: bool,
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
    /// The file is not a readable store.
    #[error(
        "dialog db {path} is corrupt ({reason}); start with --db-recover (or set \
         dialog.db_recover = true) to move it aside as {path}.corrupt-<unix time> and start \
         with an empty store"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A corrupt file could not be moved aside.
    #[error("dialog db {path} is corrupt and could not be moved aside: {source}")]
    SetAside {
        /// The file.
        path: PathBuf,
        /// The rename's error.
        source: std::io::Error,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Dialogs published into the table.
    pub loaded: usize,
    /// Records dropped because their deadline had passed.
    pub expired: usize,
    /// Records dropped because they did not decode.
    pub corrupt: usize,
    /// Where a corrupt store file was moved (recovery), if it was.
    pub set_aside: Option<PathBuf>,
}

/// Writer counters (the ones in `Shared::store`).
pub type PersistStats = crate::stats::StoreStats;

/// A change to store: `true` = upsert, `false` = delete.
type Op = (u64, bool);

/// Opens (or creates) the store file. `Database::create` in production; tests inject a
/// storage backend that fails on demand.
type Opener = Box<dyn FnMut(&Path) -> Result<Database, redb::DatabaseError> + Send>;

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
    /// Counters (also `Shared::store`).
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
    start_with(shared, cfg, now_ms, Box::new(|p| Database::create(p)))
}

/// [`start`] with the way the file is opened (the tests inject write failures).
fn start_with(
    shared: &Arc<Shared>,
    cfg: &PersistConfig,
    now_ms: u64,
    mut open: Opener,
) -> Result<(PersistWriter, LoadReport), PersistError> {
    ignore_file_size_signal();
    let path = &cfg.path;
    let (db, loaded, mut report) = match open_and_read(&mut open, path, shared, now_ms) {
        Ok(x) => x,
        Err(Failure::Corrupt(reason)) if cfg.recover => {
            let aside = set_aside(path).map_err(|source| PersistError::SetAside {
                path: path.clone(),
                source,
            })?;
            tracing::error!(
                db = %path.display(),
                moved_to = %aside.display(),
                reason = %reason,
                "DIALOG DB IS CORRUPT: the file was moved aside and the proxy starts with an \
                 EMPTY store (--db-recover); none of its dialogs are loaded"
            );
            let db = open(path).map_err(|source| PersistError::Open {
                path: path.clone(),
                source,
            })?;
            let report = LoadReport {
                set_aside: Some(aside),
                ..LoadReport::default()
            };
            (db, Vec::new(), report)
        }
        Err(Failure::Corrupt(reason)) => {
            return Err(PersistError::Corrupt {
                path: path.clone(),
                reason,
            });
        }
        Err(Failure::Other(e)) => return Err(e),
    };
    publish(shared, loaded, &mut report);
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let closed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = shared.store.clone();
    stats.enabled.store(true, Relaxed);
    shared.callbacks.register(
        mask(),
        Arc::new(Observer {
            tx,
            closed: closed.clone(),
            stats: stats.clone(),
        }),
    );
    let w = Writer {
        db: Some(db),
        path: path.clone(),
        open,
        shared: shared.clone(),
        rx,
        stats: stats.clone(),
        scratch: Vec::with_capacity(1024),
        pending: HashMap::new(),
        streak: None,
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

/// A file-size limit (`RLIMIT_FSIZE`) reached by the store must fail that write (`EFBIG`, then
/// retried like a full disk), not kill the whole proxy with `SIGXFSZ`'s default action.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; nothing else
    // in the process handles SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Why opening and reading the store failed.
enum Failure {
    /// The file is not a readable store (what is wrong).
    Corrupt(String),
    /// Anything else (permissions, a lock, I/O).
    Other(PersistError),
}

/// Whether a redb error means the file's content is unusable (rather than the file
/// inaccessible, locked, or the disk failing).
fn is_corrupt(e: &redb::Error) -> bool {
    use redb::Error as E;
    match e {
        E::Corrupted(_)
        | E::UpgradeRequired(_)
        | E::TableTypeMismatch { .. }
        | E::TableIsMultimap(_)
        | E::TableIsNotMultimap(_)
        | E::TypeDefinitionChanged { .. } => true,
        E::Io(io) => is_corrupt_io(io),
        _ => false,
    }
}

/// [`is_corrupt`] for an open error.
fn is_corrupt_open(e: &redb::DatabaseError) -> bool {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::UpgradeRequired(_) | D::Storage(S::Corrupted(_)) => true,
        D::Storage(S::Io(io)) => is_corrupt_io(io),
        _ => false,
    }
}

/// redb reports a file that holds no database as `InvalidData`; a torn one can end early.
fn is_corrupt_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    )
}

/// Open the file and read every record (nothing published yet). A panic inside redb on a
/// damaged file counts as corruption.
fn open_and_read(
    open: &mut Opener,
    path: &Path,
    shared: &Shared,
    now_ms: u64,
) -> Result<(Database, Vec<Loaded>, LoadReport), Failure> {
    let cx = ReadCtx::of(shared, now_ms);
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = open(path).map_err(|source| {
            if is_corrupt_open(&source) {
                Failure::Corrupt(source.to_string())
            } else {
                Failure::Other(PersistError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        })?;
        let (loaded, report) = read_records(&db, &cx).map_err(|e| match e {
            PersistError::Db(e) if is_corrupt(&e) => Failure::Corrupt(e.to_string()),
            e => Failure::Other(e),
        })?;
        Ok((db, loaded, report))
    }));
    read.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::Corrupt(format!(
            "the store library failed on it: {msg}"
        )))
    })
}

/// Move a corrupt store file to `<file>.corrupt-<unix seconds>` (a free name).
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// What reading records needs from the shared state.
struct ReadCtx {
    base: u64,
    now_unix: u64,
    listeners: usize,
}

impl ReadCtx {
    fn of(shared: &Shared, now_ms: u64) -> ReadCtx {
        ReadCtx {
            base: shared.unix_base_ms.load(Relaxed),
            now_unix: shared.unix_ms(now_ms),
            listeners: shared.locals.listeners.len(),
        }
    }
}

/// Read every record, drop the stale ones, publish the rest.
pub fn load(db: &Database, shared: &Shared, now_ms: u64) -> Result<LoadReport, PersistError> {
    let (loaded, mut report) = read_records(db, &ReadCtx::of(shared, now_ms))?;
    publish(shared, loaded, &mut report);
    Ok(report)
}

/// Decode every record and delete the stale ones; nothing is published.
fn read_records(db: &Database, cx: &ReadCtx) -> Result<(Vec<Loaded>, LoadReport), PersistError> {
    let mut report = LoadReport::default();
    let mut loaded = Vec::new();
    let mut stale = Vec::new();
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(DIALOGS).map_err(db_err)?;
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value();
            match persist::decode(v.value(), cx.base, cx.listeners) {
                Ok(l) if key_of(l.dialog.id) != key => {
                    tracing::warn!(key, "dialog db: record under a foreign key dropped");
                    report.corrupt += 1;
                    stale.push(key);
                }
                Ok(l) if l.deadline_unix_ms <= cx.now_unix => {
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
    Ok((loaded, report))
}

/// Publish loaded dialogs into the table (profiles, statistics, `Loaded` callbacks).
fn publish(shared: &Shared, loaded: Vec<Loaded>, report: &mut LoadReport) {
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
}

/// A run of failed write attempts.
#[derive(Debug)]
struct Streak {
    /// Failed attempts so far.
    failures: u64,
    /// When the first one failed.
    since: Instant,
    /// Current wait between attempts.
    backoff: Duration,
    /// When to try again.
    next: Instant,
}

/// The writer thread's state.
struct Writer {
    /// The open store; `None` after a failure (reopened by the next attempt).
    db: Option<Database>,
    path: PathBuf,
    open: Opener,
    shared: Arc<Shared>,
    rx: Receiver<Op>,
    stats: Arc<PersistStats>,
    scratch: Vec<u8>,
    /// Last operation per key not yet written (since the previous successful flush).
    pending: HashMap<u64, bool>,
    /// Set while writes fail.
    streak: Option<Streak>,
}

impl Writer {
    fn run(mut self, period: Duration, stop: &AtomicBool) {
        let mut last = Instant::now();
        loop {
            let stopping = stop.load(Relaxed);
            let due = self.streak.as_ref().map_or(last + period, |s| s.next);
            let wait = due.saturating_duration_since(Instant::now()).min(TICK);
            match self.rx.recv_timeout(wait) {
                Ok((k, up)) => self.take(k, up),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.final_flush(),
            }
            while let Ok((k, up)) = self.rx.try_recv() {
                self.take(k, up);
            }
            if stopping {
                return self.final_flush();
            }
            if Instant::now() >= due {
                self.flush();
                last = Instant::now();
            }
        }
    }

    /// Merge one change into the pending batch (bounded: see [`MAX_PENDING`]).
    fn take(&mut self, k: u64, upsert: bool) {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&k) {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        }
        self.pending.insert(k, upsert);
    }

    /// Drain the queue and write, retrying a failing store for up to [`STOP_GRACE`].
    fn final_flush(&mut self) {
        while let Ok((k, up)) = self.rx.try_recv() {
            self.take(k, up);
        }
        let give_up = Instant::now() + STOP_GRACE;
        while !self.flush() {
            let now = Instant::now();
            if now >= give_up {
                tracing::error!(
                    db = %self.path.display(),
                    unwritten = self.pending.len(),
                    "dialog db: changes not written at stop (the store keeps failing); calls \
                     that ended meanwhile may be loaded again at the next start and expire then"
                );
                return;
            }
            let next = self.streak.as_ref().map_or(now, |s| s.next);
            std::thread::sleep(next.min(give_up).saturating_duration_since(now));
        }
    }

    /// Write the pending operations in one transaction. False when it failed (the batch is
    /// kept and the next attempt is scheduled).
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        if self.streak.is_some() {
            self.stats.retries.fetch_add(1, Relaxed);
        }
        let ok = match self.write_batch() {
            Ok((w, d)) => {
                self.stats.written.fetch_add(w, Relaxed);
                self.stats.deleted.fetch_add(d, Relaxed);
                self.stats.flushes.fetch_add(1, Relaxed);
                self.pending.clear();
                if let Some(s) = self.streak.take() {
                    self.stats.failing.store(0, Relaxed);
                    tracing::warn!(
                        db = %self.path.display(),
                        failed_attempts = s.failures,
                        failing_for_ms = s.since.elapsed().as_millis() as u64,
                        "dialog db: writes recovered; the kept changes are stored"
                    );
                }
                true
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                // redb refuses everything after an I/O error until the file is reopened.
                self.db = None;
                let now = Instant::now();
                match &mut self.streak {
                    Some(s) => {
                        s.failures += 1;
                        s.backoff = (s.backoff * 2).min(RETRY_MAX);
                        s.next = now + s.backoff;
                    }
                    None => {
                        self.stats.failing.store(1, Relaxed);
                        tracing::error!(
                            db = %self.path.display(),
                            error = %e,
                            pending = self.pending.len(),
                            "dialog db: write failed; the changes are kept and retried (every \
                             100 ms to 5 s) until the store takes them again"
                        );
                        self.streak = Some(Streak {
                            failures: 1,
                            since: now,
                            backoff: RETRY_MIN,
                            next: now + RETRY_MIN,
                        });
                    }
                }
                false
            }
        };
        self.stats.pending.store(self.pending.len() as u64, Relaxed);
        ok
    }

    fn write_batch(&mut self) -> Result<(u64, u64), PersistError> {
        if self.db.is_none() {
            let db = (self.open)(&self.path).map_err(|source| PersistError::Open {
                path: self.path.clone(),
                source,
            })?;
            self.db = Some(db);
        }
        let Some(db) = &self.db else {
            return Ok((0, 0));
        };
        let boot = self.shared.boot;
        let base = self.shared.unix_base_ms.load(Relaxed);
        let (mut written, mut deleted) = (0, 0);
        let txn = db.begin_write().map_err(db_err)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use std::net::SocketAddr;
    use std::ops::Bound;

    use redb::backends::FileBackend;
    use redb::{BackendError, StorageBackend};

    use super::*;
    use crate::dialog::id::DialogId;
    use crate::dialog::profile::Profiles;
    use crate::dialog::{CalleeLeg, Dialog, Socket, Strs};
    use crate::engine::{LocalAddrs, Settings};
    use crate::wire::Transport;

    /// A file backend whose writes fail with ENOSPC while `fail` is set: redb's own error
    /// path, as on a full disk.
    #[derive(Debug)]
    struct Flaky {
        inner: FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        }
    }

    type Range = (Bound<u64>, Bound<u64>);

    impl StorageBackend for Flaky {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
        fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(s, e)
        }
        fn try_lock_shared_range(
            &self,
            s: Bound<u64>,
            e: Bound<u64>,
        ) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(s, e)
        }
        fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(s, e)
        }
        fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(s, e)
        }
        fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(s, e)
        }
        fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            let r: Range = (s, e);
            self.inner.query_lock_range(r.0, r.1)
        }
    }

    fn flaky_opener(fail: Arc<AtomicBool>) -> Opener {
        Box::new(move |p: &Path| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)?;
            Database::builder().create_with_backend(Flaky {
                inner: FileBackend::new(f)?,
                fail: fail.clone(),
            })
        })
    }

    fn shared(boot: u32) -> Arc<Shared> {
        let bound = [(Transport::Udp, "127.0.0.1:5060".parse().unwrap())];
        let s = Shared::new(
            1,
            LocalAddrs::new(&bound, None),
            Settings::default(),
            Profiles::new(&[], &[]).unwrap(),
            1,
            boot,
        );
        s.unix_base_ms.store(1_000_000, Relaxed);
        s
    }

    fn sock(port: u16) -> Socket {
        Socket {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: Transport::Udp,
            local: 0,
            conn: None,
        }
    }

    /// A confirmed dialog in `s`'s table, its `Confirmed` event fired.
    fn confirmed(s: &Shared, h_id: u32) -> Arc<Dialog> {
        let call_id = format!("call-{h_id}");
        let strs = Strs::new([
            call_id.as_bytes(),
            b"<sip:a@127.0.0.1>;tag=a",
            b"sip:a@127.0.0.1",
            b"a",
            b"<sip:b@127.0.0.1>",
            b"sip:b@127.0.0.1",
            b"sip:b@127.0.0.1",
            b"sip:a@127.0.0.1:5070",
            b"",
        ]);
        let d = Dialog::new(DialogId::new(0, 5, h_id), strs, sock(5070), 10, 600, 1);
        d.callee
            .set(CalleeLeg::new(
                b"b",
                b"<sip:b@x>;tag=b",
                b"sip:b@127.0.0.1",
                b"",
                sock(5080),
            ))
            .unwrap();
        d.advance(&[DlgState::Unconfirmed], DlgState::Confirmed);
        d.deadline_ms.store(600_000, Relaxed);
        let d = Arc::new(d);
        s.table.insert(d.id, d.clone(), call_id.as_bytes(), b"a");
        fire(s, DlgEvent::Confirmed, &d);
        d
    }

    fn fire(s: &Shared, event: DlgEvent, d: &Dialog) {
        s.callbacks.fire(&EventData {
            event,
            dialog: d,
            msg: None,
            code: 0,
            side: None,
        });
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < give_up, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sipedge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn config(path: PathBuf, recover: bool) -> PersistConfig {
        PersistConfig {
            path,
            update_period_ms: 20,
            recover,
        }
    }

    #[test]
    fn a_failing_store_keeps_the_batch_retries_and_recovers() {
        let d = dir("persist-flaky");
        let cfg = config(d.join("d.redb"), false);
        let fail = Arc::new(AtomicBool::new(false));
        let s1 = shared(0xA1);
        let (w, _) = start_with(&s1, &cfg, 0, flaky_opener(fail.clone())).unwrap();
        let st = w.stats.clone();
        let ended = confirmed(&s1, 1);
        let kept = confirmed(&s1, 2);
        wait_until("both written", || st.written.load(Relaxed) == 2);

        // The disk is full: the end of `ended` cannot be stored.
        fail.store(true, Relaxed);
        ended.try_end(EndReason::ByeCaller, 50);
        s1.table.remove(ended.id, b"call-1", b"a");
        fire(&s1, DlgEvent::Terminated, &ended);
        wait_until("retries", || st.retries.load(Relaxed) >= 2);
        let snap = st.snapshot().unwrap();
        assert!(snap.failing && snap.errors >= 3, "{snap:?}");
        assert_eq!((snap.pending, snap.deleted, snap.dropped), (1, 0, 0));
        // A newer change of another dialog joins the kept batch.
        fire(&s1, DlgEvent::ReqWithin, &kept);
        wait_until("two pending", || st.pending.load(Relaxed) == 2);

        // Space again: the kept batch is written, the delete included.
        fail.store(false, Relaxed);
        wait_until("recovery", || !st.snapshot().unwrap().failing);
        let snap = st.snapshot().unwrap();
        assert_eq!((snap.deleted, snap.written, snap.pending), (1, 3, 0));
        // Back-off: at most one attempt per 100 ms at first, never a busy loop.
        assert!(snap.errors < 200, "{snap:?}");
        w.stop();

        // The next start loads the call that goes on, not the one that ended.
        let s2 = shared(0xA2);
        let (w2, r) = start(&s2, &cfg, 0).unwrap();
        assert_eq!((r.loaded, r.expired, r.corrupt), (1, 0, 0));
        assert!(s2.table.get(kept.id).is_some());
        assert!(s2.table.get(ended.id).is_none(), "an ended call came back");
        w2.stop();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stop_retries_a_failing_store_then_gives_up() {
        let d = dir("persist-stop");
        let cfg = config(d.join("d.redb"), false);
        let fail = Arc::new(AtomicBool::new(true));
        let s = shared(0xB1);
        // The file exists and opens (creating it writes, so create it healthy first).
        fail.store(false, Relaxed);
        let (w, _) = start_with(&s, &cfg, 0, flaky_opener(fail.clone())).unwrap();
        fail.store(true, Relaxed);
        let _d = confirmed(&s, 1);
        wait_until("a failure", || s.store.errors.load(Relaxed) >= 1);
        let t0 = Instant::now();
        w.stop();
        let took = t0.elapsed();
        assert!(took >= STOP_GRACE, "gave up after {took:?}");
        assert!(took < STOP_GRACE + Duration::from_secs(3), "{took:?}");
        assert_eq!(s.store.pending.load(Relaxed), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_kept_batch_is_bounded() {
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let s = shared(0xC1);
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let mut w = Writer {
            db: Some(db),
            path: PathBuf::from("mem"),
            open: Box::new(|_: &Path| Err(redb::DatabaseError::DatabaseAlreadyOpen)),
            shared: s.clone(),
            rx,
            stats: s.store.clone(),
            scratch: Vec::new(),
            pending: HashMap::new(),
            streak: None,
        };
        for k in 0..MAX_PENDING as u64 {
            w.take(k, true);
        }
        w.take(1, false);
        assert_eq!(w.pending.get(&1), Some(&false), "same dialog: merged");
        w.take(u64::MAX, true);
        assert_eq!(w.pending.len(), MAX_PENDING);
        assert_eq!(
            s.store.dropped.load(Relaxed),
            1,
            "a new dialog beyond the bound"
        );
    }

    #[test]
    fn a_corrupt_file_stops_the_start_unless_recovery_is_asked_for() {
        let d = dir("persist-corrupt");
        let path = d.join("d.redb");
        let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let s = shared(0xD1);
        let e = start(&s, &config(path.clone(), false), 0).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PersistError::Corrupt { .. }), "{msg}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("--db-recover"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "left untouched");

        let (w, r) = start(&s, &config(path.clone(), true), 0).unwrap();
        let aside = r.set_aside.clone().unwrap();
        assert!(
            aside
                .display()
                .to_string()
                .starts_with(&format!("{}.corrupt-", path.display()))
        );
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            garbage,
            "kept aside, not deleted"
        );
        assert_eq!(r.loaded, 0);
        let _c = confirmed(&s, 1);
        wait_until("the new store works", || s.store.written.load(Relaxed) == 1);
        w.stop();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn damaged_pages_of_a_real_store_count_as_corrupt() {
        let d = dir("persist-torn");
        let path = d.join("d.redb");
        let s = shared(0xF1);
        let (w, _) = start(&s, &config(path.clone(), false), 0).unwrap();
        for h in 1..=50 {
            let _ = confirmed(&s, h);
        }
        wait_until("written", || s.store.written.load(Relaxed) == 50);
        w.stop();
        // Keep the header, overwrite everything after it.
        let mut b = std::fs::read(&path).unwrap();
        for (i, x) in b.iter_mut().enumerate().skip(4096) {
            *x = (i % 253) as u8;
        }
        std::fs::write(&path, &b).unwrap();
        let s2 = shared(0xF2);
        match start(&s2, &config(path.clone(), false), 0) {
            Err(PersistError::Corrupt { reason, .. }) => eprintln!("torn store: {reason}"),
            Err(e) => panic!("not reported as corrupt: {e}"),
            Ok((w, r)) => {
                w.stop();
                panic!("a damaged store was used: {r:?}");
            }
        }
        assert_eq!(s2.table.len(), 0, "nothing published");
        let (w, r) = start(&s2, &config(path.clone(), true), 0).unwrap();
        assert!(r.set_aside.is_some());
        w.stop();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unreadable_file_is_not_called_corrupt() {
        let d = dir("persist-locked");
        let path = d.join("d.redb");
        let s = shared(0xE1);
        let (w, _) = start(&s, &config(path.clone(), true), 0).unwrap();
        // The same file, opened again while the first store holds it: a lock, not corruption.
        let e = start(&shared(0xE2), &config(path.clone(), true), 0).unwrap_err();
        assert!(matches!(e, PersistError::Open { .. }), "{e}");
        assert!(path.exists(), "not moved aside");
        w.stop();
        let _ = std::fs::remove_dir_all(&d);
    }
}
