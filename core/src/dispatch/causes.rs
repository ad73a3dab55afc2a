//! Causal order across partitions. Within a partition a subscriber handles events in log
//! order; across partitions there is no such order, but there is cause and effect: an event
//! published by a unit that handled another (its `causationId` names it) reaches a subscriber
//! only after that subscriber has handled the cause, or passed it (parked it as a dead letter,
//! or did not want it there). So a compensation never overtakes the shortage that asked for
//! it, whichever partitions the two were written in.
//!
//! Each of a subscriber's workers publishes how far it has gone through its source
//! ([`Progress`]); a worker about to hand over an effect whose cause lies in another worker's
//! lane waits until that lane has passed the cause. The wait cannot close a cycle: a worker
//! only ever waits for an event committed before the one it holds.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::handler::{EventHandler, Placement};
use crate::error::StorageError;
use crate::event::{Event, parse_event_id};
use crate::partitions::Partitions;

/// How far each of one subscriber's workers has gone: for each lane (the partition its events
/// are handled in, the partition they come from), the last event it is done with.
pub(super) struct Progress {
    lanes: Vec<((u32, u32), AtomicU64)>,
    changed: watch::Sender<u64>,
}

impl Progress {
    /// The progress of `lanes`, each starting where `start` says its cursor stands.
    pub(super) fn new(lanes: &[(u32, u32)], start: impl Fn(u32, u32) -> u64) -> Self {
        Progress {
            lanes: lanes
                .iter()
                .map(|&(p, q)| ((p, q), AtomicU64::new(start(p, q))))
                .collect(),
            changed: watch::channel(0).0,
        }
    }

    fn lane(&self, partition: u32, source: u32) -> Option<&AtomicU64> {
        self.lanes
            .iter()
            .find(|(l, _)| *l == (partition, source))
            .map(|(_, at)| at)
    }

    /// Lane (`partition`, `source`) is done with every event up to `seq` (an operator's rewind
    /// may move it back). Wakes the workers waiting on it.
    pub(super) fn set(&self, partition: u32, source: u32, seq: u64) {
        let Some(at) = self.lane(partition, source) else {
            return;
        };
        if at.swap(seq, Ordering::AcqRel) != seq {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver that changes whenever a lane moves.
    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Where lane (`partition`, `source`) stands, if the subscriber has it.
    pub(super) fn at(&self, partition: u32, source: u32) -> Option<u64> {
        self.lane(partition, source).map(|at| at.load(Ordering::Acquire))
    }

    /// Whether lane (`partition`, `source`) is done with event `seq`. A lane the subscriber
    /// does not have can hold nothing up.
    fn passed(&self, partition: u32, source: u32, seq: u64) -> bool {
        self.lane(partition, source)
            .is_none_or(|at| at.load(Ordering::Acquire) >= seq)
    }
}

/// Where a worker stands: the lane it is, and the partitions.
pub(super) struct Lane<'a> {
    pub(super) partitions: &'a Partitions,
    pub(super) partition: u32,
    pub(super) source: u32,
}

impl Lane<'_> {
    /// The partition `event` (of partition `source`) is handled in by `handler`.
    pub(super) fn placed(&self, handler: &dyn EventHandler, event: &Event, source: u32) -> u32 {
        match handler.placement(event) {
            Placement::Here => source,
            Placement::Id(id) => self.partitions.of_id(id),
            Placement::Home => 0,
        }
    }

    /// Whether `event`, about to be handled in this lane, must wait: its cause is an event of
    /// another lane of this subscriber that that lane has not passed yet.
    pub(super) fn must_wait(
        &self,
        handler: &dyn EventHandler,
        progress: &Progress,
        event: &Event,
    ) -> Result<bool, StorageError> {
        let Some((log_id, seq)) = event.causation_id.as_deref().and_then(parse_event_id) else {
            return Ok(false);
        };
        let Some(q) = self.partitions.logs().iter().position(|l| l.id() == log_id) else {
            return Ok(false);
        };
        let q = q as u32;
        let log = self.partitions.log(q);
        // A cause is committed before its effect; a "cause" not in the log is no cause.
        if seq == 0 || seq > log.head() {
            return Ok(false);
        }
        // Its own partition's earlier events a worker that reads only those handles in order.
        if q == self.source && q == self.partition && matches!(handler.reach(), super::Reach::Own) {
            return Ok(false);
        }
        let Some(cause) = log.events_after_shared(seq - 1, 1)?.into_iter().next() else {
            return Ok(false);
        };
        if cause.seq != seq || !handler.wants(&cause.event_type) {
            return Ok(false);
        }
        let at = self.placed(handler, &cause, q);
        if (at, q) == (self.partition, self.source) {
            // The same lane: it came earlier in this very lane.
            return Ok(false);
        }
        Ok(!progress.passed(at, q, seq))
    }
}
