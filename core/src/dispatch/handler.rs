//! What a subscriber is to the dispatcher ([`EventHandler`]), how its failures are told
//! ([`HandlerError`]) and retried ([`RetryPolicy`]), and what an operator sees of it
//! ([`SubscriberStatus`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::unit::Unit;

/// What handling one event comes back with: the unit, and whether the event was applied.
pub type Handled<'a> = Pin<Box<dyn Future<Output = (Unit, Result<(), HandlerError>)> + Send + 'a>>;

/// What handling a step's events comes back with: the unit, and either all applied or the
/// index (in the list handed over) of the first that failed, with why.
pub type HandledAll<'a> =
    Pin<Box<dyn Future<Output = (Unit, Result<(), (usize, HandlerError)>)> + Send + 'a>>;

/// Where, among several partitions, an event a subscriber wants is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the partition it was published in (the default): its events are ordered there.
    Here,
    /// In the partition of the entity with this id (a field of the event names it): a product's
    /// stock is changed where the product lives, whichever partition the order was placed in.
    Id(u64),
    /// In partition 0: a subscriber that keeps its state in one place.
    Home,
}

/// Which partitions' events a subscriber reads, in each partition it is handled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Each partition's own events only: every event it wants is [`Placement::Here`].
    Own,
    /// Every partition's events, in every partition: some events it wants are placed by id.
    All,
    /// Every partition's events, in partition 0 only: every event it wants is
    /// [`Placement::Home`].
    Home,
}

/// A subscribing context, as the dispatcher sees it.
pub trait EventHandler: Send + Sync + 'static {
    /// Whether the subscriber wants events of this type (others only move its cursor).
    fn wants(&self, event_type: &str) -> bool;
    /// Where an event it wants is handled, among several partitions. The default: where it
    /// was published.
    fn placement(&self, _event: &Event) -> Placement {
        Placement::Here
    }
    /// Which partitions' events it reads (it must agree with [`EventHandler::placement`]).
    fn reach(&self) -> Reach {
        Reach::Own
    }
    /// Applies one event inside `unit` and hands the unit back. The unit moves (rather than
    /// being borrowed) so that the handler can place it where its sandbox reaches it for the
    /// length of the call. An error undoes whatever the handler did in the unit. It runs on
    /// the async runtime's workers: it must not block them for long.
    fn handle<'a>(&'a self, unit: Unit, event: &'a Event) -> Handled<'a>;
    /// Applies `events` (each one the subscriber wants, in log order) inside `unit`, each as
    /// [`EventHandler::handle`] would, the events each publishes caused by it. On
    /// `Err((i, e))` the unit holds exactly the effects of `events[..i]`. The default calls
    /// `handle` once per event ([`handle_each`]); a handler that can apply several events in
    /// one call overrides it.
    fn handle_all<'a>(&'a self, unit: Unit, events: &'a [Arc<Event>]) -> HandledAll<'a> {
        Box::pin(handle_each(self, unit, events))
    }
    /// Told of every failed attempt (for logging); `parked` is true on the last one.
    fn on_failure(&self, _event: &Event, _error: &HandlerError, _attempt: u32, _parked: bool) {}

    /// A handler fixed for the length of one step, so that every event of the step is filtered
    /// and handled by the same code even if the subscriber's code is replaced meanwhile. `None`
    /// (the default) uses this handler itself.
    fn pin(&self) -> Option<Arc<dyn EventHandler>> {
        None
    }
}

/// Applies `events` one [`EventHandler::handle`] call at a time, each from a savepoint and
/// with the unit's events caused by it, stopping at the first that fails (whose effects are
/// undone): the default of [`EventHandler::handle_all`], and its fallback for handlers that
/// batch.
pub async fn handle_each<H: EventHandler + ?Sized>(
    handler: &H,
    mut unit: Unit,
    events: &[Arc<Event>],
) -> (Unit, Result<(), (usize, HandlerError)>) {
    for (i, event) in events.iter().enumerate() {
        let sp = unit.savepoint();
        unit.caused_by(event);
        let (back, result) = handler.handle(unit, event).await;
        unit = back;
        if let Err(e) = result {
            unit.rollback_to(sp);
            return (unit, Err((i, e)));
        }
    }
    (unit, Ok(()))
}

/// Why a handler did not apply an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// What went wrong, for the operator.
    pub message: String,
    /// True when the cause is outside the event (a dependency stopped, busy or behind an open
    /// breaker): such an event is retried until it succeeds and never parked, because parking
    /// it would drop work that only has to wait.
    pub transient: bool,
}

impl HandlerError {
    /// A failure of the handler with this event: retried, then parked.
    pub fn new(message: impl std::fmt::Display) -> Self {
        HandlerError {
            message: message.to_string(),
            transient: false,
        }
    }

    /// A failure that waiting will cure: retried with backoff, never parked.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        HandlerError {
            message: message.to_string(),
            transient: true,
        }
    }
}

/// Why an operator's retry of a dead letter did not go through.
#[derive(Debug)]
#[non_exhaustive]
pub enum RetryError {
    /// No such subscriber, or no such dead letter.
    NotFound,
    /// The handler failed again; the letter stays parked.
    Failed(HandlerError),
    /// Committing failed (a concurrent retry, or storage); the letter stays parked.
    Commit(CommitError),
    /// Reading failed.
    Storage(StorageError),
}

impl std::fmt::Display for RetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryError::NotFound => f.write_str("no such dead letter"),
            RetryError::Failed(e) => write!(f, "the handler failed again: {}", e.message),
            RetryError::Commit(e) => e.fmt(f),
            RetryError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RetryError {}

/// How the dispatcher retries a failing event.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before the event is parked (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles each time, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Events taken into one unit at most.
    pub batch: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            batch: 256,
        }
    }
}

/// What the dispatcher reports of one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberStatus {
    /// Whether it is receiving events.
    pub running: bool,
    /// The sequence number of the last event it is done with (in partition 0, of partition
    /// 0's events).
    pub cursor: u64,
    /// How many committed events are still to be gone through: for each partition, by the
    /// lane furthest behind on its events (with one partition, the head less the cursor).
    pub lag: u64,
    /// The event it is retrying now, if any.
    pub failing: Option<Failing>,
    /// With several partitions, each cursor: in which partition, over which partition's
    /// events, where it stands and how far behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cursors: Vec<CursorStatus>,
}

/// One cursor of a subscriber, with several partitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CursorStatus {
    /// The partition it is kept (and its events handled) in.
    pub partition: u32,
    /// The partition whose events it goes through.
    pub source: u32,
    /// The sequence number (in `source`) of the last event it is done with.
    pub cursor: u64,
    /// How many of `source`'s events it has still to go through.
    pub lag: u64,
}

/// An event being retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failing {
    /// The partition it was published in.
    pub partition: u32,
    /// Its sequence number there.
    pub seq: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}
