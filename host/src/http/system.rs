//! What the host answers itself, whatever contexts are loaded: the API root as Spring Data
//! REST serves it (`GET /`, the reference's Kubernetes probes called it), its `profile` link,
//! the probes `GET /health/live` and `GET /health/ready`, the metrics, and the documents of the
//! running system (`/openapi.json`, `/asyncapi.json`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::runtime::Runtime;

/// The paths served here.
const PATHS: &[&str] = &[
    "/",
    "/profile",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/asyncapi.json",
];

/// Whether `path` is one of ours (so that the gateway does not route it to a context).
pub(super) fn serves(path: &str) -> bool {
    PATHS.contains(&path)
}

/// Answers a request for one of [`PATHS`].
pub(super) fn handle(
    runtime: &Runtime,
    method: &Method,
    path: &str,
    base_url: &str,
) -> Result<hyper::Response<Full<Bytes>>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed(method.as_str(), path, "GET, HEAD"));
    }
    match path {
        "/" => Ok(json_response(
            200,
            "application/hal+json",
            &root(runtime, base_url),
        )),
        "/profile" => Ok(json_response(
            200,
            "application/hal+json",
            &json!({ "_links": { "self": { "href": format!("{base_url}/profile") } } }),
        )),
        "/health/live" => Ok(json_response(200, "application/json", &json!({ "status": "UP" }))),
        "/openapi.json" => Ok(json_response(
            200,
            "application/json",
            &super::openapi::of(runtime, base_url),
        )),
        "/asyncapi.json" => Ok(json_response(
            200,
            "application/json",
            &super::asyncapi::of(runtime, base_url),
        )),
        "/metrics" => {
            let text = runtime.prometheus()?;
            let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            Ok(resp)
        }
        _ => {
            let r = runtime.readiness();
            let status = if r.ready { 200 } else { 503 };
            let mut body = json!({
                "status": if r.ready { "UP" } else { "DOWN" },
                "reason": r.reason,
                "log": r.log,
                "contexts": r.contexts,
                "partitions": r.partitions,
            });
            if let Some(cluster) = r.cluster {
                body["cluster"] = json!(cluster);
            }
            Ok(json_response(status, "application/json", &body))
        }
    }
}

/// Spring Data REST's root: a templated link to every collection a loaded context serves,
/// named by the collection (`orders`), and `profile`.
fn root(runtime: &Runtime, base_url: &str) -> Value {
    let mut links = Map::new();
    for (route, _context) in runtime.routes() {
        let rel = route.trim_start_matches('/').to_string();
        links.insert(
            rel,
            json!({ "href": format!("{base_url}{route}{{?page,size,sort}}"), "templated": true }),
        );
    }
    links.insert("profile".into(), json!({ "href": format!("{base_url}/profile") }));
    json!({ "_links": links })
}

fn json_response(status: u16, content_type: &'static str, body: &Value) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes and the root describe this moment; a cache must not answer for us.
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
