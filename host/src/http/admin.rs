//! The operator API under `/admin`, behind a bearer token: the event log, the contexts (and
//! stopping or starting one), and the dead letters.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use carshare_core::RetryError;

use crate::runtime::LoadContextError;

use super::error::ApiError;
use super::server::App;

/// Events returned at most per call.
const MAX_LIMIT: usize = 1000;

pub(super) async fn handle(
    app: &App,
    parts: &Parts,
    path: &str,
    query: &str,
    body: &Bytes,
) -> Result<hyper::Response<Full<Bytes>>, ApiError> {
    // Authorized once more here, so this module is safe whatever its caller checked.
    authorize(app, parts)?;
    let method = parts.method.as_str();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let body = match (method, segs.as_slice()) {
        ("GET", ["events"]) => events(app, query)?,
        (_, ["events"]) => return Err(ApiError::method_not_allowed(method, path, "GET")),
        ("GET", ["contexts"]) => {
            json!({ "contexts": app.runtime.contexts().map_err(storage)? })
        }
        (_, ["contexts"]) => return Err(ApiError::method_not_allowed(method, path, "GET")),
        ("POST", ["contexts", name, action @ ("stop" | "start")]) => {
            if !app.runtime.set_running(name, *action == "start") {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!("no context named {name}"),
                ));
            }
            json!({ "name": name, "state": if *action == "start" { "running" } else { "stopped" } })
        }
        (_, ["contexts", _, "stop" | "start"]) => {
            return Err(ApiError::method_not_allowed(method, path, "POST"));
        }
        ("PUT", ["contexts", name]) => {
            let (rt, name, bytes) = (app.runtime.clone(), name.to_string(), body.clone());
            let swapped = tokio::task::spawn_blocking(move || rt.swap(&name, &bytes))
                .await
                .map_err(|_| ApiError::new(500, "internal", "the swap task failed"))?;
            json!(swapped.map_err(swap_error)?)
        }
        ("POST", ["contexts", name, "rollback"]) => {
            let (rt, name) = (app.runtime.clone(), name.to_string());
            let swapped = tokio::task::spawn_blocking(move || rt.rollback(&name))
                .await
                .map_err(|_| ApiError::new(500, "internal", "the rollback task failed"))?;
            json!(swapped.map_err(swap_error)?)
        }
        (_, ["contexts", _, "rollback"]) => return Err(ApiError::method_not_allowed(method, path, "POST")),
        (_, ["contexts", _]) => return Err(ApiError::method_not_allowed(method, path, "PUT")),
        ("POST", ["contexts", name, "cursor"]) => {
            let seq = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "bad_request",
                        "the body must be {\"seq\": <non-negative integer>}",
                    )
                })?;
            match app.runtime.set_cursor(name, seq).await {
                Ok(true) => json!({ "name": name, "cursor": seq.min(app.runtime.log().head()) }),
                Ok(false) => {
                    return Err(ApiError::new(
                        404,
                        "not_found",
                        format!("no context named {name}"),
                    ));
                }
                Err(carshare_core::CommitError::Conflict) => {
                    return Err(ApiError::new(
                        409,
                        "conflict",
                        "the subscriber kept moving the cursor; try again",
                    ));
                }
                Err(e) => return Err(commit_failed(e)),
            }
        }
        (_, ["contexts", _, "cursor"]) => return Err(ApiError::method_not_allowed(method, path, "POST")),
        ("GET", ["dead-letters"]) => {
            let letters = app
                .runtime
                .log()
                .snapshot()
                .and_then(|s| s.dead_letters(None))
                .map_err(storage)?;
            json!({ "deadLetters": letters })
        }
        (_, ["dead-letters"]) => return Err(ApiError::method_not_allowed(method, path, "GET")),
        ("POST", ["dead-letters", name, seq, "retry"]) => {
            let seq: u64 = seq
                .parse()
                .map_err(|_| ApiError::new(404, "not_found", "no such dead letter"))?;
            match app.runtime.retry_dead_letter(name, seq).await {
                Ok(()) => json!({ "subscriber": name, "seq": seq, "retried": true }),
                Err(RetryError::NotFound) => {
                    return Err(ApiError::new(
                        404,
                        "not_found",
                        format!("no dead letter {seq} of {name}"),
                    ));
                }
                Err(RetryError::Failed(e)) => {
                    return Err(ApiError::new(
                        409,
                        "retry_failed",
                        format!("still failing, kept: {}", e.message),
                    ));
                }
                Err(RetryError::Commit(carshare_core::CommitError::Conflict)) => {
                    return Err(ApiError::new(
                        409,
                        "retry_failed",
                        "a concurrent retry won; kept if it failed",
                    ));
                }
                Err(RetryError::Commit(e)) => return Err(commit_failed(e)),
                Err(RetryError::Storage(e)) => return Err(storage(e)),
                Err(e) => return Err(ApiError::new(500, "internal", e.to_string())),
            }
        }
        (_, ["dead-letters", _, _, "retry"]) => {
            return Err(ApiError::method_not_allowed(method, path, "POST"));
        }
        _ => {
            return Err(ApiError::new(
                404,
                "not_found",
                format!("no admin resource at {path}"),
            ));
        }
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// 403 when no token is configured (the admin API is off), 401 for a missing or wrong one.
pub(super) fn authorize(app: &App, parts: &Parts) -> Result<(), ApiError> {
    let Some(expected) = app.admin_token.as_deref() else {
        return Err(ApiError::new(
            403,
            "forbidden",
            "the admin API is disabled: set CARSHARE_ADMIN_TOKEN",
        ));
    };
    let given = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            401,
            "unauthorized",
            "a valid Authorization: Bearer token is required",
        ));
    }
    Ok(())
}

/// Compares without an early exit, so response time does not reveal a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

fn events(app: &App, query: &str) -> Result<Value, ApiError> {
    let mut after = 0u64;
    let mut limit = 100usize;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| bad_query("after must be a non-negative integer"))?;
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad_query("limit must be an integer from 1 to 1000"))?;
            }
            _ => {}
        }
    }
    let log = app.runtime.log();
    let events = log.events_after(after, limit).map_err(storage)?;
    let next = events.last().map(|e| e.seq).unwrap_or(after);
    Ok(json!({ "events": events, "head": log.head(), "next": next }))
}

/// A refused swap: nothing changed, the running version goes on serving.
fn swap_error(e: LoadContextError) -> ApiError {
    let msg = format!("{e}; the running version goes on serving");
    match e {
        LoadContextError::NoSuchContext(_) => ApiError::new(404, "not_found", msg),
        LoadContextError::Load(_) => ApiError::new(400, "invalid_component", msg),
        LoadContextError::WrongContext { .. } => ApiError::new(422, "wrong_context", msg),
        LoadContextError::Route(_) => ApiError::new(409, "route_conflict", msg),
        LoadContextError::NoPrevious(_) => ApiError::new(409, "no_previous_version", msg),
        _ => {
            crate::log::error(&msg);
            ApiError::new(500, "internal", msg)
        }
    }
}

fn bad_query(message: &str) -> ApiError {
    ApiError::new(400, "bad_request", message)
}

fn commit_failed(e: carshare_core::CommitError) -> ApiError {
    match e {
        carshare_core::CommitError::Closed => {
            ApiError::new(503, "shutting_down", "the server is shutting down")
        }
        e => {
            crate::log::error(&format!("admin commit failed: {e}"));
            ApiError::new(500, "storage", "the database failed")
        }
    }
}

fn storage(e: carshare_core::StorageError) -> ApiError {
    crate::log::error(&format!("admin read failed: {e}"));
    ApiError::new(500, "storage", "the database failed")
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"s", b""));
    }
}
