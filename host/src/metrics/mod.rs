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

/// One subscriber's cursor: kept in `partition`, over `source`'s events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CursorLabels {
    pub subscriber: String,
    pub partition: u32,
    pub source: u32,
}

/// One partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabel {
    pub partition: u32,
}

/// One event type (the label is `type`), in one partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabel {
    pub r#type: String,
    pub partition: u32,
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
    batch_units: Family<PartitionLabel, Histogram>,
    commit_seconds: Family<PartitionLabel, Histogram>,
    commit_conflicts: Family<PartitionLabel, Counter>,
    commit_failures: Family<PartitionLabel, Counter>,
    events: Family<TypeLabel, Counter>,
    subscriber_cursor: Family<CursorLabels, Gauge>,
    subscriber_lag: Family<CursorLabels, Gauge>,
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
        let batch_units = Family::<PartitionLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 12))) as fn() -> Histogram,
        );
        registry.register(
            "commit_batch_units",
            "Units committed together (group commit), by partition",
            batch_units.clone(),
        );
        let commit_seconds =
            Family::<PartitionLabel, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        registry.register_with_unit(
            "commit_fsync_duration",
            "Time a commit batch's transaction took to write and fsync, by partition",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let commit_conflicts = Family::<PartitionLabel, Counter>::default();
        registry.register(
            "commit_conflicts",
            "Units refused at commit because what they read had changed, by partition",
            commit_conflicts.clone(),
        );
        let commit_failures = Family::<PartitionLabel, Counter>::default();
        registry.register(
            "commit_batch_failures",
            "Commit batches that failed in storage, by partition",
            commit_failures.clone(),
        );
        let events = Family::<TypeLabel, Counter>::default();
        registry.register(
            "events_appended",
            "Events committed to the log, by type",
            events.clone(),
        );
        let subscriber_cursor = Family::<CursorLabels, Gauge>::default();
        registry.register(
            "subscriber_cursor",
            "Sequence number (in the source partition) of the last event a subscriber is done with, \
             by the partition it runs in and the partition whose events it reads",
            subscriber_cursor.clone(),
        );
        let subscriber_lag = Family::<CursorLabels, Gauge>::default();
        registry.register(
            "subscriber_lag",
            "Committed events a subscriber has still to go through, by partition and source partition",
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
            if let Some(instances) = c.instances {
                self.instances.get_or_create(&label).set(instances as i64);
            }
            if let Some(breaker) = c.breaker {
                let state = match breaker {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                };
                self.breaker_state.get_or_create(&label).set(state);
            }
            for (partition, source, cursor, lag) in c.cursors {
                let labels = CursorLabels {
                    subscriber: c.name.clone(),
                    partition,
                    source,
                };
                self.subscriber_cursor.get_or_create(&labels).set(cursor as i64);
                self.subscriber_lag.get_or_create(&labels).set(lag as i64);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A context's state as the gauges show it, read when they are scraped.
/// A subscriber's gauges: a context's (with its instances and breaker) or a native one's.
pub(crate) struct ContextGauges {
    pub name: String,
    pub instances: Option<usize>,
    pub breaker: Option<BreakerState>,
    /// Its subscriber's cursors, if it subscribes: (partition, source, cursor, lag).
    pub cursors: Vec<(u32, u32, u64, u64)>,
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

impl Metrics {
    /// The observer of partition `partition`'s commits.
    pub(crate) fn of_partition(self: &Arc<Self>, partition: u32) -> PartitionMetrics {
        PartitionMetrics {
            metrics: self.clone(),
            partition,
        }
    }
}

/// The commit metrics of one partition: what its writer reports.
pub(crate) struct PartitionMetrics {
    metrics: Arc<Metrics>,
    partition: u32,
}

impl CommitObserver for PartitionMetrics {
    fn batch(&self, report: &BatchReport<'_>) {
        let m = &self.metrics;
        let label = PartitionLabel {
            partition: self.partition,
        };
        if report.failed {
            m.commit_failures.get_or_create(&label).inc();
            return;
        }
        m.batch_units.get_or_create(&label).observe(report.units as f64);
        m.commit_seconds
            .get_or_create(&label)
            .observe(report.commit.as_secs_f64());
        m.commit_conflicts
            .get_or_create(&label)
            .inc_by(report.conflicts as u64);
        for e in report.events {
            m.events
                .get_or_create(&TypeLabel {
                    r#type: e.event_type.clone(),
                    partition: self.partition,
                })
                .inc();
        }
    }
}
