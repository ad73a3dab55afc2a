//! [`App`]: the whole HTTP surface as one service, generic over the request body so that an
//! embedder or a test can drive it in-process, without a socket. It reads the body within its
//! limit, then hands the request to the host's own paths (`system`), the operator API
//! (`admin`, behind the token) or the contexts (`gateway`). Every error it meets is an
//! [`ApiError`], turned into a response once, here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use tracing::Instrument;

use super::admin::{self, AdminRoute};
use super::error::ApiError;
use super::{auth, gateway, system, ui};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::runtime::Runtime;

/// The largest component `PUT /admin/contexts/{name}` takes.
const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// How long a client may take to send a body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway, the host's own paths and the admin API, as one service.
pub struct App {
    /// The runtime requests go to.
    pub runtime: Runtime,
    /// The bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

impl App {
    /// Serves one request that arrived on `local` (the address links fall back to when the
    /// request has no usable `Host`). Never fails: every error is a JSON response.
    pub async fn serve<B>(&self, req: hyper::Request<B>, local: SocketAddr) -> hyper::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Every request has an id: the client's `x-request-id`, or one made here. It is in
        // every log line about the request, in the events it causes, and in the response.
        let started = Instant::now();
        let id = request_id(req.headers());
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let span = tracing::info_span!("request", id = %id, method = %method, path = %path);
        let mut resp = match self.route(req, local, &id).instrument(span).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        self.count(&method, &path, &resp, started);
        resp
    }

    /// Counts the request and its duration, by the context and route that served it.
    fn count(
        &self,
        method: &hyper::Method,
        path: &str,
        resp: &hyper::Response<Full<Bytes>>,
        started: Instant,
    ) {
        let (context, route) = if AdminRoute::is_admin(path) {
            ("host".to_string(), "/admin".to_string())
        } else if system::serves(path) {
            ("host".to_string(), path.to_string())
        } else {
            match self.runtime.route_of(path) {
                Some((route, context)) => (context, route),
                None => ("host".to_string(), "other".to_string()),
            }
        };
        let metrics = self.runtime.metrics();
        let method = method.as_str().to_string();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                context: context.clone(),
                route: route.clone(),
                method: method.clone(),
                status: resp.status().as_u16(),
            })
            .inc();
        metrics
            .request_seconds
            .get_or_create(&RouteLabels {
                context,
                route,
                method,
            })
            .observe(started.elapsed().as_secs_f64());
    }

    async fn route<B>(
        &self,
        req: hyper::Request<B>,
        local: SocketAddr,
        request_id: &str,
    ) -> Result<hyper::Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        // An error answered before the body is read leaves it on the connection, which then
        // cannot carry another request: hyper closes it, and the client is told.
        let unread = |e: ApiError| if may_have_body(&parts) { e.closing() } else { e };
        // The system page is static and holds no data: it asks for the token itself.
        if ui::serves(&path)
            && let Some(page) = ui::handle(&parts.method, &path)
        {
            return Ok(page);
        }
        // Before reading a body: an unauthorized client must not make us buffer anything big.
        let authorized = if AdminRoute::is_admin(&path) {
            Some(auth::authorize(self.admin_token.as_deref(), &parts.headers).map_err(unread)?)
        } else {
            None
        };
        let route = authorized
            .is_some()
            .then(|| AdminRoute::parse(&parts.method, &path));
        // A component uploaded to swap a context may be far larger than any business request.
        let limit = match route {
            Some(Ok(AdminRoute::Swap { .. })) => MAX_COMPONENT_BYTES,
            _ => self.max_body,
        };
        let body = read_body(&parts, body, limit).await?;
        let base = base_url(parts.headers.get(HOST), local);
        if system::serves(&path) {
            return system::handle(&self.runtime, &parts.method, &path, &base);
        }
        if let (Some(authorized), Some(route)) = (authorized, route) {
            let query = parts.uri.query().unwrap_or("");
            return admin::handle(authorized, &self.runtime, route?, query, &body).await;
        }
        gateway::handle(&self.runtime, parts, body, base, request_id).await
    }
}

/// The whole body, if it is within `limit` and arrives in time; the connection closes after
/// any refusal here, since the rest of the body is left unread.
async fn read_body<B>(parts: &hyper::http::request::Parts, body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit).closing());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    let Ok(read) = read else {
        return Err(ApiError::body_timeout().closing());
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::too_large(limit).closing())
        }
        Err(e) => Err(ApiError::unreadable_body(&e).closing()),
    }
}

/// The header a request's id travels in, both ways.
const REQUEST_ID: &str = "x-request-id";

/// The client's request id if it sent a usable one (1 to 128 of `A-Za-z0-9._:-`), else a new
/// one: 16 hex digits, unique in this process.
fn request_id(headers: &hyper::HeaderMap) -> String {
    let given = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| {
        !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    });
    if let Some(id) = given {
        return id.to_string();
    }
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    // Distinct counters give distinct ids: the multiplier is odd, so the map is one to one.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Whether a request may carry a body: one declared with a length above zero, or chunked.
fn may_have_body(parts: &hyper::http::request::Parts) -> bool {
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || parts.headers.contains_key(TRANSFER_ENCODING)
}

/// `http://<Host header>` when it is a plausible authority, else the address we listen on.
fn base_url(host: Option<&HeaderValue>, local: SocketAddr) -> String {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    });
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{local}"),
    }
}
