//! The HTTP edge: hyper serves the gateway (every context's collections on one port) and the
//! operator API under `/admin`, and what the host answers itself (`system`: the API root and
//! the health probes). Errors become HTTP here and nowhere else (`error`).

mod admin;
mod conns;
pub mod error;
mod server;
mod system;

pub use conns::ConnectionLimits;
pub use server::{App, serve};
