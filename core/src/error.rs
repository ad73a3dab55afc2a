//! The errors of the core, one enum per kind of operation, all converting into [`Error`].

use std::fmt;

/// The storage engine failed (I/O, corruption, a closed database).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(String);

impl StorageError {
    /// A storage error saying `e` (for replicators and storage backends of embedders).
    pub fn new(e: impl fmt::Display) -> Self {
        StorageError(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { StorageError::new(e) }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    serde_json::Error
);

/// Why a dispatcher refused a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// Another dispatcher of the same database delivers to a subscriber of this name (a
    /// context, or an embedder's own subscriber). The two would share its cursors, and each
    /// would take events the other never saw.
    #[error(
        "a subscriber named {0:?} already receives this log's events through another dispatcher \
         (a context, or another native subscriber): the two would share its cursors and each \
         would take events from the other; give this one another name"
    )]
    NameTaken(String),
}

/// Why a unit of work did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Something the unit read was changed by a unit that committed first. Nothing of this unit
    /// was written; running it again on fresh state is safe.
    #[error("the unit conflicted with a concurrent commit")]
    Conflict,
    /// This host stopped being the cluster's writer before the unit committed (another
    /// writer appended first): nothing of it was written here. [`crate::Log::commit`] turns
    /// it into [`CommitError::Conflict`] (run it again: it goes to the new writer); a unit
    /// forwarded here is sent again, with its id, to the new writer.
    #[error("this host is no longer the cluster's writer")]
    Deposed,
    /// The log's writer has shut down; nothing of this unit was written.
    #[error("the log is closed")]
    Closed,
    /// The writer's queue holds its bound of units already (the writer is not keeping up, or
    /// it is stalled): nothing of this unit was written, and it may be tried again later.
    #[error("{0} units are waiting for the writer already, its bound: nothing of this unit was written")]
    Overloaded(usize),
    /// The storage engine failed; nothing of this unit was written.
    #[error(transparent)]
    Storage(StorageError),
    /// A replicated log could not take the unit now (no writer is known, or the log refused
    /// the record); nothing of it was written, and it may be tried again later.
    #[error("the replicated log is unavailable: {0}")]
    Unavailable(String),
    /// The unit reached a replicated log's writer but its outcome is unknown (no answer came
    /// back): it may have committed. Running it again could do its work twice.
    #[error("the outcome of the commit is unknown: {0}")]
    Unknown(String),
    /// The unit's host gave it up before it committed (it could not learn the outcome in
    /// time, and made sure it never commits): nothing of it was written.
    #[error("the unit was given up before it committed: nothing of it was written")]
    Abandoned,
    /// The unit tried to write outside its partition (see [`crate::Unit::violation`]):
    /// nothing of it was written.
    #[error("{0}")]
    OutsidePartition(String),
    /// The unit's effects take more bytes than the replicated log takes in one record:
    /// nothing of it was written.
    #[error(
        "the unit's changes take {bytes} bytes, more than the cluster's log takes in one \
         record ({max} bytes)"
    )]
    TooLarge {
        /// The size of the unit's effects.
        bytes: usize,
        /// The largest record the log takes.
        max: usize,
    },
}

/// Any error of the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`StorageError`].
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// See [`CommitError`].
    #[error(transparent)]
    Commit(#[from] CommitError),
}
