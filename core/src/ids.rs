//! Id sequences: unique, increasing ids per (context, sequence), never handed out twice, even
//! across restarts.
//!
//! Ids are handed out from memory, not from the unit's transaction, so concurrent units never
//! conflict over them (an aborted unit leaves a gap, as a database sequence does). A unit
//! records the highest id it took; the writer stores that maximum with the unit, so after a
//! restart the sequence continues above every id a committed unit was given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::changes::SequenceKey;
use crate::error::StorageError;

/// Id sequences: (context, sequence) → highest id handed out by a committed unit.
pub(crate) const COUNTERS: TableDefinition<'static, (&str, &str), u64> = TableDefinition::new("counters");

/// The sequences as handed out in this process, loaded from the database on first use.
pub(crate) struct IdSequences {
    db: Arc<Database>,
    /// A std mutex: it is held for a map look-up, never across an await.
    next: Mutex<HashMap<SequenceKey, u64>>,
}

impl IdSequences {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        IdSequences {
            db,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// A new id of `context`'s sequence `name`.
    pub(crate) fn next(&self, context: &str, name: &str) -> Result<u64, StorageError> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let key = (context.to_string(), name.to_string());
        let current = match next.get(&key) {
            Some(v) => *v,
            None => stored(&self.db, context, name)?,
        };
        next.insert(key, current + 1);
        Ok(current + 1)
    }
}

/// The highest id of `name` in `context` that a committed unit recorded.
fn stored(db: &Database, context: &str, name: &str) -> Result<u64, StorageError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(COUNTERS)?;
    Ok(t.get((context, name))?.map(|v| v.value()).unwrap_or(0))
}

/// Stores `id` as the highest of its sequence, unless a higher one is stored already.
pub(crate) fn record(
    table: &mut Table<'_, (&'static str, &'static str), u64>,
    (context, name): &SequenceKey,
    id: u64,
) -> Result<(), StorageError> {
    let stored = table
        .get((context.as_str(), name.as_str()))?
        .map(|v| v.value())
        .unwrap_or(0);
    if id > stored {
        table.insert((context.as_str(), name.as_str()), id)?;
    }
    Ok(())
}
