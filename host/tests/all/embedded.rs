//! In process, as an embedder uses the library: a subscriber of the embedder's own, written
//! in Rust, beside the contexts, on the runtime's log. Its name is a set of cursors, so it may
//! not be a context's: either way round, the second to come is refused, and nobody's events
//! are taken.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use carshare_core::{Dispatcher, Event, EventHandler, Handled, Log, RetryPolicy, SubscribeError, Unit};
use carshare_host::{
    App, Carshare, DEFAULT_CONTEXTS, LoadContextError, Request, Runtime, RuntimeOptions, WasmEngine,
};

use crate::common::TestComponent;

/// Counts the `Ordered` events it is given.
#[derive(Default)]
struct Tally {
    seen: AtomicU32,
}

impl EventHandler for Tally {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn handle<'a>(&'a self, unit: Unit, _event: &'a Event) -> Handled<'a> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready((unit, Ok(()))))
    }
}

fn runtime(dir: &tempfile::TempDir) -> Runtime {
    let log = Log::open(dir.path().join("carshare.redb")).expect("open the log");
    let engine = WasmEngine::new(Some(&dir.path().join("cache"))).expect("an engine");
    Runtime::new(log, engine, RuntimeOptions::default()).expect("a runtime")
}

async fn post(runtime: &Runtime, path: &str, body: &str) -> u16 {
    let mut request = Request::new("POST", path, "http://embedded.test");
    request.body = body.as_bytes().to_vec();
    runtime.handle(request).await.expect("an answer").response.status
}

async fn status_of(runtime: &Runtime, order: u64) -> String {
    let request = Request::new("GET", &format!("/orders/{order}"), "http://embedded.test");
    let served = runtime.handle(request).await.expect("an answer");
    let body: serde_json::Value = serde_json::from_slice(&served.response.body).unwrap_or_default();
    body["status"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_subscriber_named_like_a_context_is_refused_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(&dir);
    for (name, component) in DEFAULT_CONTEXTS {
        runtime
            .load(name, component)
            .await
            .expect("load a built-in context");
    }
    let native = Dispatcher::partitioned(runtime.partitions().clone(), RetryPolicy::default());
    let tally = Arc::new(Tally::default());

    // Named like the order context: refused, saying why.
    let refused = native.subscribe("order", tally.clone(), true).unwrap_err();
    assert_eq!(refused, SubscribeError::NameTaken("order".into()));
    assert!(refused.to_string().contains("share its cursors"), "{refused}");
    // Under a name of its own it receives the events, beside the contexts.
    native
        .subscribe("audit", tally.clone(), true)
        .expect("a free name");

    assert_eq!(
        post(&runtime, "/products", r#"{"modelname":"m","qty":10}"#).await,
        201
    );
    for _ in 0..3 {
        assert_eq!(post(&runtime, "/orders", r#"{"productId":1,"qty":1}"#).await, 201);
    }
    // Order's own handler still gets every event meant for it (each order goes on to Shipped
    // through Paid and Shipped, which order applies), and the native subscriber saw every
    // Ordered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut shipped = 0;
        for id in 1..=3 {
            if status_of(&runtime, id).await == "Shipped" {
                shipped += 1;
            }
        }
        if tally.seen.load(Ordering::SeqCst) == 3 && shipped == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the native subscriber saw {} Ordered, {shipped} orders shipped",
            tally.seen.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    native.shutdown().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_named_like_a_native_subscriber_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(&dir);
    let native = Dispatcher::partitioned(runtime.partitions().clone(), RetryPolicy::default());
    native
        .subscribe("payment", Arc::new(Tally::default()), true)
        .expect("nobody holds the name yet");
    let payment = DEFAULT_CONTEXTS.iter().find(|(n, _)| *n == "payment").unwrap().1;
    let refused = runtime.load("payment", payment).await.unwrap_err();
    assert!(
        matches!(refused, LoadContextError::SubscriberName(_)),
        "{refused}"
    );
    // Nothing of it was loaded: its route is free, and loads once the name is let go.
    let probe = Request::new("GET", "/payments", "http://embedded.test");
    assert!(
        runtime.handle(probe).await.is_err(),
        "no context serves /payments"
    );
    native.shutdown().await;
    runtime
        .load("payment", payment)
        .await
        .expect("loads once the name is free");
    runtime.shutdown().await;
}

/// Sends one request through the tower `Service` an embedder mounts, with `Host:
/// embedded.test`; returns the status, the `Location` header and the body as JSON (`Null` if
/// it is not JSON).
async fn call(app: &App, method: &str, path: &str, body: &str) -> (u16, Option<String>, serde_json::Value) {
    use tower_service::Service;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "embedded.test")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let mut service = app.clone();
    let response = service.call(request).await.expect("infallible");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    use http_body_util::BodyExt;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        serde_json::from_slice(&bytes).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_runs_a_subset_and_a_component_of_its_own_under_a_base_path() {
    let dir = tempfile::tempdir().unwrap();
    let declining = std::fs::read(TestComponent::PaymentDeclining.path()).unwrap();
    let carshare = Carshare::builder()
        .data_dir(dir.path())
        .admin_token("t0ken")
        .builtin_contexts(["order", "product"])
        .context_bytes("payment", declining)
        .base_path("/carshare")
        .build()
        .await
        .expect("built");
    let app = carshare.app();

    // Under the prefix: the link and Location carry it.
    let (status, location, product) =
        call(&app, "POST", "/carshare/products", r#"{"modelname":"m","qty":5}"#).await;
    assert_eq!(status, 201, "{product}");
    assert_eq!(
        product["_links"]["self"]["href"],
        "http://embedded.test/carshare/products/1"
    );
    assert_eq!(
        location.as_deref(),
        Some("http://embedded.test/carshare/products/1")
    );
    // With the prefix already taken off (axum's `nest_service`), the same.
    let (status, _, got) = call(&app, "GET", "/products/1?x=1", "").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        got["_links"]["self"]["href"],
        "http://embedded.test/carshare/products/1"
    );
    // The payment from the embedder's bytes is the one that runs: it declines.
    let (status, _, refused) = call(&app, "POST", "/carshare/orders", r#"{"productId":1,"qty":1}"#).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("declined"),
        "{refused}"
    );
    // Delivery and the customer page were left out.
    let (status, _, _) = call(&app, "GET", "/carshare/deliveries", "").await;
    assert_eq!(status, 404);
    let (_, _, root) = call(&app, "GET", "/carshare/", "").await;
    let links = root["_links"].as_object().unwrap();
    assert!(
        links.contains_key("orders") && !links.contains_key("deliveries"),
        "{root}"
    );
    assert!(
        links.values().all(|l| l["href"]
            .as_str()
            .unwrap()
            .starts_with("http://embedded.test/carshare/")),
        "{root}"
    );
    // The OpenAPI server and the system page's redirect carry the prefix too.
    let (_, _, openapi) = call(&app, "GET", "/carshare/openapi.json", "").await;
    assert_eq!(openapi["servers"][0]["url"], "http://embedded.test/carshare");
    let (status, location, _) = call(&app, "GET", "/carshare/admin/ui", "").await;
    assert_eq!((status, location.as_deref()), (301, Some("/carshare/admin/ui/")));
    carshare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_subscriber_of_the_builder_is_a_first_class_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    // Named like a context: the build is refused, saying why.
    let refused = Carshare::builder()
        .data_dir(dir.path())
        .subscriber("payment", Arc::new(Tally::default()))
        .build()
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("payment"), "{refused}");
    assert!(refused.to_string().contains("share its cursors"), "{refused}");

    let tally = Arc::new(Tally::default());
    let carshare = Carshare::builder()
        .data_dir(dir.path())
        .admin_token("t0ken")
        .subscriber("audit", tally.clone())
        .build()
        .await
        .expect("built on the same directory");
    let runtime = carshare.runtime().clone();
    // A context may not take its name either, and nor may a second native subscriber.
    assert!(runtime.subscribe("audit", Arc::new(Tally::default())).is_err());
    assert!(runtime.subscribe("order", Arc::new(Tally::default())).is_err());

    assert_eq!(
        post(&runtime, "/products", r#"{"modelname":"m","qty":10}"#).await,
        201
    );
    for _ in 0..2 {
        assert_eq!(post(&runtime, "/orders", r#"{"productId":1,"qty":1}"#).await, 201);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tally.seen.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the native subscriber saw the orders"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The admin API lists it beside the contexts' subscribers, and moves its cursor.
    let app = carshare.app();
    let admin = |method: &'static str, path: &'static str, body: &'static str| {
        let app = app.clone();
        async move {
            use tower_service::Service;
            let request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", "Bearer t0ken")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let response = app.clone().call(request).await.unwrap();
            let status = response.status().as_u16();
            use http_body_util::BodyExt;
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
            )
        }
    };
    let (status, listed) = admin("GET", "/admin/subscribers", "").await;
    assert_eq!(status, 200, "{listed}");
    let audit = listed["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "audit")
        .unwrap_or_else(|| panic!("audit is listed: {listed}"))
        .clone();
    assert_eq!(audit["kind"], "native");
    assert!(audit["subscriber"]["cursor"].as_u64().unwrap() >= 2, "{audit}");
    assert!(
        listed["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "order" && s["kind"] == "context")
    );
    let (status, moved) = admin("POST", "/admin/subscribers/audit/cursor", r#"{"seq":0}"#).await;
    assert_eq!(status, 200, "{moved}");
    // Moved back to the start, it is handed every Ordered again: exactly-once per cursor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tally.seen.load(Ordering::SeqCst) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replayed from the moved cursor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And its cursor is in the metrics.
    let metrics = runtime.prometheus().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("carshare_subscriber_cursor{") && l.contains("subscriber=\"audit\"")),
        "{metrics}"
    );
    carshare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_refuses_an_unknown_built_in_context_and_a_bad_base_path() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = Carshare::builder()
        .data_dir(dir.path())
        .builtin_contexts(["ordr"])
        .build()
        .await
        .err()
        .expect("refused");
    assert!(unknown.to_string().contains("\"ordr\""), "{unknown}");
    for bad in ["carshare", "/carshare/", "/a b", "/a?b"] {
        let refused = Carshare::builder()
            .data_dir(dir.path())
            .base_path(bad)
            .build()
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} refused"));
        assert!(refused.to_string().contains("base path"), "{refused}");
    }
}
