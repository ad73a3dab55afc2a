//! [`Log`]: the handle an embedder holds. It opens the database, starts the commit writer, and
//! hands out units of work and snapshots.

use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use redb::{Database, StorageBackend};
use tokio::sync::{oneshot, watch};

use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::ids::IdSequences;
use crate::replicate::Replicator;
use crate::store::{self, Snapshot};
use crate::tail::Tail;
use crate::unit::Unit;
use crate::writer::{CommitObserver, Committed, Pending, Writer};

/// How to open a [`Log`].
pub struct LogBuilder {
    replicator: Option<Box<dyn Replicator>>,
    cache_bytes: usize,
}

/// redb's page cache, unless told otherwise: redb's own default (1 GiB) lets a busy server's
/// resident memory grow far past what the working set needs.
const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Default for LogBuilder {
    fn default() -> Self {
        LogBuilder {
            replicator: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl LogBuilder {
    /// Bytes redb may keep in its page cache (default 64 MiB).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Every commit batch goes through `replicator` before it commits locally.
    pub fn replicator(mut self, replicator: impl Replicator) -> Self {
        self.replicator = Some(Box::new(replicator));
        self
    }

    /// Opens the log in `path` (a redb file, created if missing).
    pub fn open(self, path: impl AsRef<Path>) -> Result<Log, StorageError> {
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(path.as_ref())?;
        Log::start(db, self.replicator)
    }

    /// Opens the log on `backend`.
    pub fn open_backend(self, backend: impl StorageBackend) -> Result<Log, StorageError> {
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create_with_backend(backend)?;
        Log::start(db, self.replicator)
    }
}

/// The durable log of events and the context state they commit with. Cheap to clone; the
/// database closes when [`Log::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    ids: Arc<IdSequences>,
    tail: Arc<Tail>,
    tx: RwLock<Option<Sender<Pending>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    failure: Arc<Mutex<Option<StorageError>>>,
    observer: Arc<OnceLock<Arc<dyn CommitObserver>>>,
}

impl Log {
    /// Opens the log in `path` (a redb file, created if missing).
    pub fn open(path: impl AsRef<Path>) -> Result<Log, StorageError> {
        LogBuilder::default().open(path)
    }

    /// Opens the log on `backend`: redb's in-memory backend for a log that lives as long as
    /// the process, or any other storage (tests inject faults this way).
    pub fn open_backend(backend: impl StorageBackend) -> Result<Log, StorageError> {
        LogBuilder::default().open_backend(backend)
    }

    /// A log with more than the defaults (a [`Replicator`]).
    pub fn builder() -> LogBuilder {
        LogBuilder::default()
    }

    fn start(db: Database, replicator: Option<Box<dyn Replicator>>) -> Result<Log, StorageError> {
        let store::Opened { log_id, last_seq } = store::open(&db)?;
        let db = Arc::new(db);
        let (head_tx, head) = watch::channel(last_seq);
        let (tx, rx) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let tail = Arc::new(Tail::default());
        let observer = Arc::new(OnceLock::new());
        let writer = Writer {
            observer: observer.clone(),
            tail: tail.clone(),
            replicator,
            failure: failure.clone(),
            db: db.clone(),
            log_id,
            next_seq: last_seq + 1,
            last_millis: 0,
            head: head_tx,
        };
        let handle = std::thread::Builder::new()
            .name("carshare-commit".into())
            .spawn(move || writer.run(rx))
            .map_err(StorageError::new)?;
        Ok(Log {
            inner: Arc::new(Inner {
                ids: Arc::new(IdSequences::new(db.clone())),
                tail,
                db,
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                head,
                failure,
                observer,
            }),
        })
    }

    /// Starts a unit of work on the newest committed state.
    pub fn begin(&self) -> Result<Unit, StorageError> {
        // The head is read first: every event up to it is committed, so the snapshot holds it.
        let visible = self.head();
        Ok(Unit::new(
            self.snapshot()?,
            visible,
            self.inner.ids.clone(),
            self.inner.tail.clone(),
        ))
    }

    /// A read-only view of the newest committed state.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Snapshot::new(&self.inner.db)
    }

    /// Commits `unit` durably: when this returns `Ok`, its writes and events are on disk. Units
    /// committed concurrently share one transaction and one fsync.
    pub async fn commit(&self, unit: Unit) -> Result<Committed, CommitError> {
        match self.send(unit)? {
            Some(rx) => rx.await.unwrap_or(Err(CommitError::Closed)),
            None => Ok(Committed { seqs: 0..0 }),
        }
    }

    /// [`Log::commit`] for callers outside an async runtime. Must not be called on one.
    pub fn commit_blocking(&self, unit: Unit) -> Result<Committed, CommitError> {
        match self.send(unit)? {
            Some(rx) => rx.blocking_recv().unwrap_or(Err(CommitError::Closed)),
            None => Ok(Committed { seqs: 0..0 }),
        }
    }

    /// Hands the unit to the writer; `None` if it has nothing to commit.
    #[allow(clippy::type_complexity)]
    fn send(
        &self,
        unit: Unit,
    ) -> Result<Option<oneshot::Receiver<Result<Committed, CommitError>>>, CommitError> {
        if unit.is_read_only() {
            return Ok(None);
        }
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            changes: unit.into_changes(),
            reply,
        };
        let tx = self.inner.tx.read().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(pending).map_err(|_| CommitError::Closed)?,
            None => return Err(CommitError::Closed),
        }
        Ok(Some(rx))
    }

    /// Up to `limit` events after sequence number `after`, in log order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        self.snapshot()?.events_after(after, limit)
    }

    /// The sequence number of the newest committed event.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// A receiver that changes whenever new events commit; its value is the newest sequence
    /// number.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// Whether the log takes commits: not closed, and its writer thread still running (a writer
    /// that died would leave every commit waiting in vain).
    pub fn is_open(&self) -> bool {
        let taking = self.inner.tx.read().unwrap_or_else(|p| p.into_inner()).is_some();
        let writing = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        taking && writing
    }

    /// Has `observer` told of every commit batch from now on. One observer per log: returns
    /// false (and changes nothing) if one was set before.
    pub fn observe(&self, observer: Arc<dyn CommitObserver>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// Why the last commit batch failed in storage, while no later batch has committed. redb
    /// refuses every write after an I/O error until the database is opened again, so once set
    /// this usually stays: readiness probes report it.
    pub fn storage_failure(&self) -> Option<StorageError> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops taking commits, lets the writer finish what it has, and waits for it. Units
    /// committed after this fail with [`CommitError::Closed`].
    pub fn close(&self) {
        self.inner.tx.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}
