//! The HTTP edge: hyper serves the gateway (every context's collections on one port) and the
//! operator API under `/admin`. Errors become HTTP here and nowhere else (`error`).

mod admin;
pub mod error;
mod server;

pub use server::{App, serve};
