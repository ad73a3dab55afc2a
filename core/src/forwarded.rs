//! A unit of a cluster commits at most once, even when sent again. A host gives each unit it
//! commits an id (whether it forwards the unit or, being the writer, commits it itself); the
//! writer records, in the transaction that commits the unit, the id with the unit's event
//! numbers and the log position of its record, and every replica records the same when it
//! applies that record. A host that got no answer (a reply lost with a NATS server, an append
//! left in doubt, a writer that died or was deposed) sends the unit again with the same id:
//! whichever host writes then has applied the whole log before writing, finds the id, and
//! answers with the first outcome instead of committing the unit twice.
//!
//! A host that must answer its client before it knows the outcome gives the unit up: it sends
//! an `abandon` for the id, which the writer records (unless the unit committed, which it then
//! reports), so a copy of the unit still on its way can never commit afterwards.
//!
//! Ids are kept for [`KEEP_MILLIS`] of the log's own time (the commit times its records carry,
//! which never go back), never of a host's clock, so that every replica forgets the same ids at
//! the same record. What was forgotten is bounded by a position, the horizon: a unit can only
//! commit in a record after the one its host had applied when it began (`begun_at`), so a unit
//! that began at or after the horizon and is not found never committed, and one that began
//! before it is answered "unknown" instead of being committed a second time. Clocks that
//! disagree change how long ids are kept, never whether a unit commits twice.

use std::ops::Range;

use redb::{ReadableTable, Table, TableDefinition};

use crate::error::StorageError;

/// Unit id → (first event number, end of the event numbers, log position of its record); a
/// unit given up is stored with [`ABANDONED`] as both event numbers.
pub(crate) const FORWARDED: TableDefinition<'static, &str, (u64, u64, u64)> =
    TableDefinition::new("forwarded");

/// (log time in milliseconds, unit id) → position: the order in which ids are forgotten.
pub(crate) const FORWARDED_BY_TIME: TableDefinition<'static, (u64, &str), u64> =
    TableDefinition::new("forwarded_by_time");

/// The key in the log's meta table of the horizon: the highest position whose units' ids may
/// have been forgotten.
pub(crate) const HORIZON: &str = "forwarded_horizon";

/// The event numbers that mark a unit as given up.
const ABANDONED: u64 = u64::MAX;

/// How long an id is remembered, in the log's time: far longer than a host keeps sending one
/// unit (20 s).
const KEEP_MILLIS: u64 = 10 * 60 * 1000;

/// Ids forgotten per record at most, so that a jump of the log's time costs no record more
/// than a bounded amount of work (the rest go with the next records).
const PRUNE_MAX: usize = 4096;

/// The open tables, as the writer holds them.
pub(crate) struct Forwarded<'txn> {
    pub ids: Table<'txn, &'static str, (u64, u64, u64)>,
    pub by_time: Table<'txn, (u64, &'static str), u64>,
}

impl<'txn> Forwarded<'txn> {
    pub(crate) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StorageError> {
        Ok(Forwarded {
            ids: txn.open_table(FORWARDED)?,
            by_time: txn.open_table(FORWARDED_BY_TIME)?,
        })
    }
}

/// What is known of a unit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// It committed with these event numbers, in the record at this position.
    Committed(Range<u64>, u64),
    /// Its host gave it up before it committed: it never will.
    Abandoned,
}

/// A new unit id: the time it was made (for people reading the log), then random bits.
pub(crate) fn new_id() -> String {
    format!(
        "{:016x}-{:016x}",
        crate::time::now_millis(),
        crate::store::random_u64()
    )
}

/// What is recorded of `id`.
pub(crate) fn lookup(t: &Forwarded<'_>, id: &str) -> Result<Option<Known>, StorageError> {
    Ok(t.ids.get(id)?.map(|v| match v.value() {
        (ABANDONED, ABANDONED, _) => Known::Abandoned,
        (first, end, position) => Known::Committed(first..end, position),
    }))
}

/// Records that the unit `id` committed with events `seqs` in the record at `position`,
/// written at log time `millis`.
pub(crate) fn record(
    t: &mut Forwarded<'_>,
    id: &str,
    seqs: &Range<u64>,
    position: u64,
    millis: u64,
) -> Result<(), StorageError> {
    assert!(seqs.start != ABANDONED, "event numbers never reach u64::MAX");
    t.ids.insert(id, (seqs.start, seqs.end, position))?;
    t.by_time.insert((millis, id), position)?;
    Ok(())
}

/// Records that the unit `id` was given up, in the record at `position`.
pub(crate) fn abandon(
    t: &mut Forwarded<'_>,
    id: &str,
    position: u64,
    millis: u64,
) -> Result<(), StorageError> {
    t.ids.insert(id, (ABANDONED, ABANDONED, position))?;
    t.by_time.insert((millis, id), position)?;
    Ok(())
}

/// Forgets the ids recorded more than [`KEEP_MILLIS`] of log time before `millis` (at most
/// [`PRUNE_MAX`] of them), and raises `horizon` to the highest position among them. Returns
/// whether it moved.
pub(crate) fn prune(t: &mut Forwarded<'_>, millis: u64, horizon: &mut u64) -> Result<bool, StorageError> {
    let cutoff = millis.saturating_sub(KEEP_MILLIS);
    let mut gone: Vec<(u64, String, u64)> = Vec::new();
    for row in t.by_time.range(..(cutoff, ""))? {
        if gone.len() >= PRUNE_MAX {
            break;
        }
        let (k, v) = row?;
        let (at, id) = k.value();
        gone.push((at, id.to_string(), v.value()));
    }
    let before = *horizon;
    for (at, id, position) in &gone {
        t.by_time.remove((*at, id.as_str()))?;
        t.ids.remove(id.as_str())?;
        *horizon = (*horizon).max(*position);
    }
    Ok(*horizon != before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_forgotten_by_log_time_and_the_horizon_names_the_last_position_forgotten() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = redb::Database::create(file.path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = Forwarded::open(&txn).unwrap();
            record(&mut t, "a", &(1..3), 10, 1_000).unwrap();
            abandon(&mut t, "b", 11, 2_000).unwrap();
            record(&mut t, "c", &(3..4), 12, KEEP_MILLIS + 5_000).unwrap();
            assert_eq!(lookup(&t, "a").unwrap(), Some(Known::Committed(1..3, 10)));
            assert_eq!(lookup(&t, "b").unwrap(), Some(Known::Abandoned));
            let mut horizon = 0;
            // At log time KEEP + 1,500, only "a" (written at 1,000) is old enough.
            assert!(prune(&mut t, KEEP_MILLIS + 1_500, &mut horizon).unwrap());
            assert_eq!((lookup(&t, "a").unwrap(), horizon), (None, 10));
            assert_eq!(lookup(&t, "b").unwrap(), Some(Known::Abandoned));
            assert!(prune(&mut t, KEEP_MILLIS + 4_999, &mut horizon).unwrap());
            assert_eq!((lookup(&t, "b").unwrap(), horizon), (None, 11));
            assert!(!prune(&mut t, KEEP_MILLIS + 4_999, &mut horizon).unwrap());
            assert_eq!(lookup(&t, "c").unwrap(), Some(Known::Committed(3..4, 12)));
        }
        txn.commit().unwrap();
    }
}
