//! The foundation's promises, shown against the real server and the real components.

use std::collections::BTreeSet;

use crate::common::{DataDir, TestComponent, TestServer, assert_gap_free};
use serde_json::Value;

fn order(s: &TestServer, product: u64, qty: i64) -> Value {
    s.order(product, qty)
}

fn total(s: &TestServer, collection: &str) -> u64 {
    s.total(collection)
}

const ORDER_EVENTS: &[&str] = &["Ordered", "Paid"];

#[test]
fn an_order_takes_one_payment_and_logs_ordered_then_paid() {
    let s = TestServer::start(&[]);
    s.register_product("test1", 10);
    let r = s.post("/orders", r#"{"productId":1,"qty":2,"status":"order"}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let o = r.json();
    let id = o["id"].as_u64().unwrap();
    assert_eq!(o["status"], "Ordered", "a client-sent status is ignored");
    assert_eq!(
        r.header("location"),
        Some(format!("http://{}/orders/{id}", s.addr).as_str())
    );
    assert_eq!(
        o["_links"]["self"]["href"],
        format!("http://{}/orders/{id}", s.addr)
    );
    assert!(r.header("x-carshare-context").unwrap().starts_with("order/"));

    let payments = s.get("/payments").json();
    let list = payments["_embedded"]["payments"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["orderId"], id);
    assert_eq!(list[0]["qty"], 2);

    let events = s.events_of(ORDER_EVENTS);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["eventType"], "Ordered");
    assert_eq!(events[1]["eventType"], "Paid");
    assert_eq!(
        events[1]["seq"].as_u64().unwrap(),
        events[0]["seq"].as_u64().unwrap() + 1
    );
    assert_eq!(events[0]["payload"]["id"], id);
    assert_eq!(events[1]["payload"]["orderId"], id);
    for e in &events {
        assert_eq!(e["key"], id.to_string());
        let ts = e["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == 24 && ts.starts_with("20"),
            "{ts}"
        );
    }
    // The compiled component is cached under its content hash, so a restart loads it.
    let digest = s.context("order")["digest"].as_str().unwrap().to_string();
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    let cached = std::fs::read_dir(&cache).unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with(&format!("{digest}-")) && name.ends_with(".cwasm")
    });
    assert!(cached, "no {digest}-*.cwasm in {}", cache.display());
    use sha2::Digest;
    let own: String = sha2::Sha256::digest(carshare_host::DEFAULT_CONTEXTS[0].1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(own, digest, "the digest is the SHA-256 of the component's bytes");
    assert_eq!(events[0]["source"], "order");
    assert_eq!(events[1]["source"], "payment");
    assert_ne!(events[0]["eventId"], events[1]["eventId"]);
}

#[test]
fn a_declined_payment_leaves_no_order_no_payment_and_no_event() {
    let s = TestServer::start(&[
        "--context",
        &format!("payment={}", TestComponent::PaymentDeclining.path()),
    ]);
    s.register_product("test1", 10);
    let head = s.events().len();
    let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"], "refused");
    assert_eq!(e["status"], 422);
    assert!(e["message"].as_str().unwrap().contains("declined"), "{e}");
    assert_eq!(total(&s, "/orders"), 0);
    assert_eq!(
        s.events().len(),
        head,
        "the order's and the declining payment's events were rolled back"
    );
    let (_, _, dir) = s.terminate();

    // With the built-in payment context back (the set of contexts is kept with the data: the
    // declining one would run again unless replaced), the declined attempt left nothing
    // behind, and the next order is the log's first event.
    let s = dir.start(&["--context", "payment=builtin"]);
    assert_eq!(s.context("payment")["version"], "0.1.0");
    assert_eq!(total(&s, "/orders"), 0);
    assert_eq!(total(&s, "/payments"), 0);
    assert_eq!(s.events().len(), head);
    order(&s, 1, 1);
    assert_eq!(
        s.events()[head]["seq"],
        head as u64 + 1,
        "the next order's event follows without a gap"
    );
    assert_eq!(s.events()[head]["eventType"], "Ordered");
}

#[test]
fn a_faulting_payment_gets_a_503_and_leaves_nothing() {
    let s = TestServer::start(&[
        "--context",
        &format!("payment={}", TestComponent::PaymentTrapping.path()),
    ]);
    s.register_product("test1", 10);
    for _ in 0..3 {
        let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.json()["error"], "unavailable");
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(total(&s, "/orders"), 0);
    assert!(s.events_of(ORDER_EVENTS).is_empty());
    // The trapped payment instances were replaced; the server and order are unharmed.
    assert_eq!(s.get("/orders/1").status, 404);
}

#[test]
fn paid_approves_the_order_and_the_cursor_survives_a_restart() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    // With delivery stopped, the order stays at the step Paid brings it to.
    assert_eq!(s.admin("POST", "/admin/contexts/delivery/stop").status, 200);
    let id = order(&s, product, 1)["id"].as_u64().unwrap();
    let path = format!("/orders/{id}");
    assert!(s.wait_for(10, |s| s.get(&path).json()["status"] == "OrderApproved"));
    assert_eq!(s.admin("POST", "/admin/contexts/delivery/start").status, 200);
    assert!(s.wait_for(10, |s| s.get(&path).json()["status"] == "Shipped"));
    s.settle();
    let cursor = s.cursors("order");
    let published = s.events().len();
    for (_, source, at) in &cursor {
        let published = s.events_in(*source as u32).len() as u64;
        assert_eq!(*at, published, "order has gone through the whole log");
    }
    let (clean, lines, dir) = s.terminate();
    assert!(clean, "SIGTERM exits cleanly");
    assert!(lines.iter().any(|l| l.contains("carshare stopped")), "{lines:?}");

    let s = dir.start(&[]);
    let ctx = s.context("order");
    assert_eq!(s.cursors("order"), cursor, "the cursors were kept, not reset");
    assert_eq!(ctx["subscriber"]["lag"], 0);
    s.settle();
    assert_eq!(s.get(&path).json()["status"], "Shipped");
    assert_eq!(
        s.events().len(),
        published,
        "nothing was handled, so nothing was published, again"
    );
    assert_eq!(s.total("/deliveries"), 1, "no second delivery");
    let dead = s.admin("GET", "/admin/dead-letters").json();
    assert_eq!(dead["deadLetters"].as_array().unwrap().len(), 0);
}

#[test]
fn a_killed_host_keeps_every_acknowledged_order_and_the_sequence_has_no_gap() {
    let s = TestServer::start(&[]);
    for i in 1..=8 {
        s.register_product(&format!("model{i}"), 1000);
    }
    let addr = s.addr;
    let acknowledged: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let body = format!(r#"{{"productId":{},"qty":{}}}"#, w + 1, i + 1);
                            let r = crate::common::request(addr, "POST", "/orders", &[], body.as_bytes());
                            assert_eq!(r.status, 201, "{}", r.body);
                            r.json()["id"].as_u64().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        acknowledged.iter().collect::<BTreeSet<_>>().len(),
        80,
        "ids are unique"
    );
    let dir = s.kill();

    let s = dir.start(&[]);
    for id in &acknowledged {
        assert_eq!(s.get(&format!("/orders/{id}")).status, 200, "order {id} survived");
    }
    assert_eq!(total(&s, "/payments"), 80);
    let before = s.events();
    assert_gap_free(&before);
    assert_eq!(s.events_of(ORDER_EVENTS).len(), 160);
    let newest = order(&s, 1, 1)["id"].as_u64().unwrap();
    s.settle();
    let after = s.events();
    assert_gap_free(&after);
    // The new order's event comes after every event of its partition from before the crash.
    let ordered = s.events_of(&["Ordered"]);
    let new = ordered.iter().find(|e| e["payload"]["id"] == newest).unwrap();
    let partition_head = before
        .iter()
        .filter(|e| e["partition"] == new["partition"])
        .count() as u64;
    assert!(new["seq"].as_u64().unwrap() > partition_head);
    // Ids handed out before the crash are never handed out again.
    assert!(!acknowledged.contains(&newest));
}

#[test]
fn bad_requests_get_the_right_4xx_with_a_json_error_and_change_nothing() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    assert_eq!(product, 1, "the cases below name product 1");
    let placed = order(&s, 1, 1)["id"].as_u64().unwrap();
    let payment = s.get("/payments").json()["_embedded"]["payments"][0]["id"]
        .as_u64()
        .unwrap();
    s.settle();
    let before = s.events().len();
    let (the_order, the_payment) = (format!("/orders/{placed}"), format!("/payments/{payment}"));
    let order_before = s.get(&the_order).json();
    let big = vec![b' '; 2 << 20];
    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        ("POST", "/orders", b"{bad json", 400, "malformed_json"),
        ("POST", "/orders", b"[1,2]", 400, "bad_request"),
        (
            "POST",
            "/orders",
            br#"{"productId":"one","qty":1}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/orders",
            br#"{"productId":1,"qty":"two"}"#,
            400,
            "bad_request",
        ),
        ("POST", "/orders", br#"{"productId":1}"#, 400, "bad_request"),
        ("POST", "/orders", br#"{"qty":1}"#, 400, "bad_request"),
        (
            "POST",
            "/orders",
            br#"{"productId":1,"qty":0}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/orders",
            br#"{"productId":1,"qty":-5}"#,
            400,
            "bad_request",
        ),
        ("POST", "/orders", b"", 400, "bad_request"),
        ("POST", "/orders", &big, 413, "payload_too_large"),
        ("GET", "/nowhere", b"", 404, "not_found"),
        ("GET", "/orders/999", b"", 404, "not_found"),
        ("GET", "/orders/abc", b"", 404, "not_found"),
        ("GET", "/orders?size=abc", b"", 400, "bad_request"),
        ("GET", "/orders?sort=secret,asc", b"", 400, "bad_request"),
        (
            "PATCH",
            &the_order,
            br#"{"status":"Shipped"}"#,
            405,
            "method_not_allowed",
        ),
        (
            "PUT",
            &the_order,
            br#"{"productId":1,"qty":1}"#,
            405,
            "method_not_allowed",
        ),
        ("DELETE", &the_payment, b"", 405, "method_not_allowed"),
        ("PUT", "/orders", b"{}", 405, "method_not_allowed"),
        (
            "POST",
            "/payments",
            br#"{"orderId":1,"productId":1,"qty":1}"#,
            403,
            "forbidden",
        ),
        ("PATCH", "/orders/999", b"{}", 404, "not_found"),
        ("POST", "/orders", br#"{"productId":77,"qty":1}"#, 422, "refused"),
        ("POST", "/orders", br#"{"productId":1,"qty":11}"#, 422, "refused"),
    ];
    for (method, path, body, status, kind) in cases {
        let r = s.request(method, path, &[("content-type", "application/json")], body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let e = r.json();
        assert_eq!(e["error"], kind, "{method} {path}: {e}");
        assert_eq!(e["status"], status);
        assert!(!e["message"].as_str().unwrap().is_empty());
        // An answer a context gave, an error too, names the context and version; one the
        // host gave before any context saw the request does not.
        let routed = !matches!(kind, "malformed_json" | "payload_too_large") && path != "/nowhere";
        let context = r.header("x-carshare-context");
        if routed {
            let by = if path.starts_with("/payments") {
                "payment/"
            } else {
                "order/"
            };
            assert!(
                context.is_some_and(|c| c.starts_with(by) && c.len() > by.len()),
                "{method} {path}: x-carshare-context {context:?}"
            );
        } else {
            assert_eq!(context, None, "{method} {path}");
        }
    }
    assert_eq!(s.events().len(), before, "no bad request published anything");
    assert_eq!(total(&s, "/orders"), 1);
    assert_eq!(total(&s, "/payments"), 1);
    assert_eq!(
        s.get(&the_order).json(),
        order_before,
        "PATCH and PUT changed nothing"
    );
}

#[test]
fn collections_page_and_sort_like_spring_data_rest() {
    let s = TestServer::start(&[]);
    s.register_product("test1", 10);
    let ids: Vec<u64> = [5, 1, 3]
        .into_iter()
        .map(|qty| order(&s, 1, qty)["id"].as_u64().unwrap())
        .collect();
    let page = s.get("/orders?page=0&size=2&sort=qty,desc").json();
    assert_eq!(page["page"]["totalElements"], 3);
    assert_eq!(page["page"]["totalPages"], 2);
    assert_eq!(page["page"]["size"], 2);
    let qtys: Vec<i64> = page["_embedded"]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["qty"].as_i64().unwrap())
        .collect();
    assert_eq!(qtys, vec![5, 3]);
    assert!(
        page["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .contains("page=1")
    );
    let second = s.get("/orders?page=1&size=2&sort=qty,desc").json();
    assert_eq!(second["_embedded"]["orders"][0]["qty"], 1);
    let second = format!("/orders/{}", ids[1]);
    assert_eq!(s.get(&second).json()["id"], ids[1], "the body carries its id");
}

#[test]
fn the_admin_api_needs_its_token() {
    let s = TestServer::start(&[]);
    assert_eq!(s.get("/admin/events").status, 401);
    assert_eq!(
        s.request("GET", "/admin/events", &[("authorization", "Bearer wrong")], b"")
            .status,
        401
    );
    assert_eq!(s.admin("GET", "/admin/events").status, 200);
    assert_eq!(s.admin("GET", "/admin/events?limit=0").status, 400);
    assert_eq!(s.admin("GET", "/admin/events?after=x").status, 400);
    assert_eq!(s.admin("DELETE", "/admin/events").status, 405);
    assert_eq!(s.admin("GET", "/admin/nothing").status, 404);
    assert_eq!(s.admin("POST", "/admin/contexts/nope/stop").status, 404);
    s.register_product("test1", 10);
    order(&s, 1, 1);
    s.settle();
    // The order's partition: its events are read from there, at a position `partition:seq`.
    let p = s.events_of(&["Ordered"])[0]["partition"].as_u64().unwrap() as u32;
    let head = s.events_in(p).len() as u64;
    let page = s
        .admin("GET", &format!("/admin/events?after={p}:{}&limit=5", head - 1))
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["seq"], head);
    assert_eq!(page["events"][0]["partition"], p);
    assert_eq!(page["head"], head);
    assert_eq!(page["next"], head);
    let n = s.partitions();
    assert_eq!(s.admin("GET", &format!("/admin/events?after={n}:0")).status, 400);
    assert_eq!(
        s.admin("GET", &format!("/admin/events?partition={n}")).status,
        400
    );
    drop(s);

    // Without a configured token the admin API is off: 403, whatever is sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carshare"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("carshare serve"));
    let dir = crate::common::temp_dir();
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carshare"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("CARSHARE_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let addr = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("carshare ready on http://")
                .nth(1)
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .unwrap()
        .parse()
        .unwrap();
    let r = crate::common::request(
        addr,
        "GET",
        "/admin/events",
        &[("authorization", "Bearer anything")],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_stopped_payment_refuses_orders_with_503_and_a_started_one_takes_them_again() {
    let s = TestServer::start(&[]);
    s.register_product("test1", 10);
    assert_eq!(s.admin("POST", "/admin/contexts/payment/stop").status, 200);
    let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(total(&s, "/orders"), 0);
    assert!(s.events_of(ORDER_EVENTS).is_empty());
    assert_eq!(s.context("payment")["state"], "stopped");
    assert_eq!(s.admin("POST", "/admin/contexts/payment/start").status, 200);
    order(&s, 1, 1);
    assert_eq!(s.events_of(ORDER_EVENTS).len(), 2);
}

#[test]
fn a_host_killed_mid_stream_keeps_state_and_events_in_step() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 1_000_000);
    let addr = s.addr;
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let dir = std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                for _ in 0..300 {
                    let body = format!(r#"{{"productId":{product},"qty":1}}"#);
                    // Once the server is gone, connections fail: stop.
                    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { break };
                    use std::io::{Read, Write};
                    let req = format!(
                        "POST /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut raw = String::new();
                    if stream.read_to_string(&mut raw).is_err() || !raw.starts_with("HTTP/1.1 201") {
                        continue;
                    }
                    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
                    let v: Value = serde_json::from_str(body).unwrap();
                    acknowledged.lock().unwrap().push(v["id"].as_u64().unwrap());
                }
            });
        }
        // Kill while requests and commits are in flight.
        std::thread::sleep(std::time::Duration::from_millis(300));
        s.kill()
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        !acknowledged.is_empty(),
        "some orders were acknowledged before the kill"
    );

    let s = dir.start(&[]);
    s.settle();
    let events = s.events_paged();
    assert_gap_free(&events);
    let ordered: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["eventType"] == "Ordered")
        .map(|e| e["payload"]["id"].as_u64().unwrap())
        .collect();
    let paid: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["eventType"] == "Paid")
        .map(|e| e["payload"]["orderId"].as_u64().unwrap())
        .collect();
    let orders: BTreeSet<u64> = s
        .all("orders")
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    let payments: BTreeSet<u64> = s
        .all("payments")
        .iter()
        .map(|p| p["orderId"].as_u64().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(orders.contains(id), "acknowledged order {id} was lost");
    }
    assert_eq!(
        ordered, orders,
        "an event for every order, and no event without its order"
    );
    assert_eq!(paid, orders, "a Paid for every order");
    assert_eq!(payments, orders, "a payment for every order, no orphan");
}

#[test]
fn a_context_can_come_from_the_config_file() {
    let dir = crate::common::temp_dir();
    let config = dir.path().join("carshare.json");
    let json = serde_json::json!({ "contexts": { "payment": TestComponent::PaymentDeclining.path() }, "callDeadlineMs": 500 });
    std::fs::write(&config, json.to_string()).unwrap();
    let s = DataDir::at(&dir.path().join("data")).start(&["--config", config.to_str().unwrap()]);
    assert_eq!(s.context("payment")["version"], "0.9.0-declining");
    s.register_product("test1", 10);
    assert_eq!(s.post("/orders", r#"{"productId":1,"qty":1}"#).status, 422);
}

#[test]
fn ctrl_c_lets_in_flight_requests_finish_and_closes_the_database() {
    let looper = format!("looper={}", TestComponent::Looping.path());
    let s = TestServer::start(&["--context", &looper, "--call-deadline-ms", "700"]);
    s.register_product("test1", 10);
    let addr = s.addr;
    // A request that takes the whole deadline is in flight when Ctrl-C arrives.
    let slow = std::thread::spawn(move || crate::common::request(addr, "GET", "/loops/spin", &[], b""));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (clean, lines, dir) = s.interrupt();
    let answered = slow.join().unwrap();
    assert_eq!(
        answered.status, 500,
        "the in-flight request got its answer: {}",
        answered.body
    );
    assert!(clean, "exit status 0");
    assert!(lines.iter().any(|l| l.contains("carshare stopped")), "{lines:?}");
    // The database was closed cleanly and opens again with everything in it.
    let s = dir.start(&["--context", &looper]);
    assert_eq!(s.total("/products"), 1);
}
