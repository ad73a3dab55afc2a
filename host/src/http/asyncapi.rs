//! `GET /asyncapi.json`: an AsyncAPI 3.0 document of the events of the system as it runs now,
//! built from the event catalog (each loaded context's declared events and subscriptions), so
//! that a swap or an added context updates it. One channel per event type (its address is the
//! type's name, as `events tail --type` and `/admin/events?type=` name it), one message per
//! channel with the payload's JSON Schema, and per context a `send` operation for each type it
//! publishes and a `receive` operation for each it subscribes to. The events are not served
//! over a broker of their own: they are read from the log (`/admin/events`, `carshare events
//! tail`) and delivered to subscribing contexts in-process; the document says so in its
//! server entry.

use serde_json::{Map, Value, json};

use crate::runtime::{Catalog, Runtime};

/// A name usable as an AsyncAPI component key (`^[a-zA-Z0-9.\-_]+$`).
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The document of `catalog`, for a system served at `base_url`.
pub(super) fn document(catalog: &Catalog, base_url: &str) -> Value {
    let mut channels = Map::new();
    let mut messages = Map::new();
    let mut operations = Map::new();
    for e in &catalog.events {
        let id = key(&e.event_type);
        let mut message = json!({
            "name": e.event_type,
            "title": e.event_type,
            "summary": e.summary,
            "contentType": "application/json",
            "payload": e.schema,
            "x-publisher": { "context": e.publisher, "version": e.version },
            "x-key": e.key,
        });
        if !e.key.is_empty() {
            message["description"] = json!(format!(
                "Keyed by {}: events of one key are delivered in the order they were published.",
                e.key
            ));
        }
        messages.insert(id.clone(), message);
        channels.insert(
            id.clone(),
            json!({
                "address": e.event_type,
                "title": e.event_type,
                "description": format!("{} events, published by {}.", e.event_type, e.publisher),
                "servers": [{ "$ref": "#/servers/log" }],
                "messages": { id.clone(): { "$ref": format!("#/components/messages/{id}") } },
            }),
        );
        operations.insert(
            format!("{}.publishes.{id}", key(&e.publisher)),
            json!({
                "action": "send",
                "title": format!("{} publishes {}", e.publisher, e.event_type),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": [{ "$ref": format!("#/channels/{id}/messages/{id}") }],
                "tags": [{ "name": e.publisher }],
            }),
        );
        for s in &e.subscribers {
            let mut receive = json!({
                "action": "receive",
                "title": format!("{} handles {}", s.context, e.event_type),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": [{ "$ref": format!("#/channels/{id}/messages/{id}") }],
                "tags": [{ "name": s.context }],
            });
            if let Some(field) = &s.placed_by {
                receive["description"] = json!(format!(
                    "With several partitions, handled where the id in `{field}` lives."
                ));
            }
            operations.insert(format!("{}.handles.{id}", key(&s.context)), receive);
        }
    }
    // `http://127.0.0.1:8080/carshare`: the scheme, the authority, and a base path if mounted
    // under one.
    let (protocol, rest) = base_url.split_once("://").unwrap_or(("http", base_url));
    let (host, prefix) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "carshare events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The events the bounded contexts loaded now publish and subscribe to, \
                            built from their manifests. Every event is committed to the log in the \
                            unit of work that published it, and delivered exactly once to each \
                            subscribing context.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "log": {
                "host": host,
                "protocol": protocol,
                "pathname": format!("{prefix}/admin/events"),
                "title": "The event log",
                "description": "Read with GET /admin/events (admin token) or `carshare events tail`; \
                                contexts receive events in-process, not over the network.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

/// The document of what `runtime` runs now (an empty catalog if the loaded contexts do not fit
/// together, which a running system never reaches: every change is checked first).
pub(super) fn of(runtime: &Runtime, base_url: &str) -> Value {
    let catalog = runtime.catalog().unwrap_or_else(|e| {
        tracing::error!("the event catalog of the running contexts is inconsistent: {e}");
        Catalog {
            events: Vec::new(),
            waiting: Vec::new(),
        }
    });
    document(&catalog, base_url)
}
