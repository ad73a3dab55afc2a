//! The on-disk layout: one redb file, its tables, and read-only snapshots of it.
//!
//! Every table is written only by the commit writer (`writer/`); everything else reads
//! through a [`Snapshot`], redb's MVCC read transaction, which sees one committed state. The
//! tables of id sequences (`ids.rs`) and dead letters (`dead.rs`) live beside the code that
//! owns them.

use std::ops::Bound;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::dead::{self, DEAD, DeadLetter};
use crate::error::StorageError;
use crate::event::Event;
use crate::ids::COUNTERS;
pub use crate::index::IndexPage;
use crate::index::{self, IDX, IDX_COUNTS};

/// Each context's key-value state: (context, key) → value.
pub(crate) const STATE: TableDefinition<'static, (&str, &str), &[u8]> = TableDefinition::new("state");
/// The event log: sequence number → event envelope (JSON).
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");
/// Subscriber cursors: subscriber → sequence number of the last event it is done with.
pub(crate) const CURSORS: TableDefinition<'static, &str, u64> = TableDefinition::new("cursors");
/// Facts about the log itself: its random id, the format of the file, and (in a cluster) the
/// position of the last record of the replicated log applied here.
pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// The key in [`META`] of the position of the last message of the replicated log taken (a
/// record applied, or a message refused).
pub(crate) const APPLIED: &str = "applied_log_position";

/// The key in [`META`] of the last record applied: its position and its id (16 bytes).
pub(crate) const LAST_RECORD: &str = "last_record";

/// The file's format: 2 has the index tables. A file of format 1 (or without one) that holds
/// events was written before collections were indexed, and is refused: its entities are in
/// no index, so listings would silently miss them.
const FORMAT: u64 = 2;

/// What [`open`] finds in a database.
pub(crate) struct Opened {
    /// The log's id: random, made once when the database is created.
    pub log_id: u64,
    /// The last sequence number in the log (0 for an empty one).
    pub last_seq: u64,
    /// The position of the last message of a replicated log taken here (0 for none).
    pub applied: u64,
    /// The position and id of the last record applied here ((0, 0) for none).
    pub last_record: (u64, u64),
    /// The forwarded units' horizon (`forwarded.rs`).
    pub horizon: u64,
}

/// Where a replica of a cluster's log stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaPosition {
    /// The position of the last message of the log taken here (a record applied, or a
    /// message refused); 0 for none.
    pub applied: u64,
    /// The position of the last record applied here (0 for none).
    pub record_position: u64,
    /// That record's id (0 for none, or a record written before records had ids).
    pub record_id: u64,
}

/// Notes in `txn` that the replicated log's message at `position` was taken, and, if it was
/// a record that was applied, its position and id.
pub(crate) fn note_applied(
    txn: &redb::WriteTransaction,
    position: u64,
    record: Option<(u64, u64)>,
) -> Result<(), StorageError> {
    let mut meta = txn.open_table(META)?;
    meta.insert(APPLIED, position.to_be_bytes().as_slice())?;
    if let Some((at, id)) = record {
        assert!(
            at <= position,
            "a record applied is at or before the last message taken"
        );
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&at.to_be_bytes());
        bytes[8..].copy_from_slice(&id.to_be_bytes());
        meta.insert(LAST_RECORD, bytes.as_slice())?;
    }
    Ok(())
}

/// Notes the forwarded units' horizon in `txn`.
pub(crate) fn note_horizon(txn: &redb::WriteTransaction, horizon: u64) -> Result<(), StorageError> {
    txn.open_table(META)?
        .insert(crate::forwarded::HORIZON, horizon.to_be_bytes().as_slice())?;
    Ok(())
}

/// Where the replica in `txn` stands.
pub(crate) fn replica_position(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<ReplicaPosition, StorageError> {
    let applied = meta
        .get(APPLIED)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let (record_position, record_id) = match meta.get(LAST_RECORD)? {
        Some(v) if v.value().len() == 16 => {
            let b = v.value();
            (
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
            )
        }
        // Written before records had ids: the last record is the last message taken.
        _ => (applied, 0),
    };
    Ok(ReplicaPosition {
        applied,
        record_position,
        record_id,
    })
}

/// Makes sure every table of `db` exists, and reads the log's id, last sequence number and
/// applied position. With `want_id` (a cluster's log), a new or empty database takes that id,
/// and one that holds another log's data is refused.
pub(crate) fn open(db: &Database, want_id: Option<u64>) -> Result<Opened, StorageError> {
    let txn = db.begin_write()?;
    let log_id;
    let position;
    let horizon;
    {
        txn.open_table(STATE)?;
        txn.open_table(CURSORS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(DEAD)?;
        txn.open_table(EVENTS)?;
        txn.open_table(IDX)?;
        txn.open_table(IDX_COUNTS)?;
        txn.open_table(crate::forwarded::FORWARDED)?;
        txn.open_table(crate::forwarded::FORWARDED_BY_TIME)?;
        let has_events = txn.open_table(EVENTS)?.last()?.is_some();
        let mut meta = txn.open_table(META)?;
        let format = meta
            .get("format")?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes));
        match format {
            Some(FORMAT) => {}
            None if !has_events => {
                meta.insert("format", FORMAT.to_be_bytes().as_slice())?;
            }
            found => {
                return Err(StorageError::new(format!(
                    "the database is in format {} and this carshare reads format {FORMAT}: it was \
                     written by an earlier version, whose collections have no indexes; serve it \
                     with that version, or start this one on a new data directory",
                    found.unwrap_or(1)
                )));
            }
        }
        let number = |v: Option<redb::AccessGuard<'_, &[u8]>>| {
            v.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        };
        position = replica_position(&meta)?;
        let applied = position.applied;
        horizon = number(meta.get(crate::forwarded::HORIZON)?).unwrap_or(0);
        let existing = number(meta.get("log_id")?);
        log_id = match (existing, want_id) {
            (Some(id), None) => id,
            (Some(id), Some(want)) if id == want => id,
            (Some(id), Some(want)) if has_events || applied > 0 => {
                return Err(StorageError::new(format!(
                    "this data directory holds log {id:016x}, and the cluster's log is \
                     {want:016x}: start this host on a new data directory to join the cluster; \
                     or, if the cluster's log was lost and this data holds what it held, \
                     re-found the log from it (carshare cluster refound)"
                )));
            }
            (_, want) => {
                let id = want.unwrap_or_else(random_u64);
                meta.insert("log_id", id.to_be_bytes().as_slice())?;
                id
            }
        };
    }
    txn.commit()?;
    let last_seq = Snapshot::new(db)?.last_seq()?;
    Ok(Opened {
        log_id,
        last_seq,
        applied: position.applied,
        last_record: (position.record_position, position.record_id),
        horizon,
    })
}

/// A random 64-bit number from the OS's hash seed and the clock: the log id needs to differ
/// between databases, not to be secret.
pub(crate) fn random_u64() -> u64 {
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

/// The number of partitions `db` says its data directory was made with, if it says.
pub(crate) fn claimed_partitions(db: &Database) -> Result<Option<u32>, StorageError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(meta
        .get(crate::partitions::PARTITIONS)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .map(|n| n as u32))
}

/// Records in `db` that it is partition `p` of `n`, or refuses if it is another partition or
/// of a data directory with another number of partitions. A database from before partitions
/// (none recorded) is partition 0 of 1 if it holds events.
pub(crate) fn claim_partitions(db: &Database, p: u32, n: u32) -> Result<(), StorageError> {
    let txn = db.begin_write()?;
    {
        let has_events = txn.open_table(EVENTS)?.last()?.is_some();
        let mut meta = txn.open_table(META)?;
        let number = |v: Option<redb::AccessGuard<'_, &[u8]>>| {
            v.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        };
        let stored = number(meta.get(crate::partitions::PARTITIONS)?);
        let stored_p = number(meta.get("partition")?);
        match (stored, stored_p) {
            (Some(m), Some(q)) if m == u64::from(n) && q == u64::from(p) => {}
            (Some(m), _) if m != u64::from(n) => {
                return Err(StorageError::new(format!(
                    "this data directory was made with {m} partition(s), and the number of \
                     partitions cannot change: start it with --partitions {m}"
                )));
            }
            (Some(_), Some(q)) => {
                return Err(StorageError::new(format!(
                    "the file of partition {p} holds partition {q}: the data directory's files \
                     were moved"
                )));
            }
            (None, _) if has_events && n != 1 => {
                return Err(StorageError::new(format!(
                    "this data directory was made with 1 partition (before partitions were \
                     recorded), and the number of partitions cannot change: start it without \
                     --partitions {n}"
                )));
            }
            _ => {
                meta.insert(
                    crate::partitions::PARTITIONS,
                    u64::from(n).to_be_bytes().as_slice(),
                )?;
                meta.insert("partition", u64::from(p).to_be_bytes().as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// A random number that is never 0 (0 stands for "none" where record ids are kept).
pub(crate) fn random_nonzero_u64() -> u64 {
    loop {
        let v = random_u64();
        if v != 0 {
            return v;
        }
    }
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

    /// How many entries `index` of `context` holds (with `term` only, if given): one read.
    pub fn index_count(&self, context: &str, index: &str, term: Option<&[u8]>) -> Result<u64, StorageError> {
        let counts = self.txn.open_table(IDX_COUNTS)?;
        index::count(&counts, context, index, term)
    }

    /// The ids of one page of an index, in (term, id) order or the reverse: at the cost of the
    /// page, whatever the index holds.
    pub fn index_page(&self, page: IndexPage<'_>) -> Result<Vec<u64>, StorageError> {
        let entries = self.txn.open_table(IDX)?;
        let counts = self.txn.open_table(IDX_COUNTS)?;
        index::page(&entries, &counts, &page)
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
        scan_prefix(table, context, prefix, None, None)
    }

    /// Up to `limit` (key, value) of `context` whose key starts with `prefix` and comes after
    /// `after` (if given), in key order.
    pub fn scan_from(
        &mut self,
        context: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let table = self.state()?;
        scan_prefix(table, context, prefix, after, Some(limit))
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

/// One page of an index as every snapshot in `all` (one per partition) holds it together:
/// merged in (term, id) order, the offset counted over all of them (`index::page_merged`).
pub(crate) fn index_page_all(all: &[&Snapshot], page: IndexPage<'_>) -> Result<Vec<u64>, StorageError> {
    let mut parts = Vec::with_capacity(all.len());
    for s in all {
        parts.push((s.txn.open_table(IDX)?, s.txn.open_table(IDX_COUNTS)?));
    }
    index::page_merged(&parts, &page)
}

/// The prefix scan both snapshots and the writer's validation use, so they cannot disagree:
/// up to `limit` rows (all, if none) of keys starting with `prefix`, after `after` if given.
pub(crate) fn scan_prefix(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    context: &str,
    prefix: &str,
    after: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    let rows = match after {
        Some(a) if a >= prefix => table.range((Bound::Excluded((context, a)), Bound::Unbounded))?,
        _ => table.range((context, prefix)..)?,
    };
    for row in rows {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let (k, v) = row?;
        let (ctx, key) = k.value();
        if ctx != context || !key.starts_with(prefix) {
            break;
        }
        out.push((key.to_string(), v.value().to_vec()));
    }
    Ok(out)
}
