//! A subscriber's step as its context sees it: the events of one step go to the context in
//! one `handle-events` call, and an event that fails in it (with an error, or by trapping) is
//! undone alone: the events before it stay applied, it is retried and parked, and the events
//! after it are applied afterwards.

use serde_json::{Value, json};

use crate::common::{TestServer, sample};

/// The auditor's calls and handled events so far.
fn auditor_counts(s: &TestServer) -> (f64, f64) {
    let scrape = s.scrape();
    let label = r#"subscriber="auditor""#;
    (
        sample(
            &scrape,
            "carshare_subscriber_handler_duration_seconds_count",
            label,
        ),
        sample(&scrape, "carshare_subscriber_events_handled_total", label),
    )
}

/// Starts a server with the auditor in `mode`, stops the auditor, places orders of quantity 1
/// to 5, and starts it again: its first step then holds all five. Returns the server, the
/// orders' ids, and the auditor's counts before it started again.
///
/// A step is one worker's, over one partition's events: the server runs one partition, so
/// that the five orders are in one log whatever the suite's number of partitions (with
/// several, each partition's worker steps through its own events exactly so).
fn five_orders_in_one_step(mode: Value) -> (TestServer, Vec<u64>, (f64, f64)) {
    let s = TestServer::with_auditor_and("2", &["--partitions", "1"]);
    let product = s.register_product("test1", 100);
    let r = s.request("PUT", "/audits/mode", &[], mode.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    s.settle();
    assert_eq!(s.admin("POST", "/admin/contexts/auditor/stop").status, 200);
    let ids: Vec<u64> = (1..=5)
        .map(|qty| s.order(product, qty)["id"].as_u64().unwrap())
        .collect();
    let before = auditor_counts(&s);
    assert_eq!(s.admin("POST", "/admin/contexts/auditor/start").status, 200);
    s.settle();
    (s, ids, before)
}

/// The one dead letter, which must be the auditor's, of the order of quantity 3.
fn parked_order_of_qty_3(s: &TestServer) -> Value {
    let dead = s.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["subscriber"], "auditor");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["event"]["payload"]["qty"], 3, "{dead:?}");
    dead[0].clone()
}

#[test]
fn a_step_is_one_call_and_an_event_failing_in_it_is_undone_alone() {
    let (s, ids, (calls, handled)) = five_orders_in_one_step(json!({ "failOnQty": 3 }));
    assert_eq!(
        s.get("/audits").json()["audited"],
        json!([ids[0], ids[1], ids[3], ids[4]]),
        "the events before and after the failing one are applied; its own record is undone"
    );
    let dead = parked_order_of_qty_3(&s);
    assert!(dead["error"].as_str().unwrap().contains("on purpose"), "{dead}");
    let (calls_after, handled_after) = auditor_counts(&s);
    assert_eq!(handled_after - handled, 4.0);
    // One call applies the first two and fails on the third; one more fails on it again (the
    // last attempt: parked); one call applies the last two. One call per event would be six.
    assert_eq!(calls_after - calls, 3.0, "one call per step");
    assert_eq!(s.context("auditor")["subscriber"]["lag"], 0);
}

#[test]
fn an_event_that_traps_in_a_step_is_found_and_parked_and_the_others_are_applied() {
    let (s, ids, _) = five_orders_in_one_step(json!({ "trapOnQty": 3 }));
    assert_eq!(
        s.get("/audits").json()["audited"],
        json!([ids[0], ids[1], ids[3], ids[4]])
    );
    let dead = parked_order_of_qty_3(&s);
    assert!(dead["error"].as_str().unwrap().contains("trap"), "{dead}");
    assert_eq!(s.context("auditor")["subscriber"]["lag"], 0);
}
