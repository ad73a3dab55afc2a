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
//! Embedding: [`Carshare::builder`] is the way in. Choose the contexts (the built-in ones or a
//! subset, components from bytes or files; earlier swaps are restored), subscribers of your
//! own, the admin token and a base path; then mount [`Carshare::app`] (a tower and hyper
//! `Service`) in a router, or [`Carshare::serve`] it on a socket:
//!
//! ```no_run
//! use std::sync::Arc;
//! use carshare_host::{Carshare, Event, EventHandler, Handled, Unit};
//!
//! /// A subscriber of one's own, in Rust.
//! struct Audit;
//!
//! impl EventHandler for Audit {
//!     fn wants(&self, event_type: &str) -> bool {
//!         event_type == "Ordered"
//!     }
//!     fn handle<'a>(&'a self, unit: Unit, event: &'a Event) -> Handled<'a> {
//!         println!("order placed: {}", event.payload);
//!         Box::pin(std::future::ready((unit, Ok(()))))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let carshare = Carshare::builder()
//!     .data_dir("my-data")
//!     .builtin_contexts(["order", "payment", "product", "delivery"])
//!     .subscriber("audit", Arc::new(Audit))
//!     .base_path("/carshare")
//!     .build()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! carshare.serve(listener, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Underneath, a [`Runtime`] over a [`Log`] and a [`WasmEngine`] loads contexts
//! ([`Runtime::load`]) and handles requests without HTTP ([`Runtime::handle`]); [`start`] is
//! what the `carshare` binary runs. `examples/embedder/` in the repository is a whole service
//! built this way, mounted in an axum router.
#![deny(missing_docs)]

mod builtin;
mod cluster;
mod components;
mod config;
mod context_build;
mod context_set;
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

// The core, whole, and the types an embedder meets in this crate's signatures or needs for a
// native subscriber, so that one dependency is enough.
pub use carshare_core;
pub use carshare_core::{
    BreakerConfig, CommitError, Event, EventHandler, Handled, HandlerError, Log, Partitions, RetryPolicy,
    StorageError, SubscribeError, SubscriberStatus, Unit,
};

pub use crate::builtin::DEFAULT_CONTEXTS;
pub use crate::cluster::{
    ClusterConfig, ClusterError, ClusterStatus, Presence, RefoundError, Refounded, Refused, StepDownError,
    SteppedDown, refound,
};
pub use crate::config::{Config, default_cache_dir};
pub use crate::context_build::{BuildError, build_context};
pub use crate::embed::{Builder, Carshare};
pub use crate::http::{ApiError, App, BasePathError, ConnectionLimits, serve};
pub use crate::routes::RouteError;
pub use crate::runtime::{
    BackupError, Catalog, CatalogError, CatalogEvent, CatalogSubscriber, ClusterOverview, ContextInfo,
    LoadContextError, Membership, NativeSubscriberInfo, Readiness, RequestError, Runtime, RuntimeOptions,
    Served, Swapped, Waiting,
};
pub use crate::start::{StartError, Started, open, start};
pub use crate::types::{CallError, DomainError, Request, Response};
pub use crate::wasm::{
    EventDeclaration, InstanceAllocator, Limits, LoadError, Manifest, Operation, Parameter, Subscription,
    WasmEngine,
};
