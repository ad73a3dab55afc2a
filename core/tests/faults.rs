//! A whole commit batch that fails in storage: every unit of it gets the error, nothing of it
//! is visible, the log says its storage failed, and after a restart it continues gap-free from
//! the last batch that did commit. Faults are injected under redb by a storage backend that
//! fails writes and fsyncs on demand.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use carshare_core::{Batch, CommitError, Log, Replicator};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use serde_json::json;

/// A file backend whose writes and fsyncs fail while `fail` is set.
#[derive(Debug)]
struct Faulty {
    inner: FileBackend,
    fail: Arc<AtomicBool>,
}

impl Faulty {
    fn open(path: &Path, fail: Arc<AtomicBool>) -> Faulty {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Faulty {
            inner: FileBackend::new(file).unwrap(),
            fail,
        }
    }

    fn injected(&self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected I/O failure"));
        }
        Ok(())
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.injected()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.injected()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.injected()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
}

fn order(log: &Log, n: u64) -> carshare_core::Unit {
    let mut u = log.begin().unwrap();
    u.set("order", &format!("orders/{n}"), n.to_string().into_bytes());
    u.publish("order", "Ordered", Some(n.to_string()), json!({ "id": n }));
    u
}

#[test]
fn a_batch_that_fails_in_storage_fails_every_unit_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let fail = Arc::new(AtomicBool::new(false));
    let log = Log::open_backend(Faulty::open(&path, fail.clone())).unwrap();
    for n in 1..=3 {
        log.commit_blocking(order(&log, n)).unwrap();
    }
    assert_eq!(log.head(), 3);
    assert!(log.storage_failure().is_none());

    // Eight units prepared together and committed at once, while the disk fails: whichever
    // batches the writer groups them into, every one of them fails.
    let units: Vec<_> = (10..18).map(|n| order(&log, n)).collect();
    fail.store(true, Ordering::SeqCst);
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = units
            .into_iter()
            .map(|u| {
                let log = log.clone();
                s.spawn(move || log.commit_blocking(u))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(CommitError::Storage(_))),
            "every unit of a failed batch fails: {outcome:?}"
        );
    }
    assert!(log.storage_failure().is_some(), "the log says its storage failed");
    assert_eq!(log.head(), 3, "the head did not move");
    fail.store(false, Ordering::SeqCst);
    log.close();
    drop(log);

    // Opened again: what committed is there, nothing of the failed batch, and the sequence
    // goes on without a gap.
    let log = Log::open(&path).unwrap();
    assert_eq!(log.head(), 3);
    let seqs: Vec<u64> = log.events_after(0, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let mut snapshot = log.snapshot().unwrap();
    assert_eq!(snapshot.scan("order", "orders/").unwrap().len(), 3);
    for n in 10..18 {
        assert_eq!(snapshot.get("order", &format!("orders/{n}")).unwrap(), None);
    }
    let c = log.commit_blocking(order(&log, 4)).unwrap();
    assert_eq!(c.seqs, 4..5);
}

/// What a replicator saw of each batch: its event seqs and the keys it wrote.
type Seen = Arc<std::sync::Mutex<Vec<(Vec<u64>, Vec<String>)>>>;

/// Records what it is handed, and refuses batches while `refuse` is set.
struct Recording {
    refuse: Arc<AtomicBool>,
    seen: Seen,
}

impl Replicator for Recording {
    fn replicate(&mut self, batch: &Batch<'_>) -> Result<(), carshare_core::StorageError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(io_error("the replica refused the batch"));
        }
        let seqs = batch.events().map(|e| e.seq).collect();
        let keys = batch.writes().map(|(_, k, _)| k.to_string()).collect();
        self.seen.lock().unwrap().push((seqs, keys));
        Ok(())
    }
}

fn io_error(what: &str) -> carshare_core::StorageError {
    carshare_core::StorageError::new(what)
}

#[test]
fn a_batch_the_replicator_refuses_fails_whole_and_the_log_goes_on_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let log = Log::builder()
        .replicator(Recording {
            refuse: refuse.clone(),
            seen: seen.clone(),
        })
        .open(dir.path().join("db.redb"))
        .unwrap();
    log.commit_blocking(order(&log, 1)).unwrap();
    refuse.store(true, Ordering::SeqCst);
    let units: Vec<_> = (10..14).map(|n| order(&log, n)).collect();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = units
            .into_iter()
            .map(|u| {
                let log = log.clone();
                s.spawn(move || log.commit_blocking(u))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        outcomes.iter().all(|o| matches!(o, Err(CommitError::Storage(_)))),
        "{outcomes:?}"
    );
    assert_eq!(log.head(), 1);
    assert_eq!(log.snapshot().unwrap().get("order", "orders/10").unwrap(), None);

    // Accepted again: the next unit gets the next number, in this same process.
    refuse.store(false, Ordering::SeqCst);
    let c = log.commit_blocking(order(&log, 2)).unwrap();
    assert_eq!(c.seqs, 2..3);
    let seqs: Vec<u64> = log.events_after(0, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(log.storage_failure().is_none(), "a later batch committed");
    // The replicator saw exactly the batches that committed, with their numbers and writes.
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (vec![1], vec!["orders/1".to_string()]),
            (vec![2], vec!["orders/2".to_string()])
        ]
    );
}
