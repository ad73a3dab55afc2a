//! A client request as one unit of work: routed, run in the context's share of the wasm
//! executors and through its breaker, committed, and run again from scratch if it lost a race
//! with a concurrent commit.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use carshare_core::{CommitError, Unit, Verdict};
use futures_util::FutureExt;

use super::calls::{Outcome, refused};
use super::placing::Place;
use super::{RequestError, Runtime};
use crate::metrics::Metrics;
use crate::types::{CallError, Request, Response};

/// A request the runtime served.
#[derive(Debug, Clone)]
pub struct Served {
    /// The context's response.
    pub response: Response,
    /// The context that served it.
    pub context: String,
    /// Its version.
    pub version: String,
}

impl Runtime {
    /// Serves a client request: routes it, runs it as one unit of work, commits, answers.
    pub async fn handle(&self, request: Request) -> Result<Served, RequestError> {
        self.handle_by(request, &mut None).await
    }

    /// [`Runtime::handle`], telling in `by` the context and version the request was routed
    /// to as soon as they are known, so that an error names them too (`x-carshare-context`).
    pub(crate) async fn handle_by(
        &self,
        request: Request,
        by: &mut Option<(String, String)>,
    ) -> Result<Served, RequestError> {
        let name = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(&request.path)
            .map(str::to_string)
            .ok_or_else(|| RequestError::NoRoute(request.path.clone()))?;
        if let Some(why) = self.not_serving() {
            return Err(RequestError::Log(CommitError::Unavailable(why)));
        }
        // Where it runs: decided once, so that a rerun after a conflict runs where the first
        // run did.
        let place = match self.resolve(&name, 0) {
            Ok(plugin) => {
                *by = Some((name.clone(), plugin.manifest().version.clone()));
                self.place_request(&plugin, &request)
            }
            Err(e) => return Err(RequestError::Call(e)),
        };
        // A context's requests wait for its own share of the executors first: a context that
        // is slow or spinning queues its own requests, never the other contexts'.
        let share = self.share(&name);
        let breaker = self.breaker(&name);
        for _ in 0..=self.inner.options.conflict_retries {
            // Both permits cover running wasm only, never the wait for the commit: a context's
            // share bounds its CPU, not how many of its units may be committing at once.
            let share_permit = share.acquire().await.map_err(|_| RequestError::ShuttingDown)?;
            let permit = self
                .inner
                .executors
                .acquire()
                .await
                .map_err(|_| RequestError::ShuttingDown)?;
            // The breaker in front of the context counts its faults (deadline hits, traps):
            // a context that keeps faulting is answered at once instead of burning CPU.
            let ticket = breaker.try_start(Instant::now()).map_err(|r| {
                self.metrics()
                    .breaker_rejections
                    .get_or_create(&Metrics::context(&name))
                    .inc();
                RequestError::Call(refused(&name, r))
            })?;
            let mut outcome = Outcome::new(&breaker, ticket);
            // Wasm runs right here on the async worker, as a fiber that yields at every epoch
            // tick. A panic in it (or in the host code it calls) fails this request alone.
            let ran = AssertUnwindSafe(self.run_request(&name, &request, place))
                .catch_unwind()
                .await
                .map_err(|_| {
                    RequestError::Call(CallError::Fault {
                        context: name.clone(),
                        message: "the host panicked while it ran".into(),
                        detail: String::new(),
                        exhausted: false,
                    })
                })?;
            drop(permit);
            drop(share_permit);
            let (unit, result, version) = ran?;
            *by = Some((name.clone(), version.clone()));
            outcome.verdict = match &result {
                Err(CallError::Fault { exhausted: true, .. }) => Verdict::Exhausted,
                Err(CallError::Fault { .. }) => Verdict::Failed,
                _ => Verdict::Ok,
            };
            drop(outcome);
            let response = result.map_err(RequestError::Call)?;
            let partition = match place {
                Place::In(p) => p,
                Place::All => 0,
            };
            match self.inner.partitions.log(partition).commit(unit).await {
                Ok(_) => {
                    return Ok(Served {
                        response,
                        context: name,
                        version,
                    });
                }
                Err(CommitError::Conflict) => {
                    self.metrics().request_reruns.inc();
                    continue;
                }
                Err(CommitError::Storage(e)) => return Err(RequestError::Storage(e)),
                Err(CommitError::OutsidePartition(m)) => return Err(RequestError::OutsidePartition(m)),
                Err(
                    e @ (CommitError::Unavailable(_)
                    | CommitError::Overloaded(_)
                    | CommitError::Unknown(_)
                    | CommitError::Abandoned
                    | CommitError::TooLarge { .. }),
                ) => {
                    return Err(RequestError::Log(e));
                }
                Err(_) => return Err(RequestError::ShuttingDown),
            }
        }
        Err(RequestError::Contention)
    }

    /// Why this host answers no request of a context, if it does not: a cluster's host whose
    /// storage failed, or that stopped applying the log, holds data it can no longer bring up
    /// to date (reads would show an old state as current, or acknowledged writes as missing).
    fn not_serving(&self) -> Option<String> {
        let status = self.cluster_status()?;
        if let Some(stopped) = status.stopped {
            return Some(format!("this host stopped applying the cluster's log: {stopped}"));
        }
        self.inner
            .log
            .storage_failure()
            .map(|e| format!("this host's storage failed ({e}): another host serves"))
    }

    /// Runs `request` in the context `name` inside a new unit of work, where `place` says.
    async fn run_request(
        &self,
        name: &str,
        request: &Request,
        place: Place,
    ) -> Result<(Unit, Result<Response, CallError>, String), RequestError> {
        let plugin = self.resolve(name, 0).map_err(RequestError::Call)?;
        let partitions = &self.inner.partitions;
        let mut unit = match place {
            Place::In(p) => partitions.begin(p),
            Place::All => partitions.begin_reading_all(),
        }
        .map_err(RequestError::Storage)?;
        // The request starts the chain: its events carry its id as correlation and cause.
        unit.set_cause(request.request_id.clone(), request.request_id.clone());
        let (unit, result) = plugin.handle_request(self.calls(), request, unit, 0).await;
        Ok((unit, result, plugin.manifest().version.clone()))
    }
}
