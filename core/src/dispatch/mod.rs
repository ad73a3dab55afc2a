//! The dispatcher: delivers committed events to each subscribing context, in log order, from
//! that context's durable cursors.
//!
//! One task per subscriber and partition it is handled in; the task goes through the events of
//! each partition the subscriber reads there (its lanes: its own partition's, or every
//! partition's for a subscriber that handles events where an id they name lives, see
//! [`Reach`]), each lane with a cursor of its own. A step reads a lane's events after its
//! cursor, has the handler apply the ones it wants there inside one unit of work, and commits
//! the unit with the cursor moved past them, so state, published events and cursor change
//! together or not at all. An event whose handler fails is retried with backoff; after the last
//! attempt it is parked as a [`DeadLetter`] and the cursor moves on, so one poisoned event
//! never blocks its subscriber (nor, since each subscriber has its own tasks, any other). A
//! paused subscriber keeps its cursors and catches up when resumed. Across partitions an event
//! waits for its cause (`causes.rs`).
//!
//! [`DeadLetter`]: crate::DeadLetter

mod causes;
mod handler;
mod worker;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use tokio::sync::watch;

pub use handler::{
    CursorStatus, EventHandler, Failing, Handled, HandledAll, HandlerError, Placement, Reach, RetryError,
    RetryPolicy, SubscriberStatus, handle_each,
};
use worker::Worker;

use crate::error::{CommitError, StorageError, SubscribeError};
use crate::log::Log;
use crate::partitions::Partitions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Stopping,
}

/// One of a subscriber's lanes: the events of partition `source`, handled in `partition`.
struct Lane {
    partition: u32,
    source: u32,
    failing: Arc<Mutex<Option<Failing>>>,
}

/// One of a subscriber's tasks: every lane handled in `partition`.
struct Task {
    partition: u32,
    /// Wakes an idle task when an operator moved one of its cursors (no new event would).
    nudge: Arc<tokio::sync::Notify>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

struct Sub {
    handler: Arc<dyn EventHandler>,
    run: watch::Sender<Run>,
    lanes: Vec<Lane>,
    tasks: Vec<Task>,
    progress: Arc<causes::Progress>,
}

/// The name of the cursor (and of the dead letters) of `subscriber`'s events of partition
/// `source` handled in `partition`: the subscriber's name for its own partition's events, as
/// before partitions existed, and `name@source` for another's.
pub fn cursor_name(subscriber: &str, partition: u32, source: u32) -> String {
    if partition == source {
        subscriber.to_string()
    } else {
        format!("{subscriber}@{source}")
    }
}

/// The subscriber and the source partition of cursor `cursor` kept in `partition`: what
/// [`cursor_name`] made it from.
pub fn cursor_lane(cursor: &str, partition: u32) -> (&str, u32) {
    match cursor.rsplit_once('@') {
        Some((name, source)) => match source.parse() {
            Ok(source) => (name, source),
            Err(_) => (cursor, partition),
        },
        None => (cursor, partition),
    }
}

/// Runs the workers of every subscriber. Must be used inside a tokio runtime.
pub struct Dispatcher {
    partitions: Partitions,
    policy: RetryPolicy,
    subs: Mutex<HashMap<String, Sub>>,
    /// This dispatcher among those of the same database: whose its subscriber names are.
    id: u64,
}

/// Hands out dispatcher ids, unique in the process.
static DISPATCHERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Dispatcher {
    /// A dispatcher over `log` (one partition) with no subscribers yet.
    pub fn new(log: Log, policy: RetryPolicy) -> Self {
        Dispatcher::partitioned(Partitions::single(log), policy)
    }

    /// A dispatcher over every partition with no subscribers yet.
    pub fn partitioned(partitions: Partitions, policy: RetryPolicy) -> Self {
        Dispatcher {
            partitions,
            policy,
            subs: Mutex::new(HashMap::new()),
            id: DISPATCHERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The (partition, source) pairs a subscriber of this reach runs a worker for.
    fn lanes_of(&self, reach: Reach) -> Vec<(u32, u32)> {
        let n = self.partitions.count();
        match reach {
            Reach::Own => (0..n).map(|p| (p, p)).collect(),
            Reach::All => (0..n).flat_map(|p| (0..n).map(move |q| (p, q))).collect(),
            Reach::Home => (0..n).map(|q| (0, q)).collect(),
        }
    }

    /// Claims subscriber `name` for this dispatcher before it subscribes (refused like
    /// [`Dispatcher::subscribe`]), so that nothing else takes it meanwhile.
    pub fn claim(&self, name: &str) -> Result<(), SubscribeError> {
        if self.partitions.log(0).claim_subscriber(name, self.id) {
            Ok(())
        } else {
            Err(SubscribeError::NameTaken(name.to_string()))
        }
    }

    /// Gives back a name claimed and never subscribed (a subscriber keeps its name until the
    /// dispatcher shuts down or is dropped).
    pub fn release(&self, name: &str) {
        if !self.lock().contains_key(name) {
            self.partitions.log(0).release_subscriber(name, self.id);
        }
    }

    /// Starts delivering to `name` (running or paused). Replaces a subscriber of that name in
    /// this dispatcher; refused if another dispatcher of the same database delivers to one (the
    /// name is a set of cursors: the two would take each other's events).
    pub fn subscribe(
        &self,
        name: &str,
        handler: Arc<dyn EventHandler>,
        running: bool,
    ) -> Result<(), SubscribeError> {
        self.claim(name)?;
        let (run, run_rx) = watch::channel(if running { Run::Running } else { Run::Paused });
        let mut lanes = Vec::new();
        let pairs = self.lanes_of(handler.reach());
        // Each lane starts where its cursor durably stands; its worker tells better soon.
        let progress = Arc::new(causes::Progress::new(&pairs, |partition, source| {
            self.partitions
                .log(partition)
                .snapshot()
                .and_then(|s| s.cursor(&cursor_name(name, partition, source)))
                .unwrap_or(0)
        }));
        let mut tasks = Vec::new();
        let mut handled_in: Vec<u32> = pairs.iter().map(|(p, _)| *p).collect();
        handled_in.dedup();
        for partition in handled_in {
            let mut sources = Vec::new();
            for &(_, source) in pairs.iter().filter(|(p, _)| *p == partition) {
                let lane = worker::Source::new(
                    self.partitions.log(source).clone(),
                    source,
                    cursor_name(name, partition, source),
                    self.policy.batch.max(1),
                );
                lanes.push(Lane {
                    partition,
                    source,
                    failing: lane.failing.clone(),
                });
                sources.push(lane);
            }
            let nudge = Arc::new(tokio::sync::Notify::new());
            let worker = Worker {
                partitions: self.partitions.clone(),
                partition,
                sources,
                handler: handler.clone(),
                policy: self.policy.clone(),
                run: run_rx.clone(),
                nudge: nudge.clone(),
                progress: progress.clone(),
            };
            tasks.push(Task {
                partition,
                nudge,
                handle: Some(tokio::spawn(worker.run())),
            });
        }
        let old = self.lock().insert(
            name.to_string(),
            Sub {
                handler,
                run,
                lanes,
                tasks,
                progress,
            },
        );
        if let Some(old) = old {
            old.run.send_replace(Run::Stopping);
        }
        Ok(())
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
        type Lanes = Vec<(u32, u32, Option<Failing>)>;
        let (running, lanes, progress): (bool, Lanes, _) = match self.lock().get(name) {
            Some(sub) => (
                *sub.run.borrow() == Run::Running,
                sub.lanes
                    .iter()
                    .map(|l| {
                        let failing = l.failing.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        (l.partition, l.source, failing)
                    })
                    .collect(),
                sub.progress.clone(),
            ),
            None => return Ok(None),
        };
        let mut cursors = Vec::with_capacity(lanes.len());
        let mut failing = None;
        for (partition, source, f) in lanes {
            let durable = self
                .partitions
                .log(partition)
                .snapshot()?
                .cursor(&cursor_name(name, partition, source))?;
            // Events passed over move the cursor durably only now and then: where the worker
            // stands is what the operator is told.
            let cursor = progress
                .at(partition, source)
                .map_or(durable, |at| at.max(durable));
            let head = self.partitions.log(source).head();
            cursors.push(CursorStatus {
                partition,
                source,
                cursor,
                lag: head.saturating_sub(cursor),
            });
            failing = failing.or(f);
        }
        let first = cursors.first().map_or(0, |c| c.cursor);
        // The events not yet passed everywhere: for each partition read, the lane furthest
        // behind on it (with one partition, the head less the cursor).
        let lag = (0..self.partitions.count())
            .map(|q| {
                cursors
                    .iter()
                    .filter(|c| c.source == q)
                    .map(|c| c.lag)
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        if self.partitions.count() == 1 {
            cursors.clear();
        }
        Ok(Some(SubscriberStatus {
            running,
            cursor: first,
            lag,
            failing,
            cursors,
        }))
    }

    /// Has `subscriber` handle its dead letter again, now: event `seq` of partition `source`,
    /// parked in whichever partition it was handled in. On success the letter is removed in
    /// the same unit that applies the event; on failure it stays parked.
    pub async fn retry_dead_letter(&self, subscriber: &str, source: u32, seq: u64) -> Result<(), RetryError> {
        let n = self.partitions.count();
        if source >= n {
            return Err(RetryError::NotFound);
        }
        let handler = self
            .lock()
            .get(subscriber)
            .map(|s| s.handler.clone())
            .ok_or(RetryError::NotFound)?;
        let mut found = None;
        for partition in 0..n {
            let cursor = cursor_name(subscriber, partition, source);
            let letter = self
                .partitions
                .log(partition)
                .snapshot()
                .and_then(|s| s.dead_letter(&cursor, seq))
                .map_err(RetryError::Storage)?;
            if let Some(letter) = letter {
                found = Some((partition, cursor, letter));
                break;
            }
        }
        let (partition, subscriber, letter) = found.ok_or(RetryError::NotFound)?;
        let subscriber = subscriber.as_str();
        let log = self.partitions.log(partition);
        let mut unit = self.partitions.begin(partition).map_err(RetryError::Storage)?;
        unit.caused_by(&letter.event);
        // A panicking handler fails the retry; it does not take the dispatcher down.
        let handled = AssertUnwindSafe(handler.handle(unit, &letter.event))
            .catch_unwind()
            .await;
        let (mut unit, result) =
            handled.map_err(|_| RetryError::Failed(HandlerError::new("the handler panicked")))?;
        result.map_err(RetryError::Failed)?;
        unit.unpark(subscriber, seq);
        log.commit(unit).await.map_err(RetryError::Commit)?;
        Ok(())
    }

    /// Moves `name`'s cursor over partition `source`'s events, kept in `partition`, to `to`
    /// (an operator rewinding or skipping). Events after `to` are delivered (again); handlers
    /// are idempotent, so redelivery changes nothing.
    pub async fn set_cursor(
        &self,
        name: &str,
        partition: u32,
        source: u32,
        to: u64,
    ) -> Result<(), CommitError> {
        let n = self.partitions.count();
        if partition >= n || source >= n {
            return Err(CommitError::Unavailable(format!("there are {n} partitions")));
        }
        let cursor = cursor_name(name, partition, source);
        let log = self.partitions.log(partition);
        let head = self.partitions.log(source).head();
        // The subscriber may commit a step at the same moment; the operator's move wins on a
        // later try.
        let mut tries = 0;
        loop {
            let mut unit = log.begin().map_err(CommitError::Storage)?;
            let from = unit.cursor(&cursor).map_err(CommitError::Storage)?;
            unit.move_cursor(&cursor, from, to.min(head));
            match log.commit(unit).await {
                Ok(_) => break,
                Err(CommitError::Conflict) if tries < 20 => tries += 1,
                Err(e) => return Err(e),
            }
        }
        if let Some(sub) = self.lock().get(name) {
            sub.progress.set(partition, source, to.min(head));
            for task in sub.tasks.iter().filter(|t| t.partition == partition) {
                task.nudge.notify_one();
            }
        }
        Ok(())
    }

    /// Stops `name` after the step it is in, waits for its workers, and gives the name back.
    /// Its cursors stay where they are: subscribed again, it goes on from there. Returns false
    /// if there is no such subscriber.
    pub async fn unsubscribe(&self, name: &str) -> bool {
        let Some(mut sub) = self.lock().remove(name) else {
            return false;
        };
        sub.run.send_replace(Run::Stopping);
        for handle in sub.tasks.iter_mut().filter_map(|t| t.handle.take()) {
            if let Err(e) = handle.await {
                tracing::error!("a worker of subscriber {name} ended badly: {e}");
            }
        }
        self.partitions.log(0).release_subscriber(name, self.id);
        true
    }

    /// Stops every subscriber after the step it is in, and waits for them.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = self
            .lock()
            .values_mut()
            .flat_map(|s| {
                s.run.send_replace(Run::Stopping);
                s.tasks
                    .iter_mut()
                    .filter_map(|t| t.handle.take())
                    .collect::<Vec<_>>()
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!("a subscriber's worker ended badly: {e}");
            }
        }
        // Its workers are done: the names may go to another dispatcher.
        self.partitions.log(0).release_subscribers(self.id);
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
        self.partitions.log(0).release_subscribers(self.id);
    }
}
