//! carshare-host: runs carshare's bounded contexts, each a WebAssembly component, on one
//! embedded [`carshare_core`] log, and serves them over HTTP.
//!
//! How a request flows, by module:
//!
//! - `http`: hyper accepts the connection (`http/server.rs`); [`App`] reads the body within
//!   its limit and hands the request to the host's own paths, the operator API (behind the
//!   admin token) or the gateway, which makes it a [`Request`]. Errors become HTTP statuses and
//!   JSON bodies in `http/error.rs`, and only there.
//! - `routes`: the route table says which context serves the path.
//! - `runtime`: begins a unit of work and runs the context's wasm on the async workers, as a
//!   fiber that yields at every epoch tick; synchronous calls between contexts join the same
//!   unit; the unit commits through the core's group commit; committed events reach
//!   subscribers through the core's dispatcher. Contexts are swapped and rolled back here too.
//! - `wasm`: wasmtime. Components are compiled once (and cached on disk), instantiated from an
//!   `InstancePre` into per-context pools, and given the host imports (`state`, `events`,
//!   `calls`, `logging`, `clock`). It reaches the runtime only through the `Calls` trait.
//! - `start`: assembles all of it from a [`Config`]; the `carshare` binary (`src/bin/`) only
//!   turns its command line, environment and config file into one.
//!
//! Embedding: [`start`] runs the whole server; or build a [`Runtime`] from a
//! [`carshare_core::Log`] and a [`WasmEngine`], [`Runtime::load`] the contexts
//! ([`DEFAULT_CONTEXTS`] are the built-in ones) and call [`Runtime::handle`], or put an [`App`]
//! in front of it and call [`App::serve`] with any `hyper::Request` (see `examples/embed.rs`).
#![deny(missing_docs)]

mod builtin;
mod cluster;
mod components;
mod config;
mod embed;
mod fds;
mod http;
mod metrics;
mod routes;
mod runtime;
mod start;
mod types;
mod wasm;
mod watch;

pub use crate::builtin::DEFAULT_CONTEXTS;
pub use crate::cluster::{
    ClusterConfig, ClusterError, ClusterStatus, Presence, RefoundError, Refounded, Refused, StepDownError,
    SteppedDown, refound,
};
pub use crate::config::{Config, default_cache_dir};
pub use crate::embed::{Builder, Carshare};
pub use crate::http::{ApiError, App, BasePathError, ConnectionLimits, serve};
pub use crate::routes::RouteError;
pub use crate::runtime::{
    BackupError, ClusterOverview, ContextInfo, LoadContextError, NativeSubscriberInfo, Readiness,
    RequestError, Runtime, RuntimeOptions, Served, Swapped,
};
pub use crate::start::{StartError, Started, open, start};
pub use crate::types::{CallError, DomainError, Request, Response};
pub use crate::wasm::{InstanceAllocator, Limits, LoadError, Manifest, Operation, Parameter, WasmEngine};
