//! The newest committed events, kept in memory, so that subscribers reading close behind the
//! head (the usual case) share the events the writer just committed instead of each reading
//! and decoding them from the database again. What is not here any more is read from the
//! database as before.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use crate::event::Event;

/// How many events are kept.
const CAPACITY: usize = 65_536;

/// The last [`CAPACITY`] committed events, in sequence order, without gaps.
#[derive(Default)]
pub(crate) struct Tail {
    events: RwLock<VecDeque<Arc<Event>>>,
}

impl Tail {
    /// Appends the events of one committed batch, in sequence order; they follow on the ones
    /// before without a gap.
    pub(crate) fn push(&self, batch: Vec<Arc<Event>>) {
        if batch.is_empty() {
            return;
        }
        assert!(
            batch.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "a batch's events follow each other"
        );
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        // A gap (events committed while nobody pushed) makes what is held useless.
        if events.back().is_some_and(|last| last.seq + 1 != batch[0].seq) {
            events.clear();
        }
        events.extend(batch);
        let excess = events.len().saturating_sub(CAPACITY);
        events.drain(..excess);
    }

    /// Up to `limit` events with a sequence number above `after` and at most `upto`, if every
    /// one of them is held; `None` sends the caller to the database.
    pub(crate) fn after(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        let first = events.front()?.seq;
        let last = events.back()?.seq;
        if after + 1 < first || upto > last {
            return None;
        }
        if after >= upto {
            return Some(Vec::new());
        }
        let start = (after + 1 - first) as usize;
        let end = ((upto - first + 1) as usize).min(start + limit);
        Some(events.range(start..end).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            event_id: seq.to_string(),
            event_type: "E".into(),
            timestamp: String::new(),
            source: "s".into(),
            key: None,
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            correlation_id: None,
            causation_id: None,
        })
    }

    fn seqs(v: Option<Vec<Arc<Event>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn serves_what_it_holds_and_nothing_else() {
        let t = Tail::default();
        assert_eq!(seqs(t.after(0, 0, 10)), None, "empty: read the database");
        t.push((5..=9).map(event).collect());
        assert_eq!(seqs(t.after(4, 9, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(t.after(6, 8, 10)), Some(vec![7, 8]));
        assert_eq!(seqs(t.after(4, 9, 2)), Some(vec![5, 6]));
        assert_eq!(seqs(t.after(3, 9, 10)), None, "event 4 is not held");
        assert_eq!(seqs(t.after(4, 10, 10)), None, "event 10 is not committed yet");
        assert_eq!(seqs(t.after(9, 9, 10)), Some(vec![]));
        // A gap clears it.
        t.push((12..=13).map(event).collect());
        assert_eq!(seqs(t.after(4, 9, 10)), None);
        assert_eq!(seqs(t.after(11, 13, 10)), Some(vec![12, 13]));
    }
}
