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

use crate::changes::ChangeSet;
use crate::dead::{self, DEAD};
use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::forwarded::{self, FORWARDED, Forwarded};
use crate::ids::{self, COUNTERS};
use crate::index::{self, CountDeltas, IDX, IDX_COUNTS, KnownCounts};
use crate::replicate::{AppendError, RecordOut, Replicator};
use crate::store::{self, CURSORS, EVENTS, META, STATE};
use crate::tail::Tail;

mod records;
mod valid;

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

/// What the writer is handed. Nearly every message is a unit to commit, so that variant is
/// kept inline: boxing it would cost every unit an allocation to save the rare `Apply` bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Message {
    /// A unit to commit.
    Commit(Pending),
    /// Records of the replicated log to apply, in log order, with their positions.
    Apply(Apply),
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
    pub reply: oneshot::Sender<Result<u64, StorageError>>,
}

/// What a committed unit gets back: the sequence numbers its events were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The sequence numbers of the unit's events, in publish order (empty if it published none).
    pub seqs: std::ops::Range<u64>,
    /// The position of the replicated log's record that carries it (0 without a replicator).
    pub position: u64,
}

/// Why a batch failed as a whole.
enum BatchError {
    Storage(StorageError),
    Append(AppendError),
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
    /// The position of the last record of the replicated log applied here.
    pub applied: u64,
    pub applied_tx: watch::Sender<u64>,
    /// Where committed events are kept for the subscribers close behind.
    pub tail: Arc<Tail>,
    /// Told of every batch, once set.
    pub observer: Arc<OnceLock<Arc<dyn CommitObserver>>>,
    /// How many batches (and applied records) have committed; units read it when they begin.
    pub generation: Arc<AtomicU64>,
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
    forwarded: Forwarded<'txn>,
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
        while let Some(message) = next.take() {
            match message {
                Message::Apply(apply) => {
                    let result = self.apply_records(apply.records);
                    let _ = apply.reply.send(result);
                }
                Message::Commit(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Message::Commit(p)) => batch.push(p),
                            // Records wait for the batch before them.
                            Ok(apply) => {
                                next = Some(apply);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.commit_batch(batch);
                }
            }
            if next.is_none() {
                next = rx.recv().ok();
            }
        }
    }

    fn commit_batch(&mut self, mut batch: Vec<Pending>) {
        // A unit that reached this host's writer after the host stopped being the cluster's
        // writer: run again, it is forwarded to the new one.
        if self.replicator.as_ref().is_some_and(|r| !r.is_writer()) {
            for p in batch {
                p.answer(Err(CommitError::Deposed));
            }
            return;
        }
        let millis = crate::time::now_millis().max(self.last_millis);
        let start_seq = self.next_seq;
        let units = batch.len();
        match self.apply(&mut batch, millis) {
            Ok((outcomes, next_seq, events, commit, position)) => {
                self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                self.next_seq = next_seq;
                self.last_millis = millis;
                if position != self.applied {
                    self.applied = position;
                    self.applied_tx.send_replace(position);
                }
                if let Some(observer) = self.observer.get() {
                    observer.batch(&BatchReport {
                        units,
                        conflicts: outcomes.iter().filter(|o| o.is_err()).count(),
                        events: &events,
                        commit,
                        failed: false,
                    });
                }
                self.tail.push(events);
                // The head moves before anyone hears of the commit: a committer that reads the
                // head (or waits for a subscriber to reach it) sees its own events counted.
                if next_seq != start_seq {
                    self.head.send_replace(next_seq - 1);
                }
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    p.answer(outcome);
                }
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
            Err(BatchError::Storage(e)) => {
                if let Some(observer) = self.observer.get() {
                    observer.batch(&BatchReport {
                        units,
                        conflicts: 0,
                        events: &[],
                        commit: Duration::ZERO,
                        failed: true,
                    });
                }
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                for p in batch {
                    p.answer(Err(CommitError::Storage(e.clone())));
                }
            }
        }
    }

    /// Applies the batch in one transaction, appends it to the replicated log (if any), and
    /// commits. Returns each unit's outcome, the next free sequence number, the events, how long
    /// the local commit took and the record's position, or an error if the batch as a whole
    /// failed (then nothing of it is written).
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        batch: &mut [Pending],
        millis: u64,
    ) -> Result<
        (
            Vec<Result<Committed, CommitError>>,
            u64,
            Vec<Arc<Event>>,
            Duration,
            u64,
        ),
        BatchError,
    > {
        let timestamp = crate::time::rfc3339_utc(millis);
        let txn = self.db.begin_write()?;
        let mut next_seq = self.next_seq;
        let mut outcomes = Vec::with_capacity(batch.len());
        // Which units this batch writes (and its record carries).
        let mut written = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        // Fencing puts this batch's record right after the last one applied.
        let record_position = self.applied + 1;
        let keys_written;
        let counts_written;
        {
            let mut t = self.tables(&txn)?;
            if self.replicator.is_some() {
                forwarded::prune(&mut t.forwarded, millis)?;
            }
            for p in batch.iter_mut() {
                // A forwarded unit sent again after it committed: its first outcome.
                if let Some(id) = &p.changes.unit_id
                    && let Some((seqs, position)) = forwarded::lookup(&t.forwarded, id)?
                {
                    outcomes.push(Ok(Committed { seqs, position }));
                    written.push(false);
                    continue;
                }
                if !still_valid(&p.changes, &t, &self.recent)? {
                    outcomes.push(Err(CommitError::Conflict));
                    written.push(false);
                    continue;
                }
                let first = next_seq;
                next_seq = self.write(
                    &mut p.changes,
                    &mut t,
                    next_seq,
                    &timestamp,
                    &mut committed,
                    record_position,
                )?;
                outcomes.push(Ok(Committed {
                    seqs: first..next_seq,
                    position: 0,
                }));
                written.push(true);
            }
            let deltas = std::mem::take(&mut t.deltas);
            counts_written = deltas.write(&mut t.index_counts, &self.known_counts)?;
            for (sequence, id) in std::mem::take(&mut t.ids) {
                ids::record(&mut t.counters, &sequence, id)?;
            }
            keys_written = std::mem::take(&mut t.written);
        }
        let mut position = self.applied;
        if let Some(replicator) = self.replicator.as_ref() {
            let record = RecordOut {
                log_id: self.log_id,
                millis,
                first_seq: self.next_seq,
                units: batch
                    .iter()
                    .zip(&written)
                    .filter(|(_, w)| **w)
                    .map(|(p, _)| (&p.changes).into())
                    .collect(),
            };
            let bytes = serde_json::to_vec(&record)?;
            // Refused or fenced: the transaction is dropped unwritten, and the sequence is not
            // advanced.
            position = replicator
                .append(&bytes, self.applied)
                .map_err(BatchError::Append)?;
            txn.open_table(META)?
                .insert(store::APPLIED, position.to_be_bytes().as_slice())?;
            for (outcome, _) in outcomes.iter_mut().zip(&written).filter(|(_, w)| **w) {
                if let Ok(c) = outcome {
                    c.position = position;
                }
            }
        }
        let started = Instant::now();
        txn.commit()?;
        let elapsed = started.elapsed();
        // Before any unit hears of the commit, so that a unit begun after it counts it.
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.recent.committed(generation, keys_written);
        self.known_counts.learn(counts_written);
        self.generation.store(generation, Ordering::Release);
        Ok((outcomes, next_seq, committed, elapsed, position))
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
            forwarded: txn.open_table(FORWARDED)?,
            deltas: CountDeltas::default(),
            written: foldhash::HashSet::default(),
            ids: foldhash::HashMap::default(),
        })
    }

    /// Applies one unit's effects, numbering its events from `next_seq`, and remembers a
    /// forwarded unit's id with the `position` of its record; returns the next free sequence
    /// number. The events move out of `c` into the log's, unless the batch's record (in a
    /// cluster) still has to carry them.
    fn write(
        &self,
        c: &mut ChangeSet,
        t: &mut Tables<'_>,
        mut next_seq: u64,
        timestamp: &str,
        committed: &mut Vec<Arc<Event>>,
        position: u64,
    ) -> Result<u64, StorageError> {
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
        let events = match self.replicator {
            Some(_) => c.events.clone(),
            None => std::mem::take(&mut c.events),
        };
        for (i, e) in events.into_iter().enumerate() {
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
        if let Some(id) = &c.unit_id {
            forwarded::record(&mut t.forwarded, id, &(first..next_seq), position)?;
        }
        Ok(next_seq)
    }
}
