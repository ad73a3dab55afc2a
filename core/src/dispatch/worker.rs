//! One subscriber's task: step after step, the events after its cursor are applied in one
//! unit of work that moves the cursor past them; a failing event is retried with backoff and
//! parked as a dead letter after the last attempt.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use tokio::sync::watch;

use super::Run;
use super::handler::{EventHandler, Failing, HandlerError, RetryPolicy};
use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::log::Log;
use crate::unit::Unit;

pub(super) struct Worker {
    pub(super) log: Log,
    pub(super) name: String,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) policy: RetryPolicy,
    pub(super) run: watch::Receiver<Run>,
    pub(super) failing: Arc<Mutex<Option<Failing>>>,
    pub(super) nudge: Arc<tokio::sync::Notify>,
    /// Events per step now: halved after a conflict, so a large step that keeps losing races
    /// with concurrent writers still makes progress; back to the policy's size after a commit.
    pub(super) batch: usize,
}

/// How often a subscriber on a host that is not the cluster's writer looks again.
const NOT_WRITER_POLL: Duration = Duration::from_millis(100);

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
    pub(super) async fn run(mut self) {
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
            // In a cluster, subscribers run on the writer's host only: there their steps
            // commit without a hop, and no other host spends work that would only conflict.
            // The cursors are in the replicated log, so a new writer's subscribers go on
            // exactly where the old one's stopped.
            if !self.log.is_writer() {
                tokio::select! {
                    changed = self.run.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(NOT_WRITER_POLL) => {},
                }
                continue;
            }
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
        // A panicking handler fails the step (which is retried after a backoff); it does not
        // end the subscriber's task.
        let applied = AssertUnwindSafe(apply_batch(&self.log, &*self.handler, &self.name, self.batch))
            .catch_unwind()
            .await;
        let Applied {
            mut unit,
            from,
            done,
            failed,
        } = match applied {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => return Step::Idle,
            Ok(Err(_)) | Err(_) => return Step::Backoff(self.policy.first_backoff),
        };
        let mut cursor_to = done;
        let mut wait = None;
        if let Some((event, error)) = failed {
            // Every attempt counts, also one that followed progress in the same step.
            if attempts.0 != event.seq {
                *attempts = (event.seq, 0);
            }
            attempts.1 += 1;
            // A transient failure (a dependency that is down) waits as long as it takes.
            let parked = !error.transient && attempts.1 >= self.policy.max_attempts.max(1);
            self.handler.on_failure(&event, &error, attempts.1, parked);
            if parked {
                unit.park(&self.name, &event, &error.message, attempts.1);
                cursor_to = event.seq;
            } else {
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failing {
                    seq: event.seq,
                    attempts: attempts.1,
                    error: error.message.clone(),
                });
                let backoff = self.backoff(attempts.1);
                if done == from {
                    return Step::Backoff(backoff);
                }
                // The events before it are done: commit them, then wait.
                wait = Some(backoff);
            }
        }
        if cursor_to != from {
            unit.move_cursor(&self.name, from, cursor_to);
        }
        match self.log.commit(unit).await {
            Ok(_) => {
                self.batch = self.policy.batch.max(1);
                match wait {
                    Some(d) => Step::Backoff(d),
                    None => {
                        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        Step::Again
                    }
                }
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

/// What one step applied: the unit, where the cursor was (`from`) and the last event it is
/// done with (`done`), and the event that failed, if one did.
struct Applied {
    unit: Unit,
    from: u64,
    done: u64,
    failed: Option<(Arc<Event>, HandlerError)>,
}

/// Applies up to `batch` events after the cursor in one unit, stopping before the first that
/// fails. The cursor is not moved: the step decides where to. Returns `None` when there is
/// nothing after the cursor.
async fn apply_batch(
    log: &Log,
    handler: &dyn EventHandler,
    name: &str,
    batch: usize,
) -> Result<Option<Applied>, StorageError> {
    let pinned = handler.pin();
    let handler: &dyn EventHandler = pinned.as_deref().unwrap_or(handler);
    let mut unit = log.begin()?;
    let from = unit.cursor(name)?;
    let events = unit.events_after(from, batch)?;
    if events.is_empty() {
        return Ok(None);
    }
    // The events the subscriber does not want only move its cursor.
    let wanted: Vec<Arc<Event>> = events
        .iter()
        .filter(|e| handler.wants(&e.event_type))
        .cloned()
        .collect();
    let mut done = events.last().map_or(from, |e| e.seq);
    let mut failed = None;
    if !wanted.is_empty() {
        let (back, result) = handler.handle_all(unit, &wanted).await;
        unit = back;
        if let Err((i, e)) = result {
            let event = wanted[i.min(wanted.len() - 1)].clone();
            // Done with every event before the failed one, wanted or not.
            done = events
                .iter()
                .take_while(|x| x.seq < event.seq)
                .last()
                .map_or(from, |x| x.seq);
            failed = Some((event, e));
        }
    }
    Ok(Some(Applied {
        unit,
        from,
        done,
        failed,
    }))
}
