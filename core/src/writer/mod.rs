//! The commit writer: one thread that owns every write to the database and commits whatever
//! units are waiting in one redb transaction, so that concurrent units share one fsync (group
//! commit).
//!
//! For each unit of a batch, in arrival order, the writer checks that what the unit read is
//! still what the database holds (including the effects of the units before it in the batch),
//! then applies its writes, numbers its events and moves its cursors. A unit whose reads are
//! stale gets [`CommitError::Conflict`] and leaves no trace. If the transaction as a whole
//! fails, every unit of the batch fails and the sequence counter is not advanced, so the log
//! stays gap-free.
//!
//! With a [`Replicator`] (a cluster), the writer appends each batch's effects to the replicated
//! log before it commits locally, and it also applies the records other writers appended
//! (`records.rs`): the one thread that writes the database does both, in log order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redb::{Database, Table};
use tokio::sync::{oneshot, watch};

use crate::changes::{ChangeSet, Effects};
use crate::dead::{self, DEAD};
use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::forwarded::{self, Forwarded, Known};
use crate::ids::{self, COUNTERS, IdSequences};
use crate::index::{self, CountDeltas, IDX, IDX_COUNTS, KnownCounts};
use crate::replicate::{AppendError, Applied, ApplyError, RECORD_OVERHEAD, RecordHeader, Replicator};
use crate::store::{self, CURSORS, EVENTS, STATE};
use crate::tail::Tail;

mod in_flight;
mod records;
mod valid;

pub(crate) use in_flight::InFlight;
pub(crate) use valid::Recent;
use valid::still_valid;

/// What the writer reports of each batch it committed or failed, for an embedder's metrics.
#[derive(Debug)]
pub struct BatchReport<'a> {
    /// Units the batch took.
    pub units: usize,
    /// Of them, those whose reads had gone stale (they will be run again).
    pub conflicts: usize,
    /// The events it committed, in order (none if it failed).
    pub events: &'a [Arc<Event>],
    /// How long the local transaction took to commit (writing and fsync).
    pub commit: Duration,
    /// Whether the batch failed as a whole.
    pub failed: bool,
}

/// Told of every batch the writer commits or fails. Called on the writer's thread: it must be
/// quick.
pub trait CommitObserver: Send + Sync + 'static {
    /// One batch.
    fn batch(&self, report: &BatchReport<'_>);
}

/// How many units one transaction takes at most: bounds the latency a unit can add to others.
const MAX_BATCH: usize = 2048;

/// How many messages may wait for a writer: eight full batches. A unit waits there only while
/// its request or subscriber step waits for it, so connections (`--max-connections`) and the
/// dispatcher's tasks bound the queue long before this; reaching it means the writer is
/// stalled, and a unit is refused ([`CommitError::Overloaded`]) rather than queued for ever.
pub(crate) const QUEUE_BOUND: usize = 8 * MAX_BATCH;

/// Takes into `batch` the units waiting in `rx`, up to [`MAX_BATCH`]; a message of another
/// kind goes to `next` (records wait for the batch before them).
fn take_waiting(rx: &Receiver<Message>, batch: &mut Vec<Pending>, next: &mut Option<Message>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Message::Commit(p)) => batch.push(p),
            Ok(other) => {
                *next = Some(other);
                return;
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        }
    }
}

/// How long a busy writer waits at most for units being written to join its batch
/// (`in_flight.rs`).
pub(crate) const LINGER: Duration = Duration::from_millis(1);

/// How long a writer that holds only subscriber steps waits at most for more units before it
/// commits them. No client waits for a step, but every transaction costs its fsync and redb's
/// own work (~240,000 instructions whatever it holds): steps that would each take one go
/// together, or with the next request's unit, which ends the wait. An order's chain of
/// handlers takes at most this much longer per hop; the request itself, nothing.
pub(crate) const STEP_LINGER: Duration = Duration::from_millis(2);

/// What the writer is handed. Nearly every message is a unit to commit, so that variant is
/// kept inline: boxing it would cost every unit an allocation to save the rare `Apply` bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Message {
    /// A unit to commit.
    Commit(Pending),
    /// Records of the replicated log to apply, in log order, with their positions.
    Apply(Apply),
    /// Stop between two batches until released: every partition's writer at once, so that
    /// a backup reads all partitions at one point (`partitions.rs`).
    Pause(Pause),
}

/// A pause of the writer: it says it has stopped, then waits to be released.
pub(crate) struct Pause {
    pub parked: std::sync::mpsc::Sender<()>,
    pub release: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Pause {
    fn hold(self) {
        let _ = self.parked.send(());
        let (released, wake) = &*self.release;
        let mut done = released.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = wake.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A unit waiting for the writer, with the channel its outcome goes back on.
pub(crate) struct Pending {
    pub changes: ChangeSet,
    pub reply: oneshot::Sender<Outcome>,
}

/// What the writer hands back for a unit: how it went, and the unit's change set, so that the
/// committer's thread frees it, not the writer's (freeing change sets was ~5 % of the writer's
/// time, and the writer is the one thread every commit waits for).
pub(crate) type Outcome = (Result<Committed, CommitError>, ChangeSet);

impl Pending {
    fn answer(self, outcome: Result<Committed, CommitError>) {
        let _ = self.reply.send((outcome, self.changes));
    }
}

/// Records to apply, and where to say how far the replica got.
pub(crate) struct Apply {
    pub records: Vec<(u64, Vec<u8>)>,
    pub reply: oneshot::Sender<Result<Applied, ApplyError>>,
}

/// What a committed unit gets back: the sequence numbers its events were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The sequence numbers of the unit's events, in publish order (empty if it published none).
    pub seqs: std::ops::Range<u64>,
    /// The position of the replicated log's record that carries it (0 without a replicator).
    pub position: u64,
}

/// What a committed batch leaves: each unit's outcome and what the writer's state moves to.
struct BatchDone {
    outcomes: Vec<Result<Committed, CommitError>>,
    /// The next free sequence number.
    next_seq: u64,
    /// The events it committed, in order.
    events: Vec<Arc<Event>>,
    /// How long the local commit took.
    commit: Duration,
    /// In a cluster, the position and id of the batch's record.
    record: Option<(u64, u64)>,
}

/// What writing a batch's units into its transaction gave (`Writer::write_units`).
struct UnitsWritten {
    /// Each unit's outcome, in order.
    outcomes: Vec<Result<Committed, CommitError>>,
    /// Which units were written (and so go into the batch's record).
    written: Vec<bool>,
    /// The events they published, in order.
    events: Vec<Arc<Event>>,
    /// The next free sequence number.
    next_seq: u64,
    /// The keys they wrote (for validating later units against).
    keys: foldhash::HashSet<u64>,
    /// The index counts as written.
    counts: crate::index::PerCount<u64>,
}

/// Why a batch failed as a whole.
enum BatchError {
    /// Nothing of it was written anywhere.
    Storage(StorageError),
    /// The replicated log did not take its record: nothing of it was written.
    Append(AppendError),
    /// Its record is in the replicated log, but it could not be committed here: each unit's
    /// outcome is what the record gives it.
    Unapplied {
        outcomes: Vec<Result<Committed, CommitError>>,
        error: StorageError,
    },
}

impl<E: Into<StorageError>> From<E> for BatchError {
    fn from(e: E) -> Self {
        BatchError::Storage(e.into())
    }
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub log_id: u64,
    pub next_seq: u64,
    pub last_millis: u64,
    pub head: watch::Sender<u64>,
    /// The storage error of the last batch, if it failed; cleared by the next that commits.
    pub failure: Arc<Mutex<Option<StorageError>>>,
    /// The replicated log every batch is appended to before it commits locally (a cluster).
    pub replicator: Option<std::sync::Arc<dyn Replicator>>,
    /// The position of the last message of the replicated log taken here (a record applied,
    /// or a message refused).
    pub applied: u64,
    /// The id of the last record applied here (0 before any): the next record names it as
    /// the one it follows.
    pub last_record: u64,
    /// Units that began before this position of the replicated log may have committed in a
    /// record whose unit ids are forgotten (`forwarded.rs`).
    pub horizon: u64,
    /// The id sequences units draw from, raised to the ids committed batches took.
    pub ids: Arc<IdSequences>,
    pub applied_tx: watch::Sender<u64>,
    /// Where committed events are kept for the subscribers close behind.
    pub tail: Arc<Tail>,
    /// Told of every batch, once set.
    pub observer: Arc<OnceLock<Arc<dyn CommitObserver>>>,
    /// How many batches (and applied records) have committed; units read it when they begin.
    pub generation: Arc<AtomicU64>,
    /// How many units have begun to write and are not yet handed over (`in_flight.rs`).
    pub writing: Arc<std::sync::atomic::AtomicUsize>,
    /// How long a busy writer waits for them at most ([`LINGER`], or zero).
    pub linger: Duration,
    /// How long a batch of subscriber steps alone waits at most ([`STEP_LINGER`], or zero).
    pub step_linger: Duration,
    /// The keys the last batches wrote, to validate reads without reading (`valid.rs`).
    pub recent: Recent,
    /// The index counts as committed, so that a batch need not read them back.
    pub known_counts: KnownCounts,
}

/// The tables a batch writes, open in its transaction.
struct Tables<'txn> {
    state: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    events: Table<'txn, u64, &'static [u8]>,
    cursors: Table<'txn, &'static str, u64>,
    counters: Table<'txn, (&'static str, &'static str), u64>,
    dead: Table<'txn, (&'static str, u64), &'static [u8]>,
    index: Table<'txn, (&'static str, &'static str, &'static [u8], u64), ()>,
    index_counts: Table<'txn, (&'static str, &'static str, u8, &'static [u8], u64), u64>,
    /// The ids of a cluster's units (none outside a cluster).
    forwarded: Option<Forwarded<'txn>>,
    /// How the batch moves the index counts, written once at its end.
    deltas: CountDeltas,
    /// The state keys (hashed as [`Recent`] hashes them) the batch's units wrote so far.
    written: foldhash::HashSet<u64>,
    /// The highest id the batch's units took of each sequence, recorded once at its end.
    ids: foldhash::HashMap<crate::changes::SequenceKey, u64>,
}

impl Writer {
    /// Runs until every sender is gone, then returns (the database closes with the last Arc).
    pub fn run(mut self, rx: Receiver<Message>) {
        let mut next = rx.recv().ok();
        // Whether units were waiting when the writer finished its last message: then it is
        // busy, and a moment's wait for the units being written costs them nothing they would
        // not wait anyway.
        let mut busy = false;
        while let Some(message) = next.take() {
            match message {
                Message::Apply(apply) => {
                    let result = self.apply_records(apply.records);
                    let _ = apply.reply.send(result);
                }
                Message::Pause(pause) => pause.hold(),
                Message::Commit(first) => {
                    let mut batch = vec![first];
                    take_waiting(&rx, &mut batch, &mut next);
                    if next.is_none() {
                        if !self.step_linger.is_zero() && batch.iter().all(|p| p.changes.is_step()) {
                            self.wait_for_client(&rx, &mut batch, &mut next);
                        } else if busy && !self.linger.is_zero() {
                            self.wait_for_writing(&rx, &mut batch, &mut next);
                        }
                    }
                    // What did not fit in one record of the replicated log goes in the next.
                    while !batch.is_empty() {
                        batch = self.commit_batch(batch);
                    }
                }
            }
            if next.is_none() {
                next = match rx.try_recv() {
                    Ok(m) => {
                        busy = true;
                        Some(m)
                    }
                    Err(TryRecvError::Empty) => {
                        busy = false;
                        rx.recv().ok()
                    }
                    Err(TryRecvError::Disconnected) => None,
                };
            } else {
                busy = true;
            }
        }
    }

    /// Takes into `batch` the units handed over within [`Writer::linger`] while units are
    /// being written, up to [`MAX_BATCH`].
    fn wait_for_writing(&self, rx: &Receiver<Message>, batch: &mut Vec<Pending>, next: &mut Option<Message>) {
        let deadline = Instant::now() + self.linger;
        while batch.len() < MAX_BATCH && self.writing.load(Ordering::Acquire) > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(Message::Commit(p)) => {
                    batch.push(p);
                    take_waiting(rx, batch, next);
                    if next.is_some() {
                        return;
                    }
                }
                Ok(other) => {
                    *next = Some(other);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Takes into `batch` the units handed over within [`Writer::step_linger`], up to
    /// [`MAX_BATCH`], until one that is not a subscriber step (a client waits for it) comes.
    fn wait_for_client(&self, rx: &Receiver<Message>, batch: &mut Vec<Pending>, next: &mut Option<Message>) {
        let deadline = Instant::now() + self.step_linger;
        while batch.len() < MAX_BATCH {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(Message::Commit(p)) => {
                    let client = !p.changes.is_step();
                    batch.push(p);
                    take_waiting(rx, batch, next);
                    if client || next.is_some() {
                        return;
                    }
                }
                Ok(other) => {
                    *next = Some(other);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Commits what of `batch` fits in one record; returns the units left for the next.
    fn commit_batch(&mut self, batch: Vec<Pending>) -> Vec<Pending> {
        // A unit that reached this host's writer after the host stopped being the cluster's
        // writer: run again, it is forwarded to the new one.
        if self.replicator.as_ref().is_some_and(|r| !r.is_writer()) {
            for p in batch {
                p.answer(Err(CommitError::Deposed));
            }
            return Vec::new();
        }
        let (mut batch, encoded, carried) = match self.replicator.as_ref() {
            Some(r) => fit(batch, r.max_record_bytes()),
            None => (batch, Vec::new(), Vec::new()),
        };
        if batch.is_empty() {
            return carried;
        }
        let millis = crate::time::now_millis().max(self.last_millis);
        let units = batch.len();
        match self.apply(&mut batch, &encoded, millis) {
            Ok(done) => {
                self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                self.last_millis = millis;
                self.committed(done, batch, units);
            }
            Err(BatchError::Append(e)) => {
                let error = || match &e {
                    // Fenced: another writer appended first. The units run again and are
                    // forwarded to it (this host is no longer the writer).
                    AppendError::Fenced => CommitError::Deposed,
                    AppendError::Refused(m) => CommitError::Unavailable(m.clone()),
                    AppendError::Unknown(m) => CommitError::Unknown(m.clone()),
                };
                for p in batch {
                    p.answer(Err(error()));
                }
            }
            Err(BatchError::Storage(e)) => self.failed(batch, e, None),
            Err(BatchError::Unapplied { outcomes, error }) => self.failed(batch, error, Some(outcomes)),
        }
        carried
    }

    /// After a batch committed: the writer's state moves on, then every unit hears of it.
    fn committed(&mut self, done: BatchDone, batch: Vec<Pending>, units: usize) {
        let start_seq = self.next_seq;
        // Gap-free numbering: the batch's events are exactly the numbers it took, in order.
        assert!(
            done.next_seq >= start_seq
                && done.events.len() as u64 == done.next_seq - start_seq
                && done.events.iter().zip(start_seq..).all(|(e, seq)| e.seq == seq),
            "a batch's events are numbered {start_seq}.. without a gap"
        );
        self.next_seq = done.next_seq;
        if let Some((position, id)) = done.record {
            assert!(
                position == self.applied + 1,
                "a record lands right after the last"
            );
            self.applied = position;
            self.last_record = id;
            self.applied_tx.send_replace(position);
        }
        if let Some(observer) = self.observer.get() {
            observer.batch(&BatchReport {
                units,
                conflicts: done.outcomes.iter().filter(|o| o.is_err()).count(),
                events: &done.events,
                commit: done.commit,
                failed: false,
            });
        }
        self.tail.push(done.events);
        // The head moves before anyone hears of the commit: a committer that reads the
        // head (or waits for a subscriber to reach it) sees its own events counted.
        if done.next_seq != start_seq {
            self.head.send_replace(done.next_seq - 1);
        }
        for (p, outcome) in batch.into_iter().zip(done.outcomes) {
            p.answer(outcome);
        }
    }

    /// After a batch failed in storage: nothing of it is here. Without `appended`, nothing of
    /// it is anywhere; with it, its record is in the replicated log (the other hosts apply
    /// it), so each unit hears the outcome the record gives it, never "nothing written".
    fn failed(
        &mut self,
        batch: Vec<Pending>,
        e: StorageError,
        appended: Option<Vec<Result<Committed, CommitError>>>,
    ) {
        if let Some(observer) = self.observer.get() {
            observer.batch(&BatchReport {
                units: batch.len(),
                conflicts: 0,
                events: &[],
                commit: Duration::ZERO,
                failed: true,
            });
        }
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        match appended {
            Some(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    p.answer(outcome);
                }
            }
            None => {
                for p in batch {
                    p.answer(Err(CommitError::Storage(e.clone())));
                }
            }
        }
    }

    /// Applies the batch in one transaction, appends it to the replicated log (if any), and
    /// commits. `encoded` holds each unit's effects as the record carries them (a cluster
    /// only). Returns each unit's outcome and what the writer's state moves to, or an error if
    /// the batch as a whole failed.
    fn apply(
        &mut self,
        batch: &mut [Pending],
        encoded: &[Vec<u8>],
        millis: u64,
    ) -> Result<BatchDone, BatchError> {
        let txn = self.db.begin_write()?;
        // Fencing puts this batch's record right after the last one applied.
        let position = self.applied + 1;
        let UnitsWritten {
            mut outcomes,
            written,
            events,
            next_seq,
            keys,
            counts,
        } = self.write_units(batch, &txn, millis, position)?;
        let record = match self.replicator.as_ref() {
            Some(replicator) => {
                let units = encoded
                    .iter()
                    .zip(&written)
                    .filter(|(_, w)| **w)
                    .map(|(e, _)| e.as_slice());
                Some(self.append(replicator.as_ref(), &txn, units, millis)?)
            }
            None => None,
        };
        if let Some((position, _)) = record {
            for c in outcomes
                .iter_mut()
                .zip(&written)
                .filter(|(_, w)| **w)
                .filter_map(|(o, _)| o.as_mut().ok())
            {
                c.position = position;
            }
        }
        let started = Instant::now();
        if let Err(e) = txn.commit() {
            return Err(match record {
                Some(_) => BatchError::Unapplied {
                    outcomes,
                    error: e.into(),
                },
                None => BatchError::Storage(e.into()),
            });
        }
        let commit = started.elapsed();
        // Before any unit hears of the commit, so that a unit begun after it counts it.
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.recent.committed(generation, keys);
        self.known_counts.learn(counts);
        self.generation.store(generation, Ordering::Release);
        Ok(BatchDone {
            outcomes,
            next_seq,
            events,
            commit,
            record,
        })
    }

    /// Writes each unit of `batch` that is still valid into `txn` (a unit whose outcome is
    /// known already gets it, a stale one a conflict), then the batch's index counts and ids.
    fn write_units(
        &mut self,
        batch: &mut [Pending],
        txn: &redb::WriteTransaction,
        millis: u64,
        position: u64,
    ) -> Result<UnitsWritten, BatchError> {
        let timestamp = crate::time::rfc3339_utc(millis);
        let mut next_seq = self.next_seq;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut written = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut t = self.tables(txn)?;
        self.forget_old_units(&mut t, txn, millis)?;
        for p in batch.iter_mut() {
            if let Some(known) = self.known_outcome(&p.changes, &t)? {
                outcomes.push(known);
                written.push(false);
                continue;
            }
            if !p.changes.abandon && !still_valid(&p.changes, &t, &self.recent)? {
                outcomes.push(Err(CommitError::Conflict));
                written.push(false);
                continue;
            }
            let first = next_seq;
            next_seq = self.write(
                &mut p.changes,
                &mut t,
                next_seq,
                (&timestamp, millis),
                &mut events,
                position,
            )?;
            outcomes.push(match p.changes.abandon {
                true => Err(CommitError::Abandoned),
                false => Ok(Committed {
                    seqs: first..next_seq,
                    position: 0,
                }),
            });
            written.push(true);
        }
        let deltas = std::mem::take(&mut t.deltas);
        let counts = deltas.write(&mut t.index_counts, &self.known_counts)?;
        let taken = std::mem::take(&mut t.ids);
        for (sequence, id) in &taken {
            ids::record(&mut t.counters, sequence, *id)?;
        }
        // Before the batch becomes visible: see `IdSequences::observe`.
        self.ids.observe(&taken)?;
        debug_assert_eq!(outcomes.len(), batch.len(), "one outcome per unit");
        Ok(UnitsWritten {
            outcomes,
            written,
            events,
            next_seq,
            keys: std::mem::take(&mut t.written),
            counts,
        })
    }

    /// Appends the batch's record (its `units`, already encoded) to the replicated log right
    /// after the last record applied, and notes its position and id in `txn`. Returns them.
    fn append<'a>(
        &self,
        replicator: &dyn Replicator,
        txn: &redb::WriteTransaction,
        units: impl Iterator<Item = &'a [u8]> + Clone,
        millis: u64,
    ) -> Result<(u64, u64), BatchError> {
        let id = store::random_nonzero_u64();
        let header = RecordHeader {
            log_id: self.log_id,
            id,
            prev: self.last_record,
            millis,
            first_seq: self.next_seq,
        };
        let size = units.clone().map(|u| u.len() + 1).sum();
        let bytes = header.encode(units, size);
        // Refused or fenced: the transaction is dropped unwritten, and the sequence is not
        // advanced.
        let position = replicator
            .append(&bytes, self.applied)
            .map_err(BatchError::Append)?;
        assert!(
            position == self.applied + 1,
            "the replicated log put the record at {position}, not right after {}",
            self.applied
        );
        store::note_applied(txn, position, Some((position, id)))?;
        Ok((position, id))
    }

    /// A cluster's unit whose fate the writer already knows: it committed before (sent
    /// again), its host gave it up, or it began before the oldest record whose units the
    /// writer still remembers (so it may have committed: the writer cannot tell).
    fn known_outcome(
        &self,
        c: &ChangeSet,
        t: &Tables<'_>,
    ) -> Result<Option<Result<Committed, CommitError>>, StorageError> {
        let (Some(id), Some(f)) = (&c.unit_id, &t.forwarded) else {
            return Ok(None);
        };
        Ok(match forwarded::lookup(f, id)? {
            Some(Known::Committed(seqs, position)) => Some(Ok(Committed { seqs, position })),
            Some(Known::Abandoned) => Some(Err(CommitError::Abandoned)),
            None if c.begun_at < self.horizon => Some(Err(CommitError::Unknown(format!(
                "the unit began at position {} of the log, and the writer no longer remembers \
                 the units committed up to position {}: it may have committed",
                c.begun_at, self.horizon
            )))),
            None => None,
        })
    }

    /// Forgets the ids of units committed long ago in log time (`forwarded.rs`), and moves
    /// the horizon with them, in `txn`.
    fn forget_old_units(
        &mut self,
        t: &mut Tables<'_>,
        txn: &redb::WriteTransaction,
        millis: u64,
    ) -> Result<(), StorageError> {
        if let Some(f) = t.forwarded.as_mut()
            && forwarded::prune(f, millis, &mut self.horizon)?
        {
            store::note_horizon(txn, self.horizon)?;
        }
        Ok(())
    }

    /// The tables a batch writes, open in `txn`.
    fn tables<'txn>(&self, txn: &'txn redb::WriteTransaction) -> Result<Tables<'txn>, StorageError> {
        Ok(Tables {
            state: txn.open_table(STATE)?,
            events: txn.open_table(EVENTS)?,
            cursors: txn.open_table(CURSORS)?,
            counters: txn.open_table(COUNTERS)?,
            dead: txn.open_table(DEAD)?,
            index: txn.open_table(IDX)?,
            index_counts: txn.open_table(IDX_COUNTS)?,
            forwarded: match self.replicator {
                Some(_) => Some(Forwarded::open(txn)?),
                None => None,
            },
            deltas: CountDeltas::default(),
            written: foldhash::HashSet::default(),
            ids: foldhash::HashMap::default(),
        })
    }

    /// Applies one unit's effects, numbering its events from `next_seq` and stamping them
    /// with the batch's `(timestamp, millis)`, and remembers a cluster's unit id with the
    /// `position` of its record; returns the next free sequence number. The events move out
    /// of `c` into the log's (a record carries them already encoded).
    fn write(
        &self,
        c: &mut ChangeSet,
        t: &mut Tables<'_>,
        mut next_seq: u64,
        (timestamp, millis): (&str, u64),
        committed: &mut Vec<Arc<Event>>,
        position: u64,
    ) -> Result<u64, StorageError> {
        if c.abandon {
            let (Some(id), Some(f)) = (&c.unit_id, t.forwarded.as_mut()) else {
                return Err(StorageError::new(
                    "an abandoned unit without an id, or outside a cluster",
                ));
            };
            forwarded::abandon(f, id, position, millis)?;
            return Ok(next_seq);
        }
        let first = next_seq;
        for ((ctx, key), v) in &c.writes {
            t.written.insert(self.recent.hash(ctx, key));
            match v {
                Some(v) => t.state.insert((ctx.as_str(), key.as_str()), v.as_slice())?,
                None => t.state.remove((ctx.as_str(), key.as_str()))?,
            };
        }
        for (key, put) in &c.index {
            index::apply(&mut t.index, &mut t.deltas, key, *put)?;
        }
        let tails = (c.event_tails.len() == c.events.len()).then_some(&c.event_tails);
        for (i, e) in std::mem::take(&mut c.events).into_iter().enumerate() {
            let event = Event::numbered(e, next_seq, self.log_id, timestamp);
            let stored = match tails {
                Some(tails) => event.stored_with(&tails[i])?,
                None => serde_json::to_vec(&event)?,
            };
            t.events.insert(next_seq, stored.as_slice())?;
            committed.push(Arc::new(event));
            next_seq += 1;
        }
        for m in &c.cursors {
            t.cursors.insert(m.subscriber.as_str(), m.to)?;
        }
        for (sequence, id) in &c.ids {
            let max = t.ids.entry(sequence.clone()).or_insert(0);
            *max = (*max).max(*id);
        }
        for d in &c.dead {
            dead::apply(&mut t.dead, d)?;
        }
        if let (Some(id), Some(f)) = (&c.unit_id, t.forwarded.as_mut()) {
            forwarded::record(f, id, &(first..next_seq), position, millis)?;
        }
        Ok(next_seq)
    }
}

/// Of `batch`, the units whose effects fit in one record of at most `max` bytes, in order,
/// with their effects encoded; and the units left for the next record. A unit that alone
/// does not fit is answered [`CommitError::TooLarge`] here.
fn fit(batch: Vec<Pending>, max: usize) -> (Vec<Pending>, Vec<Vec<u8>>, Vec<Pending>) {
    let mut taken = Vec::with_capacity(batch.len());
    let mut encoded = Vec::with_capacity(batch.len());
    let mut size = RECORD_OVERHEAD;
    let mut units = batch.into_iter();
    for p in units.by_ref() {
        let bytes = match serde_json::to_vec(&Effects::from(&p.changes)) {
            Ok(b) => b,
            Err(e) => {
                p.answer(Err(CommitError::Storage(e.into())));
                continue;
            }
        };
        if bytes.len() + 1 + RECORD_OVERHEAD > max {
            let bytes = bytes.len();
            p.answer(Err(CommitError::TooLarge { bytes, max }));
            continue;
        }
        if size + bytes.len() + 1 > max {
            let mut carried = vec![p];
            carried.extend(units);
            return (taken, encoded, carried);
        }
        size += bytes.len() + 1;
        taken.push(p);
        encoded.push(bytes);
    }
    (taken, encoded, Vec::new())
}
