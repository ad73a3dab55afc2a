//! The dispatcher: delivers committed events to each subscribing context, in log order, from
//! that context's durable cursor.
//!
//! One task per subscriber. A step reads the events after the cursor, has the handler apply the
//! ones it subscribes to inside one unit of work, and commits the unit with the cursor moved
//! past them, so state, published events and cursor change together or not at all. An event
//! whose handler fails is retried with backoff; after the last attempt it is parked as a
//! [`DeadLetter`] and the cursor moves on, so one poisoned event never blocks its subscriber
//! (nor, since each subscriber has its own task, any other). A paused subscriber keeps its
//! cursor and catches up when resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::log::Log;
use crate::unit::Unit;

/// A subscribing context, as the dispatcher sees it.
pub trait EventHandler: Send + Sync + 'static {
    /// Whether the subscriber wants events of this type (others only move its cursor).
    fn wants(&self, event_type: &str) -> bool;
    /// Applies one event inside `unit` and hands the unit back. The unit moves (rather than
    /// being borrowed) so that the handler can place it where its sandbox reaches it for the
    /// length of the call. An error undoes whatever the handler did in the unit.
    fn handle(&self, unit: Unit, event: &Event) -> (Unit, Result<(), HandlerError>);
    /// Told of every failed attempt (for logging); `parked` is true on the last one.
    fn on_failure(&self, _event: &Event, _error: &HandlerError, _attempt: u32, _parked: bool) {}

    /// A handler fixed for the length of one step, so that every event of the step is filtered
    /// and handled by the same code even if the subscriber's code is replaced meanwhile. `None`
    /// (the default) uses this handler itself.
    fn pin(&self) -> Option<Arc<dyn EventHandler>> {
        None
    }
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

/// What the dispatcher reports of one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberStatus {
    /// Whether it is receiving events.
    pub running: bool,
    /// The sequence number of the last event it is done with.
    pub cursor: u64,
    /// How many committed events it has still to go through.
    pub lag: u64,
    /// The event it is retrying now, if any.
    pub failing: Option<Failing>,
}

/// An event being retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failing {
    /// Its sequence number.
    pub seq: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Stopping,
}

struct Sub {
    handler: Arc<dyn EventHandler>,
    run: watch::Sender<Run>,
    /// Wakes an idle worker when its cursor was moved by an operator (no new event would).
    nudge: Arc<tokio::sync::Notify>,
    failing: Arc<Mutex<Option<Failing>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Runs one task per subscriber. Must be used inside a tokio runtime.
pub struct Dispatcher {
    log: Log,
    policy: RetryPolicy,
    subs: Mutex<HashMap<String, Sub>>,
}

impl Dispatcher {
    /// A dispatcher over `log` with no subscribers yet.
    pub fn new(log: Log, policy: RetryPolicy) -> Self {
        Dispatcher {
            log,
            policy,
            subs: Mutex::new(HashMap::new()),
        }
    }

    /// Starts delivering to `name` (running or paused). Replaces a subscriber of that name.
    pub fn subscribe(&self, name: &str, handler: Arc<dyn EventHandler>, running: bool) {
        let (run, run_rx) = watch::channel(if running { Run::Running } else { Run::Paused });
        let failing = Arc::new(Mutex::new(None));
        let nudge = Arc::new(tokio::sync::Notify::new());
        let worker = Worker {
            log: self.log.clone(),
            name: name.to_string(),
            handler: handler.clone(),
            policy: self.policy.clone(),
            run: run_rx,
            failing: failing.clone(),
            nudge: nudge.clone(),
            batch: self.policy.batch.max(1),
        };
        let task = tokio::spawn(worker.run());
        let old = self.lock().insert(
            name.to_string(),
            Sub {
                handler,
                run,
                nudge,
                failing,
                task: Some(task),
            },
        );
        if let Some(old) = old {
            old.run.send_replace(Run::Stopping);
        }
    }

    /// Pauses or resumes `name`. Returns false if there is no such subscriber.
    pub fn set_running(&self, name: &str, running: bool) -> bool {
        match self.lock().get(name) {
            Some(sub) => {
                sub.run
                    .send_replace(if running { Run::Running } else { Run::Paused });
                true
            }
            None => false,
        }
    }

    /// The status of `name`, or `None` if it does not subscribe.
    pub fn status(&self, name: &str) -> Result<Option<SubscriberStatus>, StorageError> {
        let (running, failing) = match self.lock().get(name) {
            Some(sub) => (
                *sub.run.borrow() == Run::Running,
                sub.failing.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            ),
            None => return Ok(None),
        };
        let snap = self.log.snapshot()?;
        let cursor = snap.cursor(name)?;
        let head = snap.last_seq()?;
        Ok(Some(SubscriberStatus {
            running,
            cursor,
            lag: head.saturating_sub(cursor),
            failing,
        }))
    }

    /// Has `name` handle its dead letter `seq` again, now. On success the letter is removed in
    /// the same unit that applies the event; on failure it stays parked.
    pub async fn retry_dead_letter(&self, name: &str, seq: u64) -> Result<(), RetryError> {
        let handler = self
            .lock()
            .get(name)
            .map(|s| s.handler.clone())
            .ok_or(RetryError::NotFound)?;
        let log = self.log.clone();
        let sub = name.to_string();
        let unit = tokio::task::spawn_blocking(move || -> Result<Unit, RetryError> {
            let unit = log.begin().map_err(RetryError::Storage)?;
            let letter = log
                .snapshot()
                .and_then(|s| s.dead_letter(&sub, seq))
                .map_err(RetryError::Storage)?;
            let letter = letter.ok_or(RetryError::NotFound)?;
            let (mut unit, result) = handler.handle(unit, &letter.event);
            result.map_err(RetryError::Failed)?;
            unit.unpark(&sub, seq);
            Ok(unit)
        })
        .await
        .map_err(|_| RetryError::Failed(HandlerError::new("the handler panicked")))??;
        self.log.commit(unit).await.map_err(RetryError::Commit)?;
        Ok(())
    }

    /// Moves `name`'s cursor to `to` (an operator rewinding or skipping). Events after `to` are
    /// delivered (again); handlers are idempotent, so redelivery changes nothing.
    pub async fn set_cursor(&self, name: &str, to: u64) -> Result<(), CommitError> {
        // The subscriber may commit a step at the same moment; the operator's move wins on a
        // later try.
        let mut tries = 0;
        loop {
            let mut unit = self.log.begin().map_err(CommitError::Storage)?;
            let from = unit.cursor(name).map_err(CommitError::Storage)?;
            unit.move_cursor(name, from, to.min(self.log.head()));
            match self.log.commit(unit).await {
                Ok(_) => break,
                Err(CommitError::Conflict) if tries < 20 => tries += 1,
                Err(e) => return Err(e),
            }
        }
        if let Some(sub) = self.lock().get(name) {
            sub.nudge.notify_one();
        }
        Ok(())
    }

    /// Stops every subscriber after the step it is in, and waits for them.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = self
            .lock()
            .values_mut()
            .filter_map(|s| {
                s.run.send_replace(Run::Stopping);
                s.task.take()
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sub>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Dispatcher {
    /// Dropped without [`Dispatcher::shutdown`]: tell every worker to stop after its step.
    fn drop(&mut self) {
        for sub in self.subs.get_mut().unwrap_or_else(|p| p.into_inner()).values() {
            sub.run.send_replace(Run::Stopping);
        }
    }
}

struct Worker {
    log: Log,
    name: String,
    handler: Arc<dyn EventHandler>,
    policy: RetryPolicy,
    run: watch::Receiver<Run>,
    failing: Arc<Mutex<Option<Failing>>>,
    nudge: Arc<tokio::sync::Notify>,
    /// Events per step now: halved after a conflict, so a large step that keeps losing races
    /// with concurrent writers still makes progress; back to the policy's size after a commit.
    batch: usize,
}

/// What one step did.
enum Step {
    /// Nothing to do: wait for new events.
    Idle,
    /// Progress was made (or a conflict asks for an immediate retry).
    Again,
    /// The event at the cursor failed; wait before trying again.
    Backoff(Duration),
}

impl Worker {
    async fn run(mut self) {
        let mut head = self.log.watch_head();
        let mut attempts: (u64, u32) = (0, 0);
        loop {
            // The dispatcher is gone (dropped without shutdown): stop, never run on.
            if self.run.has_changed().is_err() {
                return;
            }
            let state = *self.run.borrow_and_update();
            match state {
                Run::Stopping => return,
                Run::Paused => {
                    if self.run.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Run::Running => {}
            }
            head.borrow_and_update();
            let wait = match self.step(&mut attempts).await {
                Step::Again => continue,
                Step::Idle => None,
                Step::Backoff(d) => Some(d),
            };
            tokio::select! {
                changed = self.run.changed() => if changed.is_err() { return },
                _ = head.changed(), if wait.is_none() => {},
                _ = self.nudge.notified(), if wait.is_none() => {},
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {},
            }
        }
    }

    async fn step(&mut self, attempts: &mut (u64, u32)) -> Step {
        let handler = self.handler.clone();
        let name = self.name.clone();
        let batch = self.batch;
        let log = self.log.clone();
        let applied = tokio::task::spawn_blocking(move || apply_batch(&log, &*handler, &name, batch)).await;
        let (unit, failed) = match applied {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => return Step::Idle,
            Ok(Err(_)) | Err(_) => return Step::Backoff(self.policy.first_backoff),
        };
        let mut unit = unit;
        // A failure after progress commits the progress; the failing event is then first in
        // line and counted on the next step.
        if let Some((event, error, false)) = failed {
            // The event at the cursor itself failed: count the attempt, park on the last.
            if attempts.0 != event.seq {
                *attempts = (event.seq, 0);
            }
            attempts.1 += 1;
            // A transient failure (a dependency that is down) waits as long as it takes.
            let parked = !error.transient && attempts.1 >= self.policy.max_attempts.max(1);
            self.handler.on_failure(&event, &error, attempts.1, parked);
            if !parked {
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failing {
                    seq: event.seq,
                    attempts: attempts.1,
                    error: error.message.clone(),
                });
                return Step::Backoff(self.backoff(attempts.1));
            }
            let from = match unit.cursor(&self.name) {
                Ok(c) => c,
                Err(_) => return Step::Backoff(self.policy.first_backoff),
            };
            unit.park(&self.name, &event, &error.message, attempts.1);
            unit.move_cursor(&self.name, from, event.seq);
        }
        match self.log.commit(unit).await {
            Ok(_) => {
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.batch = self.policy.batch.max(1);
                Step::Again
            }
            Err(CommitError::Conflict) => {
                self.batch = (self.batch / 2).max(1);
                Step::Again
            }
            Err(_) => Step::Backoff(self.policy.first_backoff),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.policy
            .first_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff)
    }
}

/// A failed event, its error, and whether events before it were applied in the same unit.
type Failure = (Event, HandlerError, bool);

/// Applies up to `batch` events after the cursor in one unit, stopping before the first that
/// fails, and moves the cursor past what was applied. Returns `None` when there is nothing
/// after the cursor.
fn apply_batch(
    log: &Log,
    handler: &dyn EventHandler,
    name: &str,
    batch: usize,
) -> Result<Option<(Unit, Option<Failure>)>, StorageError> {
    let pinned = handler.pin();
    let handler: &dyn EventHandler = pinned.as_deref().unwrap_or(handler);
    let mut unit = log.begin()?;
    let from = unit.cursor(name)?;
    let events = unit.events_after(from, batch)?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut done = from;
    let mut failed = None;
    for event in events {
        if handler.wants(&event.event_type) {
            let sp = unit.savepoint();
            let (back, result) = handler.handle(unit, &event);
            unit = back;
            if let Err(e) = result {
                unit.rollback_to(sp);
                failed = Some((event, e, done != from));
                break;
            }
        }
        done = event.seq;
    }
    if done != from {
        unit.move_cursor(name, from, done);
    }
    Ok(Some((unit, failed)))
}
