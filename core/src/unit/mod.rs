//! The unit of work: everything one request (with every synchronous call it makes) or one
//! subscriber step reads and writes, kept in memory until it commits as one redb transaction.
//!
//! Reads come from one committed [`Snapshot`] (plus the unit's own writes). The unit remembers
//! what it read, and the writer commits it only if none of that changed meanwhile (optimistic
//! concurrency, validated by value), so units run concurrently yet commit as if one at a time.
//! Savepoints let a failed synchronous call be undone without aborting its caller.

mod beyond;

// The maps of a unit and of the id sequences are on every request's path: foldhash is
// several times quicker than SipHash on short keys, and still seeded per process.
use foldhash::HashMap;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::changes::{ChangeSet, CursorMove, ScanRead, SequenceKey, StateKey};
use crate::dead::{DeadLetter, DeadWrite};
use crate::error::StorageError;
use crate::event::{Event, NewEvent};
use crate::ids::IdSequences;
use crate::index::IndexKey;
use crate::store::{IndexPage, Snapshot};
use crate::tail::Tail;
use crate::writer::InFlight;
use beyond::{Beyond, View};

/// A point to roll a unit back to.
#[derive(Debug, Clone, Copy)]
pub struct Savepoint {
    undo: usize,
    index_undo: usize,
    events: usize,
}

/// The reads and writes of one unit of work. Create it with [`crate::Log::begin`], commit it
/// with [`crate::Log::commit`]; dropping it aborts it.
pub struct Unit {
    snapshot: Snapshot,
    /// The head when the unit began: every event up to it is in the snapshot.
    visible: u64,
    /// The writer's generation when the unit began: every batch up to it is in the snapshot.
    generation: u64,
    /// The replicated log's position when the unit began (0 outside a cluster).
    begun_at: u64,
    ids_source: Arc<IdSequences>,
    tail: Arc<Tail>,
    /// (correlation id, causation id) given to the events it publishes from now on.
    cause: (Option<String>, Option<String>),
    reads: HashMap<StateKey, Option<Vec<u8>>>,
    scans: Vec<ScanRead>,
    writes: HashMap<StateKey, Option<Vec<u8>>>,
    undo: Vec<(StateKey, Option<Option<Vec<u8>>>)>,
    /// Index writes: entry → put (`true`) or delete; the last write of an entry wins.
    index: HashMap<IndexKey, bool>,
    index_undo: Vec<(IndexKey, Option<bool>)>,
    events: Vec<NewEvent>,
    cursors: Vec<CursorMove>,
    dead: Vec<DeadWrite>,
    ids: HashMap<SequenceKey, u64>,
    /// What it reads beyond its partition, with several partitions (`beyond.rs`).
    beyond: Option<Box<Beyond>>,
    /// Its place among the log's units being written, from its first write.
    in_flight: InFlight,
}

impl Unit {
    pub(crate) fn new(
        snapshot: Snapshot,
        (visible, generation, begun_at): (u64, u64, u64),
        ids_source: Arc<IdSequences>,
        tail: Arc<Tail>,
        in_flight: InFlight,
    ) -> Self {
        Unit {
            snapshot,
            visible,
            generation,
            begun_at,
            ids_source,
            tail,
            cause: (None, None),
            reads: HashMap::default(),
            scans: Vec::new(),
            writes: HashMap::default(),
            undo: Vec::new(),
            index: HashMap::default(),
            index_undo: Vec::new(),
            events: Vec::new(),
            cursors: Vec::new(),
            dead: Vec::new(),
            ids: HashMap::default(),
            beyond: None,
            in_flight,
        }
    }

    /// Makes this a unit of partition `own` among `logs`, able to read the others.
    pub(crate) fn reach(&mut self, logs: Arc<[crate::log::Log]>, own: u32) {
        self.beyond = Some(Box::new(Beyond::new(logs, own)));
    }

    /// From now on, the unit reads every partition (merged) and writes none.
    pub(crate) fn read_all(&mut self) -> Result<(), StorageError> {
        if let Some(b) = self.beyond.as_deref_mut() {
            b.enter(View::All);
        }
        Ok(())
    }

    /// The partition this unit runs and commits in (0 without partitions).
    pub fn partition(&self) -> u32 {
        self.beyond.as_ref().map_or(0, |b| b.own)
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> u32 {
        self.beyond.as_ref().map_or(1, |b| b.count())
    }

    /// Until [`Unit::leave`], reads come from partition `p` as it is committed now (not
    /// checked at commit), and writes are refused: for a synchronous call into an entity of
    /// another partition. Entering the unit's own partition changes nothing but must be left
    /// all the same.
    pub fn enter(&mut self, p: u32) {
        if let Some(b) = self.beyond.as_deref_mut() {
            b.enter(View::One(p));
        }
    }

    /// Until [`Unit::leave`], reads come from every partition (merged) and writes are
    /// refused: for a synchronous call that lists a collection.
    pub fn enter_all(&mut self) {
        if let Some(b) = self.beyond.as_deref_mut() {
            b.enter(View::All);
        }
    }

    /// Leaves the view [`Unit::enter`] or [`Unit::enter_all`] entered.
    pub fn leave(&mut self) {
        if let Some(b) = self.beyond.as_deref_mut() {
            b.leave();
        }
    }

    /// The first write this unit attempted outside its partition, if it did: then it must not
    /// commit ([`crate::Log::commit`] refuses it).
    pub fn violation(&self) -> Option<&str> {
        self.beyond.as_ref().and_then(|b| b.violation.as_deref())
    }

    /// The view the unit reads in now, other than its own partition.
    fn view(&self) -> Option<View> {
        self.beyond.as_ref().and_then(|b| b.view()).filter(|v| match v {
            // A view of its own partition reads as the unit does.
            View::One(p) => *p != self.partition(),
            View::All => true,
        })
    }

    /// Whether a write must be refused here (in a view, or for an entity `id` of another
    /// partition); if so the unit is marked with `what`.
    fn refused(&mut self, id: Option<u64>, what: impl FnOnce() -> String) -> bool {
        let Some(b) = self.beyond.as_deref_mut() else {
            return false;
        };
        let foreign = id.is_some_and(|id| b.of_id(id) != b.own);
        if b.view().is_some() || foreign {
            b.refuse(what);
            return true;
        }
        false
    }

    /// `key` of `context` as the partition of entity `id` holds it now: an advisory read, not
    /// checked at commit, for a context's data kept with another entity (a replica of it). In
    /// the unit's own partition it is [`Unit::peek`].
    pub fn peek_at(&mut self, context: &str, id: u64, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.beyond.as_deref_mut() {
            Some(b) if b.of_id(id) != b.own && b.view().is_none() => {
                let p = b.of_id(id);
                b.get_in(&mut self.snapshot, p, context, key)
            }
            _ => self.peek(context, key),
        }
    }

    /// Reads `key` of `context`: the unit's own write if there is one, else the snapshot.
    pub fn get(&mut self, context: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(context, key, true)
    }

    /// Reads `key` of `context` like [`Unit::get`], but without recording the read: the unit
    /// does not conflict if the value changes before it commits. For advisory reads only.
    pub fn peek(&mut self, context: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(context, key, false)
    }

    fn read(&mut self, context: &str, key: &str, record: bool) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(view) = self.view() {
            let b = self.beyond.as_deref_mut().expect("a view has a reach");
            return b.get(view, &mut self.snapshot, context, key);
        }
        let k = (context.to_string(), key.to_string());
        if let Some(v) = self.writes.get(&k).or_else(|| self.reads.get(&k)) {
            return Ok(v.clone());
        }
        let v = self.snapshot.get(context, key)?;
        if record {
            self.reads.insert(k, v.clone());
        }
        Ok(v)
    }

    /// Sets `key` of `context` to `value`.
    pub fn set(&mut self, context: &str, key: &str, value: Vec<u8>) {
        self.write(context, key, Some(value));
    }

    /// Deletes `key` of `context`.
    pub fn delete(&mut self, context: &str, key: &str) {
        self.write(context, key, None);
    }

    fn write(&mut self, context: &str, key: &str, value: Option<Vec<u8>>) {
        if self.refused(None, || format!("write {context}'s key {key:?}")) {
            return;
        }
        self.in_flight.mark();
        let k = (context.to_string(), key.to_string());
        let before = self.writes.insert(k.clone(), value);
        self.undo.push((k, before));
    }

    /// Every (key, value) of `context` whose key starts with `prefix`, in key order, with the
    /// unit's own writes applied.
    pub fn scan(&mut self, context: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        if let Some(view) = self.view() {
            let b = self.beyond.as_deref_mut().expect("a view has a reach");
            return b.scan(view, &mut self.snapshot, (context, prefix, None), None);
        }
        let rows = self.snapshot.scan(context, prefix)?;
        Ok(self.record_scan(context, prefix, None, None, rows))
    }

    /// Up to `limit` (key, value) of `context` whose key starts with `prefix` and comes after
    /// `after` (if given), in key order, as the snapshot holds them, with the unit's own
    /// writes to those keys applied. Checked at commit like [`Unit::scan`].
    pub fn scan_from(
        &mut self,
        context: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        if let Some(view) = self.view() {
            let b = self.beyond.as_deref_mut().expect("a view has a reach");
            return b.scan(view, &mut self.snapshot, (context, prefix, after), Some(limit));
        }
        let rows = self.snapshot.scan_from(context, prefix, after, limit)?;
        Ok(self.record_scan(context, prefix, after, Some(limit), rows))
    }

    fn record_scan(
        &mut self,
        context: &str,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Vec<(String, Vec<u8>)> {
        let mut merged: std::collections::BTreeMap<String, Vec<u8>> = rows.iter().cloned().collect();
        // The unit's own writes, within what the scan covers (with a limit, the scan covers
        // the keys up to the last row it returned).
        let last = limit.and(rows.last().map(|(k, _)| k.clone()));
        for ((ctx, key), v) in &self.writes {
            let covered = ctx == context
                && key.starts_with(prefix)
                && after.is_none_or(|a| key.as_str() > a)
                && last.as_ref().is_none_or(|l| key <= l);
            if covered {
                match v {
                    Some(v) => merged.insert(key.clone(), v.clone()),
                    None => merged.remove(key),
                };
            }
        }
        self.scans.push(ScanRead {
            context: context.to_string(),
            prefix: prefix.to_string(),
            after: after.map(str::to_string),
            limit,
            rows,
        });
        merged.into_iter().collect()
    }

    /// Puts entity `id` under `term` in `context`'s ordered index `index` (committed with the
    /// unit). Putting an entry that is there already changes nothing.
    pub fn index_put(&mut self, context: &str, index: &str, term: &[u8], id: u64) {
        self.index_write(context, index, term, id, true);
    }

    /// Deletes entity `id` under `term` from `context`'s index `index`.
    pub fn index_delete(&mut self, context: &str, index: &str, term: &[u8], id: u64) {
        self.index_write(context, index, term, id, false);
    }

    fn index_write(&mut self, context: &str, index: &str, term: &[u8], id: u64, put: bool) {
        let what = || {
            format!(
                "{} entity {id} in {context}'s index {index:?}",
                if put { "put" } else { "delete" }
            )
        };
        if self.refused(Some(id), what) {
            return;
        }
        let k = (context.to_string(), index.to_string(), term.to_vec(), id);
        self.in_flight.mark();
        let before = self.index.insert(k.clone(), put);
        self.index_undo.push((k, before));
    }

    /// How many entries `context`'s index `index` holds (with `term` only, if given), as the
    /// unit's snapshot has it: without the unit's own index writes, and not checked at commit.
    pub fn index_count(
        &mut self,
        context: &str,
        index: &str,
        term: Option<&[u8]>,
    ) -> Result<u64, StorageError> {
        if let Some(view) = self.view() {
            let b = self.beyond.as_deref_mut().expect("a view has a reach");
            return b.index_count(view, &mut self.snapshot, (context, index, term));
        }
        self.snapshot.index_count(context, index, term)
    }

    /// One page of `context`'s index, as the unit's snapshot has it (see
    /// [`Unit::index_count`]).
    pub fn index_page(&mut self, page: IndexPage<'_>) -> Result<Vec<u64>, StorageError> {
        if let Some(view) = self.view() {
            let b = self.beyond.as_deref_mut().expect("a view has a reach");
            return b.index_page(view, &mut self.snapshot, page);
        }
        self.snapshot.index_page(page)
    }

    /// A new id from `context`'s sequence `name`: unique and increasing, never handed out twice,
    /// even across restarts. Ids are not transactional: an aborted unit leaves a gap, as a
    /// database sequence does.
    pub fn next_id(&mut self, context: &str, name: &str) -> Result<u64, StorageError> {
        // Inside a view, no id: whatever it was for could not be written.
        if self.refused(None, || format!("take an id of {context}'s sequence {name:?}")) {
            return Ok(0);
        }
        self.in_flight.mark();
        let id = self.ids_source.next(context, name)?;
        let slot = self
            .ids
            .entry((context.to_string(), name.to_string()))
            .or_insert(0);
        *slot = (*slot).max(id);
        Ok(id)
    }

    /// Publishes an event; it is committed with the unit, or not at all.
    pub fn publish(&mut self, source: &str, event_type: &str, key: Option<String>, payload: Value) {
        let raw = serde_json::value::to_raw_value(&payload).expect("a JSON value serializes");
        self.publish_raw(source, event_type, key, raw);
    }

    /// [`Unit::publish`] with the payload as the JSON text it was written as (which the caller
    /// has checked is an object).
    pub fn publish_raw(
        &mut self,
        source: &str,
        event_type: &str,
        key: Option<String>,
        payload: Box<RawValue>,
    ) {
        if self.refused(None, || format!("publish {source}'s event {event_type}")) {
            return;
        }
        self.in_flight.mark();
        self.events.push(NewEvent {
            source: source.to_string(),
            event_type: event_type.to_string(),
            key,
            payload,
            correlation_id: self.cause.0.clone(),
            causation_id: self.cause.1.clone(),
        });
    }

    /// From now on, events this unit publishes were set off by `correlation` (the request
    /// that started the chain) and directly caused by `causation` (a request or an event).
    pub fn set_cause(&mut self, correlation: Option<String>, causation: Option<String>) {
        self.cause = (correlation, causation);
    }

    /// The request or event chain this unit's events belong to, if it is known.
    pub fn correlation_id(&self) -> Option<&str> {
        self.cause.0.as_deref()
    }

    /// From now on, events this unit publishes were caused by handling `event`: they keep its
    /// correlation id (or start one with its id) and name it as their cause.
    pub fn caused_by(&mut self, event: &Event) {
        let correlation = event
            .correlation_id
            .clone()
            .unwrap_or_else(|| event.event_id.clone());
        self.set_cause(Some(correlation), Some(event.event_id.clone()));
    }

    /// The events published so far in this unit, in order.
    pub fn published(&self) -> &[NewEvent] {
        &self.events
    }

    /// Where `subscriber`'s cursor stands in the snapshot; the unit may then move it.
    pub fn cursor(&self, subscriber: &str) -> Result<u64, StorageError> {
        self.snapshot.cursor(subscriber)
    }

    /// Moves `subscriber`'s cursor from `from` (where the unit found it) to `to`. The commit
    /// fails with a conflict if the cursor moved meanwhile, so no event is handled twice.
    pub fn move_cursor(&mut self, subscriber: &str, from: u64, to: u64) {
        self.in_flight.mark();
        self.cursors.push(CursorMove {
            subscriber: subscriber.to_string(),
            expected: from,
            to,
        });
    }

    /// Up to `limit` events after `after` that the unit's snapshot holds: from the events
    /// kept in memory when they are there, else from the database.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Arc<Event>>, StorageError> {
        if let Some(events) = self.tail.after(after, self.visible, limit) {
            return Ok(events);
        }
        Ok(self
            .snapshot
            .events_after(after, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Parks `event` for `subscriber` as a dead letter.
    pub fn park(&mut self, subscriber: &str, event: &Event, error: &str, attempts: u32) {
        self.in_flight.mark();
        self.dead.push(DeadWrite::Park(Box::new(DeadLetter {
            subscriber: subscriber.to_string(),
            event: event.clone(),
            error: error.to_string(),
            attempts,
            parked_at: crate::time::rfc3339_utc(crate::time::now_millis()),
        })));
    }

    /// Removes a dead letter (after an operator had it handled again).
    pub fn unpark(&mut self, subscriber: &str, seq: u64) {
        self.in_flight.mark();
        self.dead.push(DeadWrite::Remove {
            subscriber: subscriber.to_string(),
            seq,
        });
    }

    /// A point to roll back to.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            undo: self.undo.len(),
            index_undo: self.index_undo.len(),
            events: self.events.len(),
        }
    }

    /// Undoes every write and event since `sp`. What was read stays recorded: it is still
    /// checked at commit, which is only ever stricter.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        // Savepoints nest: one taken after a rollback below it would undo what it never saw.
        assert!(
            sp.undo <= self.undo.len()
                && sp.index_undo <= self.index_undo.len()
                && sp.events <= self.events.len(),
            "a rollback to a savepoint that an earlier rollback went below"
        );
        while self.undo.len() > sp.undo {
            let (k, before) = self.undo.pop().expect("len checked");
            match before {
                Some(v) => self.writes.insert(k, v),
                None => self.writes.remove(&k),
            };
        }
        while self.index_undo.len() > sp.index_undo {
            let (k, before) = self.index_undo.pop().expect("len checked");
            match before {
                Some(put) => self.index.insert(k, put),
                None => self.index.remove(&k),
            };
        }
        self.events.truncate(sp.events);
    }

    /// True if committing the unit would change nothing (it only read).
    pub fn is_read_only(&self) -> bool {
        // Ids handed out count as a write: their sequence must be stored, or an id a client
        // was given could be handed out again after a crash.
        self.writes.is_empty()
            && self.index.is_empty()
            && self.events.is_empty()
            && self.cursors.is_empty()
            && self.dead.is_empty()
            && self.ids.is_empty()
    }

    /// What the writer needs: the reads to check and the effects to apply; and the unit's place
    /// among those being written, to give back once the writer has them.
    pub(crate) fn into_changes(self) -> (ChangeSet, InFlight) {
        let changes = ChangeSet {
            reads: self.reads.into_iter().collect(),
            scans: self.scans,
            writes: self.writes.into_iter().collect(),
            index: self.index.into_iter().collect(),
            cursors: self.cursors,
            dead: self.dead,
            ids: self.ids.into_iter().collect(),
            unit_id: None,
            abandon: false,
            begun_at: self.begun_at,
            format: crate::replicate::FORMAT,
            snapshot_generation: Some(self.generation),
            // An event that cannot be encoded here (none can) leaves the list short, and the
            // writer serializes every event of the unit itself.
            event_tails: self.events.iter().map_while(|e| e.stored_tail().ok()).collect(),
            events: self.events,
        };
        (changes, self.in_flight)
    }
}
