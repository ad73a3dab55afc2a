//! One subscriber's task in one partition, over one partition's events: step after step, the
//! events after its cursor are applied in one unit of work that moves the cursor past them; a
//! failing event is retried with backoff and parked as a dead letter after the last attempt.
//!
//! Over another partition's events, most are for other partitions: the cursor moves past those
//! without a commit of its own (it moves durably with the next event handled, after
//! [`SKIP_COMMIT`] events, or once the worker has been idle for [`SKIP_FLUSH`]), so that reading
//! the events of N partitions costs no commits.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use tokio::sync::watch;

use super::Run;
use super::causes::{Lane, Progress};
use super::handler::{EventHandler, Failing, HandlerError, RetryPolicy};
use crate::error::{CommitError, StorageError};
use crate::event::Event;
use crate::log::Log;
use crate::partitions::Partitions;
use crate::unit::Unit;

/// Events passed over (none of them for this partition) before the cursor moves durably.
const SKIP_COMMIT: u64 = 4096;

/// How long a worker that passed over events waits idle before it moves its cursor durably.
const SKIP_FLUSH: Duration = Duration::from_millis(500);

pub(super) struct Worker {
    pub(super) partitions: Partitions,
    /// The partition the events are handled (and the cursor kept) in.
    pub(super) partition: u32,
    /// The partition whose events it goes through.
    pub(super) source: Log,
    pub(super) source_partition: u32,
    /// The cursor's name (and the dead letters').
    pub(super) cursor: String,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) policy: RetryPolicy,
    pub(super) run: watch::Receiver<Run>,
    pub(super) failing: Arc<Mutex<Option<Failing>>>,
    pub(super) nudge: Arc<tokio::sync::Notify>,
    /// Events per step now: halved after a conflict, so a large step that keeps losing races
    /// with concurrent writers still makes progress; back to the policy's size after a commit.
    pub(super) batch: usize,
    /// Where the cursor stands past events none of which were for this partition, ahead of
    /// where it durably stands.
    pub(super) skipped_to: Option<u64>,
    /// How far each of the subscriber's workers has gone (this one tells its own).
    pub(super) progress: Arc<Progress>,
}

/// How often a subscriber on a host that is not the cluster's writer looks again.
const NOT_WRITER_POLL: Duration = Duration::from_millis(100);

/// What one step did.
enum Step {
    /// Nothing to do: wait for new events.
    Idle,
    /// The next event's cause is still to be handled by another of the subscriber's workers:
    /// wait for it to move.
    Waiting,
    /// Progress was made (or a conflict asks for an immediate retry).
    Again,
    /// The event at the cursor failed; wait before trying again.
    Backoff(Duration),
}

impl Worker {
    fn target(&self) -> &Log {
        self.partitions.log(self.partition)
    }

    fn lane(&self) -> Lane<'_> {
        Lane {
            partitions: &self.partitions,
            partition: self.partition,
            source: self.source_partition,
        }
    }

    /// Tells the subscriber's other workers (and its status) that this one is done with
    /// every event up to `seq`.
    fn done_with(&self, seq: u64) {
        self.progress.set(self.partition, self.source_partition, seq);
    }
}

impl Worker {
    pub(super) async fn run(mut self) {
        let mut head = self.source.watch_head();
        let mut moved = self.progress.watch();
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
            moved.borrow_and_update();
            // In a cluster, subscribers run on the writer's host only: there their steps
            // commit without a hop, and no other host spends work that would only conflict.
            // The cursors are in the replicated log, so a new writer's subscribers go on
            // exactly where the old one's stopped.
            if !self.target().is_writer() {
                tokio::select! {
                    changed = self.run.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(NOT_WRITER_POLL) => {},
                }
                continue;
            }
            let wait = match self.step(&mut attempts).await {
                Step::Again => continue,
                Step::Idle if self.skipped_to.is_some() => {
                    tokio::select! {
                        changed = self.run.changed() => if changed.is_err() { return },
                        _ = head.changed() => {},
                        _ = self.nudge.notified() => {},
                        _ = tokio::time::sleep(SKIP_FLUSH) => self.flush().await,
                    }
                    continue;
                }
                Step::Waiting => {
                    tokio::select! {
                        changed = self.run.changed() => if changed.is_err() { return },
                        _ = moved.changed() => {},
                        _ = self.nudge.notified() => {},
                        // A cause in another lane is passed by that lane's own progress; the
                        // timer only guards against a wake-up that never comes.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    }
                    continue;
                }
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

    /// Moves the cursor durably past the events passed over.
    async fn flush(&mut self) {
        let Some(to) = self.skipped_to else { return };
        let Ok(mut unit) = self.partitions.begin(self.partition) else {
            return;
        };
        let Ok(from) = unit.cursor(&self.cursor) else {
            return;
        };
        if to > from {
            unit.move_cursor(&self.cursor, from, to);
            if self.target().commit(unit).await.is_err() {
                // A step committed meanwhile: the next one carries the move.
                return;
            }
        }
        self.skipped_to = None;
    }

    async fn step(&mut self, attempts: &mut (u64, u32)) -> Step {
        // A panicking handler fails the step (which is retried after a backoff); it does not
        // end the subscriber's task.
        let applied = AssertUnwindSafe(self.apply_batch()).catch_unwind().await;
        let Applied {
            mut unit,
            from,
            done,
            failed,
        } = match applied {
            Ok(Ok(Batch::Applied(v))) => *v,
            Ok(Ok(Batch::Empty)) => return Step::Idle,
            Ok(Ok(Batch::Waiting)) => return Step::Waiting,
            Ok(Ok(Batch::Passed)) => return Step::Again,
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
                unit.park(&self.cursor, &event, &error.message, attempts.1);
                cursor_to = event.seq;
            } else {
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failing {
                    partition: self.source_partition,
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
            unit.move_cursor(&self.cursor, from, cursor_to);
        }
        match self.target().commit(unit).await {
            Ok(_) => {
                self.batch = self.policy.batch.max(1);
                self.skipped_to = None;
                self.done_with(cursor_to);
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

/// What one step applied: the unit, where the cursor durably was (`from`) and the last event
/// it is done with (`done`), and the event that failed, if one did.
struct Applied {
    unit: Unit,
    from: u64,
    done: u64,
    failed: Option<(Arc<Event>, HandlerError)>,
}

/// What one step read.
enum Batch {
    /// Nothing after the cursor.
    Empty,
    /// The first event to handle waits for its cause (see [`super::causes`]).
    Waiting,
    /// Events none of which were for this partition: passed over without a commit.
    Passed,
    /// Events applied in a unit to commit (boxed: a unit is large, and the other answers are
    /// not).
    Applied(Box<Applied>),
}

impl Worker {
    /// Applies up to `batch` events after the cursor in one unit, stopping before the first
    /// that fails. The cursor is not moved: the step decides where to.
    async fn apply_batch(&mut self) -> Result<Batch, StorageError> {
        let pinned = self.handler.pin();
        let handler: &dyn EventHandler = pinned.as_deref().unwrap_or(&*self.handler);
        let mut unit = self.partitions.begin(self.partition)?;
        let durable = unit.cursor(&self.cursor)?;
        let from = self.skipped_to.filter(|s| *s > durable).unwrap_or(durable);
        self.done_with(from);
        let mut events = if self.source_partition == self.partition {
            unit.events_after(from, self.batch)?
        } else {
            self.source.events_after_shared(from, self.batch)?
        };
        if events.is_empty() {
            return Ok(Batch::Empty);
        }
        // The events the subscriber does not want here only move its cursor.
        let lane = self.lane();
        let mut wanted: Vec<Arc<Event>> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if !handler.wants(&e.event_type)
                || lane.placed(handler, e, self.source_partition) != self.partition
            {
                continue;
            }
            if self.partitions.count() > 1 && lane.must_wait(handler, &self.progress, e)? {
                // Only the events before it are taken now.
                events.truncate(i);
                break;
            }
            wanted.push(e.clone());
        }
        if events.is_empty() {
            return Ok(Batch::Waiting);
        }
        let mut done = events.last().map_or(from, |e| e.seq);
        if wanted.is_empty() && done - durable < SKIP_COMMIT {
            self.skipped_to = Some(done);
            self.done_with(done);
            return Ok(Batch::Passed);
        }
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
        Ok(Batch::Applied(Box::new(Applied {
            unit,
            from: durable,
            done,
            failed,
        })))
    }
}
