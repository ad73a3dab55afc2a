//! Bounded contexts as WebAssembly components: the generated bindings (`bindings`), the engine
//! and compile cache (`engine`), the store data of an instance (`instance`), a context's view
//! of its own state (`own_state`), the host side of the WIT imports (`imports`), conversions
//! between WIT and host types (`convert`), and a loaded component with its pool of reusable
//! instances (`plugin`). Nothing outside this module names a wasmtime or WIT-generated type,
//! and nothing in it knows the runtime: synchronous calls leave through [`Calls`].

mod bindings;
mod convert;
mod engine;
mod imports;
mod instance;
mod manifest;
mod own_state;
mod plugin;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use carshare_core::Unit;

pub(crate) use engine::digest_of;
pub use engine::{InstanceAllocator, WasmEngine};
pub use manifest::{
    EventDeclaration, Limits, LoadError, Manifest, Operation, Parameter, Placement, Subscription,
};
pub use plugin::{AppliedEvents, Plugin};

use crate::types::{CallError, Request, Response};

/// Told how long each call into a context ran (not counting the synchronous calls it made
/// into others), and whether it was interrupted at its deadline: for the embedder's metrics.
pub trait CallObserver: Send + Sync {
    /// One call of `context`.
    fn ran(&self, context: &str, took: std::time::Duration, deadline_hit: bool);
}

/// What a synchronous call comes back with: the unit, and the callee's answer.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = (Unit, Result<Response, CallError>)> + Send + 'a>>;

/// Where a context's synchronous calls (the `calls.call` import) go: the embedder runs the
/// callee inside the caller's unit and hands the unit back. The runtime implements it.
pub trait Calls: Send + Sync {
    /// Calls context `name` with `request` at call depth `depth`, inside `unit`.
    fn call<'a>(self: Arc<Self>, name: &'a str, request: Request, unit: Unit, depth: u32) -> CallFuture<'a>;
}
