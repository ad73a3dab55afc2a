//! The assembled system: the log, the loaded contexts, the route table and the dispatcher.
//!
//! A client request flows through [`Runtime::handle`] (`request.rs`): route → a unit of work
//! begins → the routed context serves the request on the async workers (its wasm runs as a
//! fiber that yields at every epoch tick) → any synchronous call
//! it makes runs in the same unit, through the callee's breaker (`calls.rs`) → the unit commits
//! (group commit) → the response goes out. A unit that lost a race with a concurrent commit is
//! run again from scratch. Committed events reach subscribing contexts through the core's
//! dispatcher (`subscriber.rs`). Contexts are loaded, swapped and rolled back in `swap.rs`, and
//! stopped, started, inspected and replayed by operators in `operator.rs`; the cluster and
//! the data as a whole (the hosts, the writer's lease, backups) in `cluster_ops.rs`.

mod calls;
mod catalog;
mod cluster_ops;
mod error;
mod membership;
mod native;
mod operator;
mod placing;
mod replicated;
mod request;
mod subscriber;
mod swap;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use carshare_core::{Breaker, BreakerConfig, Dispatcher, Log, Partitions, RetryPolicy};
use serde::Serialize;

pub use catalog::{Catalog, CatalogError, CatalogEvent, CatalogSubscriber, Waiting};
pub use cluster_ops::{BackupError, ClusterOverview};
pub use error::{LoadContextError, RequestError};
pub use membership::Membership;
pub use native::NativeSubscriberInfo;
pub use operator::ContextInfo;
pub use request::Served;
pub use swap::Swapped;

use crate::cluster::{Cluster, ClusterStatus, Running};
use crate::components::ComponentStore;
use crate::metrics::{ContextGauges, Metrics};
use crate::routes::RouteTable;
use crate::wasm::{Limits, Plugin, WasmEngine};

/// How the runtime behaves.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Sandbox limits for every context.
    pub limits: Limits,
    /// How failing events are retried before they are parked.
    pub retry: RetryPolicy,
    /// The deepest chain of synchronous calls allowed.
    pub max_call_depth: u32,
    /// Requests executing wasm at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Requests of one context executing wasm at once (its share of the executors).
    pub max_concurrent_per_context: usize,
    /// How often a request that lost a race with a concurrent commit is run again.
    pub conflict_retries: u32,
    /// The circuit breaker and bulkhead in front of every context called synchronously.
    pub breaker: BreakerConfig,
    /// Sandbox limits of particular contexts, instead of `limits`.
    pub context_limits: BTreeMap<String, Limits>,
    /// Where swapped-in components are kept so a swap survives a restart (none: not kept).
    pub component_dir: Option<std::path::PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            max_call_depth: 8,
            max_concurrent_requests: 16,
            max_concurrent_per_context: 4,
            conflict_retries: 16,
            breaker: BreakerConfig::default(),
            context_limits: BTreeMap::new(),
            component_dir: None,
        }
    }
}

/// What the readiness probe reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Whether to send traffic here.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// `open` or `closed`: whether the log takes commits.
    pub log: &'static str,
    /// Each loaded context: `running` or `stopped`.
    pub contexts: BTreeMap<String, &'static str>,
    /// This host's part in its cluster, if it serves in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Each partition: its writer and how far its subscribers are behind.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition, as the readiness probe shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Its number.
    pub partition: u32,
    /// `running` while its commit writer runs, else `stopped`.
    pub writer: &'static str,
    /// The sequence number of its newest event.
    pub head: u64,
    /// Events its subscribers (every cursor kept in it) have still to go through.
    pub lag: u64,
}

/// One loaded context.
struct Slot {
    plugin: RwLock<Arc<Plugin>>,
    /// What a rollback restores: the component that ran before the last swap.
    previous: Mutex<Option<Arc<[u8]>>>,
    running: AtomicBool,
}

impl Slot {
    fn current(&self) -> Arc<Plugin> {
        self.plugin.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> &'static str {
        if self.running.load(Ordering::Acquire) {
            "running"
        } else {
            "stopped"
        }
    }
}

/// The runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    /// Partition 0's log (the only one without partitions).
    log: Log,
    /// Every partition.
    partitions: Partitions,
    /// Spreads the requests that create over the partitions.
    next_partition: std::sync::atomic::AtomicU32,
    engine: Arc<WasmEngine>,
    options: RuntimeOptions,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// The embedder's own subscribers' names (see `native.rs`). Taken after `slots`.
    natives: Mutex<std::collections::BTreeSet<String>>,
    routes: RwLock<RouteTable>,
    dispatcher: Dispatcher,
    executors: tokio::sync::Semaphore,
    /// One breaker per called context, made on first use. A std mutex: held for a map look-up.
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Each context's share of `executors`, made on first use.
    shares: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    components: Option<ComponentStore>,
    /// One swap at a time: a swap reads the current version and replaces it. A tokio mutex:
    /// it is held while the new version compiles and starts.
    swapping: tokio::sync::Mutex<()>,
    /// Set once shutdown begins: readiness probes fail from then on.
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    /// This host's part in a cluster, if it serves in one, and its running tasks.
    cluster: OnceLock<Cluster>,
    cluster_tasks: Mutex<Option<Running>>,
    /// The task switching contexts to the code the cluster's log names.
    pointer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Contexts stopped here because the code the cluster's log names would not load.
    stopped_for_code: Mutex<std::collections::BTreeSet<String>>,
}

impl Runtime {
    /// A runtime over `log` with no contexts yet. Must be called inside a tokio runtime.
    pub fn new(log: Log, engine: Arc<WasmEngine>, options: RuntimeOptions) -> std::io::Result<Runtime> {
        Runtime::with_partitions(Partitions::single(log), engine, options)
    }

    /// A runtime over every partition of `partitions` with no contexts yet. Must be called
    /// inside a tokio runtime.
    pub fn with_partitions(
        partitions: Partitions,
        engine: Arc<WasmEngine>,
        options: RuntimeOptions,
    ) -> std::io::Result<Runtime> {
        let log = partitions.log(0).clone();
        let components = options
            .component_dir
            .as_deref()
            .map(ComponentStore::open)
            .transpose()?;
        let metrics = Metrics::new();
        // A log or engine shared with another runtime keeps its first observer.
        for (p, partition) in partitions.logs().iter().enumerate() {
            partition.observe(Arc::new(metrics.of_partition(p as u32)));
        }
        engine.observe(metrics.clone());
        Ok(Runtime {
            inner: Arc::new(Inner {
                metrics,
                components,
                swapping: tokio::sync::Mutex::new(()),
                draining: AtomicBool::new(false),
                dispatcher: Dispatcher::partitioned(partitions.clone(), options.retry.clone()),
                partitions,
                next_partition: std::sync::atomic::AtomicU32::new(0),
                executors: tokio::sync::Semaphore::new(options.max_concurrent_requests.max(1)),
                log,
                engine,
                options,
                slots: RwLock::new(BTreeMap::new()),
                natives: Mutex::new(std::collections::BTreeSet::new()),
                routes: RwLock::new(RouteTable::default()),
                breakers: Mutex::new(HashMap::new()),
                shares: Mutex::new(HashMap::new()),
                cluster: OnceLock::new(),
                cluster_tasks: Mutex::new(None),
                pointer_task: Mutex::new(None),
                stopped_for_code: Mutex::new(std::collections::BTreeSet::new()),
            }),
        })
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The log (partition 0's, with several partitions).
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// Every partition.
    pub fn partitions(&self) -> &Partitions {
        &self.inner.partitions
    }

    /// The runtime's metrics in Prometheus' text exposition format.
    pub fn prometheus(&self) -> Result<String, carshare_core::StorageError> {
        let cursors = |s: Option<carshare_core::SubscriberStatus>| {
            s.map_or_else(Vec::new, |s| {
                if s.cursors.is_empty() {
                    vec![(0, 0, s.cursor, s.lag)]
                } else {
                    s.cursors
                        .iter()
                        .map(|c| (c.partition, c.source, c.cursor, c.lag))
                        .collect()
                }
            })
        };
        let contexts = self.contexts()?.into_iter().map(|c| ContextGauges {
            cursors: cursors(c.subscriber),
            name: c.name,
            instances: Some(c.instances),
            breaker: Some(c.breaker.state),
        });
        // A native subscriber has cursors, and neither instances nor a breaker.
        let natives = self.native_subscribers()?.into_iter().map(|n| ContextGauges {
            cursors: cursors(n.subscriber),
            name: n.name,
            instances: None,
            breaker: None,
        });
        let gauges = contexts.chain(natives);
        Ok(self.inner.metrics.encode(gauges, self.cluster_status().as_ref()))
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The route serving `path` and its context, if any.
    pub(crate) fn route_of(&self, path: &str) -> Option<(String, String)> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup_route(path)
            .map(|(r, c)| (r.to_string(), c.to_string()))
    }

    /// Every route with the context serving it, in path order.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .routes()
            .into_iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    }

    /// Whether the runtime should be sent traffic, and why not. A context an operator stopped
    /// does not make it unready: that is a deliberate, partial outage (its callers get 503),
    /// and taking the whole process out of service for it would turn it into a total one.
    pub fn readiness(&self) -> Readiness {
        let contexts: BTreeMap<String, &'static str> = self
            .inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, slot)| (name.clone(), slot.state()))
            .collect();
        let partitions = self.inner.partitions.logs();
        let mut status: Vec<PartitionStatus> = partitions
            .iter()
            .map(|l| PartitionStatus {
                partition: l.partition(),
                writer: if l.is_open() { "running" } else { "stopped" },
                head: l.head(),
                lag: 0,
            })
            .collect();
        for name in contexts.keys() {
            if let Ok(Some(sub)) = self.inner.dispatcher.status(name) {
                match sub.cursors.as_slice() {
                    [] => status[0].lag += sub.lag,
                    cursors => {
                        for c in cursors {
                            status[c.partition as usize].lag += c.lag;
                        }
                    }
                }
            }
        }
        let log_open = partitions.iter().all(Log::is_open);
        let failure = partitions.iter().find_map(|l| {
            l.storage_failure().map(|e| {
                if partitions.len() == 1 {
                    e.to_string()
                } else {
                    format!("partition {}: {e}", l.partition())
                }
            })
        });
        let cluster = self.cluster_status();
        let reason = if self.inner.draining.load(Ordering::Acquire) {
            Some("the server is shutting down".to_string())
        } else if !log_open {
            Some("the event log is closed or its commit writer has stopped".to_string())
        } else if let Some(e) = failure {
            Some(format!("the event log cannot commit: {e}"))
        } else if contexts.is_empty() {
            Some("no context is loaded".to_string())
        } else {
            cluster.as_ref().and_then(|c| match &c.stopped {
                Some(stopped) => Some(format!("stopped applying the cluster's log: {stopped}")),
                None if !c.caught_up => Some(format!(
                    "catching up with the cluster's log: applied {} of {}",
                    c.applied, c.log_last
                )),
                None => None,
            })
        };
        Readiness {
            ready: reason.is_none(),
            reason,
            log: if log_open { "open" } else { "closed" },
            contexts,
            cluster,
            partitions: status,
        }
    }

    /// Makes this runtime a host of `cluster` (once): it applies the cluster's log, takes the
    /// units other hosts forward to it, and competes for the writer's lease.
    pub(crate) fn join_cluster(&self, cluster: Cluster) {
        let running = cluster.run(self.inner.log.clone());
        if self.inner.cluster.set(cluster).is_ok() {
            *self.inner.cluster_tasks.lock().unwrap_or_else(|p| p.into_inner()) = Some(running);
            let pointers = tokio::spawn(self.clone().follow_pointers());
            *self.inner.pointer_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(pointers);
        }
    }

    /// This host's cluster, if it serves in one.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.get()
    }

    /// This host's part in its cluster, if it serves in one.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.inner.cluster.get().map(|c| c.status(&self.inner.log))
    }

    /// Marks the runtime as going away: readiness fails from now on, so load balancers stop
    /// sending traffic while in-flight requests finish. [`Runtime::shutdown`] does it too.
    pub fn begin_shutdown(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Stops delivering events (each subscriber finishes its step) and closes the log.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.inner.executors.close();
        for share in self
            .inner
            .shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            share.close();
        }
        if let Some(task) = self
            .inner
            .pointer_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        let cluster = self
            .inner
            .cluster_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(running) = cluster {
            running.stop().await;
        }
        self.inner.dispatcher.shutdown().await;
        self.inner.partitions.close();
    }
}
