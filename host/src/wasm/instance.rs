//! What a component instance's store holds: its context's name, a WASI context that grants
//! nothing, its resource limits, and, for the length of one call, the [`Scope`] of that call:
//! the unit of work its imports read and write, and where its synchronous calls go.

use std::sync::Arc;

use carshare_core::{Event, Savepoint, Unit};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::Calls;
use super::own_state::OwnState;

/// The store data of one instance.
pub struct InstanceState {
    /// The context this instance belongs to: the namespace of its state.
    pub context: Arc<str>,
    /// The version of its code, for its log lines.
    pub version: Arc<str>,
    /// The event types its manifest declares: the only ones it may publish.
    pub publishes: Arc<[String]>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and instance limits, enforced by wasmtime through `Store::limiter`.
    pub limits: Limits,
    /// Present only while the instance is serving a call.
    pub scope: Option<Scope>,
    /// Time the current call spent waiting on synchronous calls into other contexts: not its
    /// own running time.
    pub nested: std::time::Duration,
    /// Epoch ticks the current call may still run before it is interrupted; at each tick
    /// short of that it yields to the other tasks of its worker.
    pub ticks_left: u64,
}

/// The call an instance is serving.
pub struct Scope {
    /// The unit of work of the whole request or event step.
    pub unit: Unit,
    /// Where synchronous calls into other contexts go.
    pub calls: Arc<dyn Calls>,
    /// How deep in a chain of synchronous calls this call is (0 for the outermost).
    pub depth: u32,
    /// In a `handle-events` call: its events, and the unit's savepoint before each the guest
    /// has started (through `events.handling`).
    pub batch: Option<Batch>,
}

/// The events of one `handle-events` call and how far the guest got through them.
pub struct Batch {
    /// The events handed over, in order.
    pub events: Vec<Arc<Event>>,
    /// The unit's savepoint before each event the guest started, in order.
    pub marks: Vec<Savepoint>,
}

impl InstanceState {
    /// A state for an instance of `context`, limited by `limits`. Guests get no environment,
    /// no arguments, no files, no network and no stdio.
    pub fn new(context: Arc<str>, limits: StoreLimits) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        InstanceState {
            context,
            version: Arc::from(""),
            publishes: Arc::from([]),
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                limits,
                refused: false,
            },
            scope: None,
            nested: std::time::Duration::ZERO,
            ticks_left: 0,
        }
    }

    /// The context's own state in the current call's unit; a host import called outside a
    /// call is a fault.
    pub(super) fn own(&mut self) -> wasmtime::Result<OwnState<'_>> {
        let scope = self
            .scope
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!("a host import was called outside of a call"))?;
        Ok(OwnState {
            context: &self.context,
            publishes: &self.publishes,
            unit: &mut scope.unit,
        })
    }
}

/// An instance's limits, which remember whether they refused it memory: the fault that follows
/// is then the guest reaching its limit, not a bug of its own.
pub struct Limits {
    limits: StoreLimits,
    /// Whether a memory or table growth was refused.
    pub refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        self.refused |= !matches!(allowed, Ok(true));
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum);
        self.refused |= !matches!(allowed, Ok(true));
        allowed
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
