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
//!
//! [`DeadLetter`]: crate::DeadLetter

mod handler;
mod worker;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use tokio::sync::watch;

pub use handler::{
    EventHandler, Failing, Handled, HandledAll, HandlerError, RetryError, RetryPolicy, SubscriberStatus,
    handle_each,
};
use worker::Worker;

use crate::error::{CommitError, StorageError};
use crate::log::Log;

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
        let letter = self
            .log
            .snapshot()
            .and_then(|s| s.dead_letter(name, seq))
            .map_err(RetryError::Storage)?
            .ok_or(RetryError::NotFound)?;
        let mut unit = self.log.begin().map_err(RetryError::Storage)?;
        unit.caused_by(&letter.event);
        // A panicking handler fails the retry; it does not take the dispatcher down.
        let handled = AssertUnwindSafe(handler.handle(unit, &letter.event))
            .catch_unwind()
            .await;
        let (mut unit, result) =
            handled.map_err(|_| RetryError::Failed(HandlerError::new("the handler panicked")))?;
        result.map_err(RetryError::Failed)?;
        unit.unpark(name, seq);
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
