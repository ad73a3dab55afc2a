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

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use redb::{Database, ReadableTable, Table};
use tokio::sync::{oneshot, watch};

use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::store::{self, COUNTERS, CURSORS, DEAD, EVENTS, STATE};
use crate::unit::{CursorMove, DeadWrite, ScanRead, StateKey};

/// How many units one transaction takes at most: bounds the latency a unit can add to others.
const MAX_BATCH: usize = 2048;

/// What the writer needs of a unit: its reads to validate and its writes to apply.
pub(crate) struct Pending {
    pub reads: Vec<(StateKey, Option<Vec<u8>>)>,
    pub scans: Vec<ScanRead>,
    pub writes: Vec<(StateKey, Option<Vec<u8>>)>,
    pub events: Vec<crate::event::NewEvent>,
    pub cursors: Vec<CursorMove>,
    pub dead: Vec<DeadWrite>,
    pub ids: Vec<((String, String), u64)>,
    pub reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// What a committed unit gets back: the sequence numbers its events were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The sequence numbers of the unit's events, in publish order (empty if it published none).
    pub seqs: std::ops::Range<u64>,
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub log_id: u64,
    pub next_seq: u64,
    pub last_millis: u64,
    pub head: watch::Sender<u64>,
}

impl Writer {
    /// Runs until every sender is gone, then returns (the database closes with the last Arc).
    pub fn run(mut self, rx: Receiver<Pending>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Pending>) {
        let millis = crate::time::now_millis().max(self.last_millis);
        let start_seq = self.next_seq;
        match self.apply(&batch, millis) {
            Ok((outcomes, next_seq)) => {
                self.next_seq = next_seq;
                self.last_millis = millis;
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(outcome);
                }
                if next_seq != start_seq {
                    self.head.send_replace(next_seq - 1);
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(CommitError::Storage(StorageError(e.0.clone()))));
                }
            }
        }
    }

    /// Applies the batch in one transaction. Returns each unit's outcome and the next free
    /// sequence number, or an error if the transaction as a whole failed.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        batch: &[Pending],
        millis: u64,
    ) -> Result<(Vec<Result<Committed, CommitError>>, u64), StorageError> {
        let timestamp = crate::time::rfc3339_utc(millis);
        let txn = self.db.begin_write()?;
        let mut next_seq = self.next_seq;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut state = txn.open_table(STATE)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut counters = txn.open_table(COUNTERS)?;
            let mut dead = txn.open_table(DEAD)?;
            for p in batch {
                if !still_valid(p, &state, &cursors, &dead)? {
                    outcomes.push(Err(CommitError::Conflict));
                    continue;
                }
                for ((ctx, key), v) in &p.writes {
                    match v {
                        Some(v) => state.insert((ctx.as_str(), key.as_str()), v.as_slice())?,
                        None => state.remove((ctx.as_str(), key.as_str()))?,
                    };
                }
                let first = next_seq;
                for e in &p.events {
                    let event = Event {
                        seq: next_seq,
                        event_id: format!("{:016x}-{:016x}", self.log_id, next_seq),
                        event_type: e.event_type.clone(),
                        timestamp: timestamp.clone(),
                        source: e.source.clone(),
                        key: e.key.clone(),
                        payload: e.payload.clone(),
                    };
                    events.insert(next_seq, serde_json::to_vec(&event)?.as_slice())?;
                    next_seq += 1;
                }
                for c in &p.cursors {
                    cursors.insert(c.subscriber.as_str(), c.to)?;
                }
                for ((ctx, name), id) in &p.ids {
                    let stored = counters
                        .get((ctx.as_str(), name.as_str()))?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    if *id > stored {
                        counters.insert((ctx.as_str(), name.as_str()), *id)?;
                    }
                }
                for d in &p.dead {
                    match d {
                        DeadWrite::Park(letter) => {
                            let k = (letter.subscriber.as_str(), letter.event.seq);
                            dead.insert(k, serde_json::to_vec(letter)?.as_slice())?;
                        }
                        DeadWrite::Remove { subscriber, seq } => {
                            dead.remove((subscriber.as_str(), *seq))?;
                        }
                    }
                }
                outcomes.push(Ok(Committed {
                    seqs: first..next_seq,
                }));
            }
        }
        txn.commit()?;
        Ok((outcomes, next_seq))
    }
}

/// True if every value, scan and cursor the unit read is unchanged in the open transaction.
fn still_valid(
    p: &Pending,
    state: &Table<(&'static str, &'static str), &'static [u8]>,
    cursors: &Table<&'static str, u64>,
    dead: &Table<(&'static str, u64), &'static [u8]>,
) -> Result<bool, StorageError> {
    // Removing a dead letter is only valid once: a second, concurrent retry must not apply the
    // event again.
    for d in &p.dead {
        if let DeadWrite::Remove { subscriber, seq } = d
            && dead.get((subscriber.as_str(), *seq))?.is_none()
        {
            return Ok(false);
        }
    }
    for ((ctx, key), seen) in &p.reads {
        let now = state.get((ctx.as_str(), key.as_str()))?;
        if now.as_ref().map(|g| g.value()) != seen.as_deref() {
            return Ok(false);
        }
    }
    for scan in &p.scans {
        if store::scan_prefix(state, &scan.context, &scan.prefix)? != scan.rows {
            return Ok(false);
        }
    }
    for c in &p.cursors {
        let now = cursors
            .get(c.subscriber.as_str())?
            .map(|v| v.value())
            .unwrap_or(0);
        if now != c.expected {
            return Ok(false);
        }
    }
    Ok(true)
}
