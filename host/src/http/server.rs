//! The hyper server and the gateway service.
//!
//! One task per connection (`http1::Builder::serve_connection`), admitted by `conns` (a cap in
//! all, a cap per client address, idle connections reaped near the limit), graceful shutdown
//! that lets in-flight requests finish. [`App`] is the service itself,
//! usable without a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::conns::{ConnectionLimits, Conns};
use super::error::ApiError;
use crate::runtime::Runtime;
use crate::types::Request;

/// The largest component `PUT /admin/contexts/{name}` takes.
const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// How long a client may take to send a body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway and admin service.
pub struct App {
    /// The runtime requests go to.
    pub runtime: Runtime,
    /// The bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

impl App {
    /// Serves one request. Never fails: every error is a JSON response.
    pub async fn serve(
        &self,
        req: hyper::Request<Incoming>,
        local: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        match self.route(req, local).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn route(
        &self,
        req: hyper::Request<Incoming>,
        local: SocketAddr,
    ) -> Result<hyper::Response<Full<Bytes>>, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        // An error answered before the body is read leaves it on the connection, which then
        // cannot carry another request: hyper closes it, and the client is told.
        let unread = |e: ApiError| if may_have_body(&parts) { e.closing() } else { e };
        let admin = path == "/admin" || path.starts_with("/admin/");
        // Before reading a body: an unauthorized client must not make us buffer anything big.
        if admin {
            super::admin::authorize(self, &parts).map_err(unread)?;
        }
        // A component uploaded to swap a context may be far larger than any business request.
        let limit = if admin && parts.method == hyper::Method::PUT && path.starts_with("/admin/contexts/") {
            MAX_COMPONENT_BYTES
        } else {
            self.max_body
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit).closing());
        }
        let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
        let Ok(read) = read else {
            return Err(ApiError::new(408, "request_timeout", "the body did not arrive in time").closing());
        };
        let body = match read {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(too_large(limit).closing());
            }
            Err(e) => {
                return Err(
                    ApiError::new(400, "bad_request", format!("could not read the body: {e}")).closing(),
                );
            }
        };
        if super::system::serves(&path) {
            let base = base_url(parts.headers.get(HOST), local);
            return super::system::handle(self, &parts.method, &path, &base);
        }
        if admin {
            return super::admin::handle(self, &parts, &path, &query, &body).await;
        }
        let method = parts.method.as_str().to_string();
        if !body.is_empty()
            && matches!(method.as_str(), "POST" | "PUT" | "PATCH")
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        {
            return Err(ApiError::new(
                400,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            ));
        }
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let request = Request {
            method,
            path,
            query,
            headers,
            body: body.to_vec(),
            base_url: base_url(parts.headers.get(HOST), local),
            caller: None,
        };
        let served = self.runtime.handle(request).await?;
        let mut resp = hyper::Response::new(Full::new(Bytes::from(served.response.body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(served.response.status)
            .ok()
            .filter(|s| !s.is_informational())
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    "context_fault",
                    format!("{} answered an invalid status", served.context),
                )
            })?;
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
}

/// Whether a request may carry a body: one declared with a length above zero, or chunked.
fn may_have_body(parts: &hyper::http::request::Parts) -> bool {
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || parts.headers.contains_key(TRANSFER_ENCODING)
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        format!("the body is larger than {max} bytes"),
    )
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

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to `grace`), and returns. Connections are admitted by [`Conns`]: a
/// client over its share, or a server full of busy connections, gets its connection closed at
/// once rather than left waiting in the backlog.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: ConnectionLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let conns = Conns::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    crate::log::warn(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let admitted = match conns.admit(peer.ip()) {
            Ok(a) => a,
            // Closed at once: the client learns now, instead of waiting in a backlog.
            Err(_refused) => continue,
        };
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| listener.local_addr().expect("bound"));
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let admitted = Arc::new(admitted);
        let on_conn = admitted.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            let busy = on_conn.request();
            async move {
                let resp = app.serve(req, local).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    // Reaped while idle, or the server is shutting down: finish what is being
                    // served, then close.
                    _ = admitted.conn().close_requested(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    conns.close_all();
    if !conns.drained(grace).await {
        crate::log::warn("some connections were still busy after the grace period");
    }
}
