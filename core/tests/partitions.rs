//! Partitions in one process: their number fixed with the data directory, ids that say where
//! they live, units that read beyond their partition and never write there, listings merged
//! over every partition exactly, and events handled where the entity they name lives, each
//! exactly once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use carshare_core::{
    CommitError, Dispatcher, Event, EventHandler, Handled, HandlerError, IndexPage, Log, LogBuilder,
    Partitions, Placement, Reach, RetryPolicy, Unit,
};
use serde_json::json;

fn open(dir: &std::path::Path, n: u32) -> Result<Partitions, carshare_core::StorageError> {
    Partitions::open(dir, n, |_| LogBuilder::default())
}

#[test]
fn the_number_of_partitions_is_fixed_when_a_data_directory_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 4).unwrap();
    assert_eq!(parts.count(), 4);
    parts.close();
    drop(parts);
    let e = open(dir.path(), 2).err().expect("another number is refused");
    assert!(e.to_string().contains("made with 4 partition(s)"), "{e}");
    open(dir.path(), 4).unwrap().close();

    // One partition's file copied over another's is refused, not served as two.
    std::fs::copy(
        carshare_core::partition_file(dir.path(), 1),
        carshare_core::partition_file(dir.path(), 2),
    )
    .unwrap();
    let e = open(dir.path(), 4).err().expect("a copied partition is refused");
    assert!(e.to_string().contains("partition 2 holds partition 1"), "{e}");
    // And one lost is refused, not made again empty.
    std::fs::remove_file(carshare_core::partition_file(dir.path(), 2)).unwrap();
    let e = open(dir.path(), 4).err().expect("a lost partition is refused");
    assert!(e.to_string().contains("carshare.p2.redb is missing"), "{e}");
    assert!(!carshare_core::partition_file(dir.path(), 2).exists());

    // A data directory from before partitions is one partition, and stays one.
    let old = tempfile::tempdir().unwrap();
    let log = Log::open(old.path().join("carshare.redb")).unwrap();
    let mut u = log.begin().unwrap();
    u.publish("c", "Happened", None, json!({}));
    log.commit_blocking(u).unwrap();
    log.close();
    drop(log);
    let e = open(old.path(), 4).err().expect("refused");
    assert!(e.to_string().contains("made with 1 partition"), "{e}");
    let one = open(old.path(), 1).unwrap();
    assert_eq!(one.log(0).head(), 1, "the same data, as before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partition_hands_out_ids_that_say_it_and_commits_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 4).unwrap();
    for p in 0..4 {
        for _ in 0..5 {
            let mut u = parts.begin(p).unwrap();
            let id = u.next_id("order", "order").unwrap();
            assert_eq!(parts.of_id(id), p, "id {id} from partition {p}");
            u.set("order", &format!("orders/{id}"), b"{}".to_vec());
            u.publish("order", "Ordered", Some(id.to_string()), json!({ "id": id }));
            parts.log(p).commit(u).await.unwrap();
        }
    }
    for p in 0..4 {
        // Each partition's events are numbered on their own, gap-free.
        let seqs: Vec<u64> = parts
            .log(p)
            .events_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}

fn entity(parts: &Partitions, p: u32, qty: u64) -> (Unit, u64) {
    let mut u = parts.begin(p).unwrap();
    let id = u.next_id("order", "order").unwrap();
    u.set(
        "order",
        &format!("orders/{id:020}"),
        json!({ "id": id, "qty": qty }).to_string().into_bytes(),
    );
    u.index_put("order", "orders", b"", id);
    u.index_put("order", "orders/qty", &qty.to_be_bytes(), id);
    (u, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_reads_other_partitions_and_may_not_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 3).unwrap();
    let (u, product) = entity(&parts, 2, 7);
    parts.log(2).commit(u).await.unwrap();
    let key = format!("orders/{product:020}");

    let mut u = parts.begin(0).unwrap();
    // An advisory read where the entity lives, and a view of its partition for a call.
    assert!(u.peek_at("order", product, &key).unwrap().is_some());
    assert!(
        u.get("order", &key).unwrap().is_none(),
        "not in this unit's partition"
    );
    u.enter(parts.of_id(product));
    assert!(u.get("order", &key).unwrap().is_some());
    assert_eq!(u.index_count("order", "orders", None).unwrap(), 1);
    u.set("order", &key, b"changed".to_vec());
    u.leave();
    assert!(
        u.violation().unwrap().contains("tried to write order's key"),
        "{:?}",
        u.violation()
    );
    let refused = parts.log(0).commit(u).await;
    assert!(
        matches!(refused, Err(CommitError::OutsidePartition(_))),
        "{refused:?}"
    );
    assert!(
        parts
            .log(2)
            .snapshot()
            .unwrap()
            .get("order", &key)
            .unwrap()
            .unwrap()
            != b"changed",
        "nothing of it was written"
    );
    // An index entry of an entity of another partition is a write there too.
    let mut u = parts.begin(0).unwrap();
    u.index_put("order", "orders", b"", product);
    let refused = parts.log(0).commit(u).await;
    assert!(
        matches!(&refused, Err(CommitError::OutsidePartition(m)) if m.contains(&format!("entity {product}"))),
        "{refused:?}"
    );
    // A unit that reads every partition writes none.
    let mut all = parts.begin_reading_all().unwrap();
    assert!(all.get("order", &key).unwrap().is_some());
    assert_eq!(all.next_id("order", "order").unwrap(), 0);
    assert!(all.violation().unwrap().contains("reads every partition"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_over_every_partition_are_exact_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 4).unwrap();
    // 300 entities spread unevenly, with quantities that repeat across partitions.
    let mut model: Vec<(u64, u64)> = Vec::new();
    for i in 0..300u64 {
        let p = [0, 1, 1, 3, 2, 3, 3][i as usize % 7];
        let qty = (i * 7919) % 23;
        let (u, id) = entity(&parts, p, qty);
        parts.log(p).commit(u).await.unwrap();
        model.push((qty, id));
    }
    model.sort_unstable();
    let mut all = parts.begin_reading_all().unwrap();
    assert_eq!(all.index_count("order", "orders", None).unwrap(), 300);
    assert_eq!(
        all.index_count("order", "orders/qty", Some(&5u64.to_be_bytes()))
            .unwrap(),
        model.iter().filter(|(q, _)| *q == 5).count() as u64
    );
    let by_id: Vec<u64> = model
        .iter()
        .map(|(_, id)| *id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for descending in [false, true] {
        for (index, want) in [
            ("orders/qty", model.iter().map(|(_, id)| *id).collect::<Vec<_>>()),
            ("orders", by_id.clone()),
        ] {
            let want: Vec<u64> = if descending {
                want.into_iter().rev().collect()
            } else {
                want
            };
            for offset in [0, 1, 17, 99, 150, 289, 299, 300, 301] {
                let page = all
                    .index_page(IndexPage {
                        context: "order",
                        index,
                        term: None,
                        offset,
                        limit: 20,
                        descending,
                    })
                    .unwrap();
                let expected: Vec<u64> = want.iter().skip(offset as usize).take(20).copied().collect();
                assert_eq!(page, expected, "{index} at {offset}, descending {descending}");
            }
        }
        // Within one term.
        let term = 5u64.to_be_bytes();
        let mut want: Vec<u64> = model.iter().filter(|(q, _)| *q == 5).map(|(_, id)| *id).collect();
        if descending {
            want.reverse();
        }
        let page = all
            .index_page(IndexPage {
                context: "order",
                index: "orders/qty",
                term: Some(&term),
                offset: 3,
                limit: 5,
                descending,
            })
            .unwrap();
        assert_eq!(page, want.iter().skip(3).take(5).copied().collect::<Vec<_>>());
    }
    // Scans merge too, in key order.
    let rows = all.scan_from("order", "orders/", None, 1000).unwrap();
    let keys: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!((keys.len(), keys), (300, sorted));
}

/// Counts `Ordered` into the state of the product it names, where the product lives.
struct Stock {
    handled: AtomicUsize,
}

impl EventHandler for Stock {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn placement(&self, event: &Event) -> Placement {
        Placement::Id(event.payload_value()["productId"].as_u64().unwrap_or(0))
    }

    fn reach(&self) -> Reach {
        Reach::All
    }

    fn handle<'a>(&'a self, mut unit: Unit, event: &'a Event) -> Handled<'a> {
        let product = event.payload_value()["productId"].as_u64().unwrap();
        let key = format!("taken/{product}");
        let result = match unit.get("product", &key) {
            Ok(v) => {
                let n: u64 = v
                    .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
                    .unwrap_or(0);
                unit.set("product", &key, (n + 1).to_string().into_bytes());
                self.handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(HandlerError::new(e)),
        };
        Box::pin(std::future::ready((unit, result)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_handled_once_in_the_partition_of_the_id_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 3).unwrap();
    // Three products, one per partition.
    let mut products = Vec::new();
    for p in 0..3 {
        let mut u = parts.begin(p).unwrap();
        products.push(u.next_id("product", "product").unwrap());
        parts.log(p).commit(u).await.unwrap();
    }
    let stock = Arc::new(Stock {
        handled: AtomicUsize::new(0),
    });
    let d = Dispatcher::partitioned(parts.clone(), RetryPolicy::default());
    d.subscribe("product", stock.clone(), true)
        .expect("the name is free");
    // 30 orders in every partition, each naming one of the products.
    for n in 0..90u64 {
        let p = (n % 3) as u32;
        let mut u = parts.begin(p).unwrap();
        let product = products[(n / 3 % 3) as usize];
        u.publish("order", "Ordered", None, json!({ "productId": product }));
        parts.log(p).commit(u).await.unwrap();
    }
    let taken = |product: u64| {
        let p = parts.of_id(product);
        parts
            .log(p)
            .snapshot()
            .unwrap()
            .get("product", &format!("taken/{product}"))
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while products.iter().any(|p| taken(*p).as_deref() != Some(&b"30"[..])) {
        assert!(
            std::time::Instant::now() < deadline,
            "handled {}",
            stock.handled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Handled once each (steps that lost a race to a concurrent one ran again, but only one
    // of each committed): nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stock.handled.load(Ordering::SeqCst) >= 90);
    for product in &products {
        let p = parts.of_id(*product);
        let taken = parts
            .log(p)
            .snapshot()
            .unwrap()
            .get("product", &format!("taken/{product}"))
            .unwrap();
        assert_eq!(
            taken.as_deref(),
            Some(&b"30"[..]),
            "product {product}, in partition {p}"
        );
        for q in (0..3).filter(|q| *q != p) {
            let elsewhere = parts
                .log(q)
                .snapshot()
                .unwrap()
                .get("product", &format!("taken/{product}"))
                .unwrap();
            assert!(
                elsewhere.is_none(),
                "nothing of product {product} in partition {q}"
            );
        }
    }
    // Every cursor has gone through its source, durably, once the workers were idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = d.status("product").unwrap().unwrap();
    assert_eq!(status.cursors.len(), 9, "{status:?}");
    assert!(
        status.cursors.iter().all(|c| c.lag == 0 && c.cursor == 30),
        "{status:?}"
    );
    d.shutdown().await;
}

/// Rejects the order an `OutOfStock` names, where the order lives: refunds it there.
struct Compensate;

impl EventHandler for Compensate {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "OutOfStock"
    }

    fn placement(&self, event: &Event) -> Placement {
        Placement::Id(event.payload_value()["orderId"].as_u64().unwrap_or(0))
    }

    fn reach(&self) -> Reach {
        Reach::All
    }

    fn handle<'a>(&'a self, mut unit: Unit, event: &'a Event) -> Handled<'a> {
        let order = event.payload_value()["orderId"].clone();
        unit.publish("payment", "PayCancelled", None, json!({ "orderId": order }));
        Box::pin(std::future::ready((unit, Ok(()))))
    }
}

/// Writes down what it sees of an order, in the order it sees it; the shortage only after
/// `slow` failed attempts (a dependency down, say).
struct View {
    slow: u32,
    attempts: AtomicUsize,
    seen: std::sync::Mutex<Vec<String>>,
}

impl EventHandler for View {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "OutOfStock" || event_type == "PayCancelled"
    }

    fn placement(&self, event: &Event) -> Placement {
        match event.event_type.as_str() {
            "OutOfStock" => Placement::Id(event.payload_value()["orderId"].as_u64().unwrap_or(0)),
            _ => Placement::Here,
        }
    }

    fn reach(&self) -> Reach {
        Reach::All
    }

    fn handle<'a>(&'a self, unit: Unit, event: &'a Event) -> Handled<'a> {
        let result = if event.event_type == "OutOfStock"
            && self.attempts.fetch_add(1, Ordering::SeqCst) < self.slow as usize
        {
            Err(HandlerError::transient("not yet"))
        } else {
            self.seen.lock().unwrap().push(event.event_type.clone());
            Ok(())
        };
        Box::pin(std::future::ready((unit, result)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_in_another_partition_never_overtakes_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let parts = open(dir.path(), 2).unwrap();
    let mut u = parts.begin(1).unwrap();
    let order = u.next_id("order", "order").unwrap();
    parts.log(1).commit(u).await.unwrap();
    assert_eq!(parts.of_id(order), 1);
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    };
    let d = Dispatcher::partitioned(parts.clone(), policy);
    let view = Arc::new(View {
        slow: 5,
        attempts: AtomicUsize::new(0),
        seen: Default::default(),
    });
    d.subscribe("order", Arc::new(Compensate), true)
        .expect("the name is free");
    d.subscribe("customerpage", view.clone(), true)
        .expect("the name is free");
    // The shortage is written where the product lives; its refund, where the order does.
    let mut u = parts.begin(0).unwrap();
    u.publish("product", "OutOfStock", None, json!({ "orderId": order }));
    parts.log(0).commit(u).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while view.seen.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            view.seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The refund was in partition 1's log long before the view could take the shortage.
    assert_eq!(parts.log(1).head(), 1);
    assert_eq!(*view.seen.lock().unwrap(), ["OutOfStock", "PayCancelled"]);
    assert!(view.attempts.load(Ordering::SeqCst) > 5);
    d.shutdown().await;
}
