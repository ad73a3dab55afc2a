//! Dead letters: events a subscriber could not handle, parked beside their table where an
//! operator can see them and have them handled again.

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::event::Event;

/// Parked events: (subscriber, seq) → dead letter (JSON).
pub(crate) const DEAD: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("dead_letters");

/// An event a subscriber could not handle, kept where an operator can see it and retry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The subscriber that failed.
    pub subscriber: String,
    /// The event.
    pub event: Event,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was parked, RFC 3339 UTC.
    pub parked_at: String,
}

/// A change to the dead letters.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DeadWrite {
    /// Park an event.
    Park(Box<DeadLetter>),
    /// Remove a parked event (an operator had it handled again). Valid only once: a second,
    /// concurrent removal conflicts.
    Remove { subscriber: String, seq: u64 },
}

/// Every parked event of `subscriber` (or of all subscribers), oldest first.
pub(crate) fn all(txn: &ReadTransaction, subscriber: Option<&str>) -> Result<Vec<DeadLetter>, StorageError> {
    let t = txn.open_table(DEAD)?;
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
pub(crate) fn one(
    txn: &ReadTransaction,
    subscriber: &str,
    seq: u64,
) -> Result<Option<DeadLetter>, StorageError> {
    let t = txn.open_table(DEAD)?;
    t.get((subscriber, seq))?
        .map(|v| serde_json::from_slice(v.value()).map_err(StorageError::from))
        .transpose()
}

/// Whether `write` may still be applied: a removal only while the letter is there.
pub(crate) fn still_valid(
    table: &Table<'_, (&'static str, u64), &'static [u8]>,
    write: &DeadWrite,
) -> Result<bool, StorageError> {
    Ok(match write {
        DeadWrite::Remove { subscriber, seq } => table.get((subscriber.as_str(), *seq))?.is_some(),
        DeadWrite::Park(_) => true,
    })
}

/// Applies `write` in the writer's transaction.
pub(crate) fn apply(
    table: &mut Table<'_, (&'static str, u64), &'static [u8]>,
    write: &DeadWrite,
) -> Result<(), StorageError> {
    match write {
        DeadWrite::Park(letter) => {
            let key = (letter.subscriber.as_str(), letter.event.seq);
            table.insert(key, serde_json::to_vec(letter)?.as_slice())?;
        }
        DeadWrite::Remove { subscriber, seq } => {
            table.remove((subscriber.as_str(), *seq))?;
        }
    }
    Ok(())
}
