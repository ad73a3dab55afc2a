//! Id sequences: unique, increasing ids per (context, sequence), never handed out twice, even
//! across restarts.
//!
//! Ids are handed out from memory, not from the unit's transaction, so concurrent units never
//! conflict over them (an aborted unit leaves a gap, as a database sequence does). A unit
//! records the highest id it took; the writer stores that maximum with the unit, so after a
//! restart the sequence continues above every id a committed unit was given.
//!
//! In a cluster each host takes the ids of its own slot (`slot + 1`, `slot + 1 + of`, ...), so
//! hosts never hand out the same id and never need to ask one another. The highest ids the
//! log's records carry raise what this host hands out next ([`IdSequences::observe`]): a host
//! that started on an old copy of its data hands out ids above every id the log holds as soon
//! as it has applied the log, never one that a committed unit already used.

// The maps of a unit and of the id sequences are on every request's path: foldhash is
// several times quicker than SipHash on short keys, and still seeded per process.
use foldhash::HashMap;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::changes::SequenceKey;
use crate::error::StorageError;

/// Id sequences: (context, sequence) → highest id handed out by a committed unit.
pub(crate) const COUNTERS: TableDefinition<'static, (&str, &str), u64> = TableDefinition::new("counters");

/// The sequences as handed out in this process, loaded from the database on first use.
pub(crate) struct IdSequences {
    db: Arc<Database>,
    /// This host's slot, of how many: it takes ids `slot + 1` modulo `of`.
    slot: u64,
    of: u64,
    /// A std mutex: it is held for a map look-up, never across an await.
    next: Mutex<HashMap<SequenceKey, u64>>,
}

impl IdSequences {
    pub(crate) fn new(db: Arc<Database>, slot: u64, of: u64) -> Self {
        IdSequences {
            db,
            slot: slot % of.max(1),
            of: of.max(1),
            next: Mutex::new(HashMap::default()),
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
        let id = next_in_slot(current, self.slot, self.of);
        next.insert(key, id);
        Ok(id)
    }
}

impl IdSequences {
    /// Raises the sequences to at least the ids a batch or a group of the log's records took,
    /// before that transaction commits: so that no unit whose snapshot shows those ids can be
    /// handed one of them. A sequence not handed out from yet is taken from the database (the
    /// last commit) and raised the same way, so that a unit reading it after this commit
    /// cannot find it lower either.
    pub(crate) fn observe<'a>(
        &self,
        taken: impl IntoIterator<Item = (&'a SequenceKey, &'a u64)>,
    ) -> Result<(), StorageError> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        for (key, id) in taken {
            match next.get_mut(key) {
                Some(current) => *current = (*current).max(*id),
                None => {
                    let committed = stored(&self.db, &key.0, &key.1)?;
                    next.insert(key.clone(), committed.max(*id));
                }
            }
        }
        Ok(())
    }
}

/// The smallest id above `current` of slot `slot` of `of`: one whose `(id - 1) % of` is
/// `slot`.
fn next_in_slot(current: u64, slot: u64, of: u64) -> u64 {
    let candidate = current + 1;
    let at = (candidate - 1) % of;
    candidate + (slot + of - at) % of
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

#[cfg(test)]
mod tests {
    use super::next_in_slot;

    #[test]
    fn each_slot_takes_its_own_ids_above_the_current() {
        assert_eq!(next_in_slot(0, 0, 1), 1);
        assert_eq!(next_in_slot(41, 0, 1), 42);
        assert_eq!(next_in_slot(0, 0, 16), 1);
        assert_eq!(next_in_slot(1, 0, 16), 17);
        assert_eq!(next_in_slot(0, 2, 16), 3);
        assert_eq!(next_in_slot(3, 2, 16), 19);
        assert_eq!(next_in_slot(100, 2, 16), 115);
        assert_eq!(next_in_slot(100, 15, 16), 112);
    }
}
