//! The operator API under `/admin`, behind a bearer token (`auth.rs`): the event log, the
//! contexts (stopping, starting, swapping, rolling back, moving a cursor), the subscribers
//! (contexts' and the embedder's own), the dead letters,
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
        AdminRoute::Add { name } => {
            let added = json!(runtime.add(&name, body).await?);
            let mut resp = respond(&added);
            *resp.status_mut() = hyper::StatusCode::CREATED;
            return Ok(resp);
        }
        AdminRoute::Remove { name } => json!(runtime.remove(&name).await?),
        AdminRoute::Rollback { name } => json!(runtime.rollback(&name).await?),
        AdminRoute::Subscribers => {
            let contexts = runtime.contexts()?.into_iter().filter_map(|c| {
                c.subscriber
                    .map(|s| json!({ "name": c.name, "kind": "context", "subscriber": s }))
            });
            let natives = runtime
                .native_subscribers()?
                .into_iter()
                .map(|n| json!({ "name": n.name, "kind": "native", "subscriber": n.subscriber }));
            json!({ "subscribers": contexts.chain(natives).collect::<Vec<Value>>() })
        }
        AdminRoute::Cursor { name } => {
            let (partition, source, seq) = cursor_move(runtime, body)?;
            match runtime.set_cursor(&name, partition, source, seq).await {
                Ok(true) => {
                    let head = runtime.partitions().log(source).head();
                    json!({ "name": name, "partition": partition, "source": source, "cursor": seq.min(head) })
                }
                Ok(false) => return Err(ApiError::no_context(&name)),
                Err(e) => return Err(ApiError::cursor_not_moved(e)),
            }
        }
        AdminRoute::DeadLetters => {
            let letters: Vec<Value> = runtime
                .dead_letters()?
                .into_iter()
                .map(|(partition, letter)| {
                    let (subscriber, source) = carshare_core::cursor_lane(&letter.subscriber, partition);
                    let mut v = json!(letter);
                    v["subscriber"] = json!(subscriber);
                    v["partition"] = json!(partition);
                    v["event"]["partition"] = json!(source);
                    v["position"] = json!(format!("{source}:{}", letter.event.seq));
                    v
                })
                .collect();
            json!({ "deadLetters": letters })
        }
        AdminRoute::RetryDeadLetter { subscriber, seq } => {
            let (source, number) =
                position(runtime, &seq).ok_or_else(|| ApiError::no_dead_letter(&subscriber, &seq))?;
            runtime
                .retry_dead_letter(&subscriber, source, number)
                .await
                .map_err(|e| ApiError::retry_failed(&subscriber, number, e))?;
            json!({ "subscriber": subscriber, "position": format!("{source}:{number}"), "seq": number, "retried": true })
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
            let partitions: Vec<Value> = backup
                .iter()
                .enumerate()
                .map(|(p, b)| json!({ "partition": p, "bytes": b.bytes, "lastSeq": b.last_seq }))
                .collect();
            json!({
                "path": path,
                "bytes": backup.iter().map(|b| b.bytes).sum::<u64>(),
                "lastSeq": backup[0].last_seq,
                "logPosition": backup[0].position.applied,
                "partitions": partitions,
            })
        }
    };
    Ok(respond(&body))
}

/// A 200 with `body` as JSON.
fn respond(body: &Value) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Events a filtered `GET /admin/events` looks through at most per call; `next` says where the
/// next call goes on.
const MAX_EXAMINED: usize = 100_000;

/// A position in the log: `partition:seq`, or a bare `seq` in partition 0; `None` if it is
/// not one, or names a partition there is not.
fn position(runtime: &Runtime, text: &str) -> Option<(u32, u64)> {
    let (partition, seq) = match text.split_once(':') {
        Some((p, s)) => (p.parse().ok()?, s.parse().ok()?),
        None => (0, text.parse().ok()?),
    };
    (partition < runtime.partitions().count()).then_some((partition, seq))
}

/// `{"seq": N, "partition": P, "source": Q}` (partition 0 and its own events unless said): the
/// cursor of a context's events of partition Q, kept in partition P, moved to N.
fn cursor_move(runtime: &Runtime, body: &Bytes) -> Result<(u32, u32, u64), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "the body must be {{\"seq\": <non-negative integer>}}, with \"partition\" and \"source\" \
             from 0 to {} if given",
            runtime.partitions().count() - 1
        ))
    };
    let v = serde_json::from_slice::<Value>(body).map_err(|_| bad())?;
    let seq = v["seq"].as_u64().ok_or_else(bad)?;
    let n = u64::from(runtime.partitions().count());
    let number = |field: &str, default: u64| match &v[field] {
        Value::Null => Ok(default),
        x => x.as_u64().filter(|p| *p < n).ok_or_else(bad),
    };
    let partition = number("partition", 0)?;
    let source = number("source", partition)?;
    Ok((partition as u32, source as u32, seq))
}

/// `GET /admin/events?after=&limit=&type=&correlationId=&partition=`: up to `limit` events of
/// `partition` (0 unless given, or named by `after=partition:seq`) after `after`, only those
/// of `type` and of the chain `correlationId` if given. Each event says its partition. A chain
/// asked for without a partition is followed through every partition, merged in commit time
/// order (`truncated` says whether there may be more).
fn events(runtime: &Runtime, query: &str) -> Result<Value, ApiError> {
    let mut after = 0u64;
    let mut partition: Option<u32> = None;
    let mut after_partition: Option<u32> = None;
    let mut limit = 100usize;
    let mut event_type: Option<String> = None;
    let mut correlation: Option<String> = None;
    let n = runtime.partitions().count();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                let v = v.replace("%3A", ":").replace("%3a", ":");
                let parsed = match v.split_once(':') {
                    Some((p, seq)) => p
                        .parse::<u32>()
                        .ok()
                        .filter(|p| *p < n)
                        .zip(seq.parse().ok())
                        .map(|(p, seq)| (Some(p), seq)),
                    None => v.parse().ok().map(|seq| (None, seq)),
                };
                let Some((p, seq)) = parsed else {
                    return Err(ApiError::bad_request(
                        "after must be a non-negative integer, or partition:seq",
                    ));
                };
                after_partition = p.or(after_partition);
                after = seq;
            }
            "partition" => {
                partition = Some(v.parse().ok().filter(|p| *p < n).ok_or_else(|| {
                    ApiError::bad_request(format!("partition must be an integer from 0 to {}", n - 1))
                })?);
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
    let filtered = event_type.is_some() || correlation.is_some();
    let matches = |e: &carshare_core::Event| {
        event_type.as_ref().is_none_or(|t| &e.event_type == t)
            && correlation
                .as_ref()
                .is_none_or(|c| e.correlation_id.as_ref() == Some(c))
    };
    let tagged = |p: u32, e: carshare_core::Event| {
        let mut v = json!(e);
        v["partition"] = json!(p);
        v
    };
    // A chain crosses partitions: followed in all of them (in commit time order) unless one
    // is named.
    if correlation.is_some() && n > 1 && partition.is_none() && after_partition.is_none() {
        let mut all = Vec::new();
        let mut truncated = false;
        for p in 0..n {
            let log = runtime.partitions().log(p);
            let (found, next) = scan(&log.snapshot()?, after, limit, &matches)?;
            truncated |= found.len() == limit || next < log.head();
            all.extend(found.into_iter().map(|e| (p, e)));
        }
        // Commit times are in milliseconds: within one, a cause goes before its effects.
        let depth = causal_depths(&all);
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&i, &j| {
            let key = |k: usize| (&all[k].1.timestamp, depth[k], all[k].0, all[k].1.seq);
            key(i).cmp(&key(j))
        });
        let mut slots: Vec<Option<(u32, carshare_core::Event)>> = all.into_iter().map(Some).collect();
        let mut all: Vec<(u32, carshare_core::Event)> =
            order.into_iter().filter_map(|i| slots[i].take()).collect();
        truncated |= all.len() > limit;
        all.truncate(limit);
        let events: Vec<Value> = all.into_iter().map(|(p, e)| tagged(p, e)).collect();
        return Ok(json!({ "events": events, "partitions": n, "truncated": truncated }));
    }
    let partition = after_partition.or(partition).unwrap_or(0);
    let log = runtime.partitions().log(partition);
    let (events, next) = if filtered {
        scan(&log.snapshot()?, after, limit, &matches)?
    } else {
        let events = log.events_after(after, limit)?;
        let next = events.last().map(|e| e.seq).unwrap_or(after);
        (events, next)
    };
    let events: Vec<Value> = events.into_iter().map(|e| tagged(partition, e)).collect();
    Ok(json!({
        "events": events, "head": log.head(), "next": next,
        "partition": partition, "partitions": n,
    }))
}

/// How many of `events` lie before each one on its chain of causes (0 for one whose cause is
/// not among them).
fn causal_depths(events: &[(u32, carshare_core::Event)]) -> Vec<usize> {
    let index: std::collections::HashMap<&str, usize> = events
        .iter()
        .enumerate()
        .map(|(i, (_, e))| (e.event_id.as_str(), i))
        .collect();
    let cause = |i: usize| {
        events[i]
            .1
            .causation_id
            .as_deref()
            .and_then(|c| index.get(c).copied())
            .filter(|c| *c != i)
    };
    (0..events.len())
        .map(|i| {
            let mut depth = 0;
            let mut at = i;
            // Bounded: a chain longer than the events can only be a cycle of bad data.
            while let Some(c) = cause(at) {
                depth += 1;
                at = c;
                if depth > events.len() {
                    break;
                }
            }
            depth
        })
        .collect()
}

/// Up to `limit` events of `snapshot` after `after` that `matches`, looking through at most
/// [`MAX_EXAMINED`]; and the last event looked at, where a next call goes on.
fn scan(
    snapshot: &carshare_core::Snapshot,
    after: u64,
    limit: usize,
    matches: &dyn Fn(&carshare_core::Event) -> bool,
) -> Result<(Vec<carshare_core::Event>, u64), ApiError> {
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
            if matches(&e) {
                found.push(e);
                if found.len() == limit {
                    break;
                }
            }
        }
    }
    Ok((found, next))
}
