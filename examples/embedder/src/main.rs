//! A service of one's own with carshare inside: an axum router with its own routes and
//! carshare mounted under `/carshare`, running a subset of the built-in contexts, one context
//! from bytes the service holds, and a subscriber of its own written in Rust.
//!
//! `cargo run --release -- serve [ADDR]` serves on ADDR (default 127.0.0.1:3000) until Ctrl-C;
//! `cargo run --release -- check` drives the router in-process (no socket) and exits non-zero
//! if anything is off: CI runs that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::routing::get;
use carshare_host::{Carshare, DEFAULT_CONTEXTS, Event, EventHandler, Handled, Unit};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Counts the orders placed: a native subscriber, on carshare's cursors, retries and metrics.
#[derive(Default)]
struct OrderCounter {
    ordered: AtomicU64,
}

impl EventHandler for OrderCounter {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn handle<'a>(&'a self, unit: Unit, _event: &'a Event) -> Handled<'a> {
        self.ordered.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready((unit, Ok(()))))
    }
}

/// carshare, as this service wants it.
async fn carshare(
    dir: &std::path::Path,
    counter: Arc<OrderCounter>,
) -> Result<Carshare, Box<dyn std::error::Error>> {
    // Bytes the service holds: here the built-in delivery context's, standing in for a
    // component of one's own (read from a file, fetched, or built beside the service).
    let delivery = DEFAULT_CONTEXTS
        .iter()
        .find(|(name, _)| *name == "delivery")
        .map(|(_, bytes)| bytes.to_vec())
        .ok_or("no delivery context")?;
    let built = Carshare::builder()
        .data_dir(dir)
        .builtin_contexts(["order", "payment", "product"])
        .context_bytes("delivery", delivery)
        .subscriber("order-counter", counter)
        .admin_token("change-me")
        .base_path("/carshare")
        .build()
        .await?;
    Ok(built)
}

fn router(carshare: &Carshare, counter: Arc<OrderCounter>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "my own service, with carshare under /carshare\n" }),
        )
        .route(
            "/stats",
            get(|State(counter): State<Arc<OrderCounter>>| async move {
                axum::Json(json!({ "ordered": counter.ordered.load(Ordering::Relaxed) }))
            }),
        )
        .with_state(counter)
        .nest_service("/carshare", carshare.app())
}

/// Sends one request through the router; returns the status and the JSON body.
async fn send(router: &Router, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "shop.example")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a well-formed request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Drives the router in-process and checks what an embedder relies on.
async fn check(router: Router) -> Result<(), String> {
    let expect = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    let (status, product) = send(
        &router,
        "POST",
        "/carshare/products",
        r#"{"modelname":"e-car","qty":3}"#,
    )
    .await;
    expect(
        status == 201,
        format!("POST /carshare/products: {status} {product}"),
    )?;
    let link = product["_links"]["self"]["href"].as_str().unwrap_or_default();
    expect(
        link == "http://shop.example/carshare/products/1",
        format!("the product's link carries the prefix: {link}"),
    )?;
    let (status, order) = send(&router, "POST", "/carshare/orders", r#"{"productId":1,"qty":1}"#).await;
    expect(status == 201, format!("POST /carshare/orders: {status} {order}"))?;
    // Left out: the customer page.
    let (status, _) = send(&router, "GET", "/carshare/customerpages", "").await;
    expect(
        status == 404,
        format!("GET /carshare/customerpages: {status}, expected 404"),
    )?;
    // The order goes on to Shipped through the delivery from the service's bytes, and the
    // service's own subscriber counts it.
    for _ in 0..200 {
        let (_, order) = send(&router, "GET", "/carshare/orders/1", "").await;
        let (_, stats) = send(&router, "GET", "/stats", "").await;
        if order["status"] == "Shipped" && stats["ordered"] == 1 {
            println!(
                "checked: links under /carshare, a subset of contexts, one from bytes, a native subscriber"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the order was not shipped and counted within 5 s".to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let counter = Arc::new(OrderCounter::default());
    match args.first().map(String::as_str) {
        Some("check") => {
            let dir = tempfile::tempdir()?;
            let carshare = carshare(dir.path(), counter.clone()).await?;
            let outcome = check(router(&carshare, counter)).await;
            carshare.shutdown().await;
            outcome.map_err(Into::into)
        }
        Some("serve") => {
            let addr = args.get(1).map_or("127.0.0.1:3000", String::as_str);
            let carshare = carshare(std::path::Path::new("embedder-data"), counter.clone()).await?;
            let app = router(&carshare, counter);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("serving on http://{addr} (carshare under /carshare)");
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            carshare.shutdown().await;
            Ok(())
        }
        _ => Err("usage: carshare-embedder-example check | serve [ADDR]".into()),
    }
}
