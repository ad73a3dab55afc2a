//! One subscriber's task in one partition: it goes through the events of every partition the
//! subscriber reads there (its lanes, one per source partition, each with its own cursor kept
//! in this partition), step after step. A step takes one lane's events after its cursor and
//! applies them in one unit of work that moves that cursor past them; a failing event is
//! retried with backoff (the other lanes go on meanwhile) and parked as a dead letter after the
//! last attempt.
//!
//! One task per partition, not per lane: the lanes of a partition write the same state (a
//! product's stock, whichever partition the order came from), and would only make each other's
//! commits conflict if they ran at once.
//!
//! Over another partition's events, most are for other partitions: the cursor moves past those
//! without a commit of its own (it moves durably with the next event handled, after
//! [`SKIP_COMMIT`] events, or once the task has been idle for [`SKIP_FLUSH`]), and without a
//! read of this partition's database, so that reading the events of N partitions costs little.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use tokio::sync::watch;
use tokio::time::Instant;

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

/// How long a task that passed over events waits idle before it moves its cursors durably.
const SKIP_FLUSH: Duration = Duration::from_millis(500);

/// How often a subscriber on a host that is not the cluster's writer looks again.
const NOT_WRITER_POLL: Duration = Duration::from_millis(100);

/// One lane of a task: the events of partition `source`, and where the task stands in them.
pub(super) struct Source {
    pub(super) log: Log,
    pub(super) partition: u32,
    /// The cursor's name (and the dead letters').
    pub(super) cursor: String,
    pub(super) failing: Arc<Mutex<Option<Failing>>>,
    /// Events per step now: halved after a conflict, so a large step that keeps losing races
    /// with concurrent writers still makes progress; back to the policy's size after a commit.
    pub(super) batch: usize,
    /// Where the cursor durably stands, as last read or committed (`None`: read it again).
    pub(super) durable: Option<u64>,
    /// Where it stands past events none of which were for this partition, ahead of `durable`.
    pub(super) skipped_to: Option<u64>,
    /// The event failing at the cursor, and how many attempts it has had.
    pub(super) attempts: (u64, u32),
    /// Not before then: the lane waits out a backoff.
    pub(super) retry_at: Option<Instant>,
}

impl Source {
    pub(super) fn new(log: Log, partition: u32, cursor: String, batch: usize) -> Self {
        Source {
            log,
            partition,
            cursor,
            failing: Arc::new(Mutex::new(None)),
            batch,
            durable: None,
            skipped_to: None,
            attempts: (0, 0),
            retry_at: None,
        }
    }

    /// Where the lane stands, as far as the task knows without a read.
    fn at(&self) -> Option<u64> {
        let durable = self.durable?;
        Some(self.skipped_to.filter(|s| *s > durable).unwrap_or(durable))
    }

    fn set_failing(&self, failing: Option<Failing>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }
}

pub(super) struct Worker {
    pub(super) partitions: Partitions,
    /// The partition the events are handled (and the cursors kept) in.
    pub(super) partition: u32,
    pub(super) sources: Vec<Source>,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) policy: RetryPolicy,
    pub(super) run: watch::Receiver<Run>,
    /// Wakes the task when an operator moved one of its cursors (no new event would).
    pub(super) nudge: Arc<tokio::sync::Notify>,
    /// How far each of the subscriber's lanes has gone (this task tells its own).
    pub(super) progress: Arc<Progress>,
}

/// What one step of a lane did.
enum Step {
    /// Nothing to do: wait for new events.
    Idle,
    /// The next event's cause is still to be handled by another lane: wait for it to move.
    Waiting,
    /// Progress was made (or a conflict asks for an immediate retry).
    Again,
    /// The event at the cursor failed; wait before trying it again.
    Backoff(Duration),
}

impl Worker {
    fn target(&self) -> &Log {
        self.partitions.log(self.partition)
    }

    /// The subscriber's name, for log lines (its lanes' cursors are named after it).
    fn name(&self) -> &str {
        self.sources.first().map_or("a subscriber", |s| {
            super::cursor_lane(&s.cursor, self.partition).0
        })
    }

    fn lane(&self, source: u32) -> Lane<'_> {
        Lane {
            partitions: &self.partitions,
            partition: self.partition,
            source,
        }
    }

    /// Tells the subscriber's other tasks (and its status) that lane `i` is done with every
    /// event up to `seq`.
    fn done_with(&self, i: usize, seq: u64) {
        self.progress.set(self.partition, self.sources[i].partition, seq);
    }

    pub(super) async fn run(mut self) {
        let mut heads: Vec<watch::Receiver<u64>> = self.sources.iter().map(|s| s.log.watch_head()).collect();
        let mut moved = self.progress.watch();
        let mut next = 0;
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
            for h in &mut heads {
                h.borrow_and_update();
            }
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
            // One step per lane that has something to do, starting after the last served.
            let (mut progressed, mut waiting) = (false, false);
            let mut wake: Option<Instant> = None;
            let n = self.sources.len();
            for k in 0..n {
                let i = (next + k) % n;
                let now = Instant::now();
                if let Some(at) = self.sources[i].retry_at {
                    if at > now {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        continue;
                    }
                    self.sources[i].retry_at = None;
                }
                match self.step(i).await {
                    Step::Idle => {}
                    Step::Waiting => waiting = true,
                    Step::Again => progressed = true,
                    Step::Backoff(d) => {
                        let at = now + d;
                        self.sources[i].retry_at = Some(at);
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
            }
            next = (next + 1) % n.max(1);
            if progressed {
                // Let the other tasks on this thread have a turn between rounds.
                tokio::task::yield_now().await;
                continue;
            }
            let skipped = self.sources.iter().any(|s| s.skipped_to.is_some());
            tokio::select! {
                changed = self.run.changed() => if changed.is_err() { return },
                _ = any_changed(&mut heads) => {},
                _ = moved.changed(), if waiting => {},
                _ = self.nudge.notified() => self.forget_positions(),
                _ = sleep_until(wake), if wake.is_some() => {},
                _ = tokio::time::sleep(SKIP_FLUSH), if skipped && !waiting => self.flush().await,
            }
        }
    }

    /// An operator moved a cursor: read every lane's position again.
    fn forget_positions(&mut self) {
        for s in &mut self.sources {
            s.durable = None;
            s.skipped_to = None;
            s.retry_at = None;
        }
    }

    /// Moves the cursors durably past the events passed over.
    async fn flush(&mut self) {
        let Ok(mut unit) = self.partitions.begin(self.partition) else {
            return;
        };
        let mut moves = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let Some(to) = s.skipped_to else { continue };
            let Ok(from) = unit.cursor(&s.cursor) else {
                return;
            };
            if to > from {
                unit.move_cursor(&s.cursor, from, to);
                moves.push((i, to));
            }
        }
        if moves.is_empty() {
            for s in &mut self.sources {
                s.skipped_to = None;
            }
            return;
        }
        if let Err(e) = self.target().commit(unit).await {
            // A step committed meanwhile, or an operator moved a cursor: read them again.
            if !matches!(e, CommitError::Conflict | CommitError::Closed) {
                tracing::warn!(
                    "moving {}'s cursors past events it does not want failed, and is tried again: {e}",
                    self.name()
                );
            }
            for s in &mut self.sources {
                s.durable = None;
            }
            return;
        }
        for (i, to) in moves {
            let s = &mut self.sources[i];
            s.durable = Some(to);
            s.skipped_to = None;
        }
    }

    async fn step(&mut self, i: usize) -> Step {
        // A panicking handler fails the step (which is retried after a backoff); it does not
        // end the subscriber's task.
        let applied = AssertUnwindSafe(self.apply_batch(i)).catch_unwind().await;
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
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("its events could not be read: {e}"),
                    _ => "its handler panicked".to_string(),
                };
                tracing::error!(
                    "{}'s step at {} failed, {why}; retried after {:?}",
                    self.name(),
                    self.sources[i].cursor,
                    self.policy.first_backoff
                );
                self.sources[i].durable = None;
                return Step::Backoff(self.policy.first_backoff);
            }
        };
        let mut cursor_to = done;
        let mut wait = None;
        if let Some((event, error)) = failed {
            let s = &mut self.sources[i];
            // Every attempt counts, also one that followed progress in the same step.
            if s.attempts.0 != event.seq {
                s.attempts = (event.seq, 0);
            }
            s.attempts.1 += 1;
            let attempts = s.attempts.1;
            // A transient failure (a dependency that is down) waits as long as it takes.
            let parked = !error.transient && attempts >= self.policy.max_attempts.max(1);
            self.handler.on_failure(&event, &error, attempts, parked);
            let s = &mut self.sources[i];
            if parked {
                unit.park(&s.cursor, &event, &error.message, attempts);
                cursor_to = event.seq;
            } else {
                s.set_failing(Some(Failing {
                    partition: s.partition,
                    seq: event.seq,
                    attempts,
                    error: error.message.clone(),
                }));
                let backoff = self.backoff(attempts);
                if done == from {
                    return Step::Backoff(backoff);
                }
                // The events before it are done: commit them, then wait.
                wait = Some(backoff);
            }
        }
        let cursor = self.sources[i].cursor.clone();
        if cursor_to != from {
            unit.move_cursor(&cursor, from, cursor_to);
        }
        match self.target().commit(unit).await {
            Ok(_) => {
                let s = &mut self.sources[i];
                s.batch = self.policy.batch.max(1);
                s.durable = Some(cursor_to);
                s.skipped_to = None;
                self.done_with(i, cursor_to);
                match wait {
                    Some(d) => Step::Backoff(d),
                    None => {
                        self.sources[i].set_failing(None);
                        Step::Again
                    }
                }
            }
            Err(CommitError::Conflict) => {
                let s = &mut self.sources[i];
                s.batch = (s.batch / 2).max(1);
                s.durable = None;
                Step::Again
            }
            Err(e) => {
                if !matches!(e, CommitError::Closed) {
                    tracing::warn!(
                        "{}'s step at {} did not commit, and is tried again: {e}",
                        self.name(),
                        self.sources[i].cursor
                    );
                }
                self.sources[i].durable = None;
                Step::Backoff(self.policy.first_backoff)
            }
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

/// Waits until one of `heads` changes (or its log is gone, which the run state then tells).
async fn any_changed(heads: &mut [watch::Receiver<u64>]) {
    let changes: Vec<_> = heads.iter_mut().map(|h| Box::pin(h.changed())).collect();
    if changes.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures_util::future::select_all(changes).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
    /// Applies up to a batch of lane `i`'s events after its cursor in one unit, stopping
    /// before the first that fails. The cursor is not moved: the step decides where to.
    async fn apply_batch(&mut self, i: usize) -> Result<Batch, StorageError> {
        let pinned = self.handler.pin();
        let handler: &dyn EventHandler = pinned.as_deref().unwrap_or(&*self.handler);
        let own = self.sources[i].partition == self.partition;
        let mut unit = None;
        // Where the lane stands: known from its last step, else read (in the unit it reads in).
        let durable = match self.sources[i].durable {
            Some(d) => d,
            None => {
                let u = self.partitions.begin(self.partition)?;
                let d = u.cursor(&self.sources[i].cursor)?;
                unit = Some(u);
                self.sources[i].durable = Some(d);
                d
            }
        };
        let s = &self.sources[i];
        let from = s.at().unwrap_or(durable);
        self.done_with(i, from);
        if s.log.head() <= from {
            return Ok(Batch::Empty);
        }
        let (batch, source) = (s.batch, s.partition);
        // Its own partition's events are read in the unit, so the handler sees the state they
        // were committed with; another partition's are read where they are kept in memory.
        let mut events = if own {
            let u = match unit.take() {
                Some(u) => u,
                None => self.partitions.begin(self.partition)?,
            };
            let events = u.events_after(from, batch)?;
            unit = Some(u);
            events
        } else {
            s.log.events_after_shared(from, batch)?
        };
        if events.is_empty() {
            return Ok(Batch::Empty);
        }
        // The events the subscriber does not want here only move its cursor.
        let lane = self.lane(source);
        let mut wanted: Vec<Arc<Event>> = Vec::new();
        for (k, e) in events.iter().enumerate() {
            if !handler.wants(&e.event_type) || lane.placed(handler, e, source) != self.partition {
                continue;
            }
            if self.partitions.count() > 1 && lane.must_wait(handler, &self.progress, e)? {
                // Only the events before it are taken now.
                events.truncate(k);
                break;
            }
            wanted.push(e.clone());
        }
        if events.is_empty() {
            return Ok(Batch::Waiting);
        }
        let mut done = events.last().map_or(from, |e| e.seq);
        if wanted.is_empty() && done - durable < SKIP_COMMIT {
            self.sources[i].skipped_to = Some(done);
            self.done_with(i, done);
            return Ok(Batch::Passed);
        }
        let mut unit = match unit {
            Some(u) => u,
            None => self.partitions.begin(self.partition)?,
        };
        let mut failed = None;
        if !wanted.is_empty() {
            let (back, result) = handler.handle_all(unit, &wanted).await;
            unit = back;
            if let Err((k, e)) = result {
                let event = wanted[k.min(wanted.len() - 1)].clone();
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
