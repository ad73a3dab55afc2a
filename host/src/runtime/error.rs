//! Why the runtime did not serve a request, or did not load, swap or roll back a context.
//! Both are mapped to HTTP statuses once, in `http/error.rs`.

use carshare_core::{CommitError, StorageError};

use crate::routes::RouteError;
use crate::types::CallError;
use crate::wasm::LoadError;

/// Why a request got no response from a context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No context serves the path.
    #[error("no context serves {0}")]
    NoRoute(String),
    /// The routed context failed or refused (see [`CallError`]).
    #[error(transparent)]
    Call(CallError),
    /// The database failed; nothing was committed.
    #[error(transparent)]
    Storage(StorageError),
    /// The request kept conflicting with concurrent commits; nothing was committed.
    #[error("the request kept conflicting with concurrent changes")]
    Contention,
    /// The runtime is shutting down; nothing was committed.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// A context tried to write outside the partition the request's unit runs in (see
    /// `runtime/placing.rs`): nothing was committed.
    #[error("{0}")]
    OutsidePartition(String),
    /// The cluster's replicated log did not take the unit (see [`CommitError::Unavailable`]
    /// and [`CommitError::Unknown`]: in the second case it may have committed).
    #[error(transparent)]
    Log(CommitError),
}

/// Why a context could not be loaded, swapped or rolled back. In every case nothing changed:
/// the version that ran before goes on serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadContextError {
    /// The component itself is unusable.
    #[error(transparent)]
    Load(LoadError),
    /// Its routes collide or are malformed.
    #[error(transparent)]
    Route(RouteError),
    /// A context of that name is already loaded.
    #[error("a context named {0} is already loaded")]
    AlreadyLoaded(String),
    /// No context of that name is loaded.
    #[error("no context named {0} (a new context is added, not swapped: `carshare contexts add`)")]
    NoSuchContext(String),
    /// The component says it is another context.
    #[error("the component is the {found} context, not {expected}")]
    WrongContext {
        /// The context it was given for.
        expected: String,
        /// What its manifest says.
        found: String,
    },
    /// There is no earlier version to roll back to.
    #[error("{0} has no earlier version to roll back to")]
    NoPrevious(String),
    /// The swap could not be recorded on disk.
    #[error("the swap could not be recorded: {0}")]
    Persist(String),
    /// The new version would keep the context's state elsewhere (partitioned or in one
    /// partition) than the running one.
    #[error("{0}")]
    Placement(String),
    /// The change is not possible in a cluster (yet), and why.
    #[error("{0}")]
    NotInCluster(String),
    /// A subscriber of another dispatcher (an embedder's own) has the context's name.
    #[error(transparent)]
    SubscriberName(carshare_core::SubscribeError),
    /// With it, a subscription could never fire, or an event type would have two publishers.
    #[error(transparent)]
    Catalog(Box<super::CatalogError>),
}
