//! `GET /openapi.json`: an OpenAPI 3.1 document of the system as it runs now, built from the
//! loaded contexts' manifests (their operations and JSON Schemas), so a swapped context
//! updates it. The host adds what it answers itself: its own paths, the admin API, and the
//! statuses the edge gives any operation (a malformed or oversized body, a context that is
//! unavailable, busy or faulting).

use serde_json::{Map, Value, json};

use crate::runtime::Runtime;
use crate::wasm::{Manifest, Operation};

/// The JSON body of every error.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error", "message", "status"],
        "properties": {
            "error": { "type": "string" },
            "message": { "type": "string" },
            "status": { "type": "integer" }
        }
    })
}

/// A response of `status` with a JSON body of `schema` in `media`, or no body.
fn response(status: u16, schema: Option<&Value>, media: &str) -> Value {
    let description = match status {
        200 => "OK",
        201 => "Created",
        204 => "No content",
        400 => "Bad request: a malformed body, parameter or field",
        401 => "The admin token is missing or wrong",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        408 => "The body did not arrive in time",
        409 => "Conflict",
        413 => "The body is too large",
        422 => "Refused by the business",
        500 => "A context failed",
        503 => "Unavailable, busy or shutting down: retry later",
        _ => "See the body",
    };
    match schema {
        Some(schema) => json!({ "description": description, "content": { media: { "schema": schema } } }),
        None => json!({ "description": description }),
    }
}

/// The error response of `status`.
fn error(status: u16) -> Value {
    response(
        status,
        Some(&json!({ "$ref": "#/components/schemas/Error" })),
        "application/json",
    )
}

/// One context operation as an OpenAPI operation object, with the statuses the edge adds.
fn operation(context: &str, op: &Operation) -> Value {
    let mut parameters = Vec::new();
    let mut at = op.path.as_str();
    while let Some(start) = at.find('{') {
        let Some(len) = at[start..].find('}') else { break };
        let name = &at[start + 1..start + len];
        parameters.push(json!({
            "name": name, "in": "path", "required": true,
            "schema": { "type": "integer", "minimum": 1 }
        }));
        at = &at[start + len..];
    }
    for p in &op.parameters {
        parameters.push(json!({
            "name": p.name, "in": "query", "required": p.required,
            "description": p.description, "schema": p.schema
        }));
    }
    let mut responses = Map::new();
    for (status, schema) in &op.responses {
        let media = if *status >= 400 {
            "application/json"
        } else {
            "application/hal+json"
        };
        responses.insert(status.to_string(), response(*status, schema.as_ref(), media));
    }
    // What the edge answers for any operation.
    let mut edge = vec![503];
    if op.request_body.is_some() {
        edge.extend([400, 408, 413]);
    }
    for status in edge {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error(status));
    }
    let mut o = json!({
        "operationId": format!("{context}.{}.{}", op.method.to_lowercase(), op.path),
        "summary": op.summary,
        "tags": [context],
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = &op.request_body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": body } } });
    }
    o
}

/// A `POST /<collection>` that answers 201 with the new item links to the item's operations
/// (`/<collection>/{id}`), with the id from the body: clients, and schemathesis' stateful
/// tests, can follow a creation to the item it made.
fn link_created_items(paths: &mut Map<String, Value>) {
    let collections: Vec<String> = paths.keys().cloned().collect();
    for collection in collections {
        let item_path = format!("{collection}/{{id}}");
        let Some(item) = paths.get(&item_path).cloned() else {
            continue;
        };
        let Some(created) = paths
            .get_mut(&collection)
            .and_then(|p| p.get_mut("post"))
            .and_then(|post| post["responses"].get_mut("201"))
        else {
            continue;
        };
        let mut links = Map::new();
        for (method, op) in item.as_object().into_iter().flatten() {
            if let Some(id) = op["operationId"].as_str() {
                links.insert(
                    format!(
                        "{}{}",
                        method.to_uppercase(),
                        op["tags"][0].as_str().unwrap_or("item")
                    ),
                    json!({ "operationId": id, "parameters": { "id": "$response.body#/id" } }),
                );
            }
        }
        created["links"] = Value::Object(links);
    }
}

/// The host's own paths and the admin API.
fn host_paths(paths: &mut Map<String, Value>) {
    let object = json!({ "type": "object" });
    let get = |summary: &str, media: &str, schema: Value, extra: &[u16]| {
        let mut responses = Map::new();
        responses.insert("200".into(), response(200, Some(&schema), media));
        for s in extra {
            responses.insert(s.to_string(), error(*s));
        }
        json!({ "get": { "summary": summary, "tags": ["host"], "responses": responses } })
    };
    paths.insert(
        "/".into(),
        get(
            "The API root: links to every collection",
            "application/hal+json",
            object.clone(),
            &[],
        ),
    );
    paths.insert(
        "/profile".into(),
        get(
            "The API's profile link",
            "application/hal+json",
            object.clone(),
            &[],
        ),
    );
    paths.insert(
        "/health/live".into(),
        get(
            "Liveness: the process serves",
            "application/json",
            object.clone(),
            &[],
        ),
    );
    let mut ready = get(
        "Readiness: log open, contexts loaded",
        "application/json",
        object.clone(),
        &[],
    );
    ready["get"]["responses"]["503"] = response(503, Some(&object), "application/json");
    paths.insert("/health/ready".into(), ready);
    paths.insert(
        "/metrics".into(),
        get(
            "Prometheus metrics",
            "application/openmetrics-text",
            json!({ "type": "string" }),
            &[],
        ),
    );
    paths.insert(
        "/openapi.json".into(),
        get("This document", "application/json", object.clone(), &[]),
    );
    paths.insert(
        "/asyncapi.json".into(),
        get(
            "The AsyncAPI 3.0 document of the events the loaded contexts publish and subscribe to",
            "application/json",
            object.clone(),
            &[],
        ),
    );
    let admin = |method: &str, summary: &str, statuses: &[u16]| {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            response(200, Some(&json!({ "type": "object" })), "application/json"),
        );
        for s in [401, 403].iter().chain(statuses) {
            responses.insert(s.to_string(), error(*s));
        }
        json!({ method: {
            "summary": summary, "tags": ["admin"], "security": [{ "bearer": [] }], "responses": responses
        } })
    };
    let name = json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let mut add = |path: &str, op: Value, params: &[Value]| {
        let mut op = op;
        if let Some(o) = op.as_object_mut().and_then(|m| m.values_mut().next()) {
            o["parameters"] = Value::Array(params.to_vec());
        }
        paths.insert(path.into(), op);
    };
    add(
        "/admin/events",
        admin(
            "get",
            "The event log of one partition: ?after=&limit=&type=&correlationId=&partition= (after may be partition:seq)",
            &[400],
        ),
        &[],
    );
    add(
        "/admin/contexts",
        admin("get", "Every context: version, state, cursor, breaker", &[]),
        &[],
    );
    add(
        "/admin/contexts/{name}",
        admin(
            "put",
            "Hot-swap a context to the component in the body",
            &[400, 404, 409, 422],
        ),
        std::slice::from_ref(&name),
    );
    for action in ["stop", "start"] {
        add(
            &format!("/admin/contexts/{{name}}/{action}"),
            admin("post", &format!("{action} a context"), &[404]),
            std::slice::from_ref(&name),
        );
    }
    add(
        "/admin/contexts/{name}/rollback",
        admin("post", "Roll a context back to its previous version", &[404, 409]),
        std::slice::from_ref(&name),
    );
    add(
        "/admin/contexts/{name}/cursor",
        admin(
            "post",
            "Move a context's event cursor: {\"seq\": N}, with \"partition\" (where it is kept) and \"source\" (whose events) when there are several partitions",
            &[400, 404, 409],
        ),
        std::slice::from_ref(&name),
    );
    add(
        "/admin/dead-letters",
        admin("get", "Every parked event", &[]),
        &[],
    );
    add(
        "/admin/cluster",
        admin(
            "get",
            "This host's part in its cluster and every host present",
            &[404, 503],
        ),
        &[],
    );
    add(
        "/admin/cluster/step-down",
        admin(
            "post",
            "Have the cluster's writer hand its lease to another host",
            &[404, 409, 503],
        ),
        &[],
    );
    add(
        "/admin/backup",
        admin(
            "post",
            "Write a consistent copy of this host's database: {\"path\": \"/absolute/dest.redb\"}",
            &[400, 500],
        ),
        &[],
    );
}

/// The document for the contexts `manifests`, served at `base_url`.
pub(super) fn document(manifests: &[Manifest], base_url: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for m in manifests {
        for (name, schema) in &m.schemas {
            // Names are the contexts' own; the first context to declare one keeps it.
            schemas.entry(name.clone()).or_insert_with(|| schema.clone());
        }
        for op in &m.operations {
            let item = paths.entry(op.path.clone()).or_insert_with(|| json!({}));
            item[op.method.to_lowercase()] = operation(&m.name, op);
        }
    }
    link_created_items(&mut paths);
    host_paths(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "carshare",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The car-sharing business: each collection is served by a bounded context \
                            (a WebAssembly component); this document is built from the contexts \
                            loaded now."
        },
        "servers": [{ "url": base_url }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

/// The document of what `runtime` runs now.
pub(super) fn of(runtime: &Runtime, base_url: &str) -> Value {
    document(&runtime.manifests(), base_url)
}
