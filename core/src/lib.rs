//! carshare-core: the embeddable heart of carshare. It knows nothing of WebAssembly or HTTP.
//!
//! How a change flows through it:
//!
//! 1. [`Log::begin`] starts a [`Unit`] of work on a committed [`Snapshot`].
//! 2. The embedder runs its handlers against the unit: they read and write their context's
//!    key-value state ([`Unit::get`], [`Unit::set`], [`Unit::scan`]), take ids
//!    ([`Unit::next_id`]) and publish events ([`Unit::publish`]). Nothing is visible to anyone
//!    else yet; a [`Savepoint`] undoes part of it.
//! 3. [`Log::commit`] hands the unit to the commit writer (`writer/`), which validates what
//!    the unit read, writes its state, numbers its events gap-free and fsyncs, together with
//!    every other unit waiting at that moment (group commit). The future resolves once the unit
//!    is durable, or with [`CommitError::Conflict`] if it must be run again.
//! 4. The [`Dispatcher`] sees the log's head move and hands the new events to each subscriber
//!    ([`EventHandler`]), in log order from the subscriber's durable cursor, each step being a
//!    unit again; failing events are retried and then parked as [`DeadLetter`]s.
//! 5. Synchronous calls between contexts go through a [`Breaker`] per callee: a circuit
//!    breaker and a bulkhead, so a failing dependency is answered fast instead of waited on.
//!
//! `docs/design.md` at the repository root states the rules these steps keep.
#![deny(missing_docs)]

//!
//! Modules, in the order of that flow: `unit` (with `changes`, the change set it hands on, and
//! `ids`, the id sequences), `writer`, `log`, `store` (the tables and [`Snapshot`]), `dead`
//! (dead letters beside their table), `dispatch`, `breaker`. `replicate` is the seam for a
//! replicated log (a cluster of hosts): the writer appends each batch to a [`Replicator`]
//! before it commits locally, every host applies the log's records ([`Log::apply`]), and a host
//! that is not the writer forwards its units to it.

mod backup;
mod breaker;
mod changes;
mod dead;
mod dispatch;
mod error;
mod event;
mod forwarded;
mod ids;
mod index;
mod log;
mod partitions;
mod replicate;
mod store;
mod tail;
mod time;
mod unit;
mod writer;

pub use crate::backup::Backup;
pub use crate::breaker::{Breaker, BreakerConfig, BreakerState, BreakerStatus, Rejected, Ticket, Verdict};
pub use crate::dead::DeadLetter;
pub use crate::dispatch::{
    CursorStatus, Dispatcher, EventHandler, Failing, Handled, HandledAll, HandlerError, Placement, Reach,
    RetryError, RetryPolicy, SubscriberStatus, cursor_lane, cursor_name, handle_each,
};
pub use crate::error::{CommitError, Error, StorageError, SubscribeError};
pub use crate::event::{Event, NewEvent};
pub use crate::log::{Log, LogBuilder};
pub use crate::partitions::{MAX_PARTITIONS, Partitions, file as partition_file};
pub use crate::replicate::{
    AppendError, Applied, ApplyError, FORMAT, ForwardError, ForwardFuture, Replicator,
};
pub use crate::store::{IndexPage, ReplicaPosition, Snapshot};
pub use crate::time::{now_millis, rfc3339_utc};
pub use crate::unit::{Savepoint, Unit};
pub use crate::writer::{BatchReport, CommitObserver, Committed};
