//! [`Log`]: the handle an embedder holds. It opens the database, starts the commit writer, and
//! hands out units of work and snapshots.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{oneshot, watch};

use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::store::{self, Snapshot};
use crate::unit::Unit;
use crate::writer::{Committed, Pending, Writer};

/// State every unit of one log shares.
pub(crate) struct Shared {
    db: Arc<Database>,
    /// Id sequences as handed out in this process; loaded from the database on first use.
    /// A std mutex: it is held for a map look-up, never across an await.
    ids: Mutex<HashMap<(String, String), u64>>,
}

impl Shared {
    pub(crate) fn next_id(&self, context: &str, name: &str) -> Result<u64, StorageError> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let key = (context.to_string(), name.to_string());
        let current = match ids.get(&key) {
            Some(v) => *v,
            None => Snapshot::new(&self.db)?.counter(context, name)?,
        };
        ids.insert(key, current + 1);
        Ok(current + 1)
    }
}

/// The durable log of events and the context state they commit with. Cheap to clone; the
/// database closes when [`Log::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: RwLock<Option<Sender<Pending>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<u64>,
}

impl Log {
    /// Opens the log in `path` (a redb file, created if missing).
    pub fn open(path: impl AsRef<Path>) -> Result<Log, StorageError> {
        let (db, log_id, last_seq) = store::open(path.as_ref())?;
        let db = Arc::new(db);
        let (head_tx, head) = watch::channel(last_seq);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
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
                shared: Arc::new(Shared {
                    db,
                    ids: Mutex::new(HashMap::new()),
                }),
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                head,
            }),
        })
    }

    /// Starts a unit of work on the newest committed state.
    pub fn begin(&self) -> Result<Unit, StorageError> {
        Ok(Unit::new(self.snapshot()?, self.inner.shared.clone()))
    }

    /// A read-only view of the newest committed state.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Snapshot::new(&self.inner.shared.db)
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
            reads: unit.reads.into_iter().collect(),
            scans: unit.scans,
            writes: unit.writes.into_iter().collect(),
            events: unit.events,
            cursors: unit.cursors,
            dead: unit.dead,
            ids: unit.ids.into_iter().collect(),
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
