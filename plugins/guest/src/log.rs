//! Logging through the host, under the context's name.

use crate::bindings::carshare::context::logging::{self as host, Level};

/// Logs at info level.
pub fn info(message: &str) {
    host::log(Level::Info, message)
}

/// Logs at warn level.
pub fn warn(message: &str) {
    host::log(Level::Warn, message)
}

/// Logs at error level.
pub fn error(message: &str) {
    host::log(Level::Error, message)
}
