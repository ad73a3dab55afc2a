//! The unit-of-work rules of docs/design.md, checked on a real redb file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use carshare_core::{
    CommitError, Dispatcher, Event, EventHandler, Handled, HandlerError, Log, RetryPolicy, SubscribeError,
    Unit,
};
use serde_json::json;

fn open() -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("db.redb")).unwrap();
    (dir, log)
}

/// Commits a unit that only sets `key` of `context` to `value`.
fn set_committed(log: &Log, context: &str, key: &str, value: &[u8]) {
    let mut u = log.begin().unwrap();
    u.set(context, key, value.to_vec());
    log.commit_blocking(u).unwrap();
}

#[test]
fn state_and_events_commit_together_and_sequence_numbers_are_gap_free() {
    let (_d, log) = open();
    let mut u = log.begin().unwrap();
    u.set("order", "orders/1", b"one".to_vec());
    u.publish("order", "Ordered", Some("1".into()), json!({"id": 1}));
    u.publish("payment", "Paid", Some("1".into()), json!({"orderId": 1}));
    let c = log.commit_blocking(u).unwrap();
    assert_eq!(c.seqs, 1..3);
    let events = log.events_after(0, 10).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(events[0].event_type, "Ordered");
    assert_eq!(events[1].source, "payment");
    assert_ne!(events[0].event_id, events[1].event_id);
    assert_eq!(
        log.begin().unwrap().get("order", "orders/1").unwrap(),
        Some(b"one".to_vec())
    );
    assert_eq!(log.head(), 2);
}

#[test]
fn a_dropped_unit_leaves_nothing() {
    let (_d, log) = open();
    let mut u = log.begin().unwrap();
    u.set("order", "k", b"v".to_vec());
    u.publish("order", "Ordered", None, json!({}));
    drop(u);
    assert!(log.events_after(0, 10).unwrap().is_empty());
    assert_eq!(log.begin().unwrap().get("order", "k").unwrap(), None);
}

#[test]
fn contexts_do_not_see_each_others_keys() {
    let (_d, log) = open();
    set_committed(&log, "order", "k", b"mine");
    let mut u = log.begin().unwrap();
    assert_eq!(u.get("payment", "k").unwrap(), None);
    assert!(u.scan("payment", "").unwrap().is_empty());
    assert_eq!(u.scan("order", "").unwrap().len(), 1);
}

#[test]
fn a_unit_whose_reads_went_stale_conflicts_and_writes_nothing() {
    let (_d, log) = open();
    set_committed(&log, "product", "stock/1", b"10");

    let mut a = log.begin().unwrap();
    let mut b = log.begin().unwrap();
    assert_eq!(a.get("product", "stock/1").unwrap(), Some(b"10".to_vec()));
    assert_eq!(b.get("product", "stock/1").unwrap(), Some(b"10".to_vec()));
    a.set("product", "stock/1", b"9".to_vec());
    b.set("product", "stock/1", b"8".to_vec());
    b.publish("product", "ProductChanged", None, json!({}));
    log.commit_blocking(a).unwrap();
    assert!(matches!(log.commit_blocking(b), Err(CommitError::Conflict)));
    assert_eq!(
        log.begin().unwrap().get("product", "stock/1").unwrap(),
        Some(b"9".to_vec())
    );
    assert!(
        log.events_after(0, 10).unwrap().is_empty(),
        "the conflicting unit's event is not in the log"
    );
}

#[test]
fn a_scan_that_went_stale_conflicts() {
    let (_d, log) = open();
    let mut a = log.begin().unwrap();
    assert!(a.scan("c", "rows/").unwrap().is_empty());
    a.set("c", "count", b"0".to_vec());
    set_committed(&log, "c", "rows/1", b"x");
    assert!(matches!(log.commit_blocking(a), Err(CommitError::Conflict)));
}

#[test]
fn a_savepoint_undoes_writes_and_events_after_it() {
    let (_d, log) = open();
    let mut u = log.begin().unwrap();
    u.set("order", "a", b"1".to_vec());
    u.publish("order", "Ordered", None, json!({}));
    let sp = u.savepoint();
    u.set("order", "a", b"2".to_vec());
    u.set("payment", "b", b"3".to_vec());
    u.publish("payment", "Paid", None, json!({}));
    u.rollback_to(sp);
    assert_eq!(u.get("order", "a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(u.get("payment", "b").unwrap(), None);
    log.commit_blocking(u).unwrap();
    let events = log.events_after(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "Ordered");
}

#[test]
fn concurrent_units_share_commits_and_still_number_events_without_gaps() {
    let (_d, log) = open();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut u = log.begin().unwrap();
                    u.set("order", &format!("o/{t}/{i}"), vec![1]);
                    u.publish("order", "Ordered", None, json!({"t": t, "i": i}));
                    log.commit_blocking(u).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seqs: Vec<u64> = log.events_after(0, 1000).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}

#[test]
fn state_sequence_and_ids_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let first_id;
    {
        let log = Log::open(&path).unwrap();
        let mut u = log.begin().unwrap();
        first_id = u.next_id("order", "order").unwrap();
        let _aborted = log.begin().unwrap().next_id("order", "order").unwrap();
        u.set("order", "k", b"v".to_vec());
        u.publish("order", "Ordered", None, json!({}));
        log.commit_blocking(u).unwrap();
        log.close();
    }
    let log = Log::open(&path).unwrap();
    assert_eq!(log.head(), 1);
    let mut u = log.begin().unwrap();
    assert_eq!(u.get("order", "k").unwrap(), Some(b"v".to_vec()));
    let next = u.next_id("order", "order").unwrap();
    assert!(next > first_id, "ids are never handed out twice");
    u.publish("order", "Ordered", None, json!({}));
    assert_eq!(log.commit_blocking(u).unwrap().seqs, 2..3);
}

#[test]
fn a_closed_log_refuses_commits() {
    let (_d, log) = open();
    assert!(log.is_open());
    log.close();
    assert!(!log.is_open(), "a closed log says so, for readiness probes");
    let mut u = log.begin().unwrap();
    u.set("a", "b", vec![]);
    assert!(matches!(log.commit_blocking(u), Err(CommitError::Closed)));
}

/// Counts `Ordered` events into state; fails on events whose payload says so.
struct Counter {
    attempts: AtomicU32,
}

impl EventHandler for Counter {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn handle<'a>(&'a self, unit: Unit, event: &'a Event) -> Handled<'a> {
        Box::pin(std::future::ready(self.count(unit, event)))
    }
}

impl Counter {
    fn count(&self, mut unit: Unit, event: &Event) -> (Unit, Result<(), HandlerError>) {
        // Write first, then fail: the dispatcher must undo the write.
        let n = unit.get("counter", "n").unwrap().map(|v| v[0]).unwrap_or(0);
        unit.set("counter", "n", vec![n + 1]);
        if event.payload_value()["poison"] == true {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            return (unit, Err(HandlerError::new("poisoned")));
        }
        (unit, Ok(()))
    }
}

async fn publish(log: &Log, payload: serde_json::Value) {
    let mut u = log.begin().unwrap();
    u.publish("order", "Ordered", None, payload);
    u.publish("order", "Ignored", None, json!({}));
    log.commit(u).await.unwrap();
}

fn count(log: &Log) -> u8 {
    log.begin()
        .unwrap()
        .get("counter", "n")
        .unwrap()
        .map(|v| v[0])
        .unwrap_or(0)
}

async fn settle(log: &Log, d: &Dispatcher, name: &str) {
    for _ in 0..500 {
        if d.status(name).unwrap().unwrap().lag == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name} did not catch up: {:?} (head {})",
        d.status(name),
        log.head()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_delivers_in_order_parks_poison_and_catches_up_after_a_pause() {
    let (_d, log) = open();
    let policy = RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let d = Dispatcher::new(log.clone(), policy);
    let handler = Arc::new(Counter {
        attempts: AtomicU32::new(0),
    });
    d.subscribe("counter", handler.clone(), true)
        .expect("the name is free");

    publish(&log, json!({})).await;
    publish(&log, json!({"poison": true})).await;
    publish(&log, json!({})).await;
    settle(&log, &d, "counter").await;
    assert_eq!(count(&log), 2, "the poisoned event's write was undone");
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 3);
    let dead = log.snapshot().unwrap().dead_letters(Some("counter")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.seq, 3);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].error, "poisoned");

    // Paused, it keeps its cursor; resumed, it catches up from it.
    d.set_running("counter", false);
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&log, json!({})).await;
    publish(&log, json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = d.status("counter").unwrap().unwrap();
    assert!(!st.running);
    assert_eq!(st.lag, 4);
    assert_eq!(count(&log), 2);
    d.set_running("counter", true);
    settle(&log, &d, "counter").await;
    assert_eq!(count(&log), 4);

    // A second dispatcher on the same log (as after a restart) re-applies nothing.
    d.shutdown().await;
    let d2 = Dispatcher::new(log.clone(), RetryPolicy::default());
    d2.subscribe("counter", handler.clone(), true)
        .expect("the name is free");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&log), 4);
    d2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_name_belongs_to_one_dispatcher_until_it_lets_go() {
    let (_d, log) = open();
    let handler = Arc::new(Counter {
        attempts: AtomicU32::new(0),
    });
    let first = Dispatcher::new(log.clone(), RetryPolicy::default());
    first
        .subscribe("counter", handler.clone(), true)
        .expect("the name is free");
    // Replacing its own subscriber is the dispatcher's right (a swap does it).
    first
        .subscribe("counter", handler.clone(), true)
        .expect("its own name");

    // Another dispatcher (an embedder's own subscriber) under the same name would share the
    // cursor and take events from the first: refused, and it delivers nothing.
    let second = Dispatcher::new(log.clone(), RetryPolicy::default());
    let refused = second.subscribe("counter", handler.clone(), true).unwrap_err();
    assert_eq!(refused, SubscribeError::NameTaken("counter".into()));
    assert!(
        refused.to_string().contains("give this one another name"),
        "{refused}"
    );
    assert!(second.claim("counter").is_err());
    assert!(second.status("counter").unwrap().is_none());
    // (paused: the same handler would count the events again)
    second
        .subscribe("other", handler.clone(), false)
        .expect("another name is free");

    publish(&log, json!({})).await;
    publish(&log, json!({})).await;
    settle(&log, &first, "counter").await;
    assert_eq!(count(&log), 2, "each event applied once, by the first");

    // A name claimed and never subscribed can be given back; a subscribed one cannot.
    second.claim("spare").expect("free");
    assert!(first.claim("spare").is_err());
    second.release("spare");
    first.claim("spare").expect("given back");
    first.release("counter");
    assert!(second.claim("counter").is_err(), "still subscribed in the first");

    // Shut down, the first lets go of its names; dropped, so does the second.
    first.shutdown().await;
    second
        .subscribe("counter", handler.clone(), true)
        .expect("free again");
    drop(second);
    let third = Dispatcher::new(log.clone(), RetryPolicy::default());
    third
        .subscribe("counter", handler, true)
        .expect("free after the drop");
    settle(&log, &third, "counter").await;
    assert_eq!(count(&log), 2, "nothing applied twice across the handovers");
    third.shutdown().await;
}

#[test]
fn a_peeked_value_that_changed_does_not_conflict() {
    let (_d, log) = open();
    set_committed(&log, "order", "replica", b"10");
    let mut a = log.begin().unwrap();
    assert_eq!(a.peek("order", "replica").unwrap(), Some(b"10".to_vec()));
    a.set("order", "orders/1", b"x".to_vec());
    set_committed(&log, "order", "replica", b"9");
    log.commit_blocking(a).unwrap();
}

/// Fails transiently a number of times, then applies the event.
struct Flaky {
    failures_left: AtomicU32,
}

impl EventHandler for Flaky {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn handle<'a>(&'a self, mut unit: Unit, _event: &'a Event) -> Handled<'a> {
        Box::pin(async move {
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                return (unit, Err(HandlerError::transient("a dependency is down")));
            }
            unit.set("flaky", "done", vec![1]);
            (unit, Ok(()))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_past_the_attempt_limit_and_never_parked() {
    let (_d, log) = open();
    let policy = RetryPolicy {
        max_attempts: 2,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        ..RetryPolicy::default()
    };
    let d = Dispatcher::new(log.clone(), policy);
    d.subscribe(
        "flaky",
        Arc::new(Flaky {
            failures_left: AtomicU32::new(6),
        }),
        true,
    )
    .expect("the name is free");
    publish(&log, json!({})).await;
    settle(&log, &d, "flaky").await;
    assert_eq!(log.begin().unwrap().get("flaky", "done").unwrap(), Some(vec![1]));
    assert!(log.snapshot().unwrap().dead_letters(None).unwrap().is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_dispatcher_stops_its_workers_instead_of_moving_cursors() {
    let (_d, log) = open();
    let d = Dispatcher::new(log.clone(), RetryPolicy::default());
    d.subscribe(
        "counter",
        Arc::new(Counter {
            attempts: AtomicU32::new(0),
        }),
        true,
    )
    .expect("the name is free");
    drop(d);
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&log, json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        log.snapshot().unwrap().cursor("counter").unwrap(),
        0,
        "nothing handled, nothing skipped"
    );
    assert_eq!(count(&log), 0);
}

#[test]
fn a_unit_that_only_took_an_id_still_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let given = {
        let log = Log::open(&path).unwrap();
        let mut u = log.begin().unwrap();
        let id = u.next_id("c", "seq").unwrap();
        assert!(!u.is_read_only());
        log.commit_blocking(u).unwrap();
        log.close();
        id
    };
    let log = Log::open(&path).unwrap();
    assert!(log.begin().unwrap().next_id("c", "seq").unwrap() > given);
}

/// The writer validates reads against the keys recent batches wrote, and remembers only so
/// many batches: a unit older than that is checked against the database, so a stale read is
/// still found.
#[test]
fn a_unit_older_than_the_writers_memory_of_batches_still_conflicts() {
    let (_d, log) = open();
    set_committed(&log, "product", "stock/1", b"10");

    let mut old = log.begin().unwrap();
    assert_eq!(old.get("product", "stock/1").unwrap(), Some(b"10".to_vec()));
    set_committed(&log, "product", "stock/1", b"9");
    // More batches than the writer remembers, none of them touching the key.
    for i in 0..1100 {
        set_committed(&log, "other", &format!("k/{i}"), b"1");
    }
    old.set("product", "stock/1", b"8".to_vec());
    assert!(matches!(log.commit_blocking(old), Err(CommitError::Conflict)));

    // A unit begun now is checked by the keys written since it began: its read of a key
    // written meanwhile conflicts, its read of a key nobody wrote does not.
    let mut fresh = log.begin().unwrap();
    let mut quiet = log.begin().unwrap();
    assert_eq!(fresh.get("product", "stock/1").unwrap(), Some(b"9".to_vec()));
    assert_eq!(quiet.get("other", "k/5").unwrap(), Some(b"1".to_vec()));
    set_committed(&log, "product", "stock/1", b"7");
    fresh.set("product", "stock/2", b"1".to_vec());
    assert!(matches!(log.commit_blocking(fresh), Err(CommitError::Conflict)));
    quiet.set("other", "k/5", b"2".to_vec());
    log.commit_blocking(quiet).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_subscriber_stops_gives_its_name_back_and_resumes_from_its_cursor() {
    let (_d, log) = open();
    let handler = Arc::new(Counter {
        attempts: AtomicU32::new(0),
    });
    let first = Dispatcher::new(log.clone(), RetryPolicy::default());
    first.subscribe("counter", handler.clone(), true).expect("free");
    publish(&log, json!({})).await;
    settle(&log, &first, "counter").await;
    assert_eq!(count(&log), 1);

    assert!(first.unsubscribe("counter").await, "it was subscribed");
    assert!(!first.unsubscribe("counter").await, "once");
    assert!(first.status("counter").unwrap().is_none());
    // Stopped: events published now are not applied.
    publish(&log, json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(count(&log), 1, "nothing applied while unsubscribed");

    // The name is free for another dispatcher, which goes on from the cursor: each event
    // applied once in all.
    let second = Dispatcher::new(log.clone(), RetryPolicy::default());
    second.subscribe("counter", handler, true).expect("given back");
    settle(&log, &second, "counter").await;
    assert_eq!(count(&log), 2, "the event published meanwhile, and only it");
    second.shutdown().await;
    first.shutdown().await;
}
