//! The errors of the core, one enum per kind of operation, all converting into [`Error`].

use std::fmt;

/// The storage engine failed (I/O, corruption, a closed database).
#[derive(Debug)]
pub struct StorageError(pub(crate) String);

impl StorageError {
    pub(crate) fn new(e: impl fmt::Display) -> Self {
        StorageError(e.to_string())
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

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

/// Why a unit of work did not commit.
#[derive(Debug)]
#[non_exhaustive]
pub enum CommitError {
    /// Something the unit read was changed by a unit that committed first. Nothing of this unit
    /// was written; running it again on fresh state is safe.
    Conflict,
    /// The log's writer has shut down; nothing of this unit was written.
    Closed,
    /// The storage engine failed; nothing of this unit was written.
    Storage(StorageError),
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Conflict => f.write_str("the unit conflicted with a concurrent commit"),
            CommitError::Closed => f.write_str("the log is closed"),
            CommitError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CommitError {}

/// Any error of the core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// See [`StorageError`].
    Storage(StorageError),
    /// See [`CommitError`].
    Commit(CommitError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Storage(e) => e.fmt(f),
            Error::Commit(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Self {
        Error::Commit(e)
    }
}
