//! Conversions between the WIT-generated types and the host's own ([`Request`], [`Response`],
//! [`DomainError`], [`CallError`]), so that nothing outside `wasm/` sees a generated name.

use super::bindings::carshare::context::types as wit;
use super::manifest::{EventDeclaration, LoadError, Manifest, Operation, Parameter, Placement, Subscription};
use crate::types::{CallError, DomainError, Request, Response};

pub(super) fn from_wit(e: wit::ContextError) -> DomainError {
    match e {
        wit::ContextError::BadRequest(m) => DomainError::BadRequest(m),
        wit::ContextError::Forbidden(m) => DomainError::Forbidden(m),
        wit::ContextError::NotFound(m) => DomainError::NotFound(m),
        wit::ContextError::MethodNotAllowed(m) => DomainError::MethodNotAllowed(m),
        wit::ContextError::Conflict(m) => DomainError::Conflict(m),
        wit::ContextError::Refused(m) => DomainError::Refused(m),
        wit::ContextError::Unavailable(m) => DomainError::Unavailable(m),
        wit::ContextError::Internal(m) => DomainError::Internal(m),
    }
}

fn to_wit(e: DomainError) -> wit::ContextError {
    match e {
        DomainError::BadRequest(m) => wit::ContextError::BadRequest(m),
        DomainError::Forbidden(m) => wit::ContextError::Forbidden(m),
        DomainError::NotFound(m) => wit::ContextError::NotFound(m),
        DomainError::MethodNotAllowed(m) => wit::ContextError::MethodNotAllowed(m),
        DomainError::Conflict(m) => wit::ContextError::Conflict(m),
        DomainError::Refused(m) => wit::ContextError::Refused(m),
        DomainError::Unavailable(m) => wit::ContextError::Unavailable(m),
        DomainError::Internal(m) => wit::ContextError::Internal(m),
    }
}

/// What a calling context sees when its call fails: the callee's domain error as it was;
/// a callee that is stopped, busy or missing as `unavailable`; a callee's fault as `internal`.
pub(super) fn call_error_to_wit(e: CallError) -> wit::ContextError {
    match e {
        CallError::Domain(d) => to_wit(d),
        e @ (CallError::NoSuchContext(_)
        | CallError::Stopped(_)
        | CallError::Busy(_)
        | CallError::CircuitOpen { .. }) => wit::ContextError::Unavailable(e.to_string()),
        e @ (CallError::Fault { .. } | CallError::TooDeep(_)) => {
            // The caller may pass the text on to its client: it gets the words, the log the
            // engine's detail.
            tracing::error!("a synchronous call failed: {}", e.detailed());
            wit::ContextError::Internal(e.to_string())
        }
    }
}

pub(super) fn request_from_wit(r: wit::RequestResult) -> Request {
    Request {
        method: r.method,
        path: r.path,
        query: r.query,
        headers: r.headers,
        body: r.body,
        base_url: r.base_url,
        caller: r.caller,
        request_id: None,
    }
}

pub(super) fn response_to_wit(r: Response) -> wit::Response {
    wit::Response {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

/// The manifest a component declared, its JSON Schemas parsed; a schema that is not JSON makes
/// it a bad manifest.
pub(super) fn manifest_from_wit(m: wit::Manifest) -> Result<Manifest, LoadError> {
    let schema = |what: &str, text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| LoadError::BadManifest(format!("the schema of {what} is not JSON: {e}")))
    };
    let mut operations = Vec::with_capacity(m.operations.len());
    for op in m.operations {
        let what = format!("{} {}", op.method, op.path);
        let mut parameters = Vec::with_capacity(op.parameters.len());
        for p in op.parameters {
            parameters.push(Parameter {
                schema: schema(&format!("{what} ?{}", p.name), &p.schema)?,
                name: p.name,
                description: p.description,
                required: p.required,
            });
        }
        let request_body = op.request_body.as_deref().map(|s| schema(&what, s)).transpose()?;
        let mut responses = Vec::with_capacity(op.responses.len());
        for (status, body) in op.responses {
            responses.push((status, body.as_deref().map(|s| schema(&what, s)).transpose()?));
        }
        operations.push(Operation {
            method: op.method,
            path: op.path,
            summary: op.summary,
            parameters,
            request_body,
            responses,
            partition_by: op.partition_by,
        });
    }
    let mut publishes = Vec::with_capacity(m.publishes.len());
    for d in m.publishes {
        publishes.push(EventDeclaration {
            schema: schema(&format!("event type {}", d.event_type), &d.schema)?,
            event_type: d.event_type,
            summary: d.summary,
            key: d.key,
        });
    }
    let mut schemas = Vec::with_capacity(m.schemas.len());
    for (name, text) in m.schemas {
        schemas.push((name.clone(), schema(&name, &text)?));
    }
    Ok(Manifest {
        name: m.name,
        version: m.version,
        routes: m.routes,
        subscriptions: m
            .subscriptions
            .into_iter()
            .map(|s| Subscription {
                event_type: s.event_type,
                publisher: s.publisher,
                placed_by: s.placed_by,
            })
            .collect(),
        publishes,
        placement: match m.placement {
            wit::Placement::Partitioned => Placement::Partitioned,
            wit::Placement::Single => Placement::Single,
        },
        operations,
        schemas,
    })
}
