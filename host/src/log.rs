//! The host's log: one line per record on stderr, `<RFC 3339 UTC> <LEVEL> <message>`.
//! `CARSHARE_LOG=debug|info|warn|error` sets the threshold (default `info`).

use std::io::Write;
use std::sync::OnceLock;

/// Severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something failed and was handled.
    Warn,
    /// Something failed and was not.
    Error,
}

fn threshold() -> Level {
    static T: OnceLock<Level> = OnceLock::new();
    *T.get_or_init(|| {
        match std::env::var("CARSHARE_LOG")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "debug" => Level::Debug,
            "warn" => Level::Warn,
            "error" => Level::Error,
            _ => Level::Info,
        }
    })
}

/// Writes one record at `level`.
pub fn write(level: Level, message: &str) {
    if level < threshold() {
        return;
    }
    let name = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let ts = carshare_core::rfc3339_utc(carshare_core::now_millis());
    // One write_all per line so concurrent records do not interleave.
    let line = format!("{ts} {name} {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes at info level.
pub fn info(message: &str) {
    write(Level::Info, message)
}

/// Writes at warn level.
pub fn warn(message: &str) {
    write(Level::Warn, message)
}

/// Writes at error level.
pub fn error(message: &str) {
    write(Level::Error, message)
}
