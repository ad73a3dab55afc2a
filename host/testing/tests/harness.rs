//! The harness as a context author uses it: built-in contexts against scripted events, a
//! context built from its crate, and the mistakes it must catch.

use carshare_testing::{Harness, HarnessError};
use serde_json::json;

/// The test components' crates, built into this crate's own scratch directory.
fn plugin_crate(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/testing")
        .join(name)
}

fn target() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-contexts")
}

#[test]
fn order_payment_and_delivery_run_against_scripted_product_events() {
    let h = Harness::builder()
        .builtin(&["order", "payment", "delivery"])
        .start()
        .unwrap();
    // Product is not running: its events are scripted. Order keeps a replica of the stock.
    h.inject(
        "product",
        "ProductRegistered",
        None,
        json!({"id": 1, "modelname": "e-car", "qty": 5}),
    )
    .unwrap();
    h.settle().unwrap();
    assert_eq!(h.state("order", "product/1").unwrap()["qty"], 5);

    let placed = h.post("/orders", &json!({"productId": 1, "qty": 2}));
    assert_eq!(
        (placed.status, placed.context()),
        (201, Some("order/0.1.0")),
        "{:?}",
        placed.json()
    );
    // More than the replica holds: refused before anything is written.
    let refused = h.post("/orders", &json!({"productId": 1, "qty": 9}));
    assert_eq!(refused.status, 422, "{:?}", refused.json());
    h.settle().unwrap();
    assert_eq!(h.get("/orders/1").json()["status"], "Shipped");
    assert_eq!(h.events_of("Paid").len(), 1);
    assert_eq!(h.events_of("Shipped").len(), 1);

    // A second order, then product (scripted) says it is out of stock: the order is rejected,
    // its delivery cancelled and its payment refunded, each exactly once.
    let second = h.post("/orders", &json!({"productId": 1, "qty": 1})).json();
    let id = second["id"].as_u64().unwrap();
    h.inject(
        "product",
        "OutOfStock",
        Some(&id.to_string()),
        json!({"orderId": id, "productId": 1, "qty": 1, "available": 0}),
    )
    .unwrap();
    h.settle().unwrap();
    let refunds = h.events_of("PayCancelled");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(h.get(&format!("/orders/{id}")).json()["status"], "OrderRejected");
    assert!(h.dead_letters().is_empty(), "{:?}", h.dead_letters());
}

#[test]
fn a_context_is_built_from_its_crate_and_a_misspelled_subscription_fails_the_start() {
    // Version 1 of the stray context, from its crate: its subscription to Shipped fires.
    let h = Harness::builder()
        .builtin(&["delivery"])
        .context_crate("stray", plugin_crate("stray"))
        .target_dir(target())
        .start()
        .unwrap();
    h.inject(
        "payment",
        "Paid",
        Some("7"),
        json!({"id": 3, "orderId": 7, "productId": 1, "qty": 1, "status": "PaymentApproved"}),
    )
    .unwrap();
    h.settle().unwrap();
    assert_eq!(h.events_of("Shipped").len(), 1);
    assert_eq!(h.get("/strays").json()["shipped"], 1);
    drop(h);

    // Version 2 subscribes to `DeliveryCancelled`: the harness does not start.
    let refused = Harness::builder()
        .builtin(&["delivery"])
        .context_crate("stray", plugin_crate("stray-v2"))
        .target_dir(target())
        .start();
    match refused {
        Err(HarnessError::Start(e)) => {
            assert!(e.to_string().contains("did you mean DeliveryCanceled?"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a misspelled subscription started"),
    }
}

#[test]
fn injected_events_follow_the_catalog_and_failing_ones_are_parked() {
    let h = Harness::builder()
        .builtin(&["order", "delivery"])
        .start()
        .unwrap();
    // Delivery publishes Shipped: nobody else may.
    let e = h.inject("payment", "Shipped", None, json!({})).unwrap_err();
    assert!(e.to_string().contains("published by delivery"), "{e}");
    // A running context publishes only what it declares.
    let e = h.inject("order", "Sneaked", None, json!({})).unwrap_err();
    assert!(e.to_string().contains("order does not declare Sneaked"), "{e}");
    let e = h.inject("payment", "Paid", None, json!([1])).unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");

    // A Paid whose payload does not fit: every subscriber of Paid fails on it, and it is
    // parked after the attempts, with the reason.
    h.inject("payment", "Paid", None, json!({"orderId": "seven"}))
        .unwrap();
    h.settle().unwrap();
    let mut parked: Vec<String> = h.dead_letters().iter().map(|d| d.subscriber.clone()).collect();
    parked.sort();
    assert_eq!(parked, ["delivery", "order"]);
    assert!(
        h.dead_letters()[0].error.contains("bad payload"),
        "{:?}",
        h.dead_letters()
    );
    assert!(h.events_of("Shipped").is_empty());
}
