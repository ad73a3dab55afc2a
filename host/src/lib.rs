//! carshare-host: runs carshare's bounded contexts, each a WebAssembly component, on one
//! embedded [`carshare_core`] log, and serves them over HTTP.
//!
//! How a request flows, by module:
//!
//! - `http`: hyper accepts the connection; the gateway reads the body (size limit), checks
//!   JSON, and hands a [`Request`] to the runtime; `/admin` goes to the operator API instead.
//!   Errors become HTTP statuses and JSON bodies in `http::error`, and only there.
//! - [`routes`]: the route table says which context serves the path.
//! - [`runtime`]: begins a unit of work and runs the context on a blocking thread; synchronous
//!   calls between contexts join the same unit; the unit commits through the core's group
//!   commit; committed events reach subscribers through the core's dispatcher.
//! - `wasm`: wasmtime. Components are compiled once (and cached on disk), instantiated from an
//!   `InstancePre` into per-context pools, and given the host imports (`state`, `events`,
//!   `calls`, `logging`, `clock`) in `wasm/imports.rs`.
//! - [`start`]: assembles all of it from a [`Config`]; `main.rs` only parses the command line.
#![deny(missing_docs)]

pub mod client;
mod components;
pub mod config;
mod fds;
mod http;
pub mod log;
pub mod routes;
pub mod runtime;
mod start;
pub mod types;
mod wasm;
mod watch;

/// The built-in contexts and the test components, as built by `build.rs`.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

pub use config::Config;
pub use http::error::ApiError;
pub use http::{App, ConnectionLimits, serve};
pub use runtime::{ContextInfo, LoadContextError, RequestError, Runtime, RuntimeOptions, Served, Swapped};
pub use start::{StartError, Started, start};
pub use types::{CallError, DomainError, Request, Response};
pub use wasm::{Limits, LoadError, Manifest, WasmEngine};
