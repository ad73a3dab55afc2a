//! carshare embedded in another program: the runtime and its HTTP service in-process, with no
//! socket. [`Carshare::builder`] opens a system in a temporary directory with the built-in
//! contexts, and requests go straight into [`App::serve`] as `hyper::Request`s: a product is
//! registered, an order placed (payment taken in the same unit of work), and the order read
//! back. (`examples/embedder/` mounts carshare in an axum router instead.)
//!
//! Run it with `cargo run --release -p carshare-host --example embed`.

use std::time::Duration;

use bytes::Bytes;
use carshare_host::{App, Carshare};
use http_body_util::{BodyExt, Full};

/// Sends one request to `app` and returns the status and the body.
async fn send(app: &App, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "carshare.example")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a well-formed request");
    let response = app.serve(request).await;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a full body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let carshare = Carshare::builder().data_dir(dir.path()).build().await?;
    let app = carshare.app();

    let (status, body) = send(&app, "POST", "/products", r#"{"modelname":"embedded","qty":5}"#).await;
    println!("POST /products -> {status} {body}");
    let (status, body) = send(&app, "POST", "/orders", r#"{"productId":1,"qty":2}"#).await;
    println!("POST /orders   -> {status} {body}");
    assert_eq!(status, 201, "the order was placed");

    // The rest of the flow runs from events: payment's Paid reaches delivery, delivery's
    // Shipped reaches order.
    let mut status_now = String::new();
    for _ in 0..100 {
        let (_, body) = send(&app, "GET", "/orders/1", "").await;
        let order: serde_json::Value = serde_json::from_str(&body)?;
        status_now = order["status"].as_str().unwrap_or_default().to_string();
        if status_now == "Shipped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("GET /orders/1  -> status {status_now}");
    carshare.shutdown().await;
    Ok(())
}
