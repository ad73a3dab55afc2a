//! What operators and networks do to a cluster, each under order load with a customer id per
//! request, each followed by an audit of every host: every acknowledged order present once
//! with what its client sent, nothing doubled, stock exact, every host the same. Each test
//! prints a `FAULT |` line (what happened, acknowledged / present / lost / doubled).
//!
//! The faults: a second process under a host's name (a copied data directory), a host
//! restarted on an older copy of its data, NATS restored from an older backup (then the log
//! re-founded from the most advanced replica, and the others joining from a snapshot), a host
//! far behind and the writer's lease, the writer's disk filling up, a host cut off from NATS
//! for 30 s, the writer paused (SIGSTOP), junk published on the log, and NATS at its default
//! message size under large batches.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    APP, CARSHARE, Load, Nats, Targets, WATCHER, assert_consistent, cluster_status, copy_dir, host,
    host_args, host_with, order_load, order_once_caught_up, report, settle_all, writer,
};
use crate::common::{DataDir, TestServer, carshare, temp_dir, try_request};

/// Starts a load on `targets`, runs `fault` while it goes on, stops it, and hands back what it
/// saw.
fn under_load<T>(targets: &Targets, product: u64, fault: impl FnOnce() -> T) -> (T, Load) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(targets.clone(), product, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let out = fault();
    stop.store(true, Ordering::Relaxed);
    (out, load.join().unwrap())
}

/// Three hosts h1..h3 on fresh data, a writer among them, and a product with plenty of stock.
fn three_hosts(nats: &Nats) -> (Vec<TestServer>, u64) {
    let hosts: Vec<TestServer> = (1..=3)
        .map(|i| host(nats, DataDir::new(), &format!("h{i}")))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    writer(&all);
    let product = hosts[0].register_product("shared", 10_000_000);
    settle_all(&all);
    (hosts, product)
}

/// A crash-consistent copy of a running host's data directory (the process paused while it
/// is copied, as a VM snapshot or a disk snapshot takes it), in a new directory.
fn snapshot_of(h: &TestServer) -> (tempfile::TempDir, PathBuf) {
    let parent = temp_dir();
    let copy = parent.path().join("data");
    h.pause();
    copy_dir(h.data_dir(), &copy);
    h.resume();
    (parent, copy)
}

/// Waits (up to `secs`) until `ok` holds of the host's cluster status; returns it.
fn wait_status(h: &TestServer, secs: u64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let status = cluster_status(h);
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_process_under_a_hosts_name_is_refused_and_copies_join_under_names_of_their_own() {
    let nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    targets.set(3, None);
    let ((h4, h5), load) = under_load(&targets, product, || {
        // A copy of h2's data directory started as h2 while h2 runs (how people add a host
        // or recover a VM): refused, with who holds the name and what to do.
        let (_keep, copy) = snapshot_of(&hosts[1]);
        let (args, env) = host_args(&nats, "h2");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (failed, said, copy) = DataDir::at(&copy).refused(&args, &env, 60);
        let holder = format!("host name h2 is taken by process {}", hosts[1].pid());
        assert!(failed && said.contains(&holder), "{said}");
        assert!(said.contains("--cluster-host NAME"), "{said}");
        // The same copy under a name of its own joins: its data is a prefix of the log.
        let h4 = host(&nats, copy, "h4");
        targets.set(3, Some(h4.addr));
        // A host on an empty data directory joins from a snapshot of a caught-up host.
        let h5 = host(&nats, DataDir::new(), "h5");
        assert!(
            h5.startup
                .iter()
                .any(|l| l.contains("joined from a snapshot of host h")),
            "{:?}",
            h5.startup
        );
        std::thread::sleep(Duration::from_secs(3));
        (h4, h5)
    });
    let all: Vec<&TestServer> = hosts.iter().chain([&h4, &h5]).collect();
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "twin host",
        "a copy of h2's data started as h2: refused; the copy as h4 and an empty h5 joined",
        &audit,
        &load,
    );
    assert!(load.acknowledged.len() > 100, "{}", load.acknowledged.len());
    // h4's and h5's clients wrote through them too.
    for h in [&h4, &h5] {
        let id = h.order(product, 1)["id"].as_u64().unwrap();
        assert_eq!(h.get(&format!("/orders/{id}")).status, 200);
    }
}

#[test]
fn a_host_restarted_on_an_older_copy_of_its_data_catches_up_before_it_writes_and_reissues_no_id() {
    let nats = Nats::start();
    let (mut hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    let (burst, load) = under_load(&targets, product, || {
        let (_keep, old) = snapshot_of(&hosts[1]);
        // h2 goes on taking orders (and ids) after the copy; then its disk is restored from it.
        std::thread::sleep(Duration::from_secs(4));
        targets.set(1, None);
        let dir = hosts.remove(1).kill();
        std::fs::remove_dir_all(dir.path()).unwrap();
        copy_dir(&old, dir.path());
        let h2 = host(&nats, dir, "h2");
        targets.set(1, Some(h2.addr));
        // Orders sent at once, each retried on 503 as a client would: taken only once h2 has
        // caught up with the log, and under ids no committed order has.
        let burst: Vec<(u16, String, usize)> = (0..40)
            .map(|n| {
                let body = format!(
                    r#"{{"productId":{product},"qty":1,"customerId":{}}}"#,
                    9_000_000 + n
                );
                let mut refused = 0;
                loop {
                    let r = try_request(h2.addr, "POST", "/orders", &[], body.as_bytes()).unwrap();
                    if r.status != 503 || refused > 600 {
                        return (r.status, r.body, refused);
                    }
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .collect();
        hosts.insert(1, h2);
        std::thread::sleep(Duration::from_secs(2));
        burst
    });
    let all: Vec<&TestServer> = hosts.iter().collect();
    settle_all(&all);
    let mut acknowledged = load.acknowledged.clone();
    for (n, (status, body, _)) in burst.iter().enumerate() {
        assert_eq!(*status, 201, "taken once caught up: {body}");
        let id = serde_json::from_str::<Value>(body).unwrap()["id"]
            .as_u64()
            .unwrap();
        let sent = super::Sent {
            customer: 9_000_000 + n as u64,
            product,
            qty: 1,
        };
        assert!(acknowledged.insert(id, sent).is_none(), "id {id} given twice");
    }
    let audit = assert_consistent(&all, &acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "restored data directory",
        &format!(
            "h2 restarted on a copy 4 s old; 40 orders sent to it at once got 503 (catching up) \
             {} times in all, then 201 each",
            burst.iter().map(|(_, _, refused)| refused).sum::<usize>()
        ),
        &audit,
        &load,
    );
}

#[test]
fn nats_restored_from_an_older_backup_stops_every_host_and_the_log_is_refounded_from_the_most_advanced() {
    let mut nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    let backup = temp_dir();
    let (_, load) = under_load(&targets, product, || {
        // A backup of NATS (every server's disk, the servers stopped), then more orders.
        nats.stop_all();
        nats.back_up(backup.path());
        nats.start_all();
        let backed_up = nats.log_state()["last_seq"].as_u64().unwrap();
        // Orders go on (once the servers have elected their leaders again) well past it.
        wait_status(&hosts[0], 60, "the log grows past the backup", |s| {
            s["applied"].as_u64().unwrap() > backed_up + 500
        });
        // One follower falls behind the others just before NATS goes down, so that the
        // replicas end at different points.
        let w = writer(&all);
        let behind = &hosts[(w + 1) % 3];
        behind.pause();
        std::thread::sleep(Duration::from_secs(2));
        // The disks are restored from that backup: the log loses what came after.
        nats.stop_all();
        behind.resume();
        nats.restore(backup.path());
        nats.start_all();
        for h in &hosts {
            let s = wait_status(h, 60, "a host stops", |s| s["role"] == "stopped");
            assert!(
                s["stopped"]
                    .as_str()
                    .unwrap()
                    .contains("the log is older than this replica"),
                "{s}"
            );
            let ready = h.get("/health/ready");
            assert_eq!(ready.status, 503, "{}", ready.body);
        }
    });
    // Stop every host; re-found the log from the most advanced replica.
    let applied: Vec<u64> = hosts
        .iter()
        .map(|h| cluster_status(h)["applied"].as_u64().unwrap())
        .collect();
    let dirs: Vec<DataDir> = hosts.into_iter().map(|h| h.terminate().2).collect();
    let first = (0..3).max_by_key(|i| applied[*i]).unwrap();
    let out = refound(&nats, dirs[first].path());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refounded: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(refounded["position"], applied[first] + 1, "{refounded}");
    // Refounding again is refused: the log is no longer behind.
    let again = refound(&nats, dirs[first].path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not behind this replica"));
    // The founder first: it serves the snapshots the others may need.
    let mut dirs: Vec<(usize, DataDir)> = dirs.into_iter().enumerate().collect();
    dirs.sort_by_key(|(i, _)| *i != first);
    let mut back: Vec<(usize, TestServer)> = Vec::new();
    let mut rejoined = Vec::new();
    for (i, dir) in dirs {
        let name = format!("h{}", i + 1);
        let dir = if i == first || applied[i] == applied[first] {
            dir
        } else {
            // Behind the new log's start: refused with what to do, then joined from a
            // snapshot on an empty data directory.
            let (a, e) = host_args(&nats, &name);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let (failed, said, _old) = dir.refused(&a, &e, 60);
            assert!(failed && said.contains("joins from a snapshot"), "{said}");
            rejoined.push(name.clone());
            DataDir::new()
        };
        back.push((i, host(&nats, dir, &name)));
        if i == first {
            wait_status(&back[0].1, 60, "the founder catches up", |s| {
                s["caughtUp"] == true
            });
        }
    }
    back.sort_by_key(|(i, _)| *i);
    let back: Vec<TestServer> = back.into_iter().map(|(_, h)| h).collect();
    let all: Vec<&TestServer> = back.iter().collect();
    writer(&all);
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "NATS restored from a backup",
        &format!(
            "every host stopped (replica ahead of the log); refounded from h{} at {}; {rejoined:?} \
             joined from a snapshot",
            first + 1,
            applied[first] + 1
        ),
        &audit,
        &load,
    );
    for h in &back {
        h.order(product, 1);
    }
}

/// `carshare cluster refound` on the stopped host's data directory `dir`.
fn refound(nats: &Nats, dir: &std::path::Path) -> std::process::Output {
    let (args, env) = host_args(nats, "unused");
    carshare(
        &[
            "cluster",
            "refound",
            "--cluster",
            &args[1],
            "--cluster-user",
            CARSHARE.0,
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &env,
    )
}

#[test]
fn nats_lost_entirely_is_made_anew_from_a_replica_and_nothing_acknowledged_is_lost() {
    let mut nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    let (_, load) = under_load(&targets, product, || std::thread::sleep(Duration::from_secs(3)));
    settle_all(&all);
    let dirs: Vec<DataDir> = hosts.into_iter().map(|h| h.terminate().2).collect();
    // Every NATS server's disk is lost.
    nats.stop_all();
    nats.wipe();
    nats.start_all();
    // A host on its data finds a log that is not the one its data belongs to: refused.
    let (args, env) = host_args(&nats, "h1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dirs = dirs.into_iter();
    let (failed, said, h1) = dirs.next().unwrap().refused(&args, &env, 60);
    assert!(failed && said.contains("carshare cluster refound"), "{said}");
    let out = refound(&nats, h1.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hosts: Vec<TestServer> = std::iter::once(h1)
        .chain(dirs)
        .enumerate()
        .map(|(i, dir)| host(&nats, dir, &format!("h{}", i + 1)))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    writer(&all);
    order_once_caught_up(&hosts[2], product, 1);
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "NATS lost entirely",
        &format!(
            "every NATS disk wiped; h1 refused (another log); the log re-founded from h1: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        &audit,
        &load,
    );
}

/// A cgroup (v1 `cpu` controller) holding a process to a share of one core, as a slower
/// machine would be; the process goes back to the root group when this is dropped.
struct CpuCap {
    dir: PathBuf,
    pid: u32,
}

impl CpuCap {
    fn new(pid: u32, percent_of_a_core: u32) -> CpuCap {
        let dir = PathBuf::from(format!("/sys/fs/cgroup/cpu/carshare-test-{pid}"));
        std::fs::create_dir_all(&dir).expect("cgroup v1's cpu controller at /sys/fs/cgroup/cpu");
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            (1000 * percent_of_a_core).to_string(),
        )
        .unwrap();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let _ = std::fs::write(dir.join("tasks"), task.file_name().to_string_lossy().as_bytes());
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        CpuCap { dir, pid }
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/fs/cgroup/cpu/cgroup.procs", self.pid.to_string());
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::write(
                "/sys/fs/cgroup/cpu/tasks",
                task.file_name().to_string_lossy().as_bytes(),
            );
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_host_far_behind_does_not_stand_for_the_lease_and_a_step_down_moves_it() {
    let nats = Nats::start();
    let (mut hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let w = writer(&all);
    let (f, lagging) = ((w + 1) % 3, (w + 2) % 3);
    let targets = Targets::of(&[&hosts[w], &hosts[f]]);
    let (seen, load) = under_load(&targets, product, || {
        // One host falls far behind (paused while the others go on), and then runs on 1 % of
        // a core, so that catching up takes it a long while: it says it does not stand for
        // the lease.
        hosts[lagging].pause();
        std::thread::sleep(Duration::from_secs(8));
        let cap = CpuCap::new(hosts[lagging].pid(), 1);
        hosts[lagging].resume();
        let status = wait_status(&hosts[lagging], 60, "the capped host knows it is behind", |s| {
            s["lag"].as_u64().unwrap() > 500 && s["notStanding"].is_string()
        });
        // The writer is killed: the host that is caught up takes over, never the one behind.
        targets.set(0, None);
        let killed = hosts[w].pid();
        Command::new("kill")
            .args(["-KILL", &killed.to_string()])
            .status()
            .unwrap();
        let taken = Instant::now();
        let mut behind_roles = Vec::new();
        loop {
            let s = cluster_status(&hosts[lagging]);
            if s["lag"].as_u64().unwrap() > 64 {
                behind_roles.push(s["role"].as_str().unwrap().to_string());
                assert!(
                    s["notStanding"].as_str().unwrap_or("").contains("still to apply"),
                    "{s}"
                );
            }
            if cluster_status(&hosts[f])["role"] == "writer" {
                break;
            }
            assert!(taken.elapsed() < Duration::from_secs(15), "no takeover: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let takeover = taken.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        drop(cap);
        // A step-down asked on the host that was behind moves the lease off the writer.
        let out = carshare(
            &[
                "cluster",
                "step-down",
                "--url",
                &format!("http://{}", hosts[lagging].addr),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            status,
            behind_roles,
            takeover,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    let (status, behind_roles, takeover, stepped) = seen;
    eprintln!("FAULT detail: the lagging host when the writer was killed: {status}");
    eprintln!("behind: {status}; roles while behind: {behind_roles:?}; stepped down: {stepped}");
    assert!(behind_roles.iter().all(|r| r == "follower"), "{behind_roles:?}");
    assert!(stepped.contains(&format!("\"h{}\"", f + 1)), "{stepped}");
    // With the cap gone the lagging host catches up, and takes the lease in turn.
    let lagging_name = format!("h{}", lagging + 1);
    wait_status(&hosts[lagging], 60, "the lease moves after the step-down", |s| {
        s["writer"].as_str().is_some_and(|wr| wr != format!("h{}", f + 1))
    });
    let dir = hosts.remove(w).kill();
    hosts.insert(w, host(&nats, dir, &format!("h{}", w + 1)));
    let all: Vec<&TestServer> = hosts.iter().collect();
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "a lagging host and the lease",
        &format!(
            "{lagging_name}, paused 8 s then held to 1 % of a core, {} records behind; writer \
             killed: h{} took over in {takeover:?}, {lagging_name} stood aside; then a step-down \
             moved the lease",
            status["lag"],
            f + 1
        ),
        &audit,
        &load,
    );
}

/// A small ext4 filesystem on a loop device, mounted in a temporary directory.
struct LoopFs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl LoopFs {
    fn new(megabytes: u32) -> LoopFs {
        let dir = temp_dir();
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let run = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        run(Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", image.display()))
            .args(["bs=1M", &format!("count={megabytes}"), "status=none"]));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        LoopFs { _dir: dir, mount }
    }

    /// Fills the filesystem but for `left` bytes.
    fn fill_leaving(&self, left: u64) {
        let stat = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&stat.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let filler = self.mount.join("filler");
        let size = avail.saturating_sub(left);
        let ok = Command::new("fallocate")
            .args(["-l", &size.to_string()])
            .arg(&filler)
            .status()
            .unwrap()
            .success();
        assert!(ok, "fallocate");
    }

    fn empty_filler(&self) {
        std::fs::remove_file(self.mount.join("filler")).unwrap();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn the_writers_disk_filling_up_moves_the_lease_and_loses_nothing() {
    let nats = Nats::start();
    let disk = LoopFs::new(64);
    let h1_dir = disk.mount.join("h1");
    std::fs::create_dir(&h1_dir).unwrap();
    // h1 writes: it starts first, on the small disk.
    let h1 = host(&nats, DataDir::at(&h1_dir), "h1");
    writer(&[&h1]);
    let mut hosts = vec![h1];
    for i in 2..=3 {
        hosts.push(host(&nats, DataDir::new(), &format!("h{i}")));
    }
    let all: Vec<&TestServer> = hosts.iter().collect();
    let product = hosts[0].register_product("shared", 10_000_000);
    settle_all(&all);
    let targets = Targets::of(&all);
    let (seen, load) = under_load(&targets, product, || {
        disk.fill_leaving(2 << 20);
        let failed_at = Instant::now();
        let ready = loop {
            let r = hosts[0].get("/health/ready");
            if r.status == 503 && r.body.contains("storage") {
                break r.json();
            }
            assert!(failed_at.elapsed() < Duration::from_secs(120), "{}", r.body);
            std::thread::sleep(Duration::from_millis(100));
        };
        let moved = Instant::now();
        let new_writer = loop {
            let others = [&hosts[1], &hosts[2]];
            if let Some(i) = others.iter().position(|h| cluster_status(h)["role"] == "writer") {
                break i + 2;
            }
            assert!(
                moved.elapsed() < Duration::from_secs(15),
                "the lease did not move"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let moved = moved.elapsed();
        targets.set(0, None);
        std::thread::sleep(Duration::from_secs(3));
        (ready, new_writer, moved)
    });
    let (ready, new_writer, moved) = seen;
    eprintln!("h1 when its disk filled: {ready}");
    // With room again and a restart, h1 applies what it missed.
    disk.empty_filler();
    let dir = hosts.remove(0).kill();
    hosts.insert(0, host(&nats, dir, "h1"));
    let all: Vec<&TestServer> = hosts.iter().collect();
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "the writer's disk filling up",
        &format!("h1's disk filled; h{new_writer} wrote {moved:?} after h1 said its storage failed"),
        &audit,
        &load,
    );
}

/// TCP proxies in front of the NATS servers for one host: cutting closes every connection
/// through them and refuses new ones, as a network partition would; healing lets them in.
struct Cut {
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    urls: String,
}

impl Cut {
    fn new(nats: &Nats) -> Cut {
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let mut urls = Vec::new();
        for upstream in nats.urls().split(',') {
            let upstream: SocketAddr = upstream.trim_start_matches("nats://").parse().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            urls.push(format!("nats://{}", listener.local_addr().unwrap()));
            let (open, conns) = (open.clone(), conns.clone());
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if !open.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let mut held = conns.lock().unwrap();
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                    relay(client.try_clone().unwrap(), server.try_clone().unwrap());
                    relay(server, client);
                }
            });
        }
        Cut {
            open,
            conns,
            urls: urls.join(","),
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn the_writer_cut_off_from_nats_for_30_s_hands_over_and_catches_up_when_healed() {
    let nats = Nats::start();
    let cut = Cut::new(&nats);
    // h1 reaches NATS through the proxies only, and writes (it starts first).
    let (_, env) = host_args(&nats, "h1");
    let h1 = DataDir::new().start_env(
        &[
            "--cluster",
            &cut.urls,
            "--cluster-host",
            "h1",
            "--cluster-user",
            CARSHARE.0,
        ],
        &env,
    );
    writer(&[&h1]);
    let mut hosts = vec![h1];
    for i in 2..=3 {
        hosts.push(host(&nats, DataDir::new(), &format!("h{i}")));
    }
    let all: Vec<&TestServer> = hosts.iter().collect();
    let product = hosts[0].register_product("shared", 10_000_000);
    settle_all(&all);
    let targets = Targets::of(&all);
    let (takeover, load) = under_load(&targets, product, || {
        cut.cut();
        let cut_at = Instant::now();
        let others = [&hosts[1], &hosts[2]];
        while !others.iter().any(|h| cluster_status(h)["role"] == "writer") {
            assert!(cut_at.elapsed() < Duration::from_secs(20), "nobody took over");
            std::thread::sleep(Duration::from_millis(50));
        }
        let takeover = cut_at.elapsed();
        std::thread::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed()));
        cut.heal();
        // h1 catches up with what the others wrote meanwhile.
        wait_status(&hosts[0], 60, "h1 catches up", |s| {
            s["role"] == "follower" && s["lag"] == 0 && s["caughtUp"] == true
        });
        std::thread::sleep(Duration::from_secs(2));
        takeover
    });
    let all: Vec<&TestServer> = hosts.iter().collect();
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "host cut off from NATS for 30 s",
        &format!(
            "the writer h1 was cut off; another host wrote {takeover:?} later; h1 caught up when healed"
        ),
        &audit,
        &load,
    );
    assert!(takeover < Duration::from_secs(12), "{takeover:?}");
}

#[test]
fn the_writer_paused_again_and_again_loses_and_doubles_nothing() {
    let nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    let (pauses, load) = under_load(&targets, product, || {
        let mut pauses = Vec::new();
        // Past the lease (5 s), and once past the host's presence (10 s) as well.
        for secs in [6, 8, 12] {
            let w = writer(&all);
            hosts[w].pause();
            std::thread::sleep(Duration::from_secs(secs));
            hosts[w].resume();
            pauses.push((format!("h{}", w + 1), secs));
            std::thread::sleep(Duration::from_secs(3));
        }
        pauses
    });
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    report(
        "the writer SIGSTOPped and resumed",
        &format!("paused (host, seconds): {pauses:?}"),
        &audit,
        &load,
    );
}

#[test]
fn junk_on_the_log_is_kept_out_by_nats_accounts_and_refused_by_every_host_when_it_gets_in() {
    let nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    let targets = Targets::of(&all);
    let (junk, load) = under_load(&targets, product, || {
        // Another account's application, and a user of carshare's account that may only
        // read, cannot put anything on the log.
        for user in [APP, WATCHER] {
            let refused = nats.with_client(user, async |client| {
                let js = async_nats::jetstream::new(client);
                match js.publish("carshare.log", "junk".into()).await {
                    Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
                        .await
                        .map_or(true, |a| a.is_err()),
                    Err(_) => true,
                }
            });
            assert!(refused, "{} published on carshare.log", user.0);
        }
        // With carshare's own credentials (a bug, a leaked password) junk gets in: a message
        // that is no record, a record of another log, an old record sent again.
        let first = nats.with_client(CARSHARE, async |client| {
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream("CARSHARE_LOG").await.unwrap();
            stream.get_raw_message(1).await.unwrap().payload
        });
        let junk: Vec<u64> = [
            bytes::Bytes::from_static(b"not a record"),
            bytes::Bytes::from_static(
                br#"{"format":2,"logId":1,"id":2,"prev":0,"millis":0,"firstSeq":1,"units":[]}"#,
            ),
            first,
        ]
        .into_iter()
        .map(|payload| {
            nats.with_client(CARSHARE, async |client| {
                let js = async_nats::jetstream::new(client);
                js.publish("carshare.log", payload)
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .sequence
            })
        })
        .collect();
        std::thread::sleep(Duration::from_secs(3));
        junk
    });
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    for h in &hosts {
        let s = cluster_status(h);
        let at: Vec<u64> = s["lastRefused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["position"].as_u64().unwrap())
            .collect();
        assert_eq!(at, junk, "{s}");
        assert_eq!(s["refused"], 3, "{s}");
        let name = s["host"].as_str().unwrap();
        let metrics = h.get("/metrics").body;
        let line = format!("carshare_cluster_refused_messages{{host=\"{name}\"}} 3");
        assert!(metrics.lines().any(|l| l == line), "{line}");
    }
    report(
        "junk on the log",
        &format!(
            "another account and a read-only user could not publish; 3 junk messages at {junk:?} refused by every host"
        ),
        &audit,
        &load,
    );
}

#[test]
fn large_batches_fit_nats_default_message_size_and_a_unit_too_large_gets_413() {
    // The servers' default max_payload: 1 MB. The auditor test context stores whatever mode
    // it is sent: units of any size, up to the 1 MiB body limit.
    let nats = Nats::start_with(None);
    let auditor = format!("auditor={}", crate::common::TestComponent::Auditor.path());
    let hosts: Vec<TestServer> = (1..=3)
        .map(|i| host_with(&nats, DataDir::new(), &format!("h{i}"), &["--context", &auditor]))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    writer(&all);
    let product = hosts[0].register_product("shared", 10_000_000);
    settle_all(&all);
    let targets = Targets::of(&all);
    let (seen, load) = under_load(&targets, product, || {
        // Modes of 120 KB from 16 clients at once: their batches' records come to several MB,
        // and are cut to fit.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..16)
            .map(|c| {
                let (addr, stop) = (hosts[c % 3].addr, stop.clone());
                std::thread::spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let body = format!(r#"{{"failing":false,"pad":"{}"}}"#, "x".repeat(120_000));
                        let r = try_request(addr, "PUT", "/audits/mode", &[], body.as_bytes()).unwrap();
                        match r.status {
                            200 => ok += 1,
                            _ => failed.push(format!("{} {}", r.status, r.body)),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(5));
        // A mode whose record alone would not fit (its quotes are escaped twice there):
        // refused, with why, from a host that writes and from one that does not.
        let huge = format!(r#"{{"failing":false,"pad":"{}"}}"#, "\\\"".repeat(300_000));
        let w = writer(&all);
        let refused: Vec<crate::common::Resp> = [w, (w + 1) % 3]
            .iter()
            .map(|i| try_request(hosts[*i].addr, "PUT", "/audits/mode", &[], huge.as_bytes()).unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for c in clients {
            let (o, f) = c.join().unwrap();
            ok += o;
            failed.extend(f);
        }
        assert_eq!(failed, Vec::<String>::new());
        (ok, refused)
    });
    let (large, refused) = seen;
    for r in &refused {
        assert_eq!(r.status, 413, "{}", r.body);
        let body = r.json();
        assert_eq!(body["error"], "too_large", "{body}");
        assert!(body["message"].as_str().unwrap().contains("bytes"), "{body}");
    }
    settle_all(&all);
    let audit = assert_consistent(&all, &load.acknowledged, &BTreeMap::from([(product, 10_000_000)]));
    assert_eq!(load.failures, Vec::<String>::new());
    // The large units made records close to the servers' limit: batches were cut to fit.
    let last = nats.log_state()["last_seq"].as_u64().unwrap();
    let sizes: Vec<usize> = nats.with_client(CARSHARE, async |client| {
        let stream = async_nats::jetstream::new(client)
            .get_stream("CARSHARE_LOG")
            .await
            .unwrap();
        let mut sizes = Vec::new();
        for seq in 1..=last {
            sizes.push(stream.get_raw_message(seq).await.unwrap().payload.len());
        }
        sizes
    });
    let largest = sizes.iter().max().copied().unwrap_or(0);
    let near_full = sizes.iter().filter(|s| **s > 900_000).count();
    eprintln!(
        "the log: {} records, the largest {largest} bytes, {near_full} over 900 KB",
        sizes.len()
    );
    assert!(largest <= 1024 * 1024 && near_full > 0, "{largest} {near_full}");
    report(
        "NATS default max_payload, large batches",
        &format!(
            "{large} units of 120 KB from 16 clients, cut into records of at most {largest} \
             bytes ({near_full} over 900 KB); a unit of ~1.2 MB: 413 on the writer and on a follower"
        ),
        &audit,
        &load,
    );
}

#[test]
fn a_record_of_a_newer_format_stops_every_host_and_an_older_reader_keeps_the_lease_from_newer_writers() {
    let nats = Nats::start();
    let (hosts, product) = three_hosts(&nats);
    let all: Vec<&TestServer> = hosts.iter().collect();
    // A host present that reads only format 1 (a host of an older version, during a rolling
    // upgrade): no host of this version stands for the lease, so none writes records it
    // could not read. Its claim expires (10 s) once nobody renews it, and writing goes on.
    nats.with_client(CARSHARE, async |client| {
        let kv = async_nats::jetstream::new(client)
            .get_key_value("carshare_presence")
            .await
            .unwrap();
        let old = serde_json::json!({
            "nonce": "0", "pid": 1, "machine": "old", "dataDir": "/old", "since": "", "reads": 1
        });
        kv.put("h0", old.to_string().into()).await.unwrap();
    });
    for h in &hosts {
        let s = wait_status(h, 20, "no host stands for the lease", |s| {
            s["role"] == "follower"
                && s["notStanding"]
                    .as_str()
                    .is_some_and(|n| n.contains("host h0 reads records up to format 1"))
        });
        eprintln!("{s}");
    }
    writer(&all);
    hosts[1].order(product, 1);
    settle_all(&all);
    // A record of a newer format, following the last one: every host stops there and says
    // why, rather than apply part of it.
    let position = nats.with_client(CARSHARE, async |client| {
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("CARSHARE_LOG").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let record: Value =
            serde_json::from_slice(&stream.get_raw_message(last).await.unwrap().payload).unwrap();
        let newer = serde_json::json!({
            "format": 99, "logId": record["logId"], "id": 7, "prev": record["id"], "millis": 0,
            "firstSeq": 0, "units": [], "somethingNew": true
        });
        js.publish("carshare.log", newer.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    });
    for h in &hosts {
        let s = wait_status(h, 20, "every host stops at the newer record", |s| {
            s["role"] == "stopped"
        });
        let why = s["stopped"].as_str().unwrap();
        assert!(
            why.contains(&format!("position {position} is in format 99"))
                && why.contains("upgrade this host"),
            "{s}"
        );
        let r = h.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(h.get("/health/ready").body.contains("format 99"));
    }
    eprintln!("FAULT detail: a format-99 record at {position} stopped every host");
}
