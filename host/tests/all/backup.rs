//! Backups of one process: `carshare backup` while it serves orders, `carshare restore` into a
//! new data directory that then serves a consistent system, a backup of a stopped server's
//! data, and what backup and restore refuse.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::{DataDir, TestServer, carshare, request, temp_dir};

/// Orders with a customer id each, on `addr` until `stop`; the acknowledged ones go in `acked`.
fn orders(
    addr: std::net::SocketAddr,
    product: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
) {
    let mut customer = 0u64;
    while !stop.load(Ordering::Relaxed) {
        customer += 1;
        let body = format!(r#"{{"productId":{product},"qty":1,"customerId":{customer}}}"#);
        let r = request(addr, "POST", "/orders", &[], body.as_bytes());
        assert_eq!(r.status, 201, "{}", r.body);
        acked
            .lock()
            .unwrap()
            .insert(r.json()["id"].as_u64().unwrap(), customer);
    }
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_backup_taken_while_orders_commit_restores_to_a_consistent_system() {
    let s = TestServer::start(&[]);
    let product = s.register_product("backed-up", 1_000_000);
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(BTreeMap::new())),
    );
    let load = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let addr = s.addr;
        std::thread::spawn(move || orders(addr, product, stop, acked))
    };
    std::thread::sleep(Duration::from_secs(1));
    let before: BTreeMap<u64, u64> = acked.lock().unwrap().clone();
    let keep = temp_dir();
    let dest = keep.path().join("carshare-backup.redb");
    let url = format!("http://{}", s.addr);
    let taken = json(&carshare(&["backup", dest.to_str().unwrap(), "--url", &url], &[]));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "backup under load: {taken}; {} orders acknowledged before it",
        before.len()
    );
    assert!(taken["bytes"].as_u64().unwrap() > 0 && taken["lastSeq"].as_u64().unwrap() > 0);
    // A backup never overwrites anything.
    let again = carshare(&["backup", dest.to_str().unwrap(), "--url", &url], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Restored into a new data directory, it serves every order acknowledged before the
    // backup began, and stock adds up once the subscribers have caught up.
    let restored = temp_dir();
    let out = json(&carshare(
        &[
            "restore",
            dest.to_str().unwrap(),
            "--data-dir",
            restored.path().to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(out["lastSeq"], taken["lastSeq"], "{out}");
    let last_seqs = |v: &Value| -> Vec<u64> {
        v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lastSeq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(last_seqs(&out), last_seqs(&taken), "{out}");
    let r = DataDir::at(restored.path()).start(&[]);
    r.settle();
    let events = r.events();
    crate::common::assert_gap_free(&events);
    for (p, last) in last_seqs(&taken).into_iter().enumerate() {
        assert!(events.iter().filter(|e| e["partition"] == p).count() as u64 >= last);
    }
    let orders = r.all("orders");
    let by_id: BTreeMap<u64, &Value> = orders.iter().map(|o| (o["id"].as_u64().unwrap(), o)).collect();
    for (id, customer) in &before {
        assert_eq!(by_id[id]["customerId"], *customer, "order {id}");
    }
    let held: i64 = orders
        .iter()
        .filter(|o| o["status"] != "OrderCancelled" && o["status"] != "OrderRejected")
        .map(|o| o["qty"].as_i64().unwrap())
        .sum();
    let left = r.get(&format!("/products/{product}")).json()["qty"]
        .as_i64()
        .unwrap();
    assert_eq!(left + held, 1_000_000, "stock adds up");
    // It takes new orders, numbered on from the backup (in the partition it is placed in).
    let next = r.order(product, 1)["id"].as_u64().unwrap();
    let n = u64::from(r.partitions());
    assert!(
        by_id
            .keys()
            .filter(|id| (*id - 1) % n == (next - 1) % n)
            .all(|id| *id < next)
    );

    // Restoring over a data directory that holds a database: refused without --force, and
    // refused with it while its server runs; once it has stopped, the old one is kept aside.
    let over = |force: bool| {
        let mut args = vec![
            "restore",
            dest.to_str().unwrap(),
            "--data-dir",
            restored.path().to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        carshare(&args, &[])
    };
    let refused = over(false);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("give --force"),
        "{refused:?}"
    );
    let running = over(true);
    assert!(!running.status.success());
    assert!(
        String::from_utf8_lossy(&running.stderr).contains("still running"),
        "{running:?}"
    );
    let (_, _, dir) = r.terminate();
    let replaced = json(&over(true));
    assert!(
        replaced["kept"]
            .as_str()
            .unwrap()
            .contains("carshare.redb.replaced-"),
        "{replaced}"
    );

    // A stopped server's data is backed up with --data-dir; a running one's is not.
    let offline = keep.path().join("offline.redb");
    let busy = carshare(
        &[
            "backup",
            offline.to_str().unwrap(),
            "--data-dir",
            s.data_dir().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!busy.status.success(), "the server still holds its data");
    let (_, _, original) = s.terminate();
    let done = json(&carshare(
        &[
            "backup",
            offline.to_str().unwrap(),
            "--data-dir",
            original.path().to_str().unwrap(),
        ],
        &[],
    ));
    assert!(
        done["lastSeq"].as_u64().unwrap() > taken["lastSeq"].as_u64().unwrap(),
        "{done}"
    );
    drop(dir);
    // A file that is not a backup is refused.
    let junk = keep.path().join("junk.redb");
    std::fs::write(&junk, b"not a database").unwrap();
    let bad = carshare(
        &[
            "restore",
            junk.to_str().unwrap(),
            "--data-dir",
            keep.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a usable backup"),
        "{bad:?}"
    );
}
