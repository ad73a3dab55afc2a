//! The gateway: a client request to a context's collection becomes a [`Request`] to the
//! runtime (after a JSON check), and the context's answer becomes the HTTP response, with the
//! `x-carshare-context` header naming who served it: on an error too, once the request was
//! routed to a context.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::http::request::Parts;

use super::error::ApiError;
use crate::runtime::Runtime;
use crate::types::Request;

/// Serves a business request whose body has been read.
pub(super) async fn handle(
    runtime: &Runtime,
    parts: Parts,
    body: Bytes,
    base_url: String,
    request_id: &str,
) -> Result<hyper::Response<Full<Bytes>>, ApiError> {
    let method = parts.method.as_str().to_string();
    if !body.is_empty()
        && matches!(method.as_str(), "POST" | "PUT" | "PATCH")
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err(ApiError::malformed_json(&e));
    }
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let request = Request {
        method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body: body.to_vec(),
        base_url,
        caller: None,
        request_id: Some(request_id.to_string()),
    };
    let mut by = None;
    let served = match runtime.handle_by(request, &mut by).await {
        Ok(served) => served,
        // An error names the version that answered it as well: after a swap, that is how
        // one tells which version failed.
        Err(e) => {
            let mut resp = ApiError::from(e).into_response();
            if let Some(v) = by.and_then(|(c, v)| HeaderValue::from_str(&format!("{c}/{v}")).ok()) {
                resp.headers_mut().insert("x-carshare-context", v);
            }
            return Ok(resp);
        }
    };
    let status = hyper::StatusCode::from_u16(served.response.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| ApiError::invalid_status(&served.context))?;
    let mut resp = hyper::Response::new(Full::new(Bytes::from(served.response.body)));
    *resp.status_mut() = status;
    for (k, v) in served.response.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            resp.headers_mut().append(k, v);
        }
    }
    if !resp.headers().contains_key(CONTENT_TYPE) {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{}", served.context, served.version)) {
        resp.headers_mut().insert("x-carshare-context", v);
    }
    Ok(resp)
}
