//! The runtime's Prometheus metrics, with the `prometheus-client` crate: what happens is
//! counted where it happens (requests at the HTTP edge, calls and faults in the runtime, commit
//! batches through the core's [`CommitObserver`]); what is a state rather than an event
//! (subscriber cursors and lag, breaker states, live instances, a host's role and lag in a
//! cluster) is read when scraped.
//! `GET /metrics` answers with [`Metrics::encode`].

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::ClusterStatus;

mod cluster;
use carshare_core::{BatchReport, BreakerState, CommitObserver};
use cluster::ClusterGauges;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A request at the HTTP edge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The context that served it, or `host` for the host's own paths.
    pub context: String,
    /// The route: a collection (`/orders`) or a host path.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// A request's route, for its duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub context: String,
    pub route: String,
    pub method: String,
}

/// A synchronous call between contexts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub caller: String,
    pub callee: String,
    /// `ok`, `refused` (a domain error), `unavailable`, `fault`, or `rejected` (by the breaker).
    pub outcome: &'static str,
}

/// One context.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ContextLabel {
    pub context: String,
}

/// One subscriber.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SubscriberLabel {
    pub subscriber: String,
}

/// One event type (the label is `type`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabel {
    pub r#type: String,
}

/// A swap or a rollback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SwapLabels {
    pub context: String,
    /// `swap` or `rollback`.
    pub kind: &'static str,
    /// `ok` or `refused`.
    pub outcome: &'static str,
}

/// Durations from 100 µs to about 6.5 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric of a runtime.
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub calls: Family<CallLabels, Counter>,
    pub request_reruns: Counter,
    batch_units: Histogram,
    commit_seconds: Histogram,
    commit_conflicts: Counter,
    commit_failures: Counter,
    events: Family<TypeLabel, Counter>,
    subscriber_cursor: Family<SubscriberLabel, Gauge>,
    subscriber_lag: Family<SubscriberLabel, Gauge>,
    pub handled: Family<SubscriberLabel, Counter>,
    pub handler_seconds: Family<SubscriberLabel, Histogram>,
    pub handler_retries: Family<SubscriberLabel, Counter>,
    pub dead_letters: Family<SubscriberLabel, Counter>,
    breaker_state: Family<ContextLabel, Gauge>,
    pub breaker_rejections: Family<ContextLabel, Counter>,
    instances: Family<ContextLabel, Gauge>,
    pub wasm_seconds: Family<ContextLabel, Counter<f64>>,
    cluster: ClusterGauges,
    pub deadline_hits: Family<ContextLabel, Counter>,
    pub swaps: Family<SwapLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("carshare");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Synchronous calls between contexts, by outcome",
            calls.clone(),
        );
        let request_reruns = Counter::default();
        registry.register(
            "request_reruns",
            "Requests run again after losing a race with a concurrent commit",
            request_reruns.clone(),
        );
        let batch_units = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_units",
            "Units committed together (group commit)",
            batch_units.clone(),
        );
        let commit_seconds = seconds();
        registry.register_with_unit(
            "commit_fsync_duration",
            "Time a commit batch's transaction took to write and fsync",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let commit_conflicts = Counter::default();
        registry.register(
            "commit_conflicts",
            "Units refused at commit because what they read had changed",
            commit_conflicts.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "commit_batch_failures",
            "Commit batches that failed in storage",
            commit_failures.clone(),
        );
        let events = Family::<TypeLabel, Counter>::default();
        registry.register(
            "events_appended",
            "Events committed to the log, by type",
            events.clone(),
        );
        let subscriber_cursor = Family::<SubscriberLabel, Gauge>::default();
        registry.register(
            "subscriber_cursor",
            "Sequence number of the last event a subscriber is done with",
            subscriber_cursor.clone(),
        );
        let subscriber_lag = Family::<SubscriberLabel, Gauge>::default();
        registry.register(
            "subscriber_lag",
            "Committed events a subscriber has still to handle",
            subscriber_lag.clone(),
        );
        let handled = Family::<SubscriberLabel, Counter>::default();
        registry.register(
            "subscriber_events_handled",
            "Events a subscriber applied",
            handled.clone(),
        );
        let handler_seconds =
            Family::<SubscriberLabel, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        registry.register_with_unit(
            "subscriber_handler_duration",
            "Time one call of a subscriber's handler took (a step's events go in one call)",
            Unit::Seconds,
            handler_seconds.clone(),
        );
        let handler_retries = Family::<SubscriberLabel, Counter>::default();
        registry.register(
            "subscriber_retries",
            "Failed attempts that will be retried",
            handler_retries.clone(),
        );
        let dead_letters = Family::<SubscriberLabel, Counter>::default();
        registry.register(
            "subscriber_dead_letters_parked",
            "Events parked as dead letters",
            dead_letters.clone(),
        );
        let breaker_state = Family::<ContextLabel, Gauge>::default();
        registry.register(
            "breaker_state",
            "The circuit breaker in front of a context: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let breaker_rejections = Family::<ContextLabel, Counter>::default();
        registry.register(
            "breaker_rejections",
            "Calls and requests a context's breaker or bulkhead refused",
            breaker_rejections.clone(),
        );
        let instances = Family::<ContextLabel, Gauge>::default();
        registry.register("instances", "Live wasm instances of a context", instances.clone());
        let wasm_seconds = Family::<ContextLabel, Counter<f64>>::default();
        registry.register_with_unit(
            "wasm_time",
            "Time spent running a context's code (its calls, wall clock)",
            Unit::Seconds,
            wasm_seconds.clone(),
        );
        let deadline_hits = Family::<ContextLabel, Counter>::default();
        registry.register(
            "cpu_deadline_hits",
            "Calls interrupted at their CPU deadline",
            deadline_hits.clone(),
        );
        let swaps = Family::<SwapLabels, Counter>::default();
        registry.register("swaps", "Hot swaps and rollbacks, by outcome", swaps.clone());
        let cluster = ClusterGauges::register(&mut registry);
        Arc::new(Metrics {
            cluster,
            registry,
            requests,
            request_seconds,
            calls,
            request_reruns,
            batch_units,
            commit_seconds,
            commit_conflicts,
            commit_failures,
            events,
            subscriber_cursor,
            subscriber_lag,
            handled,
            handler_seconds,
            handler_retries,
            dead_letters,
            breaker_state,
            breaker_rejections,
            instances,
            wasm_seconds,
            deadline_hits,
            swaps,
        })
    }

    /// One context's label.
    pub(crate) fn context(name: &str) -> ContextLabel {
        ContextLabel {
            context: name.to_string(),
        }
    }

    /// One subscriber's label.
    pub(crate) fn subscriber(name: &str) -> SubscriberLabel {
        SubscriberLabel {
            subscriber: name.to_string(),
        }
    }

    /// The text exposition, with the contexts' states (and this host's part in a cluster, if
    /// it serves in one) set first.
    pub(crate) fn encode(
        &self,
        contexts: impl IntoIterator<Item = ContextGauges>,
        cluster: Option<&ClusterStatus>,
    ) -> String {
        if let Some(status) = cluster {
            self.cluster.set(status);
        }
        for c in contexts {
            let label = Metrics::context(&c.name);
            self.instances.get_or_create(&label).set(c.instances as i64);
            let state = match c.breaker {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            self.breaker_state.get_or_create(&label).set(state);
            if let Some((cursor, lag)) = c.subscriber {
                let sub = Metrics::subscriber(&c.name);
                self.subscriber_cursor.get_or_create(&sub).set(cursor as i64);
                self.subscriber_lag.get_or_create(&sub).set(lag as i64);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A context's state as the gauges show it, read when they are scraped.
pub(crate) struct ContextGauges {
    pub name: String,
    pub instances: usize,
    pub breaker: BreakerState,
    /// Its subscriber's cursor and lag, if it subscribes.
    pub subscriber: Option<(u64, u64)>,
}

impl crate::wasm::CallObserver for Metrics {
    fn ran(&self, context: &str, took: Duration, deadline_hit: bool) {
        let label = Metrics::context(context);
        self.wasm_seconds.get_or_create(&label).inc_by(took.as_secs_f64());
        if deadline_hit {
            self.deadline_hits.get_or_create(&label).inc();
        }
    }
}

impl CommitObserver for Metrics {
    fn batch(&self, report: &BatchReport<'_>) {
        if report.failed {
            self.commit_failures.inc();
            return;
        }
        self.batch_units.observe(report.units as f64);
        self.commit_seconds.observe(report.commit.as_secs_f64());
        self.commit_conflicts.inc_by(report.conflicts as u64);
        for e in report.events {
            self.events
                .get_or_create(&TypeLabel {
                    r#type: e.event_type.clone(),
                })
                .inc();
        }
    }
}
