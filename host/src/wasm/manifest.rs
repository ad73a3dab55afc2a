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
    /// The event types it subscribes to.
    pub subscriptions: Vec<Subscription>,
    /// The event types it publishes: publishing another is a fault of the call.
    pub publishes: Vec<EventDeclaration>,
    /// Where its state lives when the system has several partitions.
    pub placement: Placement,
    /// The HTTP operations it serves, for the OpenAPI document.
    pub operations: Vec<Operation>,
    /// Named JSON Schemas the operations refer to (`#/components/schemas/<name>`).
    pub schemas: Vec<(String, serde_json::Value)>,
}

impl Manifest {
    /// Whether it subscribes to `event_type`.
    pub fn subscribes(&self, event_type: &str) -> bool {
        self.subscriptions.iter().any(|s| s.event_type == event_type)
    }

    /// The payload field naming the id whose partition handles `event_type`, if one does.
    pub fn placed_by(&self, event_type: &str) -> Option<&str> {
        self.subscriptions
            .iter()
            .find(|s| s.event_type == event_type)
            .and_then(|s| s.placed_by.as_deref())
    }

    /// The event types it subscribes to.
    pub fn event_types(&self) -> Vec<&str> {
        self.subscriptions.iter().map(|s| s.event_type.as_str()).collect()
    }

    /// Whether it declares that it publishes `event_type`.
    pub fn publishes(&self, event_type: &str) -> bool {
        self.publishes.iter().any(|d| d.event_type == event_type)
    }

    /// The event types it publishes.
    pub fn published_types(&self) -> Vec<&str> {
        self.publishes.iter().map(|d| d.event_type.as_str()).collect()
    }
}

/// An event type a context publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDeclaration {
    /// Its name, unique among the contexts of a system.
    pub event_type: String,
    /// What happened.
    pub summary: String,
    /// What its key names; empty: nothing.
    pub key: String,
    /// JSON Schema (draft 7) of its payload.
    pub schema: serde_json::Value,
}

/// An event type a context subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The event type.
    pub event_type: String,
    /// The context that publishes it, when the subscriber names one.
    pub publisher: Option<String>,
    /// With several partitions, the payload field naming the id whose partition handles it
    /// (none: the partition it was published in).
    pub placed_by: Option<String>,
}

/// Where a context's state lives when the system has several partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// Spread over the partitions by the ids of its entities.
    Partitioned,
    /// All in partition 0.
    Single,
}

/// One HTTP operation of a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Method.
    pub method: String,
    /// Path, with `{name}` for a path parameter.
    pub path: String,
    /// What it does.
    pub summary: String,
    /// Query parameters.
    pub parameters: Vec<Parameter>,
    /// JSON Schema of the request body, if it takes one.
    pub request_body: Option<serde_json::Value>,
    /// Each status it may answer, with the JSON Schema of the body.
    pub responses: Vec<(u16, Option<serde_json::Value>)>,
    /// With several partitions, the body field naming the id whose partition the request
    /// runs in.
    pub partition_by: Option<String>,
}

/// A query parameter of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// Name.
    pub name: String,
    /// What it means.
    pub description: String,
    /// Whether it must be given.
    pub required: bool,
    /// JSON Schema of its value.
    pub schema: serde_json::Value,
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
    let type_ok = |t: &str| !t.is_empty() && t.len() <= 128 && !t.contains(char::is_whitespace);
    if !m.subscriptions.iter().all(|s| type_ok(&s.event_type))
        || !m.publishes.iter().all(|d| type_ok(&d.event_type))
    {
        return Err(LoadError::BadManifest(
            "event types must be 1-128 bytes without white space".into(),
        ));
    }
    for (i, d) in m.publishes.iter().enumerate() {
        if m.publishes[..i].iter().any(|e| e.event_type == d.event_type) {
            return Err(LoadError::BadManifest(format!(
                "event type {} is declared twice",
                d.event_type
            )));
        }
        if !d.schema.is_object() {
            return Err(LoadError::BadManifest(format!(
                "the schema of event type {} must be a JSON Schema object",
                d.event_type
            )));
        }
    }
    for (i, sub) in m.subscriptions.iter().enumerate() {
        if m.subscriptions[..i]
            .iter()
            .any(|e| e.event_type == sub.event_type)
        {
            return Err(LoadError::BadManifest(format!(
                "event type {} is subscribed to twice",
                sub.event_type
            )));
        }
    }
    let name_ok = |n: &Option<String>| n.as_ref().is_none_or(|n| !n.is_empty() && n.len() <= 64);
    if !m.subscriptions.iter().all(|s| name_ok(&s.publisher)) {
        return Err(LoadError::BadManifest(
            "a subscription's publisher must be a context name of 1-64 bytes".into(),
        ));
    }
    let field_ok = |f: &Option<String>| f.as_ref().is_none_or(|f| !f.is_empty() && f.len() <= 128);
    if !m.subscriptions.iter().all(|s| field_ok(&s.placed_by))
        || !m.operations.iter().all(|o| field_ok(&o.partition_by))
    {
        return Err(LoadError::BadManifest(
            "a field naming a partition's id must be 1-128 bytes".into(),
        ));
    }
    for op in &m.operations {
        let method_ok = matches!(op.method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE");
        let routed = m.routes.iter().any(|r| {
            op.path
                .strip_prefix(r.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if !method_ok || !routed {
            return Err(LoadError::BadManifest(format!(
                "operation {} {} is not a method on one of its routes",
                op.method, op.path
            )));
        }
    }
    Ok(())
}
