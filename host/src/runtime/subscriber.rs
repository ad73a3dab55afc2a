//! A context as a subscriber of the core's dispatcher: each dispatcher step is pinned to the
//! version of the context current when it starts, its events go to the context in one call
//! (`handle-events`), and a handler's failure is told apart as transient (a dependency is
//! down: wait) or not (retry, then park as a dead letter).

use std::sync::{Arc, Weak};
use std::time::Instant;

use carshare_core::{
    Event, EventHandler, Handled, HandledAll, HandlerError, Placement, Reach, Unit, handle_each,
};

use super::{Inner, Runtime, Slot};
use crate::metrics::Metrics;
use crate::types::{CallError, DomainError};
use crate::wasm::{AppliedEvents, Manifest, Placement as ManifestPlacement, Plugin};

/// A context as a subscriber of the dispatcher. Holds the runtime weakly: the dispatcher lives
/// inside the runtime.
pub(super) struct Subscriber {
    pub runtime: Weak<Inner>,
    pub name: String,
    /// Which partitions' events it reads, as its manifest said when it subscribed (a swap
    /// that changes it subscribes the context anew).
    pub reach: Reach,
}

/// Which partitions' events a context reads (see [`Reach`]).
pub(super) fn reach(m: &Manifest) -> Reach {
    match m.placement {
        ManifestPlacement::Single => Reach::Home,
        ManifestPlacement::Partitioned if m.subscriptions.iter().any(|s| s.placed_by.is_some()) => Reach::All,
        ManifestPlacement::Partitioned => Reach::Own,
    }
}

/// Where `event` is handled for a context with manifest `m`: in partition 0 for a context
/// kept there, where the id its subscription names lives, or where it was published. An
/// event without that id (or with one that is not a positive integer) is handled where it was
/// published: the handler then meets it, and fails on it visibly if it cannot do without.
fn placement(m: &Manifest, event: &Event) -> Placement {
    if m.placement == ManifestPlacement::Single {
        return Placement::Home;
    }
    let Some(field) = m.placed_by(&event.event_type) else {
        return Placement::Here;
    };
    // Only the field is read: the payload's values are borrowed, not parsed into a tree.
    let value = serde_json::from_str::<std::collections::HashMap<&str, &serde_json::value::RawValue>>(
        event.payload.get(),
    )
    .ok()
    .and_then(|fields| {
        fields
            .get(field)
            .map(|raw| raw.get().trim_matches('"').parse::<u64>())
    });
    match value {
        Some(Ok(id)) if id > 0 => Placement::Id(id),
        _ => Placement::Here,
    }
}

impl Subscriber {
    fn runtime(&self) -> Option<(Runtime, Arc<Slot>)> {
        let rt = Runtime {
            inner: self.runtime.upgrade()?,
        };
        let slot = rt.slot(&self.name)?;
        Some((rt, slot))
    }
}

/// A subscriber fixed to one version of its context for one dispatcher step.
struct Pinned {
    runtime: Runtime,
    plugin: Arc<Plugin>,
}

impl Pinned {
    /// Counts one call into the context, started at `started`, that applied `handled` events.
    fn record(&self, started: Instant, handled: usize) {
        let metrics = self.runtime.metrics();
        let label = Metrics::subscriber(&self.plugin.manifest().name);
        metrics
            .handler_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if handled > 0 {
            metrics.handled.get_or_create(&label).inc_by(handled as u64);
        }
    }
}

impl EventHandler for Pinned {
    fn wants(&self, event_type: &str) -> bool {
        self.plugin.manifest().subscribes(event_type)
    }

    fn placement(&self, event: &Event) -> Placement {
        placement(self.plugin.manifest(), event)
    }

    fn handle<'a>(&'a self, mut unit: Unit, event: &'a Event) -> Handled<'a> {
        Box::pin(async move {
            // In a cluster, only on the code the log says this context runs.
            if let Err(waiting) = self.runtime.check_pointer(&mut unit, &self.plugin) {
                return (unit, Err(HandlerError::transient(waiting)));
            }
            let started = Instant::now();
            let (unit, r) = self.plugin.handle_event(self.runtime.calls(), event, unit).await;
            self.record(started, usize::from(r.is_ok()));
            (unit, r.map_err(handler_error))
        })
    }

    /// The step's events in one call. If the call fails as a whole (a trap, its deadline),
    /// they are applied again one call each, which finds the event at fault and gives each
    /// event its own deadline.
    fn handle_all<'a>(&'a self, mut unit: Unit, events: &'a [Arc<Event>]) -> HandledAll<'a> {
        Box::pin(async move {
            if let Err(waiting) = self.runtime.check_pointer(&mut unit, &self.plugin) {
                return (unit, Err((0, HandlerError::transient(waiting))));
            }
            let started = Instant::now();
            let (unit, applied) = self
                .plugin
                .handle_events(self.runtime.calls(), events, unit)
                .await;
            let handled = match &applied {
                AppliedEvents::All => events.len(),
                AppliedEvents::Failed { index, .. } => *index,
                AppliedEvents::Whole(_) => 0,
            };
            self.record(started, handled);
            match applied {
                AppliedEvents::All => (unit, Ok(())),
                AppliedEvents::Failed { index, error } => (unit, Err((index, handler_error(error)))),
                AppliedEvents::Whole(e) => {
                    tracing::debug!(
                        "{} could not apply {} events in one call ({}); applying them one by one",
                        self.plugin.manifest().name,
                        events.len(),
                        e.detailed()
                    );
                    handle_each(self, unit, events).await
                }
            }
        })
    }
}

/// A context's failure as the dispatcher retries it.
fn handler_error(e: CallError) -> HandlerError {
    match e {
        // A dependency that is down or shedding load: wait for it, never park.
        CallError::Domain(DomainError::Unavailable(_))
        | CallError::Stopped(_)
        | CallError::Busy(_)
        | CallError::NoSuchContext(_)
        | CallError::CircuitOpen { .. } => HandlerError::transient(e),
        // Dead letters are the operator's: they keep the engine's detail.
        e => HandlerError::new(e.detailed()),
    }
}

impl EventHandler for Subscriber {
    /// Without a runtime (it is being dropped), every event is "wanted" and then fails
    /// transiently in `handle`: the cursor must never move past events nobody handled.
    fn wants(&self, event_type: &str) -> bool {
        match self.runtime() {
            Some((_, slot)) => slot.current().manifest().subscribes(event_type),
            None => true,
        }
    }

    fn placement(&self, event: &Event) -> Placement {
        match self.runtime() {
            Some((_, slot)) => placement(slot.current().manifest(), event),
            None => Placement::Here,
        }
    }

    fn reach(&self) -> Reach {
        self.reach
    }

    fn handle<'a>(&'a self, unit: Unit, event: &'a Event) -> Handled<'a> {
        Box::pin(async move {
            match self.pin() {
                Some(pinned) => pinned.handle(unit, event).await,
                None => (unit, Err(HandlerError::transient("the runtime is shutting down"))),
            }
        })
    }

    fn pin(&self) -> Option<Arc<dyn EventHandler>> {
        let (runtime, slot) = self.runtime()?;
        Some(Arc::new(Pinned {
            plugin: slot.current(),
            runtime,
        }))
    }

    fn on_failure(&self, event: &Event, error: &HandlerError, attempt: u32, parked: bool) {
        let what = if parked {
            "parked as a dead letter"
        } else {
            "will retry"
        };
        if let Some((runtime, _)) = self.runtime() {
            let label = Metrics::subscriber(&self.name);
            let counter = if parked {
                &runtime.metrics().dead_letters
            } else {
                &runtime.metrics().handler_retries
            };
            counter.get_or_create(&label).inc();
        }
        tracing::warn!(
            "{} failed on {} #{} (attempt {attempt}, {what}): {}",
            self.name,
            event.event_type,
            event.seq,
            error.message
        );
    }
}
