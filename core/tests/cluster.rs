//! Replicas of one log joined by a replicated log (`Replicator`), in one process: the
//! replicated log here is a vector behind a mutex that fences appends by position exactly as
//! JetStream's expected last sequence does, and the "network" is a direct call into the
//! writer's `Log::commit_forwarded`. What is tested is the core's side of the cluster: units
//! forwarded from a host that is not the writer, records applied exactly once and in order,
//! fencing of a deposed writer, conflicts across hosts, read-your-writes, restarts, ids.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use carshare_core::{
    AppendError, ApplyError, CommitError, Dispatcher, Event, EventHandler, FORMAT, ForwardError,
    ForwardFuture, Handled, HandlerError, Log, Replicator, RetryPolicy, Unit,
};
use serde_json::json;

/// What the harness does with a unit forwarded to the writer.
enum Intercept {
    /// Delivers it.
    Deliver,
    /// Keeps it (it reached the writer's host, which has yet to take it): the sender hears
    /// nothing.
    Hold,
    /// No writer can be reached.
    NoWriter,
}

type Interceptor = Box<dyn FnMut(&serde_json::Value) -> Intercept + Send>;

/// The replicated log and who writes it.
#[derive(Default)]
struct Shared {
    /// Decides, for each forwarded unit (as JSON), what happens to it; all are delivered
    /// without one.
    intercept: Mutex<Option<Interceptor>>,
    /// The units held by [`Intercept::Hold`].
    held: Mutex<Vec<Vec<u8>>>,
    /// Run when a reply is lost (see `lose_reply`).
    on_lost_reply: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The largest record the log takes (none if 0).
    max_record: std::sync::atomic::AtomicUsize,
    /// Each host's refused messages (position, reason), as its pump was told.
    refused: Mutex<Vec<Vec<(u64, String)>>>,
    /// Each host's error that stopped its pump.
    stopped: Mutex<Vec<Option<ApplyError>>>,
    records: Mutex<Vec<Vec<u8>>>,
    /// The host that is the writer.
    writer: AtomicUsize,
    /// Each host's log, once open.
    logs: Mutex<Vec<Arc<OnceLock<Log>>>>,
    /// Refuse appends with this reason while set.
    refuse: Mutex<Option<String>>,
    /// When set, the next forwarded unit's reply is lost on its way back, and then the host
    /// named here becomes the writer.
    lose_reply: Mutex<Option<usize>>,
}

/// One host's view of the replicated log.
struct Host {
    id: usize,
    shared: Arc<Shared>,
}

impl Replicator for Host {
    fn is_writer(&self) -> bool {
        self.shared.writer.load(Ordering::SeqCst) == self.id
    }

    fn max_record_bytes(&self) -> usize {
        match self.shared.max_record.load(Ordering::SeqCst) {
            0 => usize::MAX,
            n => n,
        }
    }

    fn append(&self, record: &[u8], after: u64) -> Result<u64, AppendError> {
        assert!(record.len() <= self.max_record_bytes(), "a record over the limit");
        if self.max_record_bytes() != usize::MAX {
            // Slow, so that units pile up behind the append and the next batch is large.
            std::thread::sleep(Duration::from_millis(30));
        }
        if let Some(reason) = self.shared.refuse.lock().unwrap().clone() {
            return Err(AppendError::Refused(reason));
        }
        let mut records = self.shared.records.lock().unwrap();
        if records.len() as u64 != after {
            return Err(AppendError::Fenced);
        }
        records.push(record.to_vec());
        Ok(records.len() as u64)
    }

    fn forward(&self, unit: Vec<u8>) -> ForwardFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            let decided = shared
                .intercept
                .lock()
                .unwrap()
                .as_mut()
                .map(|f| f(&serde_json::from_slice(&unit).unwrap()));
            match decided.unwrap_or(Intercept::Deliver) {
                Intercept::Deliver => {}
                Intercept::Hold => {
                    shared.held.lock().unwrap().push(unit);
                    return Err(ForwardError::Unknown("no answer".into()));
                }
                Intercept::NoWriter => return Err(ForwardError::NoWriter),
            }
            let writer = shared.writer.load(Ordering::SeqCst);
            let log = shared
                .logs
                .lock()
                .unwrap()
                .get(writer)
                .and_then(|l| l.get().cloned())
                .ok_or(ForwardError::NoWriter)?;
            let reply = log.commit_forwarded(&unit).await;
            if let Some(next) = shared.lose_reply.lock().unwrap().take() {
                if let Some(then) = shared.on_lost_reply.lock().unwrap().take() {
                    then();
                }
                shared.writer.store(next, Ordering::SeqCst);
                return Err(ForwardError::Unknown("the reply was lost".into()));
            }
            Ok(reply)
        })
    }
}

/// A cluster of `n` hosts in `dir`, each applying the replicated log as it grows.
struct Cluster {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    logs: Vec<Log>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let shared = Arc::new(Shared {
            writer: AtomicUsize::new(0),
            ..Shared::default()
        });
        let mut c = Cluster {
            shared,
            dir: tempfile::tempdir().unwrap(),
            logs: Vec::new(),
            pumps: Vec::new(),
        };
        for id in 0..n {
            c.shared.logs.lock().unwrap().push(Arc::new(OnceLock::new()));
            c.shared.refused.lock().unwrap().push(Vec::new());
            c.shared.stopped.lock().unwrap().push(None);
            let log = c.open(id);
            c.logs.push(log);
        }
        c
    }

    /// Opens host `id`'s replica and starts applying the log to it.
    fn open(&mut self, id: usize) -> Log {
        let log = Log::builder()
            .replicator(Arc::new(Host {
                id,
                shared: self.shared.clone(),
            }))
            .log_id(0xc1)
            .id_slot(id as u64, 16)
            .patience(Duration::from_secs(2))
            .open(self.dir.path().join(format!("host{id}.redb")))
            .unwrap();
        let slot = self.shared.logs.lock().unwrap()[id].clone();
        let _ = slot.set(log.clone());
        self.pump(id, &log);
        log
    }

    /// Starts applying the replicated log to host `id`'s `log`, as it grows, noting what it
    /// refused and why it stopped.
    fn pump(&mut self, id: usize, log: &Log) {
        let (shared, pumped) = (self.shared.clone(), log.clone());
        self.pumps.push(tokio::spawn(async move {
            loop {
                let from = pumped.applied() as usize;
                let records: Vec<(u64, Vec<u8>)> = shared.records.lock().unwrap()[from..]
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ((from + i + 1) as u64, r.clone()))
                    .collect();
                if !records.is_empty() {
                    match pumped.apply(records).await {
                        Ok(applied) => shared.refused.lock().unwrap()[id].extend(applied.refused),
                        Err(e) => {
                            shared.stopped.lock().unwrap()[id] = Some(e);
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    /// Appends `record` to the replicated log as another writer (or anyone) would.
    fn inject(&self, record: Vec<u8>) -> u64 {
        let mut records = self.shared.records.lock().unwrap();
        records.push(record);
        records.len() as u64
    }

    fn set_writer(&self, id: usize) {
        self.shared.writer.store(id, Ordering::SeqCst);
    }

    /// Waits until every host has applied the whole replicated log.
    async fn settle(&self) {
        let last = self.shared.records.lock().unwrap().len() as u64;
        for log in &self.logs {
            let mut applied = log.watch_applied();
            tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|a| *a >= last))
                .await
                .expect("every host applies the log")
                .unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
    }
}

fn order(log: &Log, n: u64) -> Unit {
    let mut u = log.begin().unwrap();
    let id = u.next_id("order", "orders").unwrap();
    u.set(
        "order",
        &format!("orders/{id}"),
        json!({ "n": n }).to_string().into_bytes(),
    );
    u.index_put("order", "orders", b"", id);
    u.publish(
        "order",
        "Ordered",
        Some(id.to_string()),
        json!({ "id": id, "n": n }),
    );
    u
}

/// Every event of `log`, as JSON text.
fn events(log: &Log) -> Vec<String> {
    log.events_after(0, 100_000)
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_from_every_host_commit_once_through_the_writer_and_every_replica_is_the_same() {
    let cluster = Cluster::new(3);
    let mut tasks = Vec::new();
    for (h, log) in cluster.logs.iter().enumerate() {
        for n in 0..40u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match log.commit(order(&log, h as u64 * 1000 + n)).await {
                        Ok(c) => {
                            // Read-your-writes on the host that answered.
                            assert!(log.head() >= c.seqs.end - 1);
                            assert!(log.applied() >= c.position);
                            return c;
                        }
                        Err(CommitError::Conflict) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    cluster.settle().await;
    let first = events(&cluster.logs[0]);
    assert_eq!(first.len(), 120);
    for log in &cluster.logs[1..] {
        assert_eq!(events(log), first, "every replica holds the same log");
    }
    let seqs: Vec<u64> = cluster.logs[1]
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=120).collect::<Vec<_>>(), "gap-free");
    // Ids: unique across hosts, each host's in its own slot.
    let mut ids: Vec<u64> = cluster.logs[2]
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.payload_value()["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120);
    for log in &cluster.logs {
        let mut s = log.snapshot().unwrap();
        assert_eq!(s.scan("order", "orders/").unwrap().len(), 120);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_unit_sent_again_after_its_reply_was_lost_commits_once() {
    let c = Cluster::new(3);
    // The writer commits the unit, its reply is lost, and another host becomes the writer
    // before the unit is sent again: the new writer is fenced until it has applied the
    // record, then finds the unit's id there.
    *c.shared.lose_reply.lock().unwrap() = Some(2);
    let first = c.logs[1].commit(order(&c.logs[1], 1)).await.unwrap();
    assert_eq!(first.seqs, 1..2);
    // The same writer, asked again after a lost reply.
    *c.shared.lose_reply.lock().unwrap() = Some(2);
    let second = c.logs[0].commit(order(&c.logs[0], 2)).await.unwrap();
    assert_eq!(second.seqs, 2..3);
    c.settle().await;
    for log in &c.logs {
        let events = events(log);
        assert_eq!(events.len(), 2, "each unit committed once: {events:?}");
    }
    // Read-your-writes holds on the host that asked.
    let mut snapshot = c.logs[0].snapshot().unwrap();
    let orders = snapshot.scan("order", "orders/").unwrap();
    assert_eq!(orders.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_unit_whose_reads_went_stale_conflicts_and_its_rerun_sees_the_writers_state() {
    let cluster = Cluster::new(2);
    let (a, b) = (&cluster.logs[0], &cluster.logs[1]);
    let mut u = a.begin().unwrap();
    u.set("product", "stock/1", b"10".to_vec());
    a.commit(u).await.unwrap();
    cluster.settle().await;
    // B reads the stock; A changes it before B commits.
    let mut on_b = b.begin().unwrap();
    assert_eq!(on_b.get("product", "stock/1").unwrap(), Some(b"10".to_vec()));
    on_b.set("product", "stock/1", b"9".to_vec());
    let mut on_a = a.begin().unwrap();
    on_a.get("product", "stock/1").unwrap();
    on_a.set("product", "stock/1", b"7".to_vec());
    a.commit(on_a).await.unwrap();
    assert!(matches!(b.commit(on_b).await, Err(CommitError::Conflict)));
    // The conflict answered only once B had caught up: a rerun sees A's write.
    let mut rerun = b.begin().unwrap();
    assert_eq!(rerun.get("product", "stock/1").unwrap(), Some(b"7".to_vec()));
    rerun.set("product", "stock/1", b"6".to_vec());
    b.commit(rerun).await.unwrap();
    cluster.settle().await;
    assert_eq!(
        a.snapshot().unwrap().get("product", "stock/1").unwrap(),
        Some(b"6".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_behind_the_log_is_fenced_until_it_has_applied_it() {
    let mut cluster = Cluster::new(2);
    let (a, b) = (cluster.logs[0].clone(), cluster.logs[1].clone());
    for n in 0..5 {
        a.commit(order(&a, n)).await.unwrap();
    }
    cluster.settle().await;
    // B stops applying; A appends three more records; then B becomes the writer.
    cluster.pumps[1].abort();
    for n in 5..8 {
        a.commit(order(&a, n)).await.unwrap();
    }
    cluster.set_writer(1);
    // B appends after the last record it applied, which is no longer the log's last: fenced,
    // nothing appended, nothing committed. Its unit is sent again, with its id, until B has
    // applied the log.
    let pending = tokio::spawn({
        let b = b.clone();
        async move { b.commit(order(&b, 100)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the unit waits");
    assert_eq!(cluster.shared.records.lock().unwrap().len(), 8);
    assert_eq!(b.head(), 5);
    // A deposed writer is fenced the same way.
    let zombie = Host {
        id: 0,
        shared: cluster.shared.clone(),
    };
    assert_eq!(
        zombie.append(b"{}", 8).map(|_| ()),
        Ok(()),
        "at the log's end it could append"
    );
    cluster.shared.records.lock().unwrap().pop();
    assert_eq!(zombie.append(b"{}", 7), Err(AppendError::Fenced));
    // Once B has applied the log, the waiting unit commits (once, after everything A
    // committed), and so do B's next units and A's (forwarded to B).
    cluster.pump(1, &b);
    let committed = pending.await.unwrap().unwrap();
    assert_eq!(committed.seqs, 9..10);
    cluster.settle().await;
    b.commit(order(&b, 101)).await.unwrap();
    loop {
        match a.commit(order(&a, 102)).await {
            Ok(_) => break,
            Err(CommitError::Conflict) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    cluster.settle().await;
    assert_eq!(events(&a), events(&b));
    assert_eq!(a.head(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_fails_the_whole_batch_and_the_log_goes_on_without_a_gap() {
    let cluster = Cluster::new(2);
    let a = &cluster.logs[0];
    a.commit(order(a, 1)).await.unwrap();
    *cluster.shared.refuse.lock().unwrap() = Some("the log is full".into());
    let outcomes = futures_join(a, 4).await;
    for o in &outcomes {
        assert!(
            matches!(o, Err(CommitError::Unavailable(m)) if m.contains("full")),
            "{o:?}"
        );
    }
    assert_eq!(a.head(), 1);
    *cluster.shared.refuse.lock().unwrap() = None;
    let c = a.commit(order(a, 2)).await.unwrap();
    assert_eq!((c.seqs, c.position), (2..3, 2));
    cluster.settle().await;
    assert_eq!(events(a), events(&cluster.logs[1]));
    // The refused batch's index entries are not counted, on the writer (which counts on from
    // what it committed) nor on the replica.
    for log in [a, &cluster.logs[1]] {
        assert_eq!(
            log.snapshot()
                .unwrap()
                .index_count("order", "orders", None)
                .unwrap(),
            2
        );
    }
}

async fn futures_join(log: &Log, n: u64) -> Vec<Result<carshare_core::Committed, CommitError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.commit(order(&log, 10 + i)).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_applies_only_what_it_had_not() {
    let mut cluster = Cluster::new(2);
    let a = cluster.logs[0].clone();
    for n in 0..5 {
        a.commit(order(&a, n)).await.unwrap();
    }
    cluster.settle().await;
    // Host 1 stops; the log grows; it comes back and catches up exactly.
    cluster.pumps[1].abort();
    let b = cluster.logs.remove(1);
    b.close();
    drop(b);
    for n in 5..9 {
        a.commit(order(&a, n)).await.unwrap();
    }
    cluster.shared.logs.lock().unwrap()[1] = Arc::new(OnceLock::new());
    let b = cluster.open(1);
    cluster.logs.push(b.clone());
    cluster.settle().await;
    assert_eq!(events(&b), events(&a));
    assert_eq!(b.head(), 9);
    // A replica of another log is refused.
    let other = Log::builder()
        .log_id(0xdead)
        .open(cluster.dir.path().join("host0.redb"));
    assert!(
        other.is_err(),
        "host0.redb is still open, and of another log anyway"
    );
}

/// Counts `Ordered` events into state, and how many this host's dispatcher handled.
struct Counter {
    handled: AtomicUsize,
}

impl EventHandler for Counter {
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Ordered"
    }

    fn handle<'a>(&'a self, mut unit: Unit, _event: &'a Event) -> Handled<'a> {
        let n: u64 = unit
            .get("counter", "n")
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
            .unwrap_or(0);
        unit.set("counter", "n", (n + 1).to_string().into_bytes());
        self.handled.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready((unit, Ok::<(), HandlerError>(()))))
    }
}

fn counted(log: &Log) -> u64 {
    log.snapshot()
        .unwrap()
        .get("counter", "n")
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_run_on_the_writer_only_and_a_new_writer_goes_on_from_the_same_cursor() {
    let cluster = Cluster::new(2);
    let counters: Vec<Arc<Counter>> = (0..2)
        .map(|_| {
            Arc::new(Counter {
                handled: AtomicUsize::new(0),
            })
        })
        .collect();
    let dispatchers: Vec<Dispatcher> = cluster
        .logs
        .iter()
        .zip(&counters)
        .map(|(log, c)| {
            let d = Dispatcher::new(log.clone(), RetryPolicy::default());
            d.subscribe("counter", c.clone(), true).expect("the name is free");
            d
        })
        .collect();
    let settled = |want: u64| {
        let logs = cluster.logs.clone();
        async move {
            for _ in 0..500 {
                if logs.iter().all(|l| counted(l) == want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "the count did not reach {want}: {:?}",
                logs.iter().map(counted).collect::<Vec<_>>()
            );
        }
    };
    for n in 0..10 {
        let log = &cluster.logs[n as usize % 2];
        log.commit(order(log, n)).await.unwrap();
    }
    settled(10).await;
    assert_eq!(
        counters[0].handled.load(Ordering::SeqCst),
        10,
        "the writer's host handled all"
    );
    assert_eq!(counters[1].handled.load(Ordering::SeqCst), 0, "the other none");
    cluster.set_writer(1);
    for n in 10..20 {
        let log = &cluster.logs[n as usize % 2];
        loop {
            match log.commit(order(log, n)).await {
                Ok(_) => break,
                Err(CommitError::Conflict) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
    settled(20).await;
    let handled: Vec<usize> = counters
        .iter()
        .map(|c| c.handled.load(Ordering::SeqCst))
        .collect();
    // Every event's effect once (the count is 20 on both hosts); a step cut short by the
    // change of writer may have run its handler without effect.
    assert!(handled[1] >= 10, "the new writer went on: {handled:?}");
    for d in dispatchers {
        d.shutdown().await;
    }
}

/// A record as another writer of log 0xc1 would append it after `log`'s last record.
fn next_record(log: &Log, format: u32, millis: u64, first_seq: u64) -> Vec<u8> {
    let prev = log.replica_position().unwrap().record_id;
    json!({
        "format": format, "logId": 0xc1, "id": 0x5eed_u64 + first_seq, "prev": prev,
        "millis": millis, "firstSeq": first_seq, "units": [],
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_are_not_the_next_record_are_refused_on_every_replica_and_the_log_goes_on() {
    let c = Cluster::new(3);
    for n in 0..3 {
        c.logs[1].commit(order(&c.logs[1], n)).await.unwrap();
    }
    c.settle().await;
    let replayed = c.shared.records.lock().unwrap()[1].clone();
    let junk = [
        c.inject(b"not a record".to_vec()),
        c.inject(
            json!({"format": 2, "logId": 0xbad, "id": 1, "prev": 0})
                .to_string()
                .into_bytes(),
        ),
        // A copy of an earlier record: it does not follow the last one.
        c.inject(replayed),
    ];
    // The writer's next append is fenced by the junk; its units go to it again once it has
    // taken the junk, and commit.
    for n in 3..6 {
        c.logs[2].commit(order(&c.logs[2], n)).await.unwrap();
    }
    c.settle().await;
    let first = events(&c.logs[0]);
    assert_eq!(first.len(), 6, "nothing of the junk was applied");
    for (h, log) in c.logs.iter().enumerate() {
        assert_eq!(events(log), first, "every replica holds the same log");
        let refused = c.shared.refused.lock().unwrap()[h].clone();
        let at: Vec<u64> = refused.iter().map(|(p, _)| *p).collect();
        assert_eq!(at, junk, "host {h} refused each junk message: {refused:?}");
        assert!(refused[0].1.contains("not a record"), "{refused:?}");
        assert!(refused[1].1.contains("log 0000000000000bad"), "{refused:?}");
        assert!(refused[2].1.contains("follows record"), "{refused:?}");
        assert!(c.shared.stopped.lock().unwrap()[h].is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_format_or_out_of_step_stops_every_replica_that_meets_it() {
    for (format, first_seq_off, expect) in [(FORMAT + 1, 0, "format"), (FORMAT, 5, "numbers its events")] {
        let c = Cluster::new(2);
        c.logs[0].commit(order(&c.logs[0], 1)).await.unwrap();
        c.settle().await;
        let head = c.logs[0].head();
        let at = c.inject(next_record(&c.logs[0], format, 1, head + 1 + first_seq_off));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while c.shared.stopped.lock().unwrap().iter().any(Option::is_none) {
            assert!(std::time::Instant::now() < deadline, "every replica stops");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for stopped in c.shared.stopped.lock().unwrap().iter() {
            let e = stopped.as_ref().unwrap();
            match (e, expect) {
                (ApplyError::Format { position, format: f }, "format") => {
                    assert_eq!((*position, *f), (at, FORMAT + 1));
                }
                (ApplyError::Diverged { position, .. }, _) => assert_eq!(*position, at),
                _ => panic!("{e}"),
            }
            assert!(e.to_string().contains(expect), "{e}");
        }
        assert_eq!(c.logs[1].applied(), at - 1, "nothing of it was applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_given_up_never_commits_afterwards_and_one_that_committed_is_reported() {
    for delivered_first in [false, true] {
        let c = Cluster::new(2);
        // Host 1's unit reaches the writer's host and waits there; every other attempt finds
        // no writer; the unit's host gives it up after its patience (2 s).
        let mut first = true;
        *c.shared.intercept.lock().unwrap() = Some(Box::new(move |unit| {
            if unit["abandon"] == true {
                Intercept::Deliver
            } else if std::mem::take(&mut first) {
                Intercept::Hold
            } else {
                Intercept::NoWriter
            }
        }));
        let writer = c.logs[0].clone();
        let held = c.shared.clone();
        let late = tokio::spawn(async move {
            // The held unit reaches the writer: before its host gives it up, or after.
            let wait = if delivered_first { 500 } else { 3_500 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let unit = held.held.lock().unwrap().pop().expect("the unit was held");
            String::from_utf8(writer.commit_forwarded(&unit).await).unwrap()
        });
        let outcome = c.logs[1].commit(order(&c.logs[1], 7)).await;
        let late = late.await.unwrap();
        c.settle().await;
        let orders = c.logs[0].snapshot().unwrap().scan("order", "orders/").unwrap();
        if delivered_first {
            assert!(late.contains("committed"), "{late}");
            assert_eq!(outcome.unwrap().seqs, 1..2, "the host learns that it committed");
            assert_eq!(orders.len(), 1);
        } else {
            assert!(matches!(outcome, Err(CommitError::Abandoned)), "{outcome:?}");
            assert_eq!(late, "\"abandoned\"", "the late copy is refused");
            assert!(orders.is_empty(), "nothing of a unit given up is written");
            assert_eq!(events(&c.logs[1]).len(), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_sent_again_after_the_logs_time_jumped_past_what_is_remembered_commits_once() {
    let c = Cluster::new(2);
    c.logs[0].commit(order(&c.logs[0], 0)).await.unwrap();
    c.settle().await;
    // The writer commits host 1's unit and the reply is lost; meanwhile a writer whose clock
    // runs an hour ahead appends a record, so the log's time passes how long unit ids are
    // kept: the writer forgets the unit's id before the unit is sent again.
    let (shared, writer) = (c.shared.clone(), c.logs[0].clone());
    *c.shared.on_lost_reply.lock().unwrap() = Some(Box::new(move || {
        let later = carshare_core::now_millis() + 3_600_000;
        let record = next_record(&writer, FORMAT, later, writer.head() + 1);
        shared.records.lock().unwrap().push(record);
    }));
    *c.shared.lose_reply.lock().unwrap() = Some(0);
    let outcome = c.logs[1].commit(order(&c.logs[1], 1)).await;
    assert!(
        matches!(&outcome, Err(CommitError::Unknown(m)) if m.contains("no longer remembers")),
        "{outcome:?}"
    );
    c.settle().await;
    for log in &c.logs {
        let orders = log.snapshot().unwrap().scan("order", "orders/").unwrap();
        assert_eq!(orders.len(), 2, "the unit committed once, not twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_drawn_on_an_old_copy_of_a_replica_rise_above_every_id_the_log_holds() {
    let mut c = Cluster::new(2);
    let b = c.logs[1].clone();
    for n in 0..3 {
        b.commit(order(&b, n)).await.unwrap();
    }
    c.settle().await;
    // An old copy of host 1's data, while host 1 goes on taking ids.
    let path = c.dir.path().join("host1.redb");
    let copy = c.dir.path().join("host1.old");
    c.pumps[1].abort();
    c.logs.remove(1).close();
    drop(b);
    std::fs::copy(&path, &copy).unwrap();
    c.shared.logs.lock().unwrap()[1] = Arc::new(OnceLock::new());
    let b = c.open(1);
    let mut taken = Vec::new();
    for n in 3..8 {
        let unit = order(&b, n);
        taken.push(unit.published()[0].key.clone().unwrap().parse::<u64>().unwrap());
        b.commit(unit).await.unwrap();
    }
    let highest = *taken.iter().max().unwrap();
    c.settle().await;
    c.pumps.pop().unwrap().abort();
    b.close();
    drop(b);
    // The copy comes back: an id drawn before it has applied the log is stale, but once it
    // has, ids continue above the highest any committed unit took.
    std::fs::copy(&copy, &path).unwrap();
    c.shared.logs.lock().unwrap()[1] = Arc::new(OnceLock::new());
    let b = c.open(1);
    let mut early = b.begin().unwrap();
    let stale = early.next_id("order", "orders").unwrap();
    assert!(stale < highest, "drawn from the old copy: {stale} < {highest}");
    c.logs.push(b.clone());
    c.settle().await;
    let mut fresh = b.begin().unwrap();
    let next = fresh.next_id("order", "orders").unwrap();
    assert!(next > highest, "{next} > {highest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_to_fit_the_largest_record_and_a_unit_too_large_alone_is_refused() {
    let c = Cluster::new(2);
    c.shared.max_record.store(4096, Ordering::SeqCst);
    let a = c.logs[0].clone();
    let mut big = a.begin().unwrap();
    big.set("order", "big", vec![b'x'; 8192]);
    let refused = a.commit(big).await;
    assert!(
        matches!(refused, Err(CommitError::TooLarge { max: 4096, .. })),
        "{refused:?}"
    );
    let committed = futures_join(&a, 60).await;
    assert!(committed.iter().all(Result::is_ok), "{committed:?}");
    c.settle().await;
    assert_eq!(events(&c.logs[1]).len(), 60);
    let sizes: Vec<usize> = c.shared.records.lock().unwrap().iter().map(Vec::len).collect();
    let full = sizes.iter().filter(|s| **s > 2048).count();
    assert!(
        full >= 2,
        "batches larger than a record were cut into full records: {sizes:?}"
    );
}
