//! A unit of a cluster commits at most once, even when sent again. A host gives each unit it
//! commits an id (whether it forwards the unit or, being the writer, commits it itself); the
//! writer records, in the transaction that commits the unit, the id with the unit's event
//! numbers and the log position of its record, and every replica records the same when it
//! applies that record. A host that got no answer (a reply lost with a NATS server, an append
//! left in doubt, a writer that died or was deposed) sends the unit again with the same id:
//! whichever host writes then has applied the whole log before writing, finds the id, and
//! answers with the first outcome instead of committing the unit twice.

use std::ops::Range;

use redb::{ReadableTable, Table, TableDefinition};

use crate::error::StorageError;

/// Unit id → (first event number, end of the event numbers, log position of its record).
pub(crate) const FORWARDED: TableDefinition<'static, &str, (u64, u64, u64)> =
    TableDefinition::new("forwarded");

/// The open table, as the writer holds it.
pub(crate) type Forwarded<'txn> = Table<'txn, &'static str, (u64, u64, u64)>;

/// How long an id is remembered: far longer than a host keeps sending one unit.
const KEEP_MILLIS: u64 = 10 * 60 * 1000;

/// A new unit id: the time it was made (so that ids sort by age, for [`prune`]), then
/// random bits.
pub(crate) fn new_id() -> String {
    format!(
        "{:016x}-{:016x}",
        crate::time::now_millis(),
        crate::store::random_u64()
    )
}

/// The outcome recorded for `id`: its event numbers and its record's position.
pub(crate) fn lookup(t: &Forwarded<'_>, id: &str) -> Result<Option<(Range<u64>, u64)>, StorageError> {
    Ok(t.get(id)?.map(|v| {
        let (first, end, position) = v.value();
        (first..end, position)
    }))
}

/// Records that the unit `id` committed with events `seqs` in the record at `position`.
pub(crate) fn record(
    t: &mut Forwarded<'_>,
    id: &str,
    seqs: &Range<u64>,
    position: u64,
) -> Result<(), StorageError> {
    t.insert(id, (seqs.start, seqs.end, position))?;
    Ok(())
}

/// Forgets the ids made more than [`KEEP_MILLIS`] before `now_millis`.
pub(crate) fn prune(t: &mut Forwarded<'_>, now_millis: u64) -> Result<(), StorageError> {
    let cutoff = format!("{:016x}", now_millis.saturating_sub(KEEP_MILLIS));
    t.retain_in::<&str, _>(..cutoff.as_str(), |_, _| false)?;
    Ok(())
}
