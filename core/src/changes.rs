//! A unit's change set: what it read (checked again at commit) and what it writes, handed from
//! the unit of work (`unit.rs`) to the commit writer (`writer.rs`) as one value, so neither
//! needs to know the other.

use crate::dead::DeadWrite;
use crate::event::NewEvent;
use crate::index::IndexKey;

/// A key of some context's state: (context, key).
pub(crate) type StateKey = (String, String);

/// An id sequence: (context, sequence name).
pub(crate) type SequenceKey = (String, String);

/// A prefix scan the unit based decisions on, checked again at commit: up to `limit` rows
/// (none: all) of keys starting with `prefix`, after `after` if given.
#[derive(Debug)]
pub(crate) struct ScanRead {
    pub context: String,
    pub prefix: String,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub rows: Vec<(String, Vec<u8>)>,
}

/// A subscriber's cursor move, valid only if the cursor is still where the unit found it.
#[derive(Debug)]
pub(crate) struct CursorMove {
    pub subscriber: String,
    pub expected: u64,
    pub to: u64,
}

/// Everything the writer needs of one unit: its reads to validate, its effects to apply.
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    /// Values read, as they were read.
    pub reads: Vec<(StateKey, Option<Vec<u8>>)>,
    /// Prefix scans, with the rows they saw.
    pub scans: Vec<ScanRead>,
    /// State written (`None` deletes).
    pub writes: Vec<(StateKey, Option<Vec<u8>>)>,
    /// Index entries put (`true`) or deleted (`false`).
    pub index: Vec<(IndexKey, bool)>,
    /// Events published, in order.
    pub events: Vec<NewEvent>,
    /// Cursor moves.
    pub cursors: Vec<CursorMove>,
    /// Dead-letter changes.
    pub dead: Vec<DeadWrite>,
    /// The highest id the unit took of each sequence.
    pub ids: Vec<(SequenceKey, u64)>,
}
