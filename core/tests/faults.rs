//! A whole commit batch that fails in storage: every unit of it gets the error, nothing of it
//! is visible, the log says its storage failed, and after a restart it continues gap-free from
//! the last batch that did commit. Faults are injected under redb by a storage backend that
//! fails writes and fsyncs on demand.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use carshare_core::{CommitError, Log};
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

/// A cluster of one host whose replicated log is a vector, and whose disk starts failing
/// right after an append: the record is in the log, so the batch's units committed.
struct FailAfterAppend {
    records: std::sync::Mutex<Vec<Vec<u8>>>,
    fail: Arc<AtomicBool>,
}

impl carshare_core::Replicator for FailAfterAppend {
    fn is_writer(&self) -> bool {
        true
    }

    fn append(&self, record: &[u8], after: u64) -> Result<u64, carshare_core::AppendError> {
        let mut records = self.records.lock().unwrap();
        assert_eq!(records.len() as u64, after);
        records.push(record.to_vec());
        self.fail.store(true, Ordering::SeqCst);
        Ok(records.len() as u64)
    }

    fn forward(&self, _unit: Vec<u8>) -> carshare_core::ForwardFuture {
        unreachable!("the only host writes")
    }
}

#[test]
fn a_local_failure_after_the_append_reports_the_units_committed_never_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let replicated = Arc::new(FailAfterAppend {
        records: Default::default(),
        fail: fail.clone(),
    });
    let log = Log::builder()
        .replicator(replicated.clone())
        .log_id(7)
        .open_backend(Faulty::open(&dir.path().join("db.redb"), fail.clone()))
        .unwrap();
    let committed = log.commit_blocking(order(&log, 1));
    let c = committed.expect("the record is in the log: the unit committed");
    assert_eq!((c.seqs, c.position), (1..2, 1));
    assert!(
        log.storage_failure().is_some(),
        "the host says its storage failed"
    );
    assert_eq!(log.head(), 0, "this replica does not show it");
    let records = replicated.records.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert!(String::from_utf8_lossy(&records[0]).contains("orders/1"));
}
