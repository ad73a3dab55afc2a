//! Synchronous calls from one context into another, inside the caller's unit, through the
//! callee's circuit breaker and bulkhead; and each context's share of the wasm executors.
//! The runtime reaches `wasm/` only as a [`Calls`] implementation, so the sandbox never sees
//! the runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use carshare_core::{Breaker, Rejected, Ticket, Unit, Verdict};

use super::placing::CallView;
use super::{Inner, Runtime};
use crate::metrics::{CallLabels, Metrics};
use crate::types::{CallError, DomainError, Request, Response};
use crate::wasm::{CallFuture, Calls, Plugin};

impl Calls for Inner {
    fn call<'a>(self: Arc<Self>, name: &'a str, request: Request, unit: Unit, depth: u32) -> CallFuture<'a> {
        Box::pin(async move {
            Runtime { inner: self }
                .call_context(name, request, unit, depth)
                .await
        })
    }
}

impl Runtime {
    /// Where the contexts' synchronous calls go.
    pub(super) fn calls(&self) -> Arc<dyn Calls> {
        self.inner.clone()
    }

    /// A synchronous call from one context into another, inside the caller's unit, through
    /// the callee's circuit breaker and bulkhead.
    async fn call_context(
        &self,
        name: &str,
        request: Request,
        unit: Unit,
        depth: u32,
    ) -> (Unit, Result<Response, CallError>) {
        let caller = request.caller.clone().unwrap_or_default();
        let breaker = self.breaker(name);
        let ticket = match breaker.try_start(Instant::now()) {
            Ok(ticket) => ticket,
            Err(r) => {
                self.count_call(&caller, name, "rejected");
                self.metrics()
                    .breaker_rejections
                    .get_or_create(&Metrics::context(name))
                    .inc();
                return (unit, Err(refused(name, r)));
            }
        };
        // Reported however the call ends; a panic unwinding through here counts as a failure.
        let mut outcome = Outcome::new(&breaker, ticket);
        let (unit, result) = match self.resolve(name, depth) {
            Ok(plugin) => {
                // A call naming what lives in another partition reads it there, and may not
                // write: cross-partition effects go through events.
                let view = self.place_call(&plugin, &request, unit.partition());
                let mut unit = unit;
                match view {
                    Some(CallView::One(p)) => unit.enter(p),
                    Some(CallView::All) => unit.enter_all(),
                    None => {}
                }
                let (mut unit, result) = plugin.handle_request(self.calls(), &request, unit, depth).await;
                if view.is_some() {
                    unit.leave();
                }
                (unit, result)
            }
            Err(e) => (unit, Err(e)),
        };
        outcome.verdict = verdict(&result);
        drop(outcome);
        let label = match &result {
            Ok(_) => "ok",
            Err(CallError::Domain(DomainError::Unavailable(_))) => "unavailable",
            Err(CallError::Domain(DomainError::Internal(_))) => "fault",
            Err(CallError::Domain(_)) => "refused",
            Err(CallError::Fault { .. } | CallError::TooDeep(_)) => "fault",
            Err(_) => "unavailable",
        };
        self.count_call(&caller, name, label);
        (unit, result)
    }

    fn count_call(&self, caller: &str, callee: &str, outcome: &'static str) {
        self.metrics()
            .calls
            .get_or_create(&CallLabels {
                caller: caller.to_string(),
                callee: callee.to_string(),
                outcome,
            })
            .inc();
    }

    /// `name`'s share of the executors, made on first use; it outlives swaps.
    pub(super) fn share(&self, name: &str) -> Arc<tokio::sync::Semaphore> {
        let per_context = self.inner.options.max_concurrent_per_context.max(1);
        self.inner
            .shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_context)))
            .clone()
    }

    /// The breaker in front of `name`, made on first use; it outlives swaps (which reset it).
    pub(super) fn breaker(&self, name: &str) -> Arc<Breaker> {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Breaker::new(self.inner.options.breaker.clone())))
            .clone()
    }

    /// The running plugin of `name`, if it may be called at `depth`.
    pub(super) fn resolve(&self, name: &str, depth: u32) -> Result<Arc<Plugin>, CallError> {
        if depth > self.inner.options.max_call_depth {
            return Err(CallError::TooDeep(name.to_string()));
        }
        let slot = self
            .slot(name)
            .ok_or_else(|| CallError::NoSuchContext(name.to_string()))?;
        if !slot.running.load(Ordering::Acquire) {
            return Err(CallError::Stopped(name.to_string()));
        }
        Ok(slot.current())
    }
}

/// A started call's report to its breaker, made when dropped.
pub(super) struct Outcome<'a> {
    breaker: &'a Breaker,
    ticket: Option<Ticket>,
    /// How the call went; a failure until the caller says otherwise.
    pub verdict: Verdict,
}

impl<'a> Outcome<'a> {
    pub(super) fn new(breaker: &'a Breaker, ticket: Ticket) -> Self {
        Outcome {
            breaker,
            ticket: Some(ticket),
            verdict: Verdict::Failed,
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.finish(ticket, self.verdict, Instant::now());
        }
    }
}

/// What a caller is told when `name`'s breaker refuses a call or request.
pub(super) fn refused(name: &str, r: Rejected) -> CallError {
    let reason = match r {
        Rejected::Open(left) => format!("its circuit is open for {} ms more", left.as_millis()),
        Rejected::Probing => "its circuit is half-open and every probe call is taken".to_string(),
        Rejected::Full => "its bulkhead is full".to_string(),
    };
    CallError::CircuitOpen {
        context: name.to_string(),
        reason,
    }
}

/// How a call counts for the callee's breaker: faults and unavailability are failures (the
/// worst, a used-up limit, weighed apart); a domain answer (even a refusal) means the callee is
/// working.
fn verdict(result: &Result<Response, CallError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Ok,
        Err(CallError::Fault { exhausted: true, .. }) => Verdict::Exhausted,
        Err(CallError::Domain(DomainError::Unavailable(_) | DomainError::Internal(_))) => Verdict::Failed,
        Err(CallError::Domain(_)) => Verdict::Ok,
        Err(_) => Verdict::Failed,
    }
}
