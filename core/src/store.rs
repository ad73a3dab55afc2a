//! The on-disk layout: one redb file, its tables, and read-only snapshots of it.
//!
//! Every table is written only by the commit writer (`writer.rs`); everything else reads
//! through a [`Snapshot`], redb's MVCC read transaction, which sees one committed state. The
//! tables of id sequences (`ids.rs`) and dead letters (`dead.rs`) live beside the code that
//! owns them.

use std::ops::Bound;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::dead::{self, DEAD, DeadLetter};
use crate::error::StorageError;
use crate::event::Event;
use crate::ids::COUNTERS;

/// Each context's key-value state: (context, key) → value.
pub(crate) const STATE: TableDefinition<'static, (&str, &str), &[u8]> = TableDefinition::new("state");
/// The event log: sequence number → event envelope (JSON).
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");
/// Subscriber cursors: subscriber → sequence number of the last event it is done with.
pub(crate) const CURSORS: TableDefinition<'static, &str, u64> = TableDefinition::new("cursors");
/// Facts about the log itself: its random id.
pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// What [`open`] finds in a database.
pub(crate) struct Opened {
    /// The log's id: random, made once when the database is created.
    pub log_id: u64,
    /// The last sequence number in the log (0 for an empty one).
    pub last_seq: u64,
}

/// Makes sure every table of `db` exists, and reads the log's id and last sequence number.
pub(crate) fn open(db: &Database) -> Result<Opened, StorageError> {
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
    let last_seq = Snapshot::new(db)?.last_seq()?;
    Ok(Opened { log_id, last_seq })
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
    pub fn dead_letters(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>, StorageError> {
        dead::all(&self.txn, subscriber)
    }

    /// The dead letter of `subscriber` for event `seq`, if parked.
    pub fn dead_letter(&self, subscriber: &str, seq: u64) -> Result<Option<DeadLetter>, StorageError> {
        dead::one(&self.txn, subscriber, seq)
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
