//! What a context is besides its code: its sandbox [`Limits`], the [`Manifest`] it declares,
//! and why a component can fail to load ([`LoadError`]).

use std::time::Duration;

/// Sandbox limits of one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU time one call may take before it is interrupted.
    pub call_deadline: Duration,
    /// Bytes of linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Instances of the context alive at once.
    pub max_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_deadline: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            max_instances: 64,
        }
    }
}

/// What a context says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// HTTP collections.
    pub routes: Vec<String>,
    /// Event types.
    pub subscriptions: Vec<String>,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not a valid component, or it does not implement the `bounded-context` world.
    #[error("not a bounded-context component: {0}")]
    Invalid(String),
    /// Instantiating it or asking its manifest failed.
    #[error("the component failed to start: {0}")]
    Failed(String),
    /// Its manifest makes no sense.
    #[error("bad manifest: {0}")]
    BadManifest(String),
}


pub(super) fn check_manifest(m: &Manifest) -> Result<(), LoadError> {
    let valid_name = !m.name.is_empty()
        && m.name.len() <= 64
        && m.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        return Err(LoadError::BadManifest(format!(
            "context name {:?} must be 1-64 of a-z, 0-9, -",
            m.name
        )));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        return Err(LoadError::BadManifest("version must be 1-64 bytes".into()));
    }
    if m.subscriptions.iter().any(|s| s.is_empty() || s.len() > 128) {
        return Err(LoadError::BadManifest("event types must be 1-128 bytes".into()));
    }
    Ok(())
}
