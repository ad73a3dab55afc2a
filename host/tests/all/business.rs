//! The whole car-share business through the gateway: the reference client's walk, the cancel
//! saga, stock that is never oversold, a read model that survives any delivery order, contexts
//! that go down and catch up, dead letters, and the circuit breaker.

use std::collections::BTreeMap;

use crate::common::TestServer;
use serde_json::Value;

fn embedded(s: &TestServer, collection: &str) -> Vec<Value> {
    s.all(collection)
}

fn stock(s: &TestServer, product: u64) -> i64 {
    s.get(&format!("/products/{product}")).json()["qty"]
        .as_i64()
        .unwrap()
}

fn find(items: &[Value], field: &str, value: u64) -> Value {
    items
        .iter()
        .find(|i| i[field] == value)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The statuses in a customer page row's history, in order.
fn history(row: &Value) -> Vec<String> {
    row["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}

fn view(s: &TestServer, order: u64) -> Value {
    let r = s.get(&format!("/customerpages/search/findByOrderId?orderId={order}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["_embedded"]["customerpages"][0].clone()
}

/// Everything a client can read, to compare before and after.
fn everything(s: &TestServer) -> BTreeMap<&'static str, Vec<Value>> {
    crate::common::COLLECTIONS
        .iter()
        .map(|c| (*c, embedded(s, c)))
        .collect()
}

#[test]
fn the_reference_clients_walk_rents_and_cancels_end_to_end() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 100);
    assert_eq!(product, 1);
    let order = s.order(1, 1)["id"].as_u64().unwrap();
    s.settle();

    let payment = find(&embedded(&s, "payments"), "orderId", order);
    assert_eq!(payment["status"], "Paid");
    let delivery = find(&embedded(&s, "deliveries"), "orderId", order);
    assert_eq!(delivery["status"], "Shipped");
    assert_eq!(delivery["paymentId"], payment["id"]);
    assert_eq!(s.get(&format!("/orders/{order}")).json()["status"], "Shipped");
    assert_eq!(stock(&s, 1), 99);
    let row = view(&s, order);
    assert_eq!(row["paymentId"], payment["id"]);
    assert_eq!(row["deliveryId"], delivery["id"]);
    assert_eq!(row["status"], "Shipped");
    assert_eq!(row["productId"], 1);
    let steps = history(&row);
    assert_eq!(steps, ["Ordered", "OrderApproved", "Shipped"]);
    assert!(row["history"][0]["at"].as_str().unwrap().ends_with('Z'));

    // Cancel as a reference client does.
    let r = s.request("DELETE", &format!("/orders/{order}"), &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    s.settle();
    let delivery = s.get(&format!("/deliveries/{}", delivery["id"])).json();
    assert_eq!(delivery["status"], "DeliveryCancelled");
    assert_eq!(embedded(&s, "cancellations").len(), 1);
    assert_eq!(
        s.get(&format!("/payments/{}", payment["id"])).json()["status"],
        "PaymentCancelled"
    );
    let refunds = embedded(&s, "paymentCancellations");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["paymentId"], payment["id"]);
    let o = s.get(&format!("/orders/{order}")).json();
    assert_eq!(o["status"], "OrderCancelled", "the order row stays, as history");
    assert_eq!(stock(&s, 1), 100);
    let row = view(&s, order);
    assert_eq!(row["status"], "OrderCancelled");
    let steps = history(&row);
    for step in ["DeliveryCancelled", "PaymentCancelled", "OrderCancelled"] {
        assert!(steps.iter().any(|s| s == step), "{steps:?}");
    }
    let types: Vec<String> = s
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_string())
        .collect();
    for t in ["DeliveryCanceled", "PayCancelled", "OrderCancelled"] {
        assert_eq!(types.iter().filter(|x| *x == t).count(), 1, "{t} once: {types:?}");
    }

    // Cancelling again is a no-op: no second refund, nothing published.
    let before = (s.events().len(), everything(&s));
    assert_eq!(
        s.request("DELETE", &format!("/orders/{order}"), &[], b"").status,
        204
    );
    let again = s.post("/cancellations", &format!(r#"{{"orderId":{order}}}"#));
    assert_eq!(again.status, 200, "{}", again.body);
    s.settle();
    assert_eq!((s.events().len(), everything(&s)), before);

    // The other way to cancel: POST /cancellations {orderId}.
    let second = s.order(1, 3)["id"].as_u64().unwrap();
    s.settle();
    assert_eq!(stock(&s, 1), 97);
    let r = s.post("/cancellations", &format!(r#"{{"orderId":{second}}}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    s.settle();
    assert_eq!(
        s.get(&format!("/orders/{second}")).json()["status"],
        "OrderCancelled"
    );
    assert_eq!(stock(&s, 1), 100);
    assert_eq!(s.post("/cancellations", r#"{"orderId":999}"#).status, 404);
}

#[test]
fn with_a_context_down_orders_are_still_taken_and_it_catches_up() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 50);

    for down in ["delivery", "product", "customerpage"] {
        let before = stock(&s, product);
        assert_eq!(
            s.admin("POST", &format!("/admin/contexts/{down}/stop")).status,
            200
        );
        let orders: Vec<u64> = (0..3)
            .map(|_| s.order(product, 2)["id"].as_u64().unwrap())
            .collect();
        s.settle();
        let ctx = s.context(down);
        assert_eq!(ctx["state"], "stopped");
        assert!(
            ctx["subscriber"]["lag"].as_u64().unwrap() > 0,
            "{down} has events waiting: {ctx}"
        );
        match down {
            "delivery" => {
                for o in &orders {
                    assert_eq!(s.get(&format!("/orders/{o}")).json()["status"], "OrderApproved");
                }
            }
            "product" => {
                let r = s.get(&format!("/products/{product}"));
                assert_eq!(r.status, 503, "a stopped context answers 503: {}", r.body);
                assert!(r.header("retry-after").is_some());
            }
            _ => assert_eq!(s.get(&format!("/customerpages/{}", orders[0])).status, 503),
        }
        assert_eq!(
            s.admin("POST", &format!("/admin/contexts/{down}/start")).status,
            200
        );
        s.settle();
        for o in &orders {
            assert_eq!(
                s.get(&format!("/orders/{o}")).json()["status"],
                "Shipped",
                "{down}"
            );
            assert_eq!(view(&s, *o)["status"], "Shipped", "{down}");
        }
        assert_eq!(stock(&s, product), before - 6, "{down}");
    }
}

#[test]
fn stock_is_never_oversold_under_concurrent_orders_and_cancellations() {
    const REGISTERED: i64 = 25;
    let s = TestServer::start(&[]);
    let product = s.register_product("scarce", REGISTERED);
    let addr = s.addr;
    std::thread::scope(|scope| {
        for client in 0..8u64 {
            scope.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..15u64 {
                    let qty = 1 + (client + i) % 3;
                    let body = format!(r#"{{"productId":{product},"qty":{qty}}}"#);
                    let r = crate::common::request(addr, "POST", "/orders", &[], body.as_bytes());
                    match r.status {
                        201 => mine.push(r.json()["id"].as_u64().unwrap()),
                        422 | 503 => {}
                        other => panic!("unexpected {other}: {}", r.body),
                    }
                    if i % 3 == 2
                        && let Some(o) = mine.pop()
                    {
                        let r = crate::common::request(addr, "DELETE", &format!("/orders/{o}"), &[], b"");
                        assert!(
                            r.status == 204 || r.status == 503,
                            "cancel: {} {}",
                            r.status,
                            r.body
                        );
                    }
                }
            });
        }
    });
    s.settle();
    let left = stock(&s, product);
    assert!(left >= 0, "stock went negative: {left}");
    let orders = embedded(&s, "orders");
    let held: i64 = orders
        .iter()
        .filter(|o| o["status"] != "OrderCancelled" && o["status"] != "OrderRejected")
        .map(|o| o["qty"].as_i64().unwrap())
        .sum();
    assert_eq!(
        left + held,
        REGISTERED,
        "stock {left} + held by live orders {held}"
    );
    // Every order reached a final or steady state, and the view agrees with the orders.
    for o in &orders {
        let status = o["status"].as_str().unwrap();
        assert!(
            ["Shipped", "OrderCancelled", "OrderRejected"].contains(&status),
            "{o}"
        );
        assert_eq!(view(&s, o["id"].as_u64().unwrap())["status"], status, "{o}");
    }
    let dead = s.admin("GET", "/admin/dead-letters").json();
    assert_eq!(dead["deadLetters"].as_array().unwrap().len(), 0, "{dead}");
}

/// Of two orders racing for the last units, (the one served, the one rejected): the first
/// placed is served when there is one partition, whose log orders them.
fn served_first(s: &TestServer, first: u64, second: u64) -> (u64, u64) {
    let shipped = |o: u64| s.get(&format!("/orders/{o}")).json()["status"] == "Shipped";
    if s.partitions() == 1 || shipped(first) {
        (first, second)
    } else {
        (second, first)
    }
}

#[test]
fn an_order_product_cannot_serve_is_rejected_and_refunded() {
    let s = TestServer::start(&[]);
    let product = s.register_product("last-two", 2);
    // With product down, order's replica still says 2 left, so both orders are accepted;
    // product, when back, serves the one it takes first and rejects the other (the first
    // placed, with one partition; with several, the two have no order between them).
    assert_eq!(s.admin("POST", "/admin/contexts/product/stop").status, 200);
    let first = s.order(product, 2)["id"].as_u64().unwrap();
    let second = s.order(product, 2)["id"].as_u64().unwrap();
    assert_eq!(s.admin("POST", "/admin/contexts/product/start").status, 200);
    s.settle();
    assert_eq!(stock(&s, product), 0);
    let (served, second) = served_first(&s, first, second);
    assert_eq!(s.get(&format!("/orders/{served}")).json()["status"], "Shipped");
    assert_eq!(
        s.get(&format!("/orders/{second}")).json()["status"],
        "OrderRejected"
    );
    let refund = find(&embedded(&s, "paymentCancellations"), "orderId", second);
    assert_eq!(refund["status"], "PaymentCancelled");
    assert_eq!(
        find(&embedded(&s, "cancellations"), "orderId", second)["status"],
        "DeliveryCancelled"
    );
    assert_eq!(view(&s, second)["status"], "OrderRejected");
    let out: Vec<Value> = s.events_of(&["OutOfStock"]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["payload"]["orderId"], second);
    assert_eq!(out[0]["payload"]["available"], 0);
    // Now the replica knows: a third order is refused at once.
    let r = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(r.status, 422, "{}", r.body);
    // Cancelling the rejected order changes nothing.
    let before = s.events().len();
    assert_eq!(
        s.request("DELETE", &format!("/orders/{second}"), &[], b"").status,
        204
    );
    s.settle();
    assert_eq!(s.events().len(), before);
}

#[test]
fn redelivering_handled_events_changes_nothing() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    let a = s.order(product, 2)["id"].as_u64().unwrap();
    s.order(product, 1);
    s.settle();
    assert_eq!(s.request("DELETE", &format!("/orders/{a}"), &[], b"").status, 204);
    s.settle();
    let before = (s.events().len(), everything(&s));
    let contexts = ["order", "payment", "product", "delivery", "customerpage"];
    // Stopped, the contexts cannot race the rewind; started, they go through the whole log again.
    for ctx in contexts {
        assert_eq!(
            s.admin("POST", &format!("/admin/contexts/{ctx}/stop")).status,
            200
        );
        s.rewind(ctx);
        assert_eq!(
            s.context(ctx)["subscriber"]["lag"],
            before.0 as u64,
            "{ctx} was rewound"
        );
    }
    for ctx in contexts {
        assert_eq!(
            s.admin("POST", &format!("/admin/contexts/{ctx}/start")).status,
            200
        );
    }
    s.settle();
    assert_eq!((s.events().len(), everything(&s)), before);
}

#[test]
fn a_failing_subscriber_parks_its_event_without_holding_up_the_others_and_can_be_retried() {
    let s = TestServer::with_auditor("3");
    let product = s.register_product("test1", 10);
    let r = s.request("PUT", "/audits/mode", &[], br#"{"failing":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let order = s.order(product, 1)["id"].as_u64().unwrap();
    s.settle();
    assert_eq!(
        s.get(&format!("/orders/{order}")).json()["status"],
        "Shipped",
        "the others went on"
    );
    let dead = s.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["subscriber"], "auditor");
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["event"]["eventType"], "Ordered");
    assert!(dead[0]["error"].as_str().unwrap().contains("on purpose"));
    let position = dead[0]["position"].as_str().unwrap().to_string();
    assert_eq!(
        position,
        format!("{}:{}", dead[0]["event"]["partition"], dead[0]["event"]["seq"])
    );
    assert_eq!(
        s.context("auditor")["subscriber"]["lag"],
        0,
        "the auditor moved past it"
    );

    let retry = format!("/admin/dead-letters/auditor/{position}/retry");
    assert_eq!(s.admin("POST", &retry).status, 409, "still failing: kept");
    assert_eq!(s.dead_letters().len(), 1);
    assert_eq!(
        s.request("PUT", "/audits/mode", &[], br#"{"failing":false}"#)
            .status,
        200
    );
    assert_eq!(s.admin("POST", &retry).status, 200);
    assert_eq!(s.get("/audits").json()["audited"], serde_json::json!([order]));
    assert!(s.dead_letters().is_empty());
    assert_eq!(s.admin("POST", &retry).status, 404, "retried once only");
}

#[test]
fn the_breaker_opens_on_a_failing_payment_answers_at_once_and_closes_after_recovery() {
    let s = TestServer::start(&[
        "--breaker-window",
        "10",
        "--breaker-min-calls",
        "4",
        "--breaker-open-ms",
        "1500",
        "--breaker-probes",
        "2",
    ]);
    let product = s.register_product("test1", 100);
    let body = format!(r#"{{"productId":{product},"qty":1}}"#);
    assert_eq!(s.context("payment")["breaker"]["state"], "closed");
    assert_eq!(s.admin("POST", "/admin/contexts/payment/stop").status, 200);
    for _ in 0..4 {
        let r = s.post("/orders", &body);
        assert_eq!(r.status, 503, "{}", r.body);
    }
    let breaker = s.context("payment")["breaker"].clone();
    assert_eq!(breaker["state"], "open", "{breaker}");

    // Payment is back, but the open breaker answers for it, without calling it.
    assert_eq!(s.admin("POST", "/admin/contexts/payment/start").status, 200);
    let r = s.post("/orders", &body);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(
        r.json()["message"].as_str().unwrap().contains("circuit is open"),
        "{}",
        r.body
    );
    assert!(s.context("payment")["breaker"]["rejected"].as_u64().unwrap() >= 1);
    assert_eq!(s.total("/orders"), 0);

    // After the open period, probe calls go through and close it.
    assert!(s.wait_for(10, |s| s.context("payment")["breaker"]["state"] == "half_open"));
    for _ in 0..2 {
        assert_eq!(s.post("/orders", &body).status, 201);
    }
    assert_eq!(s.context("payment")["breaker"]["state"], "closed");
    assert_eq!(s.post("/orders", &body).status, 201);
}

#[test]
fn clients_cannot_write_what_the_server_owns() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    let order = s.order(product, 1)["id"].as_u64().unwrap();
    s.settle();
    let before = (s.events().len(), everything(&s));
    let delivery = find(&embedded(&s, "deliveries"), "orderId", order)["id"].clone();
    let refund = format!(r#"{{"orderId":{order}}}"#);
    let cases: Vec<(&str, String, &str, u16)> = vec![
        (
            "PATCH",
            format!("/orders/{order}"),
            r#"{"status":"Shipped"}"#,
            405,
        ),
        (
            "PATCH",
            format!("/customerpages/{order}"),
            r#"{"status":"Shipped"}"#,
            405,
        ),
        ("POST", "/customerpages".into(), r#"{"orderId":5}"#, 405),
        ("DELETE", format!("/customerpages/{order}"), "", 405),
        ("DELETE", format!("/deliveries/{delivery}"), "", 405),
        ("DELETE", format!("/products/{product}"), "", 405),
        (
            "POST",
            "/payments".into(),
            r#"{"orderId":1,"productId":1,"qty":1}"#,
            403,
        ),
        ("POST", "/paymentCancellations".into(), &refund, 403),
        ("POST", "/products".into(), r#"{"modelname":"x","qty":-1}"#, 400),
        ("POST", "/products".into(), r#"{"modelname":"","qty":1}"#, 400),
        ("PATCH", format!("/products/{product}"), r#"{"qty":-5}"#, 400),
        ("POST", "/orders".into(), r#"{"productId":1,"qty":null}"#, 400),
        ("POST", "/orders".into(), r#"{"productId":99,"qty":1}"#, 422),
        ("GET", "/customerpages/search/findByOrderId".into(), "", 400),
        (
            "GET",
            "/customerpages/search/findByCustomerId?customerId=x".into(),
            "",
            400,
        ),
        ("GET", "/customerpages/search/nope".into(), "", 404),
    ];
    for (method, path, body, status) in &cases {
        let r = s.request(
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        assert_eq!(r.json()["status"], *status);
    }
    s.settle();
    assert_eq!((s.events().len(), everything(&s)), before);
    // A stock change by the operator is an event too.
    let r = s.request("PATCH", &format!("/products/{product}"), &[], br#"{"qty":20}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.events_of(&["ProductChanged"]).last().unwrap()["payload"]["qty"],
        20
    );
}

#[test]
fn customers_find_their_orders() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    let mut mine = Vec::new();
    for customer in [7, 8, 7] {
        let r = s.post(
            "/orders",
            &format!(r#"{{"productId":{product},"qty":1,"customerId":{customer}}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        if customer == 7 {
            mine.push(r.json()["id"].clone());
        }
    }
    s.settle();
    let r = s
        .get("/customerpages/search/findByCustomerId?customerId=7")
        .json();
    let ids: Vec<Value> = r["_embedded"]["customerpages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["orderId"].clone())
        .collect();
    assert_eq!(ids, mine);
    assert_eq!(r["page"]["totalElements"], 2);
}

#[test]
fn a_compensation_waits_for_a_stopped_context_instead_of_being_parked() {
    // Parking would take two quick attempts; the compensation must outlast them.
    let s = TestServer::start(&["--event-attempts", "2", "--event-backoff-ms", "5"]);
    let product = s.register_product("last-two", 2);
    assert_eq!(s.admin("POST", "/admin/contexts/product/stop").status, 200);
    let first = s.order(product, 2)["id"].as_u64().unwrap();
    let second = s.order(product, 2)["id"].as_u64().unwrap();
    s.settle();
    assert_eq!(s.admin("POST", "/admin/contexts/delivery/stop").status, 200);
    assert_eq!(s.admin("POST", "/admin/contexts/product/start").status, 200);
    // Order's OutOfStock handler needs delivery (and through it, payment) and keeps failing.
    assert!(s.wait_for(10, |s| {
        s.context("order")["subscriber"]["failing"]["attempts"]
            .as_u64()
            .unwrap_or(0)
            > 3
    }));
    assert!(s.dead_letters().is_empty());
    for o in [first, second] {
        assert_ne!(
            s.get(&format!("/orders/{o}")).json()["status"],
            "OrderRejected",
            "not yet"
        );
    }
    assert_eq!(s.admin("POST", "/admin/contexts/delivery/start").status, 200);
    s.settle();
    let (_, second) = served_first(&s, first, second);
    assert_eq!(
        s.get(&format!("/orders/{second}")).json()["status"],
        "OrderRejected"
    );
    assert_eq!(
        find(&embedded(&s, "paymentCancellations"), "orderId", second)["status"],
        "PaymentCancelled"
    );
    assert!(s.dead_letters().is_empty());
}
