//! Seeing inside a running server: Prometheus metrics that move with traffic, request ids that
//! follow an order from its HTTP request through every event it causes and into the log, a
//! guest's log line with its context, version and request id, and JSON log lines.

use serde_json::Value;

use crate::common::{TestServer, sample, series};

#[test]
fn metrics_move_with_traffic_and_lag_returns_to_zero() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 100);
    let before = s.scrape();
    for _ in 0..10 {
        s.order(product, 1);
    }
    s.settle();
    let after = s.scrape();
    let moved = |name: &str, labels: &str| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(
        moved(
            "carshare_http_requests_total",
            r#"context="order",route="/orders",method="POST",status="201""#
        ),
        10.0
    );
    assert_eq!(
        moved(
            "carshare_http_request_duration_seconds_count",
            r#"context="order",route="/orders",method="POST""#
        ),
        10.0
    );
    assert_eq!(
        moved(
            "carshare_calls_total",
            r#"caller="order",callee="payment",outcome="ok""#
        ),
        10.0
    );
    for event in ["Ordered", "Paid", "Shipped", "ProductChanged"] {
        assert_eq!(
            moved("carshare_events_appended_total", &format!(r#"type="{event}""#)),
            10.0,
            "{event}"
        );
    }
    assert_eq!(
        moved(
            "carshare_subscriber_events_handled_total",
            r#"subscriber="delivery""#
        ),
        10.0
    );
    assert!(moved("carshare_commit_batch_units_count", "") >= 1.0);
    assert!(moved("carshare_wasm_time_seconds_total", r#"context="order""#) > 0.0);
    for sub in ["order", "product", "delivery", "customerpage"] {
        assert_eq!(
            sample(
                &after,
                "carshare_subscriber_lag",
                &format!(r#"subscriber="{sub}""#)
            ),
            0.0
        );
        // Each cursor has gone through the whole log of the partition it reads.
        let cursors = series(
            &after,
            "carshare_subscriber_cursor",
            &format!(r#"subscriber="{sub}""#),
        );
        assert!(!cursors.is_empty());
        for (labels, cursor) in cursors {
            let source: u32 = labels
                .iter()
                .find_map(|l| l.strip_prefix("source=\""))
                .and_then(|v| v.trim_end_matches('"').parse().ok())
                .unwrap_or(0);
            assert_eq!(cursor, s.events_in(source).len() as f64, "{sub} {labels:?}");
        }
    }
    assert_eq!(
        sample(&after, "carshare_breaker_state", r#"context="payment""#),
        0.0
    );
    assert!(sample(&after, "carshare_instances", r#"context="order""#) >= 1.0);
    assert!(after.trim_end().ends_with("# EOF"), "a complete exposition");
}

#[test]
fn a_request_id_follows_an_order_through_its_events_and_into_the_log() {
    let s = TestServer::start(&[]);
    let product = s.register_product("test1", 10);
    let r = s.request(
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "order-req-42"),
        ],
        format!(r#"{{"productId":{product},"qty":1}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-request-id"), Some("order-req-42"), "echoed");
    let order = r.json()["id"].as_u64().unwrap();
    s.settle();
    let chain = s
        .admin("GET", "/admin/events?after=0&correlationId=order-req-42")
        .json();
    let events = chain["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    // The request's own two events come first; product and delivery then react to them
    // independently, in either order.
    assert_eq!(types[..2], ["Ordered", "Paid"], "{chain}");
    let mut reactions = types[2..].to_vec();
    reactions.sort();
    assert_eq!(reactions, ["ProductChanged", "Shipped"], "{chain}");
    // The request caused Ordered and Paid; product's change and the delivery were caused by
    // the events they handled.
    let id_of = |t: &str| events.iter().find(|e| e["eventType"] == t).unwrap()["eventId"].clone();
    assert_eq!(events[0]["causationId"], "order-req-42");
    assert_eq!(events[1]["causationId"], "order-req-42");
    let cause_of = |t: &str| events.iter().find(|e| e["eventType"] == t).unwrap()["causationId"].clone();
    assert_eq!(cause_of("ProductChanged"), id_of("Ordered"));
    assert_eq!(cause_of("Shipped"), id_of("Paid"));
    let only_paid = s
        .admin(
            "GET",
            "/admin/events?after=0&correlationId=order-req-42&type=Paid",
        )
        .json();
    assert_eq!(only_paid["events"].as_array().unwrap().len(), 1);

    // A request without an id gets one.
    let r = s.get("/orders");
    let made = r.header("x-request-id").unwrap();
    assert_eq!(made.len(), 16, "{made}");

    // The guest's own log line: context, version and the request id, in the request's span.
    let r = s.request(
        "DELETE",
        &format!("/orders/{order}"),
        &[("x-request-id", "cancel-req-7")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let line = s
        .log_line(&["cancel-req-7", "cancelled by its customer"], 10)
        .expect("the guest's log line");
    assert!(line.contains(r#"context="order""#), "{line}");
    assert!(line.contains(r#"version="0.1.0""#), "{line}");
    assert!(line.contains(r#"request_id="cancel-req-7""#), "{line}");
}

#[test]
fn json_log_lines_carry_the_same_fields() {
    let s = TestServer::start(&["--log-format", "json"]);
    let ready: Value = serde_json::from_str(s.startup.last().unwrap()).expect("a JSON line");
    assert_eq!(ready["level"], "INFO");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("carshare ready on http://")
    );
    let product = s.register_product("test1", 10);
    let order = s.order(product, 1)["id"].as_u64().unwrap();
    s.settle();
    s.request(
        "DELETE",
        &format!("/orders/{order}"),
        &[("x-request-id", "json-7")],
        b"",
    );
    let line = s.log_line(&["json-7", "cancelled by its customer"], 10).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["context"], "order");
    assert_eq!(v["request_id"], "json-7");
    assert_eq!(v["span"]["id"], "json-7");
}
