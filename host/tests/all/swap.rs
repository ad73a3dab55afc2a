//! Hot-swapping contexts while the system serves, and the sandbox that contains misbehaving
//! ones, against the real server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{TestComponent, TestServer, temp_dir};
use serde_json::Value;

fn v1(name: &str) -> Vec<u8> {
    carshare_host::DEFAULT_CONTEXTS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
        .to_vec()
}

fn v2(name: &str) -> Vec<u8> {
    let path = match name {
        "order" => TestComponent::OrderV2.path(),
        "payment" => TestComponent::PaymentV2.path(),
        "delivery" => TestComponent::DeliveryV2.path(),
        _ => unreachable!(),
    };
    std::fs::read(path).unwrap()
}

fn swap(s: &TestServer, name: &str, bytes: &[u8]) -> crate::common::Resp {
    s.admin_with("PUT", &format!("/admin/contexts/{name}"), bytes)
}

fn embedded(s: &TestServer, collection: &str) -> Vec<Value> {
    s.all(collection)
}

/// A read that context `name` serves.
fn served_by(name: &str) -> String {
    let collection = match name {
        "order" => "orders",
        "payment" => "payments",
        _ => "deliveries",
    };
    format!("/{collection}?size=1")
}

#[test]
fn contexts_swap_back_and_forth_under_load_without_a_failed_request() {
    const STOCK: i64 = 1_000_000;
    let s = TestServer::start(&[]);
    let product = s.register_product("busy", STOCK);
    let addr = s.addr;
    let done = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let versions = Mutex::new(BTreeSet::new());
    let placed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                // Bounded: at most 400 orders per client, and only while the swaps go on.
                for _ in 0..400 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!(r#"{{"productId":{product},"qty":1}}"#);
                    let r = crate::common::request(addr, "POST", "/orders", &[], body.as_bytes());
                    if r.status == 201 {
                        placed.lock().unwrap().push(r.json()["id"].as_u64().unwrap());
                        versions
                            .lock()
                            .unwrap()
                            .insert(r.header("x-carshare-context").unwrap().to_string());
                    } else {
                        failures.lock().unwrap().push(format!("{} {}", r.status, r.body));
                    }
                }
            });
        }
        let mut seen = BTreeMap::new();
        for round in 0..3 {
            for name in ["order", "payment", "delivery"] {
                let r = swap(&s, name, &v2(name));
                assert_eq!(r.status, 200, "round {round} {name} -> v2: {}", r.body);
                assert_eq!(r.json()["version"], "2.0.0");
                assert_eq!(
                    s.get(&served_by(name)).header("x-carshare-context"),
                    Some(format!("{name}/2.0.0").as_str())
                );
                *seen.entry(name).or_insert(0) += 1;
                std::thread::sleep(std::time::Duration::from_millis(30));
                let r = swap(&s, name, &v1(name));
                assert_eq!(r.status, 200, "round {round} {name} -> v1: {}", r.body);
                assert_eq!(r.json()["version"], "0.1.0");
                assert_eq!(
                    s.get(&served_by(name)).header("x-carshare-context"),
                    Some(format!("{name}/0.1.0").as_str())
                );
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        }
        done.store(true, Ordering::Relaxed);
        assert_eq!(seen.values().sum::<i32>(), 9);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let versions = versions.into_inner().unwrap();
    assert!(
        versions.contains("order/0.1.0") && versions.contains("order/2.0.0"),
        "{versions:?}"
    );
    let placed = placed.into_inner().unwrap();
    assert!(placed.len() >= 50, "only {} orders went through", placed.len());

    s.settle();
    let payments = embedded(&s, "payments");
    let deliveries = embedded(&s, "deliveries");
    for id in &placed {
        assert_eq!(
            payments.iter().filter(|p| p["orderId"] == *id).count(),
            1,
            "order {id}: one payment"
        );
        assert_eq!(
            deliveries.iter().filter(|d| d["orderId"] == *id).count(),
            1,
            "order {id}: one delivery"
        );
        assert_eq!(s.get(&format!("/orders/{id}")).json()["status"], "Shipped");
    }
    assert_eq!(payments.len(), placed.len());
    assert_eq!(deliveries.len(), placed.len());
    let stock = s.get(&format!("/products/{product}")).json()["qty"]
        .as_i64()
        .unwrap();
    assert_eq!(
        stock,
        STOCK - placed.len() as i64,
        "every order took its stock exactly once"
    );
    assert!(s.dead_letters().is_empty());
}

#[test]
fn bad_components_are_refused_and_the_running_version_goes_on() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("order", b"not a component".to_vec(), 400, "invalid_component"),
        (
            "order",
            std::fs::read(TestComponent::PaymentDeclining.path()).unwrap(),
            422,
            "wrong_context",
        ),
        (
            "order",
            std::fs::read(TestComponent::BadManifest.path()).unwrap(),
            409,
            "route_conflict",
        ),
        ("nosuch", v1("order"), 404, "not_found"),
    ];
    for (name, bytes, status, kind) in cases {
        let r = swap(&s, name, &bytes);
        assert_eq!(r.status, status, "{kind}: {}", r.body);
        assert_eq!(r.json()["error"], kind);
        assert!(r.json()["message"].as_str().unwrap().contains("nothing changed"));
        let o = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
        assert_eq!(o.status, 201, "still serving after {kind}: {}", o.body);
        assert_eq!(o.header("x-carshare-context"), Some("order/0.1.0"));
    }
    assert_eq!(s.get("/payments").status, 200, "payment kept its routes");
    // Without the token, an upload is refused before its body is read (not a 413, not buffered).
    let big = vec![0u8; 4 << 20];
    let r = s.request("PUT", "/admin/contexts/order", &[], &big);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s.admin("POST", "/admin/contexts/order/rollback");
    assert_eq!(r.status, 409, "nothing to roll back to: {}", r.body);
}

#[test]
fn runaway_and_greedy_contexts_fail_alone_and_are_replaced() {
    let looper = format!("looper={}", TestComponent::Looping.path());
    let hog = format!("hog={}", TestComponent::MemoryHog.path());
    let s = TestServer::start(&[
        "--context",
        &looper,
        "--context",
        &hog,
        "--call-deadline-ms",
        "200",
        "--memory-limit-mb",
        "16",
        "--event-attempts",
        "2",
        "--event-backoff-ms",
        "5",
    ]);
    let product = s.register_product("test1", 10);
    let addr = s.addr;
    std::thread::scope(|scope| {
        let orders = scope.spawn(move || {
            (0..5)
                .map(|_| {
                    let body = format!(r#"{{"productId":{product},"qty":1}}"#);
                    crate::common::request(addr, "POST", "/orders", &[], body.as_bytes()).status
                })
                .collect::<Vec<_>>()
        });
        for _ in 0..2 {
            let r = s.get("/loops/spin");
            assert_eq!(r.status, 500, "{}", r.body);
            assert_eq!(r.json()["error"], "context_fault");
            assert!(
                r.json()["message"].as_str().unwrap().contains("CPU deadline"),
                "{}",
                r.body
            );
            let r = s.get("/hogs/eat");
            assert_eq!(r.status, 500, "{}", r.body);
            assert_eq!(r.json()["error"], "context_fault");
            assert!(
                r.json()["message"].as_str().unwrap().contains("memory limit"),
                "{}",
                r.body
            );
        }
        assert!(
            orders.join().unwrap().iter().all(|st| *st == 201),
            "orders went on meanwhile"
        );
    });
    // The faulted instances were discarded; fresh ones serve.
    assert_eq!(s.get("/loops/ok").status, 200);
    assert_eq!(s.get("/hogs/ok").status, 200);
    // The looper also spins on every Ordered: each such event ends as a dead letter, and the
    // business is untouched.
    s.settle();
    let dead = s.dead_letters();
    assert_eq!(dead.len(), 5, "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d["subscriber"] == "looper" && d["error"].as_str().unwrap().contains("CPU deadline"))
    );
    let orders = embedded(&s, "orders");
    assert_eq!(orders.len(), 5);
    assert!(orders.iter().all(|o| o["status"] == "Shipped"), "{orders:?}");
    assert!(s.context("looper")["instances"].as_u64().unwrap() <= 64);
}

#[test]
fn rollback_restores_the_earlier_version_and_a_swap_survives_a_restart() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 100);
    s.order(product, 1);
    let r = swap(&s, "order", &v2("order"));
    assert_eq!(r.status, 200, "{}", r.body);
    let swapped = r.json();
    assert_eq!(
        (swapped["version"].as_str(), swapped["previousVersion"].as_str()),
        (Some("2.0.0"), Some("0.1.0"))
    );
    assert!(swapped["millis"].as_f64().unwrap() > 0.0);
    let o = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(o.header("x-carshare-context"), Some("order/2.0.0"));
    let ctx = s.context("order");
    assert_eq!(ctx["version"], "2.0.0");
    assert_eq!(ctx["canRollBack"], true);
    s.settle();
    let (clean, _, dir) = s.terminate();
    assert!(clean);

    // After a restart the swapped-in version runs, and a rollback is still possible.
    let s = dir.start(&[]);
    assert_eq!(s.context("order")["version"], "2.0.0");
    let o = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(o.status, 201);
    assert_eq!(o.header("x-carshare-context"), Some("order/2.0.0"));
    let r = s.admin("POST", "/admin/contexts/order/rollback");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], "0.1.0");
    let o = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(o.header("x-carshare-context"), Some("order/0.1.0"));
    s.settle();
    // The cursor is exact: through the whole log, and every order handled once.
    for (_, source, at) in s.cursors("order") {
        assert_eq!(at, s.events_in(source as u32).len() as u64);
    }
    let orders = embedded(&s, "orders");
    assert_eq!(orders.len(), 4);
    assert!(orders.iter().all(|o| o["status"] == "Shipped"));
    assert_eq!(embedded(&s, "deliveries").len(), 4);
    assert_eq!(s.get(&format!("/products/{product}")).json()["qty"], 96);
    let (clean, _, dir) = s.terminate();
    assert!(clean);
    let s = dir.start(&[]);
    assert_eq!(
        s.context("order")["version"],
        "0.1.0",
        "the rollback survives a restart too"
    );
}

/// Runs `carshare` with `args` and the admin token.
fn cli(args: &[&str]) -> std::process::Output {
    crate::common::carshare(args, &[])
}

/// Places an order of `product` while delivery does not run: it is paid and stays
/// `OrderApproved` (`why` says why it must). Returns its id.
fn paid_and_waiting(s: &TestServer, product: u64, why: &str) -> u64 {
    let order = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(order.status, 201, "{}", order.body);
    let id = order.json()["id"].as_u64().unwrap();
    let status = |s: &TestServer| s.get(&format!("/orders/{id}")).json()["status"].clone();
    assert!(s.wait_for(20, |s| status(s) == "OrderApproved"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(status(s), "OrderApproved", "{why}");
    id
}

/// Whether `GET /admin/contexts` lists context `name`.
fn runs(s: &TestServer, name: &str) -> bool {
    let listed = s.admin("GET", "/admin/contexts").json();
    listed["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == name)
}

/// Runs `carshare ARGS`, which must succeed; returns its output.
fn cli_ok(args: &[&str]) -> std::process::Output {
    let out = cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_command_line_and_a_watched_directory_swap_contexts() {
    let watched = temp_dir();
    let s = TestServer::start(&["--watch", watched.path().to_str().unwrap()]);
    let url = format!("http://{}", s.addr);

    let ok = cli_ok(&[
        "contexts",
        "swap",
        "payment",
        TestComponent::PaymentV2.path(),
        "--url",
        &url,
    ]);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2.0.0"));
    assert_eq!(s.context("payment")["version"], "2.0.0");
    assert!(
        !cli(&["contexts", "swap", "payment", "/nonexistent.wasm", "--url", &url])
            .status
            .success()
    );
    cli_ok(&["contexts", "rollback", "payment", "--url", &url]);
    assert_eq!(s.context("payment")["version"], "0.1.0");

    // Stopping a context from the command line refuses its requests and pauses its handlers;
    // starting it lets them catch up.
    let ok = cli_ok(&["contexts", "stop", "delivery", "--url", &url]);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("stopped"));
    assert_eq!(s.context("delivery")["state"], "stopped");
    assert_eq!(s.get("/deliveries").status, 503);
    let product = s.register_product("cli-stop", 10);
    let id = paid_and_waiting(&s, product, "no delivery while delivery is stopped");
    let status = |s: &TestServer| s.get(&format!("/orders/{id}")).json()["status"].clone();
    cli_ok(&["contexts", "start", "delivery", "--url", &url]);
    assert_eq!(s.context("delivery")["state"], "running");
    assert!(s.wait_for(20, |s| status(s) == "Shipped"));
    let unknown = cli(&["contexts", "stop", "nosuch", "--url", &url]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    // Dropping a component into the watched directory swaps it in; a broken one is refused.
    std::fs::write(watched.path().join("delivery.wasm"), b"garbage").unwrap();
    std::fs::copy(TestComponent::OrderV2.path(), watched.path().join("order.wasm")).unwrap();
    assert!(s.wait_for(20, |s| s.context("order")["version"] == "2.0.0"));
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        s.context("delivery")["version"],
        "0.1.0",
        "the broken file was refused"
    );
    assert_eq!(s.get("/deliveries").status, 200);
}

#[test]
fn a_rollback_from_a_faulting_version_starts_its_breaker_afresh() {
    // A breaker that, once open, would refuse for a minute: only a reset lets orders through.
    let s = TestServer::start(&[
        "--breaker-window",
        "10",
        "--breaker-min-calls",
        "4",
        "--breaker-open-ms",
        "60000",
    ]);
    let product = s.register_product("test1", 100);
    let body = format!(r#"{{"productId":{product},"qty":1}}"#);
    let trapping = std::fs::read(TestComponent::PaymentTrapping.path()).unwrap();
    assert_eq!(swap(&s, "payment", &trapping).status, 200);
    for _ in 0..4 {
        let r = s.post("/orders", &body);
        assert_eq!(r.status, 503, "{}", r.body);
    }
    assert_eq!(s.context("payment")["breaker"]["state"], "open");
    let r = s.admin("POST", "/admin/contexts/payment/rollback");
    assert_eq!(r.status, 200, "{}", r.body);
    let rolled_back = std::time::Instant::now();
    assert_eq!(s.context("payment")["breaker"]["state"], "closed");
    let r = s.post("/orders", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    eprintln!(
        "rollback to the first successful order: {:.1} ms",
        rolled_back.elapsed().as_secs_f64() * 1000.0
    );
    // A swap does the same: a version swapped in is not judged by its predecessor's faults.
    assert_eq!(swap(&s, "payment", &trapping).status, 200);
    for _ in 0..4 {
        assert_eq!(s.post("/orders", &body).status, 503);
    }
    assert_eq!(s.context("payment")["breaker"]["state"], "open");
    assert_eq!(swap(&s, "payment", &v2("payment")).status, 200);
    assert_eq!(s.post("/orders", &body).status, 201);
}

#[test]
fn a_context_is_added_and_removed_live_and_the_set_survives_restarts() {
    let s = TestServer::start(&[]);
    let url = format!("http://{}", s.addr);
    let auditor = std::fs::read(TestComponent::Auditor.path()).unwrap();
    // Swapping a context nobody runs says how to add one, and does not pretend one runs.
    let r = swap(&s, "auditor", &auditor);
    assert_eq!(r.status, 404, "{}", r.body);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("contexts add") && message.contains("nothing changed"),
        "{message}"
    );

    // Added from the command line while the server runs: it serves and receives events.
    let ok = cli_ok(&[
        "contexts",
        "add",
        "auditor",
        TestComponent::Auditor.path(),
        "--url",
        &url,
    ]);
    let added: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (added["change"].as_str(), added["version"].as_str()),
        (Some("added"), Some("0.9.0"))
    );
    let product = s.register_product("added-live", 10);
    let order = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(order.status, 201, "{}", order.body);
    let audited = |s: &TestServer| s.get("/audits").json()["audited"].as_array().map_or(0, Vec::len);
    assert!(
        s.wait_for(20, |s| audited(s) == 1),
        "the added context got the event"
    );
    // Added twice: refused, swapping is how to replace it. Junk: refused, nothing added.
    let again = s.admin_with("POST", "/admin/contexts/auditor", &auditor);
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (409, Some("context_exists"))
    );
    let junk = s.admin_with("POST", "/admin/contexts/junk", b"not a component");
    assert_eq!(
        (junk.status, junk.json()["error"].as_str()),
        (400, Some("invalid_component")),
        "{}",
        junk.body
    );
    assert!(!runs(&s, "junk"), "nothing added");

    // A v2 swapped in; a built-in context removed (its routes go with it).
    let v2 = swap(
        &s,
        "auditor",
        &std::fs::read(TestComponent::AuditorV2.path()).unwrap(),
    );
    assert_eq!(v2.status, 200, "{}", v2.body);
    cli_ok(&["contexts", "remove", "delivery", "--url", &url]);
    assert_eq!(s.get("/deliveries").status, 404);
    assert_eq!(
        s.admin("DELETE", "/admin/contexts/delivery").status,
        404,
        "removed once"
    );
    // An order placed now is paid, and waits for a delivery that is not there.
    let waiting = paid_and_waiting(&s, product, "the removed context's subscriber stopped");
    let status = |s: &TestServer| s.get(&format!("/orders/{waiting}")).json()["status"].clone();
    let (clean, _, dir) = s.terminate();
    assert!(clean);

    // A restart with no flags runs the same set, at the same versions.
    let s = dir.start(&[]);
    assert_eq!(s.context("auditor")["version"], "2.0.0");
    assert_eq!(s.context("auditor")["canRollBack"], true);
    assert!(!runs(&s, "delivery"), "removed stays removed");
    assert_eq!(s.get("/deliveries").status, 404);
    assert!(
        s.wait_for(20, |s| audited(s) == 2),
        "the added context's data is there"
    );
    // Added again, the removed context resumes from its cursor: the waiting order ships.
    let url = format!("http://{}", s.addr);
    cli_ok(&[
        "contexts",
        "add",
        "delivery",
        TestComponent::DeliveryV2.path(),
        "--url",
        &url,
    ]);
    assert!(s.wait_for(20, |s| status(s) == "Shipped"), "{}", status(&s));
    assert_eq!(s.get("/deliveries").status, 200);
    s.settle();
    for (_, source, at) in s.cursors("delivery") {
        assert_eq!(at, s.events_in(source as u32).len() as u64);
    }
}

#[test]
fn a_context_given_at_start_is_kept_and_the_same_flag_never_undoes_a_swap() {
    let v2 = format!("payment={}", TestComponent::PaymentV2.path());
    let s = TestServer::start(&["--context", &v2]);
    assert_eq!(s.context("payment")["version"], "2.0.0");
    let declining = std::fs::read(TestComponent::PaymentDeclining.path()).unwrap();
    assert_eq!(swap(&s, "payment", &declining).status, 200);
    let (_, _, dir) = s.terminate();

    // The same command line again: the swap made since stands, and the log says why.
    let s = dir.start(&["--context", &v2]);
    assert_eq!(s.context("payment")["version"], "0.9.0-declining");
    let log = s.startup.clone();
    let (_, _, dir) = s.terminate();
    assert!(
        log.iter()
            .any(|l| l.contains("context payment") && l.contains("goes on running")),
        "{log:#?}"
    );
    // No flag: the set is data, the swapped version runs.
    let s = dir.start(&[]);
    assert_eq!(s.context("payment")["version"], "0.9.0-declining");
    let (_, _, dir) = s.terminate();
    // Another component: it replaces the running one, which is kept for a rollback.
    let trapping = format!("payment={}", TestComponent::PaymentTrapping.path());
    let s = dir.start(&["--context", &trapping]);
    assert_eq!(s.context("payment")["version"], "0.9.0-trapping");
    let r = s.admin("POST", "/admin/contexts/payment/rollback");
    assert_eq!(
        (r.status, r.json()["version"].as_str()),
        (200, Some("0.9.0-declining")),
        "{}",
        r.body
    );
    let log = s.startup.clone();
    s.terminate();
    assert!(
        log.iter()
            .any(|l| l.contains("context payment") && l.contains("replaces the version that ran before")),
        "{log:#?}"
    );
}
