//! What a newcomer meets first, against the real server: the reference system's own clients
//! (httpie, which sends every `key=value` field as a JSON string), the API root and the probes
//! that the reference's Kubernetes deployment called, a product that is orderable the moment it
//! is registered, and a compile cache that a second data dir shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::common::{TestServer, temp_dir};
use serde_json::Value;

/// A POST as httpie sends it: `http :8080/orders productId=1 qty=1` sends strings.
fn httpie_post(s: &TestServer, path: &str, body: &str) -> crate::common::Resp {
    s.request(
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, */*;q=0.5"),
            ("user-agent", "HTTPie/3.2.4"),
        ],
        body.as_bytes(),
    )
}

fn stock(s: &TestServer, product: u64) -> i64 {
    s.get(&format!("/products/{product}")).json()["qty"]
        .as_i64()
        .unwrap()
}

#[test]
fn the_reference_walk_works_with_every_field_sent_as_a_string() {
    let s = TestServer::start(&[]);
    // The reference README's steps, as httpie sends them.
    let first = httpie_post(&s, "/products", r#"{"modelname": "test1", "qty": "100"}"#);
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["qty"], 100, "stored as a number");
    let second = httpie_post(&s, "/products", r#"{"modelname": "test2", "qty": "5"}"#);
    assert_eq!(second.status, 201, "{}", second.body);
    let (p1, p2) = (
        first.json()["id"].as_u64().unwrap(),
        second.json()["id"].as_u64().unwrap(),
    );

    let r = httpie_post(
        &s,
        "/orders",
        &format!(r#"{{"productId": "{p1}", "qty": "1", "status": "order"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let order = r.json();
    assert_eq!(
        (order["productId"].as_u64(), order["qty"].as_i64()),
        (Some(p1), Some(1))
    );
    let id = order["id"].as_u64().unwrap();
    let r = httpie_post(
        &s,
        "/orders",
        &format!(r#"{{"productId": "{p2}", "qty": "2", "customerId": "7"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["customerId"], 7);
    s.settle();
    assert_eq!(s.get(&format!("/orders/{id}")).json()["status"], "Shipped");
    assert_eq!((stock(&s, p1), stock(&s, p2)), (99, 3));

    // A PATCH as `http PATCH :8080/products/2 qty=10` sends it.
    let r = s.request(
        "PATCH",
        &format!("/products/{p2}"),
        &[("content-type", "application/json")],
        br#"{"qty": "10"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["qty"], 10);

    // Cancel, and see the stock come back.
    let r = s.request("DELETE", &format!("/orders/{id}"), &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    s.settle();
    assert_eq!(s.get(&format!("/orders/{id}")).json()["status"], "OrderCancelled");
    assert_eq!(stock(&s, p1), 100);

    // What Jackson refuses is refused, with the field named, and nothing is created.
    let before = s.events().len();
    for (body, field) in [
        (r#"{"productId": "1", "qty": "two"}"#.to_string(), "qty"),
        (r#"{"productId": "1", "qty": " 7"}"#.into(), "qty"),
        (r#"{"productId": "1", "qty": "1.5"}"#.into(), "qty"),
        (r#"{"productId": "1", "qty": 1.5}"#.into(), "qty"),
        (r#"{"productId": "1", "qty": true}"#.into(), "qty"),
        (r#"{"productId": "1", "qty": [1]}"#.into(), "qty"),
        (r#"{"productId": "1", "qty": "1000001"}"#.into(), "qty"),
        (
            r#"{"productId": "1", "qty": "99999999999999999999"}"#.into(),
            "qty",
        ),
        (r#"{"productId": "one", "qty": "1"}"#.into(), "productId"),
        (r#"{"productId": "0", "qty": "1"}"#.into(), "productId"),
        (
            format!(r#"{{"productId": "{p1}", "qty": "1", "customerId": "x"}}"#),
            "customerId",
        ),
    ] {
        let r = httpie_post(&s, "/orders", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"], "bad_request");
        assert!(e["message"].as_str().unwrap().starts_with(field), "{body}: {e}");
    }
    let r = httpie_post(&s, "/products", r#"{"modelname": "x", "qty": "lots"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().starts_with("qty"));
    assert_eq!(s.events().len(), before, "a refused request publishes nothing");
}

#[test]
fn the_root_links_every_collection_as_spring_data_rest_does() {
    let s = TestServer::start(&[]);
    let r = s.get("/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/hal+json"));
    let links = r.json()["_links"].as_object().unwrap().clone();
    let base = format!("http://{}", s.addr);
    for collection in crate::common::COLLECTIONS {
        let link = &links[*collection];
        assert_eq!(
            link["href"],
            format!("{base}/{collection}{{?page,size,sort}}"),
            "{collection}"
        );
        assert_eq!(link["templated"], true);
        // The link leads somewhere: the collection answers.
        assert_eq!(s.get(&format!("/{collection}")).status, 200, "{collection}");
    }
    assert_eq!(links["profile"]["href"], format!("{base}/profile"));
    assert_eq!(links.len(), 8, "the seven collections and profile: {links:?}");
    let profile = s.get("/profile");
    assert_eq!(profile.status, 200, "{}", profile.body);
    assert_eq!(
        profile.json()["_links"]["self"]["href"],
        format!("{base}/profile")
    );

    // A probe's HEAD gets the status without a body; other methods are told what is allowed.
    let head = s.request("HEAD", "/", &[], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = s.post("/", "{}");
    assert_eq!(post.status, 405, "{}", post.body);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(post.json()["error"], "method_not_allowed");

    // A stopped context's collections stay linked: it is still loaded, and comes back.
    s.admin("POST", "/admin/contexts/delivery/stop");
    assert!(s.get("/").json()["_links"]["deliveries"].is_object());
}

#[test]
fn the_probes_say_live_and_ready_and_why_not() {
    let s = TestServer::start(&[]);
    let live = s.get("/health/live");
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.json()["status"], "UP");
    let ready = s.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body = ready.json();
    assert_eq!(body["status"], "UP");
    assert_eq!(body["log"], "open");
    assert!(body["reason"].is_null());
    for name in ["order", "payment", "product", "delivery", "customerpage"] {
        assert_eq!(body["contexts"][name], "running", "{body}");
    }
    assert_eq!(ready.header("cache-control"), Some("no-store"));
    // An operator stopping one context is a partial outage, not a reason to take the whole
    // process out of service.
    assert_eq!(s.admin("POST", "/admin/contexts/payment/stop").status, 200);
    let ready = s.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["contexts"]["payment"], "stopped");
    assert_eq!(s.request("DELETE", "/health/ready", &[], b"").status, 405);
    // Nobody else may serve these paths: they are not routed to a context.
    assert_eq!(s.get("/health").status, 404);
}

/// Not ready while shutting down, or with the log closed; decided by the runtime, so it is
/// checked here in-process (over a socket the listener is gone by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_shutting_down_and_when_the_log_is_closed() {
    use carshare_host::{Runtime, RuntimeOptions, WasmEngine};
    let dir = temp_dir();
    let log = carshare_core::Log::open(dir.path().join("carshare.redb")).unwrap();
    let engine = WasmEngine::new(None).unwrap();
    let rt = Runtime::new(log, engine, RuntimeOptions::default()).unwrap();
    let r = rt.readiness();
    assert!(!r.ready);
    assert_eq!(r.reason.as_deref(), Some("no context is loaded"));
    let (name, bytes) = carshare_host::DEFAULT_CONTEXTS[1];
    rt.load(name, bytes).await.unwrap();
    assert!(rt.readiness().ready, "{:?}", rt.readiness());
    rt.log().close();
    let r = rt.readiness();
    assert!(!r.ready);
    assert_eq!(r.log, "closed");
    rt.begin_shutdown();
    assert_eq!(
        rt.readiness().reason.as_deref(),
        Some("the server is shutting down")
    );
    rt.shutdown().await;
}

#[test]
fn a_product_is_orderable_the_moment_it_is_registered_even_under_load() {
    let s = TestServer::start(&[]);
    let busy = s.register_product("busy", 1_000_000);
    // Background load: orders on another product, so the order context's replica is always
    // behind by a few steps, as it is in production.
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, placed, addr) = (stop.clone(), placed.clone(), s.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = crate::common::request(
                        addr,
                        "POST",
                        "/orders",
                        &[("content-type", "application/json")],
                        format!(r#"{{"productId":{busy},"qty":1}}"#).as_bytes(),
                    );
                    assert_eq!(r.status, 201, "{}", r.body);
                    placed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 0..200 {
        let r = httpie_post(
            &s,
            "/products",
            &format!(r#"{{"modelname": "m{i}", "qty": "3"}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let product = r.json()["id"].as_u64().unwrap();
        let r = httpie_post(
            &s,
            "/orders",
            &format!(r#"{{"productId": "{product}", "qty": "3"}}"#),
        );
        assert_eq!(r.status, 201, "round {i}: {}", r.body);
        // More than it has is still refused, replica or not.
        let r = httpie_post(
            &s,
            "/orders",
            &format!(r#"{{"productId": "{product}", "qty": "4"}}"#),
        );
        assert_eq!(r.status, 422, "round {i}: {}", r.body);
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    assert!(placed.load(Ordering::Relaxed) > 0, "the background load ran");
    // An unknown product is still refused, and says so.
    let r = httpie_post(&s, "/orders", r#"{"productId": "999999", "qty": "1"}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap().contains("not known"),
        "{}",
        r.body
    );
    s.settle();
    let rejected = s.events_of(&["OutOfStock"]);
    assert!(
        rejected.is_empty(),
        "no order was taken beyond the stock: {rejected:?}"
    );
}

#[test]
fn a_restocked_product_is_orderable_at_once() {
    let s = TestServer::start(&[]);
    let p = s.register_product("rare", 1);
    s.order(p, 1);
    s.settle();
    assert_eq!(stock(&s, p), 0);
    let r = s.request(
        "PATCH",
        &format!("/products/{p}"),
        &[("content-type", "application/json")],
        br#"{"qty": 5}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Straight away, before order's replica has seen ProductChanged.
    let r = s.post("/orders", &format!(r#"{{"productId":{p},"qty":5}}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    s.settle();
    assert_eq!(stock(&s, p), 0);
    assert!(s.events_of(&["OutOfStock"]).is_empty());
}

#[test]
fn a_stopped_product_context_does_not_stop_orders_for_known_products() {
    let s = TestServer::start(&[]);
    let p = s.register_product("known", 10);
    assert_eq!(s.admin("POST", "/admin/contexts/product/stop").status, 200);
    s.order(p, 2);
    // A product order's replica has never heard of cannot be checked: retry later, not "unknown".
    let r = s.post("/orders", r#"{"productId":77,"qty":1}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.admin("POST", "/admin/contexts/product/start").status, 200);
    s.settle();
    assert_eq!(stock(&s, p), 8);
}

/// Lines of the server's startup log that say where a context's machine code came from.
fn code_sources(s: &TestServer) -> Vec<&'static str> {
    s.startup
        .iter()
        .filter(|l| l.contains("loaded context"))
        .map(|l| {
            if l.contains("machine code cached") {
                "cached"
            } else if l.contains("machine code compiled") {
                "compiled"
            } else {
                panic!("no machine code source in {l}")
            }
        })
        .collect()
}

#[test]
fn compiled_components_are_cached_once_for_every_data_dir_of_a_user() {
    let home = temp_dir();
    let xdg = home.path().to_str().unwrap();
    let env = [("XDG_CACHE_HOME", xdg), ("CARSHARE_CACHE_DIR", "")];
    let (first_dir, second_dir) = (temp_dir(), temp_dir());
    let first = TestServer::start_env(first_dir.path(), &[], &env);
    assert_eq!(code_sources(&first), vec!["compiled"; 5]);
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(home.path().join("carshare"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 5, "{cached:?}");
    assert!(
        cached.iter().all(|f| f.ends_with(".cwasm")),
        "no temporary left: {cached:?}"
    );
    // Another data dir of the same user loads machine code instead of compiling.
    let second = TestServer::start_env(second_dir.path(), &[], &env);
    assert_eq!(code_sources(&second), vec!["cached"; 5]);
    assert!(!second_dir.path().join("cache").exists());
    drop(second);
    // CARSHARE_CACHE_DIR points it elsewhere; --cache-dir wins over it.
    let (third_dir, elsewhere, flag) = (temp_dir(), temp_dir(), temp_dir());
    let env = [
        ("XDG_CACHE_HOME", xdg),
        ("CARSHARE_CACHE_DIR", elsewhere.path().to_str().unwrap()),
    ];
    drop(TestServer::start_env(third_dir.path(), &[], &env));
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 5);
    let by_flag = ["--cache-dir", flag.path().to_str().unwrap()];
    drop(TestServer::start_env(third_dir.path(), &by_flag, &env));
    assert_eq!(std::fs::read_dir(flag.path()).unwrap().count(), 5);
}

#[test]
fn a_customer_id_sent_as_a_string_finds_its_orders() {
    // customerId travels from order into the view through events: a string accepted at the
    // edge must be stored as the number it means, or the customer's search would miss it.
    let s = TestServer::start(&[]);
    let p = s.register_product("m", 10);
    let r = httpie_post(
        &s,
        "/orders",
        &format!(r#"{{"productId": "{p}", "qty": "1", "customerId": "42"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    s.settle();
    let found = s.get("/customerpages/search/findByCustomerId?customerId=42");
    assert_eq!(found.status, 200, "{}", found.body);
    let rows: Vec<Value> = found.json()["_embedded"]["customerpages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
}
