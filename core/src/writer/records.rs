//! The writer as one replica of a cluster's log: applying the records other hosts' writers
//! appended, exactly once and in log order, with the position of the last in the same
//! transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BatchReport, Writer};
use crate::error::StorageError;
use crate::event::Event;
use crate::forwarded;
use crate::ids;
use crate::replicate::Record;
use crate::store::{self, META};

impl Writer {
    /// Applies records of the replicated log in one transaction, skipping those applied
    /// before (this writer's own, or a replay after a restart), and stores the position of the
    /// last. Returns that position.
    pub(super) fn apply_records(&mut self, records: Vec<(u64, Vec<u8>)>) -> Result<u64, StorageError> {
        let result = self.apply_records_in_txn(&records);
        match result {
            Ok((next_seq, millis, applied, events)) => {
                // The records' writes are not tracked key by key: units whose snapshots are
                // older than them are validated in full, and index counts are read again.
                let generation = self.generation.load(Ordering::Relaxed) + 1;
                self.recent.forget(generation);
                self.known_counts.forget();
                self.generation.store(generation, Ordering::Release);
                self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(observer) = self.observer.get() {
                    observer.batch(&BatchReport {
                        units: 0,
                        conflicts: 0,
                        events: &events,
                        commit: Duration::ZERO,
                        failed: false,
                    });
                }
                let moved = next_seq != self.next_seq;
                self.next_seq = next_seq;
                self.last_millis = millis;
                self.applied = applied;
                self.tail.push(events);
                if moved {
                    self.head.send_replace(next_seq - 1);
                }
                self.applied_tx.send_replace(applied);
                Ok(applied)
            }
            Err(e) => {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn apply_records_in_txn(
        &self,
        records: &[(u64, Vec<u8>)],
    ) -> Result<(u64, u64, u64, Vec<Arc<Event>>), StorageError> {
        let txn = self.db.begin_write()?;
        let mut next_seq = self.next_seq;
        let mut millis = self.last_millis;
        let mut applied = self.applied;
        let mut committed = Vec::new();
        {
            let mut t = self.tables(&txn)?;
            forwarded::prune(&mut t.forwarded, crate::time::now_millis())?;
            for (position, bytes) in records {
                if *position <= applied {
                    continue;
                }
                let mut record: Record = serde_json::from_slice(bytes)?;
                if record.log_id != self.log_id {
                    return Err(StorageError::new(format!(
                        "the record at position {position} belongs to log {:016x}, and this \
                         database to log {:016x}",
                        record.log_id, self.log_id
                    )));
                }
                if record.first_seq != next_seq {
                    return Err(StorageError::new(format!(
                        "this replica has diverged from the log: the record at position \
                         {position} numbers its events from {}, and the next here is {next_seq}",
                        record.first_seq
                    )));
                }
                let timestamp = crate::time::rfc3339_utc(record.millis);
                for unit in &mut record.units {
                    next_seq = self.write(unit, &mut t, next_seq, &timestamp, &mut committed, *position)?;
                }
                millis = millis.max(record.millis);
                applied = *position;
            }
            let deltas = std::mem::take(&mut t.deltas);
            deltas.write(&mut t.index_counts, &self.known_counts)?;
            for (sequence, id) in std::mem::take(&mut t.ids) {
                ids::record(&mut t.counters, &sequence, id)?;
            }
            txn.open_table(META)?
                .insert(store::APPLIED, applied.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok((next_seq, millis, applied, committed))
    }
}
