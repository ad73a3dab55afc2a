//! The foundation's promises, shown against the real server and the real components.

mod common;

use std::collections::BTreeSet;

use carshare_host::artifacts;
use common::{Server, temp_dir};
use serde_json::Value;

fn order(s: &Server, product: u64, qty: i64) -> Value {
    let r = s.post(
        "/orders",
        &format!(r#"{{"productId":{product},"qty":{qty},"status":"order"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn total(s: &Server, collection: &str) -> u64 {
    let r = s.get(collection);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["page"]["totalElements"].as_u64().unwrap()
}

#[test]
fn an_order_takes_one_payment_and_logs_ordered_then_paid() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
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
    assert!(
        r.header("x-carshare-context")
            .unwrap()
            .starts_with("order/")
    );

    let payments = s.get("/payments").json();
    let list = payments["_embedded"]["payments"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["orderId"], id);
    assert_eq!(list[0]["qty"], 2);

    let events = s.events();
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
    assert_eq!(events[0]["source"], "order");
    assert_eq!(events[1]["source"], "payment");
    assert_ne!(events[0]["eventId"], events[1]["eventId"]);
}

#[test]
fn a_declined_payment_leaves_no_order_no_payment_and_no_event() {
    let dir = temp_dir();
    let s = Server::start(
        dir.path(),
        &[
            "--context",
            &format!("payment={}", artifacts::PAYMENT_DECLINING),
        ],
    );
    let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"], "refused");
    assert_eq!(e["status"], 422);
    assert!(e["message"].as_str().unwrap().contains("declined"), "{e}");
    assert_eq!(total(&s, "/orders"), 0);
    assert!(
        s.events().is_empty(),
        "the order's and the declining payment's events were rolled back"
    );
    s.terminate();

    // With the real payment context back, the declined attempt left nothing behind, and the
    // next order is the log's first event.
    let s = Server::start(dir.path(), &[]);
    assert_eq!(total(&s, "/orders"), 0);
    assert_eq!(total(&s, "/payments"), 0);
    assert!(s.events().is_empty());
    order(&s, 1, 1);
    assert_eq!(s.events()[0]["seq"], 1);
}

#[test]
fn a_faulting_payment_gets_a_503_and_leaves_nothing() {
    let dir = temp_dir();
    let s = Server::start(
        dir.path(),
        &[
            "--context",
            &format!("payment={}", artifacts::PAYMENT_TRAPPING),
        ],
    );
    for _ in 0..3 {
        let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.json()["error"], "unavailable");
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(total(&s, "/orders"), 0);
    assert!(s.events().is_empty());
    // The trapped payment instances were replaced; the server and order are unharmed.
    assert_eq!(s.get("/orders/1").status, 404);
}

#[test]
fn paid_approves_the_order_and_the_cursor_survives_a_restart() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let id = order(&s, 3, 1)["id"].as_u64().unwrap();
    let path = format!("/orders/{id}");
    assert!(s.wait_for(10, |s| s.get(&path).json()["status"] == "OrderApproved"));
    assert!(s.wait_for(10, |s| s.context("order")["subscriber"]["lag"] == 0));
    let cursor = s.context("order")["subscriber"]["cursor"].as_u64().unwrap();
    assert_eq!(cursor, 2);
    let (clean, lines) = s.terminate();
    assert!(clean, "SIGTERM exits cleanly");
    assert!(
        lines.iter().any(|l| l.contains("carshare stopped")),
        "{lines:?}"
    );

    let s = Server::start(dir.path(), &[]);
    let ctx = s.context("order");
    assert_eq!(
        ctx["subscriber"]["cursor"], cursor,
        "the cursor was kept, not reset"
    );
    assert_eq!(ctx["subscriber"]["lag"], 0);
    assert_eq!(s.get(&path).json()["status"], "OrderApproved");
    assert_eq!(s.events().len(), 2, "nothing was published again");
    let dead = s.admin("GET", "/admin/dead-letters").json();
    assert_eq!(dead["deadLetters"].as_array().unwrap().len(), 0);
}

#[test]
fn a_killed_host_keeps_every_acknowledged_order_and_the_sequence_has_no_gap() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let addr = s.addr;
    let acknowledged: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let body = format!(r#"{{"productId":{},"qty":{}}}"#, w + 1, i + 1);
                            let r = common::request(addr, "POST", "/orders", &[], body.as_bytes());
                            assert_eq!(r.status, 201, "{}", r.body);
                            r.json()["id"].as_u64().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(
        acknowledged.iter().collect::<BTreeSet<_>>().len(),
        80,
        "ids are unique"
    );
    s.kill();

    let s = Server::start(dir.path(), &[]);
    for id in &acknowledged {
        assert_eq!(
            s.get(&format!("/orders/{id}")).status,
            200,
            "order {id} survived"
        );
    }
    assert_eq!(total(&s, "/payments"), 80);
    let seqs: Vec<u64> = s
        .events()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=160).collect::<Vec<_>>());
    order(&s, 1, 1);
    let events = s.events();
    assert_eq!(events.len(), 162);
    assert_eq!(events[160]["seq"], 161);
    assert_eq!(events[161]["seq"], 162);
    // Ids handed out before the crash are never handed out again.
    let newest = events[160]["payload"]["id"].as_u64().unwrap();
    assert!(!acknowledged.contains(&newest));
}

#[test]
fn bad_requests_get_the_right_4xx_with_a_json_error_and_change_nothing() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    order(&s, 1, 1);
    let before = s.events().len();
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
            br#"{"productId":1,"qty":"2"}"#,
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
            "/orders/1",
            br#"{"status":"Shipped"}"#,
            405,
            "method_not_allowed",
        ),
        (
            "PUT",
            "/orders/1",
            br#"{"productId":1,"qty":1}"#,
            405,
            "method_not_allowed",
        ),
        ("DELETE", "/payments/1", b"", 405, "method_not_allowed"),
        ("PUT", "/orders", b"{}", 405, "method_not_allowed"),
        (
            "POST",
            "/payments",
            br#"{"orderId":1,"productId":1,"qty":1}"#,
            403,
            "forbidden",
        ),
        ("PATCH", "/orders/999", b"{}", 404, "not_found"),
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
    }
    assert_eq!(
        s.events().len(),
        before,
        "no bad request published anything"
    );
    assert_eq!(total(&s, "/orders"), 1);
    assert_eq!(total(&s, "/payments"), 1);
    assert_eq!(
        s.get("/orders/1").json()["status"]
            .as_str()
            .map(|st| st != "Shipped"),
        Some(true)
    );
}

#[test]
fn collections_page_and_sort_like_spring_data_rest() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    for qty in [5, 1, 3] {
        order(&s, 1, qty);
    }
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
    assert_eq!(
        s.get("/orders/2").json()["id"],
        2,
        "the body carries its id"
    );
}

#[test]
fn the_admin_api_needs_its_token() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.get("/admin/events").status, 401);
    assert_eq!(
        s.request(
            "GET",
            "/admin/events",
            &[("authorization", "Bearer wrong")],
            b""
        )
        .status,
        401
    );
    assert_eq!(s.admin("GET", "/admin/events").status, 200);
    assert_eq!(s.admin("GET", "/admin/events?limit=0").status, 400);
    assert_eq!(s.admin("GET", "/admin/events?after=x").status, 400);
    assert_eq!(s.admin("DELETE", "/admin/events").status, 405);
    assert_eq!(s.admin("GET", "/admin/nothing").status, 404);
    assert_eq!(s.admin("POST", "/admin/contexts/nope/stop").status, 404);
    order(&s, 1, 1);
    let page = s.admin("GET", "/admin/events?after=1&limit=5").json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["seq"], 2);
    assert_eq!(page["head"], 2);
    drop(s);

    // Without a configured token the admin API is off: 403, whatever is sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carshare"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("carshare serve"));
    let dir = temp_dir();
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
    let r = common::request(
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
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.admin("POST", "/admin/contexts/payment/stop").status, 200);
    let r = s.post("/orders", r#"{"productId":1,"qty":1}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(total(&s, "/orders"), 0);
    assert!(s.events().is_empty());
    assert_eq!(s.context("payment")["state"], "stopped");
    assert_eq!(s.admin("POST", "/admin/contexts/payment/start").status, 200);
    order(&s, 1, 1);
    assert_eq!(s.events().len(), 2);
}
