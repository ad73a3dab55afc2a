//! The live system page at `/admin/ui/`: one self-contained file (`ui/index.html`, no external
//! resources), served without the admin token because it holds no data. The page asks for the
//! token, keeps it in the browser tab, and sends it in a header with each admin call; it reads
//! the Prometheus metrics for rates, errors and latency.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};

const PAGE: &str = include_str!("ui/index.html");

/// Whether `path` is the page.
pub(super) fn serves(path: &str) -> bool {
    path == "/admin/ui" || path == "/admin/ui/"
}

/// The page (or a redirect to it from `/admin/ui`, under `base_path`); `None` for another
/// method.
pub(super) fn handle(method: &Method, path: &str, base_path: &str) -> Option<hyper::Response<Full<Bytes>>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    if path == "/admin/ui" {
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::MOVED_PERMANENTLY;
        // A base path is checked to be header-safe when it is set.
        let to = HeaderValue::from_str(&format!("{base_path}/admin/ui/")).ok()?;
        resp.headers_mut().insert(LOCATION, to);
        return Some(resp);
    }
    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only this origin: nothing is loaded from elsewhere, and nothing may frame the page.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Some(resp)
}
