//! Events into a context: one event per `handle-event` call (an operator's retry, or a step
//! that fell back), or a subscriber's whole step in one `handle-events` call, in which the
//! guest says which event it is applying (`events.handling`) so that each event's effects are
//! kept apart.

use std::sync::Arc;
use std::time::Instant;

use carshare_core::{Event, Unit};

use super::Plugin;
use crate::types::CallError;
use crate::wasm::Calls;
use crate::wasm::bindings::carshare::context::types as wit;
use crate::wasm::convert;
use crate::wasm::instance::Batch;

/// What one `handle-events` call came to.
pub enum AppliedEvents {
    /// Every event was applied.
    All,
    /// The events before `index` were applied; that one failed with `error`, and its effects
    /// are undone.
    Failed { index: usize, error: CallError },
    /// The call as a whole failed (a trap, its deadline, or a guest that did not say which
    /// event it was applying): none of its effects are kept.
    Whole(CallError),
}

impl Plugin {
    /// Applies `event` inside `unit`.
    pub async fn handle_event(
        &self,
        calls: Arc<dyn Calls>,
        event: &Event,
        unit: Unit,
    ) -> (Unit, Result<(), CallError>) {
        let ev = event_to_wit(event);
        let mut inst = match self.enter(calls, unit, 0).await {
            Ok(inst) => inst,
            Err((unit, e)) => return (unit, Err(e)),
        };
        let started = Instant::now();
        let result = inst.bindings.call_handle_event(&mut inst.store, ev).await;
        let (unit, r) = self.leave(inst, result, started);
        (
            unit,
            r.and_then(|r| r.map_err(|e| CallError::Domain(convert::from_wit(e)))),
        )
    }

    /// Applies `events` in order inside `unit` in one call, keeping each event's effects
    /// apart: if one fails, the events before it stay applied and its own effects are undone.
    pub async fn handle_events(
        &self,
        calls: Arc<dyn Calls>,
        events: &[Arc<Event>],
        unit: Unit,
    ) -> (Unit, AppliedEvents) {
        let evs: Vec<wit::Event<'_>> = events.iter().map(|e| event_to_wit(e)).collect();
        let start = unit.savepoint();
        let mut inst = match self.enter(calls, unit, 0).await {
            Ok(inst) => inst,
            Err((unit, e)) => return (unit, AppliedEvents::Whole(e)),
        };
        if let Some(scope) = inst.store.data_mut().scope.as_mut() {
            scope.batch = Some(Batch {
                events: events.to_vec(),
                marks: Vec::with_capacity(events.len()),
            });
        }
        let started = Instant::now();
        let result = inst.bindings.call_handle_events(&mut inst.store, &evs).await;
        let marks = inst
            .store
            .data_mut()
            .scope
            .as_mut()
            .and_then(|s| s.batch.take())
            .map(|b| b.marks)
            .unwrap_or_default();
        let (mut unit, r) = self.leave(inst, result, started);
        let broken = |unit: &mut Unit, what: String| {
            unit.rollback_to(start);
            AppliedEvents::Whole(CallError::Fault {
                context: self.name.to_string(),
                message: "it broke the handle-events contract".into(),
                detail: what,
                exhausted: false,
            })
        };
        let applied = match r {
            Err(e) => {
                unit.rollback_to(start);
                AppliedEvents::Whole(e)
            }
            Ok(Ok(())) if marks.len() == events.len() => AppliedEvents::All,
            Ok(Ok(())) => broken(
                &mut unit,
                format!("it applied {} events but started {}", events.len(), marks.len()),
            ),
            Ok(Err((index, e))) => {
                let index = index as usize;
                match marks.get(index) {
                    Some(&mark) if marks.len() == index + 1 => {
                        unit.rollback_to(mark);
                        AppliedEvents::Failed {
                            index,
                            error: CallError::Domain(convert::from_wit(e)),
                        }
                    }
                    _ => broken(
                        &mut unit,
                        format!(
                            "it failed at event {index} of {} but started {}",
                            events.len(),
                            marks.len()
                        ),
                    ),
                }
            }
        };
        (unit, applied)
    }
}

/// An event as a guest receives it, borrowed from the log's: its strings are copied once,
/// straight into the guest's memory.
fn event_to_wit(event: &Event) -> wit::Event<'_> {
    wit::Event {
        seq: event.seq,
        id: &event.event_id,
        event_type: &event.event_type,
        source: &event.source,
        key: event.key.as_deref(),
        timestamp: &event.timestamp,
        payload: event.payload.get(),
    }
}
