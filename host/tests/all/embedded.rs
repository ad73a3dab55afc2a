//! In process, as an embedder uses the library: a subscriber of the embedder's own, written
//! in Rust, beside the contexts, on the runtime's log. Its name is a set of cursors, so it may
//! not be a context's: either way round, the second to come is refused, and nobody's events
//! are taken.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use carshare_core::{Dispatcher, Event, EventHandler, Handled, Log, RetryPolicy, SubscribeError, Unit};
use carshare_host::{DEFAULT_CONTEXTS, LoadContextError, Request, Runtime, RuntimeOptions, WasmEngine};

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
