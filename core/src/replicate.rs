//! The seam where a second storage backend joins the commit path. A [`Replicator`] is handed
//! every commit batch after the writer has validated its units and applied them to the local
//! transaction, and before that transaction commits: the batch commits only if the replicator
//! accepts it, and if it refuses, every unit of the batch fails and the local database and the
//! sequence numbers stay as they were. A log shipped to other machines (the cluster) appends
//! the batch's effects there; a single process has no replicator.

use std::ops::Range;

use crate::changes::ChangeSet;
use crate::error::StorageError;
use crate::event::Event;

/// Where commit batches go before they commit locally.
pub trait Replicator: Send + 'static {
    /// Makes `batch` durable elsewhere, or refuses it (then nothing of it commits).
    fn replicate(&mut self, batch: &Batch<'_>) -> Result<(), StorageError>;
}

/// The effects of one commit batch: the units that passed validation, in commit order, with
/// the sequence numbers their events were given.
pub struct Batch<'a> {
    pub(crate) log_id: u64,
    pub(crate) timestamp: &'a str,
    pub(crate) units: Vec<(&'a ChangeSet, Range<u64>)>,
}

impl Batch<'_> {
    /// How many units the batch commits.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether it commits no unit.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The sequence numbers of its events.
    pub fn seqs(&self) -> Range<u64> {
        let start = self.units.first().map(|(_, s)| s.start).unwrap_or(0);
        let end = self.units.last().map(|(_, s)| s.end).unwrap_or(start);
        start..end
    }

    /// Its events, numbered and stamped as the log stores them.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.units.iter().flat_map(move |(changes, seqs)| {
            changes
                .events
                .iter()
                .zip(seqs.clone())
                .map(move |(e, seq)| Event::numbered(e, seq, self.log_id, self.timestamp))
        })
    }

    /// Its state writes: (context, key, value), `None` for a delete.
    pub fn writes(&self) -> impl Iterator<Item = (&str, &str, Option<&[u8]>)> + '_ {
        self.units.iter().flat_map(|(changes, _)| {
            changes
                .writes
                .iter()
                .map(|((ctx, key), v)| (ctx.as_str(), key.as_str(), v.as_deref()))
        })
    }

    /// Its index writes: (context, index, term, id, put), `put` false for a delete.
    pub fn index_writes(&self) -> impl Iterator<Item = (&str, &str, &[u8], u64, bool)> + '_ {
        self.units.iter().flat_map(|(changes, _)| {
            changes.index.iter().map(|((ctx, index, term, id), put)| {
                (ctx.as_str(), index.as_str(), term.as_slice(), *id, *put)
            })
        })
    }

    /// Its cursor moves: (subscriber, new position).
    pub fn cursors(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.units
            .iter()
            .flat_map(|(changes, _)| changes.cursors.iter().map(|m| (m.subscriber.as_str(), m.to)))
    }
}
