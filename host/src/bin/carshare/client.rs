//! A small client of a running server's admin API, so an operator works from a shell:
//! `carshare contexts list|swap|rollback|stop|start` (one request each) and `carshare events tail`
//! (follows the log as it grows, filtered by type or correlation id).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::cli::{ContextsAction, ContextsArgs, TailArgs};

/// A server's admin API, reached on one connection at a time.
pub struct Admin {
    authority: String,
    token: Option<String>,
}

impl Admin {
    pub fn new(url: &str, token: Option<String>) -> Result<Admin, String> {
        let authority = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url must be http://host:port, not {url}"))?
            .to_string();
        Ok(Admin { authority, token })
    }

    /// One request; the status and the body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.authority))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if let Some(t) = &self.token {
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
        Ok((status, body))
    }

    /// One request whose answer must be a success: its JSON body.
    pub async fn json(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Value, String> {
        let (status, body) = self.send(method, path, body).await?;
        let parsed = serde_json::from_slice::<Value>(&body);
        if !status.is_success() {
            let text = match &parsed {
                Ok(v) => v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
                Err(_) => String::from_utf8_lossy(&body).into_owned(),
            };
            return Err(format!("{status}: {text}"));
        }
        parsed.map_err(|e| format!("the answer is not JSON: {e}"))
    }
}

/// `carshare contexts ...`: the server's answer, as pretty JSON.
pub async fn contexts(cmd: &ContextsArgs, token: Option<String>) -> Result<String, String> {
    let admin = Admin::new(&cmd.url, token)?;
    let (method, path, body) = match &cmd.action {
        ContextsAction::List => ("GET", "/admin/contexts".to_string(), Vec::new()),
        ContextsAction::Swap { name, file } => {
            let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            ("PUT", format!("/admin/contexts/{name}"), bytes)
        }
        ContextsAction::Add { name, file } => {
            let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            ("POST", format!("/admin/contexts/{name}"), bytes)
        }
        ContextsAction::Remove { name } => ("DELETE", format!("/admin/contexts/{name}"), Vec::new()),
        ContextsAction::Rollback { name } => ("POST", format!("/admin/contexts/{name}/rollback"), Vec::new()),
        ContextsAction::Stop { name } => ("POST", format!("/admin/contexts/{name}/stop"), Vec::new()),
        ContextsAction::Start { name } => ("POST", format!("/admin/contexts/{name}/start"), Vec::new()),
    };
    let answer = admin.json(method, &path, body).await?;
    Ok(serde_json::to_string_pretty(&answer).unwrap_or_default())
}

/// `carshare events tail`: prints the events after `--after` (default: the head, so only new
/// ones), one JSON object per line (each with its partition), then follows the log: every
/// partition's, or `--partition`'s. With `--count N` it stops after N.
pub async fn tail(args: &TailArgs, token: Option<String>) -> Result<(), String> {
    let admin = Admin::new(&args.url, token)?;
    let first = admin.json("GET", "/admin/events?limit=1", Vec::new()).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..first["partitions"].as_u64().unwrap_or(1) as u32).collect(),
    };
    let mut after = Vec::with_capacity(partitions.len());
    for p in &partitions {
        after.push(match args.after {
            Some(a) => a,
            None => admin
                .json("GET", &format!("/admin/events?limit=1&partition={p}"), Vec::new())
                .await?["head"]
                .as_u64()
                .unwrap_or(0),
        });
    }
    let mut filters = String::new();
    if let Some(t) = &args.r#type {
        filters.push_str(&format!("&type={}", encode(t)));
    }
    if let Some(c) = &args.correlation_id {
        filters.push_str(&format!("&correlationId={}", encode(c)));
    }
    let mut printed = 0u64;
    loop {
        let mut moved = false;
        for (i, p) in partitions.iter().enumerate() {
            let page = admin
                .json(
                    "GET",
                    &format!(
                        "/admin/events?after={}&limit=1000&partition={p}{filters}",
                        after[i]
                    ),
                    Vec::new(),
                )
                .await?;
            for e in page["events"].as_array().into_iter().flatten() {
                println!("{e}");
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
            let next = page["next"].as_u64().unwrap_or(after[i]);
            moved |= next != after[i];
            after[i] = next;
        }
        if !moved {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        }
    }
}

/// Percent-encodes what is not safe in a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
