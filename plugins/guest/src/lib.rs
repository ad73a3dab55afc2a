//! carshare-guest: everything a bounded context shares, so that a context's crate holds only
//! its domain.
//!
//! A context implements [`Context`] and exports itself with [`context!`]. Inside, it reads and
//! writes its own state with [`state`], publishes and subscribes with typed [`events`], calls other contexts with
//! [`call`], and serves its REST collections with [`rest`], which does routing, paging, sorting
//! and the HAL shape that Spring Data REST clients expect. The WIT bindings stay in the private
//! `bindings` module: no context sees a generated name.
#![deny(missing_docs)]

pub mod api;
pub mod body;
pub mod call;
pub mod events;
mod glue;
mod http;
pub mod log;
pub mod rest;
pub mod state;

pub use http::{Error, Event, Manifest, Placement, Request, Response};

#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs, clippy::too_many_arguments)]
    wit_bindgen::generate!({
        world: "bounded-context",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_bounded_context",
        default_bindings_module: "carshare_guest::bindings",
    });
}

#[doc(hidden)]
pub use glue::Adapter;

/// A bounded context: its manifest, its requests and its events.
pub trait Context {
    /// Name, version, routes, the events it publishes, its HTTP operations.
    fn manifest() -> Manifest;
    /// Serves an HTTP request or a synchronous call. An `Err` aborts the unit of work.
    fn handle_request(request: Request) -> Result<Response, Error>;
    /// The events it subscribes to, each with its handler: the manifest's subscriptions and
    /// the dispatch both come from this table, built once per instance. A handler must be
    /// idempotent; an `Err` undoes that event's effects and the step is retried. None by
    /// default.
    fn handlers() -> events::Handlers {
        events::Handlers::new()
    }
}

/// Exports `$t` (a type implementing [`Context`]) as this component's `bounded-context`.
#[macro_export]
macro_rules! context {
    ($t:ty) => {
        type CarshareExport = $crate::Adapter<$t>;
        $crate::bindings::__export_bounded_context!(CarshareExport with_types_in $crate::bindings);
    };
}

/// Milliseconds since the Unix epoch, from the host.
pub fn now_millis() -> u64 {
    bindings::carshare::context::clock::now_millis()
}

/// Now as RFC 3339 in UTC, from the host.
pub fn now_rfc3339() -> String {
    bindings::carshare::context::clock::now_rfc3339()
}
