//! The operator API under `/admin`, behind a bearer token (`auth.rs`): the event log, the
//! contexts (stopping, starting, swapping, rolling back, moving a cursor), the dead letters,
//! the cluster (its hosts, moving the writer's lease) and backups. Requests arrive here parsed into an [`AdminRoute`].

mod route;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

pub(super) use route::AdminRoute;

use super::auth::Authorized;
use super::error::ApiError;
use crate::runtime::Runtime;

/// Events returned at most per call.
const MAX_LIMIT: usize = 1000;

pub(super) async fn handle(
    _authorized: Authorized,
    runtime: &Runtime,
    route: AdminRoute,
    query: &str,
    body: &Bytes,
) -> Result<hyper::Response<Full<Bytes>>, ApiError> {
    let body = match route {
        AdminRoute::Events => events(runtime, query)?,
        AdminRoute::Contexts => json!({ "contexts": runtime.contexts()? }),
        AdminRoute::SetRunning { name, running } => {
            if !runtime.set_running(&name, running) {
                return Err(ApiError::no_context(&name));
            }
            json!({ "name": name, "state": if running { "running" } else { "stopped" } })
        }
        AdminRoute::Swap { name } => json!(runtime.swap(&name, body).await?),
        AdminRoute::Rollback { name } => json!(runtime.rollback(&name).await?),
        AdminRoute::Cursor { name } => {
            let seq = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .ok_or_else(|| ApiError::bad_request("the body must be {\"seq\": <non-negative integer>}"))?;
            match runtime.set_cursor(&name, seq).await {
                Ok(true) => json!({ "name": name, "cursor": seq.min(runtime.log().head()) }),
                Ok(false) => return Err(ApiError::no_context(&name)),
                Err(e) => return Err(ApiError::cursor_not_moved(e)),
            }
        }
        AdminRoute::DeadLetters => {
            let letters = runtime.log().snapshot()?.dead_letters(None)?;
            json!({ "deadLetters": letters })
        }
        AdminRoute::RetryDeadLetter { subscriber, seq } => {
            let seq: u64 = seq
                .parse()
                .map_err(|_| ApiError::no_dead_letter(&subscriber, &seq))?;
            runtime
                .retry_dead_letter(&subscriber, seq)
                .await
                .map_err(|e| ApiError::retry_failed(&subscriber, seq, e))?;
            json!({ "subscriber": subscriber, "seq": seq, "retried": true })
        }
        AdminRoute::Cluster => match runtime.cluster_overview().await {
            Some(Ok(overview)) => json!(overview),
            Some(Err(e)) => return Err(ApiError::cluster_unreachable(&e)),
            None => return Err(ApiError::not_a_cluster()),
        },
        AdminRoute::StepDown => match runtime.step_down().await {
            Some(stepped) => json!(stepped?),
            None => return Err(ApiError::not_a_cluster()),
        },
        AdminRoute::Backup => {
            let path = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["path"].as_str().map(std::path::PathBuf::from))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "the body must be {\"path\": \"/absolute/path/of/the/backup.redb\"}",
                    )
                })?;
            let backup = runtime.backup(&path).await?;
            json!({
                "path": path,
                "bytes": backup.bytes,
                "lastSeq": backup.last_seq,
                "logPosition": backup.position.applied,
            })
        }
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Events a filtered `GET /admin/events` looks through at most per call; `next` says where the
/// next call goes on.
const MAX_EXAMINED: usize = 100_000;

/// `GET /admin/events?after=&limit=&type=&correlationId=`: up to `limit` events after `after`,
/// only those of `type` and of the chain `correlationId` if given.
fn events(runtime: &Runtime, query: &str) -> Result<Value, ApiError> {
    let mut after = 0u64;
    let mut limit = 100usize;
    let mut event_type: Option<String> = None;
    let mut correlation: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| ApiError::bad_request("after must be a non-negative integer"))?;
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 1000"))?;
            }
            "type" => event_type = Some(v.to_string()),
            "correlationId" => correlation = Some(v.to_string()),
            _ => {}
        }
    }
    let log = runtime.log();
    if event_type.is_none() && correlation.is_none() {
        let events = log.events_after(after, limit)?;
        let next = events.last().map(|e| e.seq).unwrap_or(after);
        return Ok(json!({ "events": events, "head": log.head(), "next": next }));
    }
    let snapshot = log.snapshot()?;
    let mut found = Vec::new();
    let mut next = after;
    let mut examined = 0;
    while found.len() < limit && examined < MAX_EXAMINED {
        let chunk = snapshot.events_after(next, MAX_LIMIT)?;
        if chunk.is_empty() {
            break;
        }
        for e in chunk {
            examined += 1;
            next = e.seq;
            let matches = event_type.as_ref().is_none_or(|t| &e.event_type == t)
                && correlation
                    .as_ref()
                    .is_none_or(|c| e.correlation_id.as_ref() == Some(c));
            if matches {
                found.push(e);
                if found.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(json!({ "events": found, "head": log.head(), "next": next }))
}
