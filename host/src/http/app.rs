//! [`App`]: the whole HTTP surface as one service, generic over the request body so that an
//! embedder or a test can drive it in-process, without a socket. It reads the body within its
//! limit, then hands the request to the host's own paths (`system`), the operator API
//! (`admin`, behind the token) or the contexts (`gateway`). Every error it meets is an
//! [`ApiError`], turned into a response once, here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
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

/// The gateway, the host's own paths and the admin API, as one service. Cheap to clone (an
/// `Arc` inside); as a `tower::Service` it mounts in axum or any tower stack.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

#[derive(Clone)]
struct AppInner {
    runtime: Runtime,
    admin_token: Option<String>,
    max_body: usize,
    base_path: String,
    authority: String,
}

/// Why a base path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "base path {0:?} is not usable: it must start with '/', not end with one, and hold only \
     letters, digits and `-._~/` (e.g. \"/carshare\")"
)]
pub struct BasePathError(pub String);

/// A base path as [`App::with_base_path`] takes it: `""` (none) or `/segment[/segment...]`.
pub(crate) fn check_base_path(path: &str) -> Result<String, BasePathError> {
    let path = if path == "/" { "" } else { path };
    let fine = path.is_empty()
        || (path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b)));
    if fine {
        Ok(path.to_string())
    } else {
        Err(BasePathError(path.to_string()))
    }
}

impl App {
    /// The service in front of `runtime`: admin API off, bodies up to 1 MiB, mounted at `/`.
    pub fn new(runtime: Runtime) -> App {
        App {
            inner: Arc::new(AppInner {
                runtime,
                admin_token: None,
                max_body: 1 << 20,
                base_path: String::new(),
                authority: "localhost".to_string(),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut AppInner)) -> App {
        // Settings are made before the service is shared; a shared one is copied first.
        let inner = Arc::make_mut(&mut self.inner);
        change(inner);
        self
    }

    /// Turns the admin API on, behind this bearer token (`None`: off).
    pub fn with_admin_token(self, token: Option<String>) -> App {
        self.with(|i| i.admin_token = token)
    }

    /// The largest request body accepted, in bytes.
    pub fn with_max_body(self, bytes: usize) -> App {
        self.with(|i| i.max_body = bytes)
    }

    /// Serves under `path` (e.g. `/carshare`): every link, `Location`, the OpenAPI server URL
    /// and the system page's calls carry it. A request may arrive with the prefix (a router
    /// that hands the whole path on) or without it (axum's `nest_service` strips it); both are
    /// served.
    pub fn with_base_path(self, path: &str) -> Result<App, BasePathError> {
        let path = check_base_path(path)?;
        Ok(self.with(|i| i.base_path = path))
    }

    /// The authority links use when a request has no usable `Host` header (default
    /// `localhost`); the server sets the address it listens on.
    pub fn with_authority(self, authority: &str) -> App {
        let authority = authority.to_string();
        self.with(|i| i.authority = authority)
    }

    /// The runtime requests go to.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The base path it serves under (`""` for none).
    pub fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    /// Serves one request. Never fails: every error is a JSON response.
    pub async fn serve<B>(&self, req: hyper::Request<B>) -> hyper::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_from(req, None).await
    }

    /// Serves one request that arrived on `local` (the address links fall back to when the
    /// request has no usable `Host`).
    pub(crate) async fn serve_from<B>(
        &self,
        req: hyper::Request<B>,
        local: Option<SocketAddr>,
    ) -> hyper::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Every request has an id: the client's `x-request-id`, or one made here. It is in
        // every log line about the request, in the events it causes, and in the response.
        let started = Instant::now();
        let id = request_id(req.headers());
        let req = self.unprefixed(req);
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

    /// The request with the base path taken off its path, if it carries it.
    fn unprefixed<B>(&self, req: hyper::Request<B>) -> hyper::Request<B> {
        let base = self.inner.base_path.as_str();
        let rest = match req.uri().path().strip_prefix(base) {
            Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
            _ => return req,
        };
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{}?{q}", if rest.is_empty() { "/" } else { rest }),
            None => if rest.is_empty() { "/" } else { rest }.to_string(),
        };
        let (mut parts, body) = req.into_parts();
        let mut uri = hyper::http::uri::Parts::from(parts.uri.clone());
        // Taken from a valid path: a suffix of one is valid (else the request stays as it is).
        uri.path_and_query = path_and_query.parse().ok();
        if let Ok(u) = hyper::Uri::from_parts(uri) {
            parts.uri = u;
        }
        hyper::Request::from_parts(parts, body)
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
            match self.inner.runtime.route_of(path) {
                Some((route, context)) => (context, route),
                None => ("host".to_string(), "other".to_string()),
            }
        };
        let metrics = self.inner.runtime.metrics();
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
        local: Option<SocketAddr>,
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
            && let Some(page) = ui::handle(&parts.method, &path, &self.inner.base_path)
        {
            return Ok(page);
        }
        // Before reading a body: an unauthorized client must not make us buffer anything big.
        let authorized = if AdminRoute::is_admin(&path) {
            Some(auth::authorize(self.inner.admin_token.as_deref(), &parts.headers).map_err(unread)?)
        } else {
            None
        };
        let route = authorized
            .is_some()
            .then(|| AdminRoute::parse(&parts.method, &path));
        // A component uploaded to swap a context may be far larger than any business request.
        let limit = match route {
            Some(Ok(AdminRoute::Swap { .. } | AdminRoute::Add { .. })) => MAX_COMPONENT_BYTES,
            _ => self.inner.max_body,
        };
        let body = read_body(&parts, body, limit).await?;
        let authority = match local {
            Some(addr) => addr.to_string(),
            None => self.inner.authority.clone(),
        };
        let base = base_url(parts.headers.get(HOST), &authority, &self.inner.base_path);
        let runtime = &self.inner.runtime;
        if system::serves(&path) {
            return system::handle(runtime, &parts.method, &path, &base);
        }
        if let (Some(authorized), Some(route)) = (authorized, route) {
            let query = parts.uri.query().unwrap_or("");
            return admin::handle(authorized, runtime, route?, query, &body).await;
        }
        gateway::handle(runtime, parts, body, base, request_id).await
    }
}

type Served = hyper::Response<Full<Bytes>>;
type ServedFuture = Pin<Box<dyn Future<Output = Result<Served, Infallible>> + Send>>;

impl App {
    /// [`App::serve`] as the boxed, `'static` future both `Service` impls hand out.
    fn serve_boxed<B>(&self, req: hyper::Request<B>) -> ServedFuture
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let app = self.clone();
        Box::pin(async move { Ok(app.serve(req).await) })
    }
}

/// As a tower service, for axum (`Router::nest_service`, `route_service`, `fallback_service`)
/// and tower stacks. Always ready; never fails: errors are JSON responses.
impl<B> tower_service::Service<hyper::Request<B>> for App
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Served;
    type Error = Infallible;
    type Future = ServedFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<B>) -> ServedFuture {
        self.serve_boxed(req)
    }
}

/// As a hyper service, for `hyper::server::conn::http1::Builder::serve_connection` and the like.
impl<B> hyper::service::Service<hyper::Request<B>> for App
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Served;
    type Error = Infallible;
    type Future = ServedFuture;

    fn call(&self, req: hyper::Request<B>) -> ServedFuture {
        self.serve_boxed(req)
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

/// `http://<Host header><base path>` when the header is a plausible authority, else with the
/// `fallback` authority (the address we listen on).
fn base_url(host: Option<&HeaderValue>, fallback: &str, base_path: &str) -> String {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    });
    format!("http://{}{base_path}", host.unwrap_or(fallback))
}
