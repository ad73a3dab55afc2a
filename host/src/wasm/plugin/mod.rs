//! A loaded context: its compiled component, its `InstancePre`, its manifest, and a pool of
//! instances that are reused from call to call (instantiated on demand up to a cap, never per
//! request). An instance that faults is discarded, never returned to the pool.
//!
//! A call runs as a fiber on the caller's async worker. Its deadline is counted in epoch
//! ticks: at each tick it yields to the worker's other tasks, and once its ticks are used up
//! it is interrupted (a fault).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use carshare_core::Unit;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::Calls;
use super::bindings::carshare::context::types as wit;
use super::bindings::{BoundedContext, BoundedContextPre};
use super::convert;
use super::engine::{EPOCH_TICK, WasmEngine};
use super::instance::{InstanceState, Scope};
use super::manifest::{Limits, LoadError, Manifest, check_manifest};
use crate::types::{CallError, Request, Response};

mod events;

pub use events::AppliedEvents;

struct Instance {
    store: Store<InstanceState>,
    bindings: BoundedContext,
    _live: LiveSlot,
}

/// One count of a plugin's live instances, given back when dropped: an instance is counted
/// exactly as long as it exists, whichever way it ends (returned, discarded after a fault, or
/// dropped while a panic unwinds).
struct LiveSlot(Arc<AtomicUsize>);

impl LiveSlot {
    fn take(live: &Arc<AtomicUsize>) -> (Self, usize) {
        let before = live.fetch_add(1, Ordering::Relaxed);
        (LiveSlot(live.clone()), before)
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A loaded context.
pub struct Plugin {
    manifest: Manifest,
    bytes: Arc<[u8]>,
    digest: String,
    from_cache: bool,
    loaded_at: String,
    name: Arc<str>,
    version: Arc<str>,
    /// The event types it declares, handed to each instance, which refuses any other.
    publishes: Arc<[String]>,
    engine: Arc<WasmEngine>,
    pre: BoundedContextPre<InstanceState>,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    live: Arc<AtomicUsize>,
}

impl Plugin {
    /// Compiles (or loads from cache) and checks `bytes`: it must implement the world, start,
    /// and declare a sensible manifest. Compiling is CPU-heavy, so it runs on a blocking
    /// thread.
    pub async fn load(
        engine: &Arc<WasmEngine>,
        bytes: Arc<[u8]>,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        let (e, b) = (engine.clone(), bytes.clone());
        let compiled = tokio::task::spawn_blocking(move || e.compile(&b))
            .await
            .map_err(|e| LoadError::Failed(format!("the compile task failed: {e}")))?
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre = engine
            .linker
            .instantiate_pre(&compiled.component)
            .and_then(BoundedContextPre::new)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let mut plugin = Plugin {
            bytes,
            manifest: Manifest {
                name: String::new(),
                version: String::new(),
                routes: vec![],
                subscriptions: vec![],
                publishes: vec![],
                placement: crate::wasm::Placement::Partitioned,
                operations: vec![],
                schemas: vec![],
            },
            digest: compiled.digest,
            from_cache: compiled.cached,
            loaded_at: carshare_core::rfc3339_utc(carshare_core::now_millis()),
            name: Arc::from("(loading)"),
            version: Arc::from(""),
            publishes: Arc::from([]),
            engine: engine.clone(),
            pre,
            limits,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        };
        let mut first = plugin
            .instantiate(LiveSlot::take(&plugin.live).0)
            .await
            .map_err(|e| LoadError::Failed(format!("{e:#}")))?;
        plugin.start_call(&mut first);
        let m = first
            .bindings
            .call_manifest(&mut first.store)
            .await
            .map_err(|e| LoadError::Failed(format!("{e:#}")))?;
        let manifest = convert::manifest_from_wit(m)?;
        check_manifest(&manifest)?;
        plugin.name = Arc::from(manifest.name.as_str());
        plugin.version = Arc::from(manifest.version.as_str());
        first.store.data_mut().context = plugin.name.clone();
        first.store.data_mut().version = plugin.version.clone();
        plugin.publishes = manifest.publishes.iter().map(|d| d.event_type.clone()).collect();
        first.store.data_mut().publishes = plugin.publishes.clone();
        plugin.manifest = manifest;
        plugin
            .idle
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(first);
        Ok(plugin)
    }

    /// Whether its machine code came from the compile cache.
    pub fn code_from_cache(&self) -> bool {
        self.from_cache
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The component's bytes, as loaded.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// When it was loaded, RFC 3339 UTC.
    pub fn loaded_at(&self) -> &str {
        &self.loaded_at
    }

    /// Instances alive now (idle or serving).
    pub fn instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Serves `request` inside `unit`. The unit is handed back whatever happens.
    pub async fn handle_request(
        &self,
        calls: Arc<dyn Calls>,
        request: &Request,
        unit: Unit,
        depth: u32,
    ) -> (Unit, Result<Response, CallError>) {
        // The request's strings are copied once, straight into the guest's memory.
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = wit::RequestParam {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &headers,
            body: &request.body,
            base_url: &request.base_url,
            caller: request.caller.as_deref(),
        };
        let mut inst = match self.enter(calls, unit, depth).await {
            Ok(inst) => inst,
            Err((unit, e)) => return (unit, Err(e)),
        };
        let started = Instant::now();
        let result = inst.bindings.call_handle_request(&mut inst.store, req).await;
        let (unit, r) = self.leave(inst, result, started);
        let r = r.and_then(|r| {
            r.map(|r| Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(|e| CallError::Domain(convert::from_wit(e)))
        });
        (unit, r)
    }

    /// A pooled instance with `unit` in its scope and a fresh deadline; on failure the unit
    /// comes back with the error.
    async fn enter(
        &self,
        calls: Arc<dyn Calls>,
        unit: Unit,
        depth: u32,
    ) -> Result<Instance, (Unit, CallError)> {
        let mut inst = match self.acquire().await {
            Ok(i) => i,
            Err(e) => return Err((unit, e)),
        };
        inst.store.data_mut().scope = Some(Scope {
            unit,
            calls,
            depth,
            batch: None,
        });
        self.start_call(&mut inst);
        Ok(inst)
    }

    /// Takes the unit back from `inst` after its call, and returns the instance to the pool,
    /// or drops it if the call faulted (it may be in any state).
    fn leave<T>(
        &self,
        mut inst: Instance,
        result: wasmtime::Result<T>,
        started: Instant,
    ) -> (Unit, Result<T, CallError>) {
        let scope = inst
            .store
            .data_mut()
            .scope
            .take()
            .expect("imports always put the scope back");
        let nested = std::mem::take(&mut inst.store.data_mut().nested);
        if let Some(observer) = self.engine.observer.get() {
            let deadline_hit =
                matches!(&result, Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt));
            observer.ran(&self.name, started.elapsed().saturating_sub(nested), deadline_hit);
        }
        match result {
            Ok(v) => {
                self.release(inst);
                (scope.unit, Ok(v))
            }
            Err(e) => {
                let out_of_memory = inst.store.data().limits.refused;
                drop(inst);
                let (message, exhausted) = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => (
                        format!("exceeded its CPU deadline of {:?}", self.limits.call_deadline),
                        true,
                    ),
                    _ if out_of_memory => (
                        format!(
                            "reached its memory limit of {} MiB (the server log has the details)",
                            self.limits.memory_bytes >> 20
                        ),
                        true,
                    ),
                    _ => ("it trapped (the server log has the details)".to_string(), false),
                };
                (
                    scope.unit,
                    Err(CallError::Fault {
                        context: self.name.to_string(),
                        message,
                        detail: format!("{e:#}"),
                        exhausted,
                    }),
                )
            }
        }
    }

    async fn acquire(&self) -> Result<Instance, CallError> {
        if let Some(i) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(i);
        }
        let (slot, before) = LiveSlot::take(&self.live);
        if before >= self.limits.max_instances {
            return Err(CallError::Busy(self.name.to_string()));
        }
        self.instantiate(slot).await.map_err(|e| CallError::Fault {
            context: self.name.to_string(),
            message: "it could not be instantiated (the server log has the details)".into(),
            detail: format!("{e:#}"),
            exhausted: false,
        })
    }

    fn release(&self, inst: Instance) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
    }

    /// A new instance, counted by `slot`. At each epoch tick a call yields; once its ticks
    /// are used up, it is interrupted.
    async fn instantiate(&self, slot: LiveSlot) -> wasmtime::Result<Instance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(64)
            .trap_on_grow_failure(true)
            .build();
        let mut state = InstanceState::new(self.name.clone(), limits);
        state.version = self.version.clone();
        state.publishes = self.publishes.clone();
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            if state.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store.data_mut().ticks_left = self.deadline_ticks();
        store.set_epoch_deadline(1);
        let bindings = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            bindings,
            _live: slot,
        })
    }

    /// Gives the call about to run on `inst` its whole deadline.
    fn start_call(&self, inst: &mut Instance) {
        inst.store.data_mut().ticks_left = self.deadline_ticks();
        inst.store.set_epoch_deadline(1);
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}
