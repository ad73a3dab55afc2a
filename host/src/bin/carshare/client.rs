//! `carshare contexts ...`: a small client of a running server's admin API, so an operator can
//! list, swap and roll back contexts from a shell.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::{ContextsAction, ContextsArgs};

/// Runs the command; returns the server's answer (pretty JSON) or an error to print.
pub async fn run(cmd: &ContextsArgs, token: Option<String>) -> Result<String, String> {
    let url = cmd.url.trim_end_matches('/');
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must be http://host:port, not {}", cmd.url))?
        .trim_end_matches('/')
        .to_string();
    let (method, path, body) = match &cmd.action {
        ContextsAction::List => ("GET", "/admin/contexts".to_string(), Vec::new()),
        ContextsAction::Swap { name, file } => {
            let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            ("PUT", format!("/admin/contexts/{name}"), bytes)
        }
        ContextsAction::Rollback { name } => ("POST", format!("/admin/contexts/{name}/rollback"), Vec::new()),
    };
    let stream = TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot reach {authority}: {e}"))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if method == "PUT" {
        req = req.header("content-type", "application/wasm");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    };
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}
