//! [`Log`]: the handle an embedder holds. It opens the database, starts the commit writer, and
//! hands out units of work and snapshots. In a cluster it also routes each unit to the writer
//! and takes the records of the replicated log to apply (`replica.rs`, through the
//! `Replicator` of `replicate.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, StorageBackend};
use tokio::sync::{oneshot, watch};

use crate::changes::ChangeSet;
use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::ids::IdSequences;
use crate::replicate::Replicator;
use crate::store::{self, Snapshot};
use crate::tail::Tail;
use crate::unit::Unit;
use crate::writer::{CommitObserver, Committed, Message, Outcome, Pending, Recent, Writer};

mod replica;

/// How to open a [`Log`].
#[derive(Clone)]
pub struct LogBuilder {
    replicator: Option<Arc<dyn Replicator>>,
    cache_bytes: usize,
    log_id: Option<u64>,
    ids: (u64, u64),
    /// This log's partition, of how many (`partitions.rs`).
    partition: (u32, u32),
    patience: Duration,
}

/// How long a cluster's unit waits for a writer to take it, and for its host to apply the
/// writer's record: a lease running out (5 s) after elections of the lease's and the log's own
/// leaders (up to about 9 s each, at once when one server leading both dies).
const DEFAULT_PATIENCE: Duration = Duration::from_secs(20);

/// redb's page cache, unless told otherwise: redb's own default (1 GiB) lets a busy server's
/// resident memory grow far past what the working set needs.
const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Default for LogBuilder {
    fn default() -> Self {
        LogBuilder {
            replicator: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            log_id: None,
            ids: (0, 1),
            partition: (0, 1),
            patience: DEFAULT_PATIENCE,
        }
    }
}

impl LogBuilder {
    /// Bytes redb may keep in its page cache (default 64 MiB).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Makes this log a replica of `replicator`'s replicated log: units commit through the
    /// cluster's writer, and [`Log::apply`] takes the log's records.
    pub fn replicator(mut self, replicator: Arc<dyn Replicator>) -> Self {
        self.replicator = Some(replicator);
        self
    }

    /// The log's id (a cluster's, shared by its hosts): a new or empty database takes it, and
    /// one holding another log's data is refused.
    pub fn log_id(mut self, id: u64) -> Self {
        self.log_id = Some(id);
        self
    }

    /// Hands out ids `slot + 1`, `slot + 1 + of`, ... of each sequence (above any id committed
    /// before), so that `of` hosts each take their own ids without asking one another. Ids then
    /// increase on each host, not across hosts. The default is slot 0 of 1: 1, 2, 3, ...
    pub fn id_slot(mut self, slot: u64, of: u64) -> Self {
        self.ids = (slot, of.max(1));
        self
    }

    /// Makes this log partition `p` of `n` (see [`crate::Partitions`]): it hands out only the
    /// ids of its partition, `(id - 1) % n == p`, within its id slot.
    pub fn partition(mut self, p: u32, n: u32) -> Self {
        assert!(p < n.max(1), "partition {p} of {n}");
        self.partition = (p, n.max(1));
        self
    }

    /// How long a cluster's unit waits for a writer to take it (default 20 s); giving up a
    /// unit whose outcome is not known then takes up to half as long again.
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Opens the log in `path` (a redb file, created if missing).
    pub fn open(self, path: impl AsRef<Path>) -> Result<Log, StorageError> {
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(path.as_ref())?;
        self.start(db)
    }

    /// Opens the log on `backend`.
    pub fn open_backend(self, backend: impl StorageBackend) -> Result<Log, StorageError> {
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create_with_backend(backend)?;
        self.start(db)
    }

    fn start(self, db: Database) -> Result<Log, StorageError> {
        let store::Opened {
            log_id,
            last_seq,
            applied,
            last_record,
            horizon,
        } = store::open(&db, self.log_id)?;
        let db = Arc::new(db);
        let (head_tx, head) = watch::channel(last_seq);
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (tx, rx) = mpsc::sync_channel(crate::writer::QUEUE_BOUND);
        let failure = Arc::new(Mutex::new(None));
        let tail = Arc::new(Tail::default());
        let observer = Arc::new(OnceLock::new());
        let generation = Arc::new(AtomicU64::new(0));
        // Partition p of n within id slot s of k: the ids of slot `s * n + p` of `k * n`.
        let (slot, of) = self.ids;
        let (p, n) = self.partition;
        let ids = Arc::new(IdSequences::new(
            db.clone(),
            slot * u64::from(n) + u64::from(p),
            of * u64::from(n),
        ));
        let writing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = Writer {
            writing: writing.clone(),
            // A cluster's writer batches by its records' round trips already.
            linger: if self.replicator.is_some() {
                Duration::ZERO
            } else {
                crate::writer::LINGER
            },
            step_linger: if self.replicator.is_some() {
                Duration::ZERO
            } else {
                crate::writer::STEP_LINGER
            },
            ids: ids.clone(),
            last_record: last_record.1,
            horizon,
            generation: generation.clone(),
            recent: Recent::default(),
            known_counts: Default::default(),
            observer: observer.clone(),
            tail: tail.clone(),
            replicator: self.replicator.clone(),
            applied,
            applied_tx,
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
                ids,
                tail,
                db,
                log_id,
                replicator: self.replicator,
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                head,
                applied: applied_rx,
                failure,
                observer,
                generation,
                patience: self.patience,
                partition: p,
                writing,
                subscribers: std::sync::Mutex::default(),
            }),
        })
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
    log_id: u64,
    ids: Arc<IdSequences>,
    tail: Arc<Tail>,
    replicator: Option<Arc<dyn Replicator>>,
    tx: RwLock<Option<SyncSender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    /// How many batches the writer has committed (`writer/valid.rs`).
    generation: Arc<AtomicU64>,
    applied: watch::Receiver<u64>,
    failure: Arc<Mutex<Option<StorageError>>>,
    observer: Arc<OnceLock<Arc<dyn CommitObserver>>>,
    /// See [`LogBuilder::patience`].
    patience: Duration,
    /// Which partition this log is.
    partition: u32,
    /// How many of its units are writing and not yet handed to the writer.
    writing: Arc<std::sync::atomic::AtomicUsize>,
    /// Which dispatcher delivers to each subscriber name (`dispatch/mod.rs`): a name is one
    /// set of cursors, so it has one dispatcher. Kept in partition 0's log.
    subscribers: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Log {
    /// Claims subscriber `name` for dispatcher `owner`: false if another dispatcher holds it.
    pub(crate) fn claim_subscriber(&self, name: &str, owner: u64) -> bool {
        let mut names = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        *names.entry(name.to_string()).or_insert(owner) == owner
    }

    /// Gives back subscriber `name` if dispatcher `owner` holds it.
    pub(crate) fn release_subscriber(&self, name: &str, owner: u64) {
        let mut names = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        if names.get(name) == Some(&owner) {
            names.remove(name);
        }
    }

    /// Gives back every subscriber name dispatcher `owner` holds.
    pub(crate) fn release_subscribers(&self, owner: u64) {
        let mut names = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        names.retain(|_, o| *o != owner);
    }

    /// Opens the log in `path` (a redb file, created if missing).
    pub fn open(path: impl AsRef<Path>) -> Result<Log, StorageError> {
        LogBuilder::default().open(path)
    }

    /// Opens the log on `backend`: redb's in-memory backend for a log that lives as long as
    /// the process, or any other storage (tests inject faults this way).
    pub fn open_backend(backend: impl StorageBackend) -> Result<Log, StorageError> {
        LogBuilder::default().open_backend(backend)
    }

    /// A log with more than the defaults (a [`Replicator`], a cache size).
    pub fn builder() -> LogBuilder {
        LogBuilder::default()
    }

    /// Starts a unit of work on the newest committed state.
    pub fn begin(&self) -> Result<Unit, StorageError> {
        // The head and the generation are read first: every event and batch up to them is
        // committed, so the snapshot holds them.
        let visible = self.head();
        let generation = self.inner.generation.load(Ordering::Acquire);
        // Likewise the replicated log's position: the snapshot holds every record up to it.
        let begun_at = self.applied();
        Ok(Unit::new(
            self.snapshot()?,
            (visible, generation, begun_at),
            self.inner.ids.clone(),
            self.inner.tail.clone(),
            crate::writer::InFlight::new(self.inner.writing.clone()),
        ))
    }

    /// A read-only view of the newest committed state.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Snapshot::new(&self.inner.db)
    }

    /// Commits `unit` durably: when this returns `Ok`, its writes and events are on disk. Units
    /// committed concurrently share one transaction and one fsync. In a cluster, a host that
    /// is not the writer forwards the unit to the writer, and returns once its own replica
    /// holds the unit's effects; every unit carries an id there, so one whose outcome was
    /// left in doubt is sent again and still commits at most once.
    pub async fn commit(&self, unit: Unit) -> Result<Committed, CommitError> {
        if let Some(v) = unit.violation() {
            return Err(CommitError::OutsidePartition(v.to_string()));
        }
        if unit.is_read_only() {
            return Ok(Committed {
                seqs: 0..0,
                position: 0,
            });
        }
        let (changes, in_flight) = unit.into_changes();
        match self.replicated() {
            Some(replicator) if !replicator.caught_up() => Err(CommitError::Unavailable(
                "this host has not yet applied the cluster's log as it stood when the host \
                 joined, or found its data out of step with the log: it takes no writes until it has"
                    .into(),
            )),
            Some(replicator) => {
                drop(in_flight);
                self.forward(replicator, changes).await
            }
            None => {
                // Handed over: the writer sees it in its queue, no longer as being written.
                let answer = self.send(changes);
                drop(in_flight);
                rerun_if_deposed(outcome(answer?.await))
            }
        }
    }

    /// [`Log::commit`] for callers outside an async runtime. Must not be called on one.
    pub fn commit_blocking(&self, unit: Unit) -> Result<Committed, CommitError> {
        if let Some(v) = unit.violation() {
            return Err(CommitError::OutsidePartition(v.to_string()));
        }
        if self.replicated().is_some() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| CommitError::Storage(StorageError::new(e)))?;
            return runtime.block_on(self.commit(unit));
        }
        if unit.is_read_only() {
            return Ok(Committed {
                seqs: 0..0,
                position: 0,
            });
        }
        let (changes, in_flight) = unit.into_changes();
        let answer = self.send(changes);
        drop(in_flight);
        rerun_if_deposed(outcome(answer?.blocking_recv()))
    }

    /// Hands the change set to this host's writer.
    /// Hands a unit to the writer, or refuses it if [`crate::writer::QUEUE_BOUND`] units wait
    /// already: a unit is never blocked for room (it may be on an async worker).
    fn send(&self, changes: ChangeSet) -> Result<oneshot::Receiver<Outcome>, CommitError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.inner.tx.read().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err(CommitError::Closed);
        };
        match tx.try_send(Message::Commit(Pending { changes, reply })) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(CommitError::Overloaded(crate::writer::QUEUE_BOUND)),
            Err(TrySendError::Disconnected(_)) => Err(CommitError::Closed),
        }
    }

    /// A read transaction on the database as committed now.
    pub(crate) fn read_transaction(&self) -> Result<redb::ReadTransaction, StorageError> {
        use redb::ReadableDatabase;
        Ok(self.inner.db.begin_read()?)
    }

    /// Hands the writer a message that is not a unit (records to apply, a pause), waiting for
    /// room if the queue is full: they are few, they must not be lost, and the writer takes
    /// up to a batch from the queue at a time, so room comes within a batch.
    pub(crate) fn send_message(&self, message: Message) -> Result<(), CommitError> {
        let tx = self.inner.tx.read().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(message).map_err(|_| CommitError::Closed),
            None => Err(CommitError::Closed),
        }
    }

    /// Which partition this log is (0 of 1 without partitions).
    pub fn partition(&self) -> u32 {
        self.inner.partition
    }

    /// The number of partitions the database says its data directory was made with, if it
    /// says (`partitions.rs`).
    pub(crate) fn claimed_partitions(&self) -> Result<Option<u32>, StorageError> {
        store::claimed_partitions(&self.inner.db)
    }

    /// Records in the database that it is partition `self.partition()` of `n`, or refuses if
    /// it was made as another (`partitions.rs`).
    pub(crate) fn claim_partitions(&self, n: u32) -> Result<(), StorageError> {
        store::claim_partitions(&self.inner.db, self.inner.partition, n)
    }

    /// The log's id: random, made when the database was created (or the cluster's).
    pub fn id(&self) -> u64 {
        self.inner.log_id
    }

    /// Up to `limit` events after sequence number `after`, in log order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        self.snapshot()?.events_after(after, limit)
    }

    /// Up to `limit` committed events after `after`, shared: from the events kept in memory
    /// when they are there (a subscriber close behind), else from the database.
    pub(crate) fn events_after_shared(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, StorageError> {
        if let Some(events) = self.inner.tail.after(after, self.head(), limit) {
            return Ok(events);
        }
        Ok(self
            .snapshot()?
            .events_after(after, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
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

/// A unit of this host whose writer was deposed before it committed wrote nothing: its caller
/// runs it again (and it goes to the new writer).
fn rerun_if_deposed(outcome: Result<Committed, CommitError>) -> Result<Committed, CommitError> {
    match outcome {
        Err(CommitError::Deposed) => Err(CommitError::Conflict),
        other => other,
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

/// The outcome the writer sent back; the unit's change set is freed here, on the committer's
/// thread. A writer gone before it answered is [`CommitError::Closed`].
fn outcome(reply: Result<Outcome, oneshot::error::RecvError>) -> Result<Committed, CommitError> {
    reply.map_or(Err(CommitError::Closed), |(result, _changes)| result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{Pause, QUEUE_BOUND};

    #[test]
    fn a_full_queue_refuses_a_unit_at_once_and_what_it_took_all_commits() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("queue.redb")).unwrap();
        // Hold the writer, as a backup does.
        let (parked_tx, parked) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        log.send_message(Message::Pause(Pause {
            parked: parked_tx,
            release: release.clone(),
        }))
        .unwrap();
        parked.recv().unwrap();
        let unit = |key: &str| {
            let mut u = log.begin().unwrap();
            u.set("t", key, vec![1]);
            u.into_changes().0
        };
        let answers: Vec<_> = (0..QUEUE_BOUND)
            .map(|i| log.send(unit(&format!("k{i}"))).expect("room in the queue"))
            .collect();
        assert!(matches!(
            log.send(unit("over")),
            Err(CommitError::Overloaded(QUEUE_BOUND))
        ));
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        for answer in answers {
            outcome(answer.blocking_recv()).expect("every unit the queue took commits");
        }
        let mut check = log.begin().unwrap();
        assert_eq!(check.get("t", "k0").unwrap(), Some(vec![1]));
        assert_eq!(
            check.get("t", &format!("k{}", QUEUE_BOUND - 1)).unwrap(),
            Some(vec![1])
        );
        assert_eq!(
            check.get("t", "over").unwrap(),
            None,
            "the refused unit wrote nothing"
        );
    }
}
