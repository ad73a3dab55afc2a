//! Volume: a million orders, placed through the real contexts (`carshare dev fill`), then every
//! listing, sort and search the API supports, first, middle and last page: all answer 200 with
//! the right page, at the cost of a page, and the server's memory stays bounded by the page,
//! not the table. Ignored in the default run (filling takes minutes); `.ci/run` runs it.
//! `CARSHARE_VOLUME_ORDERS` sets how many orders (default 1,000,000).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DataDir, TestServer};

fn fill(dir: &DataDir, orders: u64, customers: u64) {
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_carshare"))
        .args(["dev", "fill", "--data-dir"])
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "--orders",
            &orders.to_string(),
            "--customers",
            &customers.to_string(),
        ])
        .output()
        .expect("run carshare dev fill");
    assert!(
        out.status.success(),
        "fill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{} ({:.0} s)",
        String::from_utf8_lossy(&out.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
}

/// GETs `path`, checks it is a page of `size` items of `collection` out of `total`, and
/// returns the page's ids and how long it took.
fn page(s: &TestServer, path: &str, collection: &str, size: usize, total: u64) -> (Vec<u64>, Duration) {
    let started = Instant::now();
    let r = s.get(path);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let body: Value = r.json();
    assert_eq!(body["page"]["totalElements"], total, "{path}");
    let items = body["_embedded"][collection].as_array().unwrap();
    assert_eq!(items.len(), size, "{path}");
    (items.iter().map(|i| i["id"].as_u64().unwrap()).collect(), took)
}

fn ascending(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

#[test]
#[ignore = "fills a million orders, which takes minutes: .ci/run runs it"]
fn listings_sorts_and_searches_stay_bounded_at_a_million_orders() {
    let orders: u64 = std::env::var("CARSHARE_VOLUME_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let customers = 1000;
    let dir = DataDir::new();
    fill(&dir, orders, customers);
    let s = dir.start(&[]);
    let idle = s.rss_kib();
    let pages = orders / 20;
    let mut timings = Vec::new();
    let mut check = |path: String, collection: &str, size: usize, total: u64| {
        let (ids, took) = page(&s, &path, collection, size, total);
        timings.push((path, took));
        ids
    };
    // Every collection of an order, by id: first, middle and last page, both directions.
    for collection in ["orders", "payments", "deliveries", "customerpages"] {
        for dir in ["asc", "desc"] {
            let first = check(
                format!("/{collection}?size=20&sort=id,{dir}"),
                collection,
                20,
                orders,
            );
            let middle = check(
                format!("/{collection}?page={}&size=20&sort=id,{dir}", pages / 2),
                collection,
                20,
                orders,
            );
            let last = check(
                format!("/{collection}?page={}&size=20&sort=id,{dir}", pages - 1),
                collection,
                20,
                orders,
            );
            if dir == "asc" {
                assert!(ascending(&first) && ascending(&middle) && ascending(&last));
                assert!(
                    first[19] < middle[0] && middle[19] < last[0],
                    "{collection} pages in order"
                );
            } else {
                assert!(
                    first[0] > middle[0] && middle[0] > last[0],
                    "{collection} pages in order"
                );
            }
        }
    }
    // Every other sort the API supports on a million rows.
    for sort in ["qty,asc", "qty,desc"] {
        check(format!("/orders?size=20&sort={sort}"), "orders", 20, orders);
        check(
            format!("/orders?page={}&size=20&sort={sort}", pages / 2),
            "orders",
            20,
            orders,
        );
        check(
            format!("/orders?page={}&size=20&sort={sort}", pages - 1),
            "orders",
            20,
            orders,
        );
    }
    for sort in ["status,asc", "status,desc"] {
        check(
            format!("/payments?page={}&size=20&sort={sort}", pages / 2),
            "payments",
            20,
            orders,
        );
    }
    // A sort without an index is refused, never run.
    let r = s.get("/orders?sort=productId,asc");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sortable fields: id, qty"), "{}", r.body);
    // The customer's searches: one customer's thousand orders, first, middle and last page.
    let per_customer = orders / customers;
    let found = check(
        "/customerpages/search/findByCustomerId?customerId=7&size=20".into(),
        "customerpages",
        20,
        per_customer,
    );
    assert!(ascending(&found));
    let last = (per_customer - 1) / 20;
    check(
        format!(
            "/customerpages/search/findByCustomerId?customerId=7&size=20&page={}",
            last / 2
        ),
        "customerpages",
        20,
        per_customer,
    );
    check(
        format!("/customerpages/search/findByCustomerId?customerId=7&size=20&page={last}"),
        "customerpages",
        (per_customer - last * 20) as usize,
        per_customer,
    );
    let one = check(
        format!("/customerpages/search/findByOrderId?orderId={}", found[0]),
        "customerpages",
        1,
        1,
    );
    assert_eq!(one, vec![found[0]]);

    let rss = s.rss_kib();
    timings.sort_by_key(|(_, t)| *t);
    let median = timings[timings.len() / 2].1;
    let (slowest, worst) = timings.last().cloned().unwrap();
    eprintln!(
        "{} pages of collections holding {orders} rows each: median {median:?}, slowest {worst:?} \
         ({slowest}); server RSS {} MiB after start, {} MiB after every page",
        timings.len(),
        idle / 1024,
        rss / 1024
    );
    assert!(worst < Duration::from_secs(2), "{slowest} took {worst:?}");
    assert!(
        rss < idle + 150 * 1024,
        "memory grew with the table: {} MiB",
        rss / 1024
    );
}
