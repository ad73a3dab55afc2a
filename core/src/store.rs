//! The on-disk layout: one redb file, its tables, and read-only snapshots of it.
//!
//! Every table is written only by the commit writer (`writer.rs`); everything else reads
//! through a [`Snapshot`], redb's MVCC read transaction, which sees one committed state.

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StorageError;
use crate::event::Event;

/// Each context's key-value state: (context, key) → value.
pub(crate) const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// The event log: sequence number → event envelope (JSON).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Subscriber cursors: subscriber → sequence number of the last event it is done with.
pub(crate) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// Id sequences: (context, sequence) → highest id handed out by a committed unit.
pub(crate) const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");
/// Parked events: (subscriber, seq) → dead letter (JSON).
pub(crate) const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// Facts about the log itself: its random id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Opens (or creates) the database file and makes sure every table exists. Returns the
/// database, the log's id (random, made once when the file is created) and the last sequence
/// number in the log.
pub(crate) fn open(path: &Path) -> Result<(Database, u64, u64), StorageError> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    let log_id;
    {
        txn.open_table(STATE)?;
        txn.open_table(CURSORS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(DEAD)?;
        txn.open_table(EVENTS)?;
        let mut meta = txn.open_table(META)?;
        let existing = meta.get("log_id")?.map(|v| v.value().to_vec());
        log_id = match existing {
            Some(bytes) if bytes.len() == 8 => u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])),
            _ => {
                let id = random_u64();
                meta.insert("log_id", id.to_be_bytes().as_slice())?;
                id
            }
        };
    }
    txn.commit()?;
    let last_seq = {
        let read = db.begin_read()?;
        let events = read.open_table(EVENTS)?;
        events.last()?.map(|(k, _)| k.value()).unwrap_or(0)
    };
    Ok((db, log_id, last_seq))
}

/// A random 64-bit number from the OS's hash seed and the clock: the log id needs to differ
/// between databases, not to be secret.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// One consistent, committed view of the database. Tables are opened on first use.
pub struct Snapshot {
    txn: ReadTransaction,
    state: Option<ReadOnlyTable<(&'static str, &'static str), &'static [u8]>>,
}

impl Snapshot {
    pub(crate) fn new(db: &Database) -> Result<Self, StorageError> {
        Ok(Snapshot {
            txn: db.begin_read()?,
            state: None,
        })
    }

    fn state(&mut self) -> Result<&ReadOnlyTable<(&'static str, &'static str), &'static [u8]>, StorageError> {
        if self.state.is_none() {
            self.state = Some(self.txn.open_table(STATE)?);
        }
        Ok(self.state.as_ref().expect("opened above"))
    }

    /// The value of `key` in `context`'s state.
    pub fn get(&mut self, context: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state()?.get((context, key))?.map(|v| v.value().to_vec()))
    }

    /// Every (key, value) of `context` whose key starts with `prefix`, in key order.
    pub fn scan(&mut self, context: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let table = self.state()?;
        scan_prefix(table, context, prefix)
    }

    /// The cursor of `subscriber` (0 if it never handled anything).
    pub fn cursor(&self, subscriber: &str) -> Result<u64, StorageError> {
        let t = self.txn.open_table(CURSORS)?;
        Ok(t.get(subscriber)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Up to `limit` events with a sequence number above `after`, in log order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        let t = self.txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in t.range((Bound::Excluded(after), Bound::Unbounded))? {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// The sequence number of the newest event (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64, StorageError> {
        let t = self.txn.open_table(EVENTS)?;
        Ok(t.last()?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// Every parked event of `subscriber` (or of all subscribers), oldest first.
    pub fn dead_letters(&self, subscriber: Option<&str>) -> Result<Vec<crate::DeadLetter>, StorageError> {
        let t = self.txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (sub, _) = k.value();
            if subscriber.is_none_or(|s| s == sub) {
                out.push(serde_json::from_slice(v.value())?);
            }
        }
        Ok(out)
    }

    /// The dead letter of `subscriber` for event `seq`, if parked.
    pub fn dead_letter(&self, subscriber: &str, seq: u64) -> Result<Option<crate::DeadLetter>, StorageError> {
        let t = self.txn.open_table(DEAD)?;
        t.get((subscriber, seq))?
            .map(|v| serde_json::from_slice(v.value()).map_err(StorageError::from))
            .transpose()
    }

    /// The highest id of `sequence` in `context` that a committed unit handed out.
    pub(crate) fn counter(&self, context: &str, sequence: &str) -> Result<u64, StorageError> {
        let t = self.txn.open_table(COUNTERS)?;
        Ok(t.get((context, sequence))?.map(|v| v.value()).unwrap_or(0))
    }
}

/// The prefix scan both snapshots and the writer's validation use, so they cannot disagree.
pub(crate) fn scan_prefix(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    context: &str,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    for row in table.range((context, prefix)..)? {
        let (k, v) = row?;
        let (ctx, key) = k.value();
        if ctx != context || !key.starts_with(prefix) {
            break;
        }
        out.push((key.to_string(), v.value().to_vec()));
    }
    Ok(out)
}
