//! The writer as one replica of a cluster's log: applying the records other hosts' writers
//! appended, exactly once and in log order, with the position and id of the last in the same
//! transaction. What is applied and what is refused follows `replicate.rs` (formats and
//! continuity).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BatchReport, Tables, Writer};
use crate::error::StorageError;
use crate::event::Event;
use crate::forwarded;
use crate::ids;
use crate::replicate::{Applied, ApplyError, Envelope, FORMAT, Record};
use crate::store;

/// Where a group of records leaves the replica, before it is committed.
struct Progress {
    next_seq: u64,
    millis: u64,
    /// The last message taken.
    applied: u64,
    /// The last record applied: position and id.
    record: (u64, u64),
    horizon: u64,
    refused: Vec<(u64, String)>,
    events: Vec<Arc<Event>>,
}

/// What to do with one message of the log.
enum Verdict {
    /// A record of this log that follows the last one applied.
    Apply(Box<Record>, u64),
    /// Not a record of this log that follows: skipped, for this reason.
    Refuse(String),
}

impl Writer {
    /// Applies messages of the replicated log in one transaction, skipping those taken before
    /// (this writer's own records, or a replay after a restart), and stores the position of
    /// the last. Nothing of the group is applied if one of its records cannot be.
    pub(super) fn apply_records(&mut self, records: Vec<(u64, Vec<u8>)>) -> Result<Applied, ApplyError> {
        let progress = match self.apply_records_in_txn(&records) {
            Ok(p) => p,
            Err(e) => {
                if let ApplyError::Storage(s) = &e {
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
                }
                return Err(e);
            }
        };
        // The records' writes are not tracked key by key: units whose snapshots are older
        // than them are validated in full, and index counts are read again.
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.recent.forget(generation);
        self.known_counts.forget();
        self.generation.store(generation, Ordering::Release);
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(observer) = self.observer.get() {
            observer.batch(&BatchReport {
                units: 0,
                conflicts: 0,
                events: &progress.events,
                commit: Duration::ZERO,
                failed: false,
            });
        }
        let moved = progress.next_seq != self.next_seq;
        self.next_seq = progress.next_seq;
        self.last_millis = self.last_millis.max(progress.millis);
        self.applied = progress.applied;
        self.last_record = progress.record.1;
        self.horizon = progress.horizon;
        self.tail.push(progress.events);
        if moved {
            self.head.send_replace(progress.next_seq - 1);
        }
        self.applied_tx.send_replace(progress.applied);
        Ok(Applied {
            position: progress.applied,
            refused: progress.refused,
        })
    }

    fn apply_records_in_txn(&self, records: &[(u64, Vec<u8>)]) -> Result<Progress, ApplyError> {
        let txn = self.db.begin_write().map_err(StorageError::from)?;
        let mut p = Progress {
            next_seq: self.next_seq,
            millis: self.last_millis,
            applied: self.applied,
            record: (0, self.last_record),
            horizon: self.horizon,
            refused: Vec::new(),
            events: Vec::new(),
        };
        let before = (p.applied, p.horizon);
        let mut last_applied_record = None;
        {
            let mut t = self.tables(&txn)?;
            for (position, bytes) in records {
                let position = *position;
                if position <= p.applied {
                    continue;
                }
                if position != p.applied + 1 {
                    return Err(ApplyError::Diverged {
                        position,
                        reason: format!(
                            "the log goes from position {} to {position}: the messages between \
                             are missing",
                            p.applied
                        ),
                    });
                }
                match self.judge(position, bytes, p.record.1, p.next_seq)? {
                    Verdict::Refuse(reason) => p.refused.push((position, reason)),
                    Verdict::Apply(mut record, id) => {
                        self.apply_record(&mut t, &mut record, position, &mut p)?;
                        p.record = (position, id);
                        last_applied_record = Some((position, id));
                    }
                }
                p.applied = position;
            }
            let deltas = std::mem::take(&mut t.deltas);
            deltas
                .write(&mut t.index_counts, &self.known_counts)
                .map_err(ApplyError::Storage)?;
            let taken = std::mem::take(&mut t.ids);
            for (sequence, id) in &taken {
                ids::record(&mut t.counters, sequence, *id)?;
            }
            // Before the records become visible: see `IdSequences::observe`.
            self.ids.observe(&taken)?;
        }
        if p.applied != before.0 {
            store::note_applied(&txn, p.applied, last_applied_record)?;
        }
        if p.horizon != before.1 {
            store::note_horizon(&txn, p.horizon)?;
        }
        txn.commit().map_err(StorageError::from)?;
        Ok(p)
    }

    /// Whether the message at `position` is a record of this log that follows the record
    /// `last` (the last applied), whose events this replica numbers from `next_seq`.
    fn judge(&self, position: u64, bytes: &[u8], last: u64, next_seq: u64) -> Result<Verdict, ApplyError> {
        let envelope: Envelope = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => return Ok(Verdict::Refuse(format!("not a record of carshare's log: {e}"))),
        };
        if envelope.log_id != self.log_id {
            return Ok(Verdict::Refuse(format!(
                "a record of log {:016x}, and this is log {:016x}",
                envelope.log_id, self.log_id
            )));
        }
        if envelope.prev != last {
            return Ok(Verdict::Refuse(format!(
                "record {:016x} follows record {:016x}, and the last record applied is {last:016x}",
                envelope.id, envelope.prev
            )));
        }
        if envelope.format > FORMAT {
            return Err(ApplyError::Format {
                position,
                format: envelope.format,
            });
        }
        let diverged = |reason: String| ApplyError::Diverged { position, reason };
        let record: Record =
            serde_json::from_slice(bytes).map_err(|e| diverged(format!("it is unreadable: {e}")))?;
        if record.first_seq != next_seq {
            return Err(diverged(format!(
                "it numbers its events from {}, and the next event here is {next_seq}",
                record.first_seq
            )));
        }
        Ok(Verdict::Apply(Box::new(record), envelope.id))
    }

    /// Applies one record's units at `position` in the open transaction.
    fn apply_record(
        &self,
        t: &mut Tables<'_>,
        record: &mut Record,
        position: u64,
        p: &mut Progress,
    ) -> Result<(), ApplyError> {
        // Ids are forgotten record by record, by the record's own time, as the writer did.
        if let Some(f) = t.forwarded.as_mut() {
            forwarded::prune(f, record.millis, &mut p.horizon)?;
        }
        let timestamp = crate::time::rfc3339_utc(record.millis);
        for unit in &mut record.units {
            p.next_seq = self.write(
                unit,
                t,
                p.next_seq,
                (&timestamp, record.millis),
                &mut p.events,
                position,
            )?;
        }
        p.millis = p.millis.max(record.millis);
        Ok(())
    }
}
