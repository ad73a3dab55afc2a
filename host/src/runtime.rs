//! The assembled system: the log, the loaded contexts, the route table and the dispatcher.
//!
//! A client request flows through [`Runtime::handle`]: route → a unit of work begins → the
//! routed context serves the request on a blocking thread (wasm runs synchronously, and WASI's
//! sync shims must not run on an async worker) → any synchronous call it makes runs in the same
//! unit ([`Runtime::call_context`]) → the unit commits (group commit) → the response goes out.
//! A unit that lost a race with a concurrent commit is run again from scratch. Committed
//! events reach subscribing contexts through the core's dispatcher.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use carshare_core::{
    Breaker, BreakerConfig, BreakerStatus, CommitError, Dispatcher, Event, EventHandler, HandlerError, Log,
    Rejected, RetryError, RetryPolicy, StorageError, SubscriberStatus, Ticket, Unit,
};
use serde::Serialize;

use crate::components::{ComponentStore, Stored};
use crate::routes::{RouteError, RouteTable};
use crate::types::{CallError, DomainError, Request, Response};
use crate::wasm::{Limits, LoadError, Plugin, WasmEngine};

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

/// Why a request got no response from a context.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// No context serves the path.
    NoRoute(String),
    /// The routed context failed or refused (see [`CallError`]).
    Call(CallError),
    /// The database failed; nothing was committed.
    Storage(StorageError),
    /// The request kept conflicting with concurrent commits; nothing was committed.
    Contention,
    /// The runtime is shutting down; nothing was committed.
    ShuttingDown,
}

/// Why a context could not be loaded, swapped or rolled back. In every case nothing changed:
/// the version that ran before goes on serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadContextError {
    /// The component itself is unusable.
    Load(LoadError),
    /// Its routes collide or are malformed.
    Route(RouteError),
    /// A context of that name is already loaded.
    AlreadyLoaded(String),
    /// No context of that name is loaded.
    NoSuchContext(String),
    /// The component says it is another context.
    WrongContext {
        /// The context it was given for.
        expected: String,
        /// What its manifest says.
        found: String,
    },
    /// There is no earlier version to roll back to.
    NoPrevious(String),
    /// The swap could not be recorded on disk.
    Persist(String),
}

impl std::fmt::Display for LoadContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadContextError::Load(e) => e.fmt(f),
            LoadContextError::Route(e) => e.fmt(f),
            LoadContextError::AlreadyLoaded(n) => write!(f, "a context named {n} is already loaded"),
            LoadContextError::NoSuchContext(n) => write!(f, "no context named {n}"),
            LoadContextError::WrongContext { expected, found } => {
                write!(f, "the component is the {found} context, not {expected}")
            }
            LoadContextError::NoPrevious(n) => write!(f, "{n} has no earlier version to roll back to"),
            LoadContextError::Persist(e) => write!(f, "the swap could not be recorded: {e}"),
        }
    }
}

impl std::error::Error for LoadContextError {}

/// What a swap or rollback did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Swapped {
    /// The context.
    pub name: String,
    /// The version now serving.
    pub version: String,
    /// The version it replaced (what a rollback restores).
    pub previous_version: String,
    /// SHA-256 of the component now serving.
    pub digest: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// From the call to the new version serving, in milliseconds (compiling or loading from
    /// the cache, checking, instantiating, persisting, switching).
    pub millis: f64,
}

/// What an operator sees of a context.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the component.
    pub digest: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// `running` or `stopped`.
    pub state: &'static str,
    /// Routes.
    pub routes: Vec<String>,
    /// Subscriptions.
    pub subscriptions: Vec<String>,
    /// Live instances.
    pub instances: usize,
    /// Its event cursor, lag and any failing event, if it subscribes.
    pub subscriber: Option<SubscriberStatus>,
    /// The circuit breaker in front of synchronous calls into it.
    pub breaker: BreakerStatus,
    /// Whether a rollback is possible.
    pub can_roll_back: bool,
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
}

/// The runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    log: Log,
    engine: Arc<WasmEngine>,
    options: RuntimeOptions,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    routes: RwLock<RouteTable>,
    dispatcher: Dispatcher,
    executors: tokio::sync::Semaphore,
    /// One breaker per called context, made on first use. A std mutex: held for a map look-up.
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Each context's share of `executors`, made on first use.
    shares: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    components: Option<ComponentStore>,
    /// One swap at a time: a swap reads the current version and replaces it.
    swapping: Mutex<()>,
    /// Set once shutdown begins: readiness probes fail from then on.
    draining: AtomicBool,
}

impl Runtime {
    /// A runtime over `log` with no contexts yet. Must be called inside a tokio runtime.
    pub fn new(log: Log, engine: Arc<WasmEngine>, options: RuntimeOptions) -> std::io::Result<Runtime> {
        let components = options
            .component_dir
            .as_deref()
            .map(ComponentStore::open)
            .transpose()?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                components,
                swapping: Mutex::new(()),
                draining: AtomicBool::new(false),
                dispatcher: Dispatcher::new(log.clone(), options.retry.clone()),
                executors: tokio::sync::Semaphore::new(options.max_concurrent_requests.max(1)),
                log,
                engine,
                options,
                slots: RwLock::new(BTreeMap::new()),
                routes: RwLock::new(RouteTable::default()),
                breakers: Mutex::new(HashMap::new()),
                shares: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn limits_for(&self, name: &str) -> Limits {
        self.inner
            .options
            .context_limits
            .get(name)
            .unwrap_or(&self.inner.options.limits)
            .clone()
    }

    /// The components swapped in earlier, kept across restarts: name → (current, previous).
    pub fn swapped_components(&self) -> std::io::Result<BTreeMap<String, Stored>> {
        let Some(store) = &self.inner.components else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for name in store.names()? {
            if let Some(found) = store.load(&name)? {
                out.insert(name, found);
            }
        }
        Ok(out)
    }

    /// Replaces the code of context `name` with the component `bytes`, while it serves.
    ///
    /// The component is compiled (or loaded from the cache), instantiated and checked first:
    /// it must implement the world, say it is `name`, and serve no route of another context.
    /// Only then, in one step, new requests and event steps go to it; requests and steps in
    /// flight finish on the version they started on. The event cursor belongs to the context,
    /// not the version, so the new version continues exactly where the old one was. The old
    /// version is kept for [`Runtime::rollback`], and the swap is recorded so that it survives
    /// a restart.
    pub fn swap(&self, name: &str, bytes: &[u8]) -> Result<Swapped, LoadContextError> {
        let started = Instant::now();
        let _one_at_a_time = self.inner.swapping.lock().unwrap_or_else(|p| p.into_inner());
        self.swap_locked(name, bytes, started)
    }

    /// Restores the version that ran before the last swap (the same way a swap installs one);
    /// rolling back twice returns to where it started.
    pub fn rollback(&self, name: &str) -> Result<Swapped, LoadContextError> {
        let started = Instant::now();
        // Held from reading the previous version to installing it, so two rollbacks at once
        // cannot both install the same version and lose the other.
        let _one_at_a_time = self.inner.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        let previous = slot
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| LoadContextError::NoPrevious(name.to_string()))?;
        self.swap_locked(name, &previous, started)
    }

    /// [`Runtime::swap`], with the swap lock held by the caller.
    fn swap_locked(&self, name: &str, bytes: &[u8], started: Instant) -> Result<Swapped, LoadContextError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        let plugin =
            Plugin::load(&self.inner.engine, bytes, self.limits_for(name)).map_err(LoadContextError::Load)?;
        if plugin.manifest().name != name {
            return Err(LoadContextError::WrongContext {
                expected: name.to_string(),
                found: plugin.manifest().name.clone(),
            });
        }
        self.install(name, &slot, Arc::new(plugin), started)
    }

    fn install(
        &self,
        name: &str,
        slot: &Slot,
        new: Arc<Plugin>,
        started: Instant,
    ) -> Result<Swapped, LoadContextError> {
        let old = slot.current();
        let routes = new.manifest().routes.clone();
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(name, &routes)
            .map_err(LoadContextError::Route)?;
        // Recorded before it takes effect: if recording fails, nothing has changed.
        if let Some(store) = &self.inner.components {
            store
                .save(name, new.bytes(), Some(old.bytes()))
                .map_err(|e| LoadContextError::Persist(e.to_string()))?;
        }
        self.inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(name, &routes)
            .map_err(LoadContextError::Route)?;
        *slot.plugin.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        *slot.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old.bytes().clone());
        // A breaker opened by the old version must not keep refusing calls to the new one
        // (after a rollback from a faulting version, above all).
        self.breaker(name).reset();
        let swapped = Swapped {
            name: name.to_string(),
            version: new.manifest().version.clone(),
            previous_version: old.manifest().version.clone(),
            digest: new.digest().to_string(),
            loaded_at: new.loaded_at().to_string(),
            millis: started.elapsed().as_secs_f64() * 1000.0,
        };
        crate::log::info(&format!(
            "swapped context {name}: {} -> {} in {:.1} ms",
            swapped.previous_version, swapped.version, swapped.millis
        ));
        Ok(swapped)
    }

    /// Makes `previous` what a rollback of `name` restores (after a restart, from disk).
    pub fn set_previous(&self, name: &str, previous: Vec<u8>) -> bool {
        match self.slot(name) {
            Some(slot) => {
                *slot.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(previous));
                true
            }
            None => false,
        }
    }

    /// Loads context `name` from component bytes, routes its collections and subscribes it
    /// from its durable cursor.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<(), LoadContextError> {
        let plugin =
            Plugin::load(&self.inner.engine, bytes, self.limits_for(name)).map_err(LoadContextError::Load)?;
        let m = plugin.manifest().clone();
        let code = if plugin.from_cache() { "cached" } else { "compiled" };
        if m.name != name {
            return Err(LoadContextError::WrongContext {
                expected: name.to_string(),
                found: m.name,
            });
        }
        let mut slots = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.contains_key(&m.name) {
            return Err(LoadContextError::AlreadyLoaded(m.name));
        }
        self.inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(&m.name, &m.routes)
            .map_err(LoadContextError::Route)?;
        slots.insert(
            m.name.clone(),
            Arc::new(Slot {
                plugin: RwLock::new(Arc::new(plugin)),
                previous: Mutex::new(None),
                running: AtomicBool::new(true),
            }),
        );
        drop(slots);
        let subscriber = Subscriber {
            runtime: Arc::downgrade(&self.inner),
            name: m.name.clone(),
        };
        self.inner
            .dispatcher
            .subscribe(&m.name, Arc::new(subscriber), true);
        crate::log::info(&format!(
            "loaded context {} {} (routes {:?}, subscribes {:?}, machine code {code})",
            m.name, m.version, m.routes, m.subscriptions
        ));
        Ok(())
    }

    /// Serves a client request: routes it, runs it as one unit of work, commits, answers.
    pub async fn handle(&self, request: Request) -> Result<Served, RequestError> {
        let name = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(&request.path)
            .map(str::to_string)
            .ok_or_else(|| RequestError::NoRoute(request.path.clone()))?;
        // A context's requests wait for its own share of the executors first: a context that
        // is slow or spinning queues its own requests, never the other contexts'.
        let share = self.share(&name);
        let breaker = self.breaker(&name);
        for _ in 0..=self.inner.options.conflict_retries {
            let _share = share.acquire().await.map_err(|_| RequestError::ShuttingDown)?;
            let permit = self
                .inner
                .executors
                .acquire()
                .await
                .map_err(|_| RequestError::ShuttingDown)?;
            // The breaker in front of the context counts its faults (deadline hits, traps):
            // a context that keeps faulting is answered at once instead of burning CPU.
            let ticket = breaker
                .try_start(Instant::now())
                .map_err(|r| RequestError::Call(refused(&name, r)))?;
            let mut outcome = Outcome {
                breaker: &breaker,
                ticket: Some(ticket),
                ok: false,
            };
            let rt = self.clone();
            let (req, ctx) = (request.clone(), name.clone());
            let ran = tokio::task::spawn_blocking(move || -> Result<_, RequestError> {
                let plugin = rt.resolve(&ctx, 0).map_err(RequestError::Call)?;
                let unit = rt.inner.log.begin().map_err(RequestError::Storage)?;
                let (unit, result) = plugin.handle_request(&rt, req, unit, 0);
                Ok((unit, result, plugin.manifest().version.clone()))
            })
            .await
            .map_err(|_| {
                RequestError::Call(CallError::Fault {
                    context: name.clone(),
                    message: "the host panicked while it ran".into(),
                    detail: String::new(),
                })
            })?;
            drop(permit);
            let (unit, result, version) = ran?;
            outcome.ok = !matches!(result, Err(CallError::Fault { .. }));
            drop(outcome);
            let response = result.map_err(RequestError::Call)?;
            match self.inner.log.commit(unit).await {
                Ok(_) => {
                    return Ok(Served {
                        response,
                        context: name,
                        version,
                    });
                }
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Closed) => return Err(RequestError::ShuttingDown),
                Err(CommitError::Storage(e)) => return Err(RequestError::Storage(e)),
                Err(_) => return Err(RequestError::ShuttingDown),
            }
        }
        Err(RequestError::Contention)
    }

    /// A synchronous call from one context into another, inside the caller's unit, through
    /// the callee's circuit breaker and bulkhead.
    pub(crate) fn call_context(
        &self,
        name: &str,
        request: Request,
        unit: Unit,
        depth: u32,
    ) -> (Unit, Result<Response, CallError>) {
        let breaker = self.breaker(name);
        let ticket = match breaker.try_start(Instant::now()) {
            Ok(ticket) => ticket,
            Err(r) => return (unit, Err(refused(name, r))),
        };
        // Reported however the call ends; a panic unwinding through here counts as a failure.
        let mut outcome = Outcome {
            breaker: &breaker,
            ticket: Some(ticket),
            ok: false,
        };
        let (unit, result) = match self.resolve(name, depth) {
            Ok(plugin) => plugin.handle_request(self, request, unit, depth),
            Err(e) => (unit, Err(e)),
        };
        outcome.ok = !counts_as_failure(&result);
        drop(outcome);
        (unit, result)
    }

    /// `name`'s share of the executors, made on first use; it outlives swaps.
    fn share(&self, name: &str) -> Arc<tokio::sync::Semaphore> {
        let per_context = self.inner.options.max_concurrent_per_context.max(1);
        self.inner
            .shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_context)))
            .clone()
    }

    fn breaker(&self, name: &str) -> Arc<Breaker> {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Breaker::new(self.inner.options.breaker.clone())))
            .clone()
    }

    /// The running plugin of `name`, if it may be called at `depth`.
    fn resolve(&self, name: &str, depth: u32) -> Result<Arc<Plugin>, CallError> {
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

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Stops or starts a context: a stopped context answers no request or call (callers get
    /// "unavailable") and receives no event; its cursor stays where it is, and it catches up
    /// when started. Returns false for an unknown context.
    pub fn set_running(&self, name: &str, running: bool) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        slot.running.store(running, Ordering::Release);
        self.inner.dispatcher.set_running(name, running);
        crate::log::info(&format!(
            "context {name} {}",
            if running { "started" } else { "stopped" }
        ));
        true
    }

    /// Every loaded context, by name.
    pub fn contexts(&self) -> Result<Vec<ContextInfo>, StorageError> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(name, slot)| {
                let p = slot.current();
                let m = p.manifest();
                Ok(ContextInfo {
                    version: m.version.clone(),
                    digest: p.digest().to_string(),
                    loaded_at: p.loaded_at().to_string(),
                    state: if slot.running.load(Ordering::Acquire) {
                        "running"
                    } else {
                        "stopped"
                    },
                    routes: m.routes.clone(),
                    subscriptions: m.subscriptions.clone(),
                    instances: p.instances(),
                    subscriber: self.inner.dispatcher.status(&name)?,
                    breaker: self.breaker(&name).status(Instant::now()),
                    can_roll_back: slot.previous.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
                    name,
                })
            })
            .collect()
    }

    /// Has `name` handle its dead letter `seq` again (see [`Dispatcher::retry_dead_letter`]).
    pub async fn retry_dead_letter(&self, name: &str, seq: u64) -> Result<(), RetryError> {
        self.inner.dispatcher.retry_dead_letter(name, seq).await
    }

    /// Moves `name`'s event cursor to `to` (see [`Dispatcher::set_cursor`]). Returns false for
    /// an unknown context.
    pub async fn set_cursor(&self, name: &str, to: u64) -> Result<bool, CommitError> {
        if self.slot(name).is_none() {
            return Ok(false);
        }
        self.inner.dispatcher.set_cursor(name, to).await.map(|_| true)
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.inner.log
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
            .map(|(name, slot)| {
                let state = if slot.running.load(Ordering::Acquire) {
                    "running"
                } else {
                    "stopped"
                };
                (name.clone(), state)
            })
            .collect();
        let log_open = self.inner.log.is_open();
        let reason = if self.inner.draining.load(Ordering::Acquire) {
            Some("the server is shutting down")
        } else if !log_open {
            Some("the event log is closed or its commit writer has stopped")
        } else if contexts.is_empty() {
            Some("no context is loaded")
        } else {
            None
        };
        Readiness {
            ready: reason.is_none(),
            reason: reason.map(str::to_string),
            log: if log_open { "open" } else { "closed" },
            contexts,
        }
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
        self.inner.dispatcher.shutdown().await;
        self.inner.log.close();
    }
}

/// A started call's report to its breaker, made when dropped.
struct Outcome<'a> {
    breaker: &'a Breaker,
    ticket: Option<Ticket>,
    ok: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.finish(ticket, self.ok, Instant::now());
        }
    }
}

/// What a caller is told when `name`'s breaker refuses a call or request.
fn refused(name: &str, r: Rejected) -> CallError {
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

/// Whether a call's outcome counts against the callee's breaker: faults and unavailability do;
/// a domain answer (even a refusal) means the callee is working.
fn counts_as_failure(result: &Result<Response, CallError>) -> bool {
    match result {
        Ok(_) => false,
        Err(CallError::Domain(DomainError::Unavailable(_) | DomainError::Internal(_))) => true,
        Err(CallError::Domain(_)) => false,
        Err(_) => true,
    }
}

/// A context as a subscriber of the dispatcher. Holds the runtime weakly: the dispatcher lives
/// inside the runtime.
struct Subscriber {
    runtime: Weak<Inner>,
    name: String,
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

impl EventHandler for Pinned {
    fn wants(&self, event_type: &str) -> bool {
        self.plugin
            .manifest()
            .subscriptions
            .iter()
            .any(|s| s == event_type)
    }

    fn handle(&self, unit: Unit, event: &Event) -> (Unit, Result<(), HandlerError>) {
        let (unit, r) = self.plugin.handle_event(&self.runtime, event, unit);
        let r = r.map_err(|e| match e {
            // A dependency that is down or shedding load: wait for it, never park.
            CallError::Domain(DomainError::Unavailable(_))
            | CallError::Stopped(_)
            | CallError::Busy(_)
            | CallError::NoSuchContext(_)
            | CallError::CircuitOpen { .. } => HandlerError::transient(e),
            // Dead letters are the operator's: they keep the engine's detail.
            e => HandlerError::new(e.detailed()),
        });
        (unit, r)
    }
}

impl EventHandler for Subscriber {
    /// Without a runtime (it is being dropped), every event is "wanted" and then fails
    /// transiently in `handle`: the cursor must never move past events nobody handled.
    fn wants(&self, event_type: &str) -> bool {
        match self.runtime() {
            Some((_, slot)) => slot
                .current()
                .manifest()
                .subscriptions
                .iter()
                .any(|s| s == event_type),
            None => true,
        }
    }

    fn handle(&self, unit: Unit, event: &Event) -> (Unit, Result<(), HandlerError>) {
        match self.pin() {
            Some(pinned) => pinned.handle(unit, event),
            None => (unit, Err(HandlerError::transient("the runtime is shutting down"))),
        }
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
        crate::log::warn(&format!(
            "{} failed on {} #{} (attempt {attempt}, {what}): {}",
            self.name, event.event_type, event.seq, error.message
        ));
    }
}
