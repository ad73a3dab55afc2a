//! A loaded context: its compiled component, its `InstancePre`, its manifest, and a pool of
//! instances that are reused from call to call (instantiated on demand up to a cap, never per
//! request). An instance that faults is discarded, never returned to the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carshare_core::{Event, Unit};
use wasmtime::{Store, StoreLimitsBuilder, Trap};

use super::Calls;
use super::bindings::carshare::context::types as wit;
use super::bindings::{BoundedContext, BoundedContextPre};
use super::convert;
use super::engine::{EPOCH_TICK, WasmEngine};
use super::instance::{InstanceState, Scope};
use crate::types::{CallError, Request, Response};

/// Sandbox limits of one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU time one call may take before it is interrupted.
    pub call_deadline: Duration,
    /// Bytes of linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Instances of the context alive at once.
    pub max_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_deadline: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            max_instances: 64,
        }
    }
}

/// What a context says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// HTTP collections.
    pub routes: Vec<String>,
    /// Event types.
    pub subscriptions: Vec<String>,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not a valid component, or it does not implement the `bounded-context` world.
    #[error("not a bounded-context component: {0}")]
    Invalid(String),
    /// Instantiating it or asking its manifest failed.
    #[error("the component failed to start: {0}")]
    Failed(String),
    /// Its manifest makes no sense.
    #[error("bad manifest: {0}")]
    BadManifest(String),
}

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
    engine: Arc<WasmEngine>,
    pre: BoundedContextPre<InstanceState>,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    live: Arc<AtomicUsize>,
}

impl Plugin {
    /// Compiles (or loads from cache) and checks `bytes`: it must implement the world, start,
    /// and declare a sensible manifest.
    pub fn load(engine: &Arc<WasmEngine>, bytes: &[u8], limits: Limits) -> Result<Plugin, LoadError> {
        let compiled = engine
            .compile(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre = engine
            .linker
            .instantiate_pre(&compiled.component)
            .and_then(BoundedContextPre::new)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let mut plugin = Plugin {
            bytes: Arc::from(bytes),
            manifest: Manifest {
                name: String::new(),
                version: String::new(),
                routes: vec![],
                subscriptions: vec![],
            },
            digest: compiled.digest,
            from_cache: compiled.cached,
            loaded_at: carshare_core::rfc3339_utc(carshare_core::now_millis()),
            name: Arc::from("(loading)"),
            engine: engine.clone(),
            pre,
            limits,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        };
        let mut first = plugin
            .instantiate(LiveSlot::take(&plugin.live).0)
            .map_err(|e| LoadError::Failed(format!("{e:#}")))?;
        first.store.set_epoch_deadline(plugin.deadline_ticks());
        let m = first
            .bindings
            .call_manifest(&mut first.store)
            .map_err(|e| LoadError::Failed(format!("{e:#}")))?;
        let manifest = Manifest {
            name: m.name,
            version: m.version,
            routes: m.routes,
            subscriptions: m.subscriptions,
        };
        check_manifest(&manifest)?;
        plugin.name = Arc::from(manifest.name.as_str());
        first.store.data_mut().context = plugin.name.clone();
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
    pub fn handle_request(
        &self,
        calls: Arc<dyn Calls>,
        request: Request,
        unit: Unit,
        depth: u32,
    ) -> (Unit, Result<Response, CallError>) {
        let req = wit::Request {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
            base_url: request.base_url,
            caller: request.caller,
        };
        let (unit, r) = self.with_instance(calls, unit, depth, |inst| {
            inst.bindings.call_handle_request(&mut inst.store, &req)
        });
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

    /// Applies `event` inside `unit`.
    pub fn handle_event(
        &self,
        calls: Arc<dyn Calls>,
        event: &Event,
        unit: Unit,
    ) -> (Unit, Result<(), CallError>) {
        let ev = wit::Event {
            seq: event.seq,
            id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            key: event.key.clone(),
            timestamp: event.timestamp.clone(),
            payload: event.payload.get().to_string(),
        };
        let (unit, r) = self.with_instance(calls, unit, 0, |inst| {
            inst.bindings.call_handle_event(&mut inst.store, &ev)
        });
        (
            unit,
            r.and_then(|r| r.map_err(|e| CallError::Domain(convert::from_wit(e)))),
        )
    }

    /// Runs `f` on a pooled instance with `unit` in its scope, and takes the unit back.
    fn with_instance<T>(
        &self,
        calls: Arc<dyn Calls>,
        unit: Unit,
        depth: u32,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> (Unit, Result<T, CallError>) {
        let mut inst = match self.acquire() {
            Ok(i) => i,
            Err(e) => return (unit, Err(e)),
        };
        inst.store.data_mut().scope = Some(Scope { unit, calls, depth });
        inst.store.set_epoch_deadline(self.deadline_ticks());
        let result = f(&mut inst);
        let scope = inst
            .store
            .data_mut()
            .scope
            .take()
            .expect("imports always put the scope back");
        match result {
            Ok(v) => {
                self.release(inst);
                (scope.unit, Ok(v))
            }
            Err(e) => {
                // A trapped instance may be in any state: drop it; the pool makes a new one.
                drop(inst);
                let message = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => {
                        format!("exceeded its CPU deadline of {:?}", self.limits.call_deadline)
                    }
                    _ => "it trapped (the server log has the details)".to_string(),
                };
                (
                    scope.unit,
                    Err(CallError::Fault {
                        context: self.name.to_string(),
                        message,
                        detail: format!("{e:#}"),
                    }),
                )
            }
        }
    }

    fn acquire(&self) -> Result<Instance, CallError> {
        if let Some(i) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(i);
        }
        let (slot, before) = LiveSlot::take(&self.live);
        if before >= self.limits.max_instances {
            return Err(CallError::Busy(self.name.to_string()));
        }
        self.instantiate(slot).map_err(|e| CallError::Fault {
            context: self.name.to_string(),
            message: "it could not be instantiated (the server log has the details)".into(),
            detail: format!("{e:#}"),
        })
    }

    fn release(&self, inst: Instance) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
    }

    /// A new instance, counted by `slot`.
    fn instantiate(&self, slot: LiveSlot) -> wasmtime::Result<Instance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(64)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine.engine, InstanceState::new(self.name.clone(), limits));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self.pre.instantiate(&mut store)?;
        Ok(Instance {
            store,
            bindings,
            _live: slot,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }
}

fn check_manifest(m: &Manifest) -> Result<(), LoadError> {
    let valid_name = !m.name.is_empty()
        && m.name.len() <= 64
        && m.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        return Err(LoadError::BadManifest(format!(
            "context name {:?} must be 1-64 of a-z, 0-9, -",
            m.name
        )));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        return Err(LoadError::BadManifest("version must be 1-64 bytes".into()));
    }
    if m.subscriptions.iter().any(|s| s.is_empty() || s.len() > 128) {
        return Err(LoadError::BadManifest("event types must be 1-128 bytes".into()));
    }
    Ok(())
}
