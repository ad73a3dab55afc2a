//! What the cluster was built for: orders and cancellations going to every host at once; the
//! writer host killed under load; the log's stream leader stepping down and a NATS server
//! killed under load; a swap and a rollback switching every host at one point of the log.
//! Each time: every acknowledged order is on every host once, nothing is done twice, stock
//! adds up exactly, event numbers have no gap, and every host holds the same log.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Load, Nats, Targets, assert_consistent, cluster_status, host, host_with, order_load, settle_all, writer,
};
use crate::common::{DataDir, TestComponent, TestServer};

/// Each host's metrics and system page say which host it is, its role, the writer, what it
/// applied and its lag (the hosts have settled: no lag).
fn shows_its_part(hosts: &[TestServer]) {
    crate::ui::chromium();
    let dir = crate::ui::driver();
    let statuses: Vec<Value> = hosts.iter().map(cluster_status).collect();
    let writer = statuses.iter().find(|s| s["role"] == "writer").expect("a writer")["host"]
        .as_str()
        .unwrap()
        .to_string();
    for (h, status) in hosts.iter().zip(&statuses) {
        let name = status["host"].as_str().unwrap();
        let role = status["role"].as_str().unwrap();
        let metrics = h.get("/metrics").body;
        for line in [
            format!("carshare_cluster_role{{host=\"{name}\",role=\"{role}\"}} 1"),
            format!("carshare_cluster_writer{{host=\"{name}\",writer=\"{writer}\"}} 1"),
            format!(
                "carshare_cluster_applied_position{{host=\"{name}\"}} {}",
                status["applied"]
            ),
            format!("carshare_cluster_lag_records{{host=\"{name}\"}} 0"),
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        let out = Command::new("node")
            .arg(dir.join("cluster-line.mjs"))
            .arg(format!("http://{}", h.addr))
            .arg(crate::common::TOKEN)
            .current_dir(&dir)
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprint!("{stdout}");
        let expected = format!("cluster line: host {name}: {role} · writer {writer} · applied ");
        assert!(
            out.status.success() && stdout.contains(&expected) && stdout.contains("· lag 0"),
            "{expected} on the page:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn three_hosts_take_orders_at_once_and_agree_on_everything() {
    let nats = Nats::start();
    let hosts: Vec<TestServer> = (1..=3)
        .map(|i| host(&nats, DataDir::new(), &format!("h{i}")))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    writer(&all);
    let product = hosts[1].register_product("shared", 10_000);
    settle_all(&all);
    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(
        Targets::of(&hosts.iter().collect::<Vec<_>>()),
        product,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let Load {
        acknowledged,
        failures,
        ..
    } = load.join().unwrap();
    eprintln!(
        "3 hosts: {} orders acknowledged, failed: {failures:?}",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 30, "{}", acknowledged.len());
    assert_eq!(failures, Vec::<String>::new());
    settle_all(&all);
    assert_consistent(&all, &acknowledged, &BTreeMap::from([(product, 10_000)]));
    shows_its_part(&hosts);
    // Reads see the writes of the host that answered, at once.
    for h in &hosts {
        let id = h.order(product, 1)["id"].as_u64().unwrap();
        assert_eq!(h.get(&format!("/orders/{id}")).status, 200);
    }
}

#[test]
fn killing_the_writer_under_load_loses_no_acknowledged_order() {
    let nats = Nats::start();
    let mut hosts: Vec<Option<TestServer>> = (1..=3)
        .map(|i| Some(host(&nats, DataDir::new(), &format!("h{i}"))))
        .collect();
    let w = writer(&hosts.iter().flatten().collect::<Vec<_>>());
    let product = hosts[w].as_ref().unwrap().register_product("shared", 100_000);
    settle_all(&hosts.iter().flatten().collect::<Vec<_>>());

    // Load goes to the two other hosts; the writer is killed in the middle of it.
    let others: Vec<&TestServer> = (0..3)
        .filter(|i| *i != w)
        .map(|i| hosts[i].as_ref().unwrap())
        .collect();
    let others = Targets::of(&others);
    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(others, product, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let killed_name = format!("h{}", w + 1);
    let dir = hosts[w].take().unwrap().kill();
    let killed_at = Instant::now();
    let survivors: Vec<&TestServer> = hosts.iter().flatten().collect();
    let new_writer = writer(&survivors);
    let takeover = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let load = load.join().unwrap();
    let after = load.times.iter().filter(|t| **t > killed_at + takeover).count();
    let Load {
        acknowledged,
        failures,
        ..
    } = load;
    eprintln!(
        "writer {killed_name} killed: {} took over after {takeover:?}; {} orders acknowledged, \
         {after} of them after the takeover, failed: {failures:?}",
        cluster_status(survivors[new_writer])["host"],
        acknowledged.len()
    );
    assert!(after > 0, "orders go on after the takeover");
    // Units in flight to the killed writer are sent again, with their ids, to the new one:
    // none fails, and the checks below show none was lost or doubled.
    assert_eq!(failures, Vec::<String>::new());
    assert!(
        takeover < Duration::from_secs(10),
        "within the lease time: {takeover:?}"
    );
    settle_all(&survivors);
    assert_consistent(&survivors, &acknowledged, &BTreeMap::from([(product, 100_000)]));

    // The killed host comes back on its data, catches up and serves again.
    hosts[w] = Some(host(&nats, dir, &killed_name));
    let all: Vec<&TestServer> = hosts.iter().flatten().collect();
    settle_all(&all);
    assert_consistent(&all, &acknowledged, &BTreeMap::from([(product, 100_000)]));
    let back = hosts[w].as_ref().unwrap();
    let id = back.order(product, 1)["id"].as_u64().unwrap();
    assert_eq!(back.get(&format!("/orders/{id}")).status, 200);
}

#[test]
fn the_log_leader_stepping_down_and_a_nats_server_killed_under_load_lose_nothing() {
    let mut nats = Nats::start();
    let hosts: Vec<TestServer> = (1..=3)
        .map(|i| host(&nats, DataDir::new(), &format!("h{i}")))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    writer(&all);
    let product = hosts[0].register_product("shared", 100_000);
    settle_all(&all);
    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(
        Targets::of(&hosts.iter().collect::<Vec<_>>()),
        product,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let answer = nats.api("STREAM.LEADER.STEPDOWN.CARSHARE_LOG");
    assert_eq!(answer["success"], true, "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    // Now the hardest case: the server leading the log's stream dies.
    let leader = nats.log_leader();
    nats.kill(leader);
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    let load = load.join().unwrap();
    let longest_stall = load.longest_stall();
    let Load {
        acknowledged,
        failures,
        ..
    } = load;
    eprintln!(
        "log leader stepped down, then n{leader} killed: {} orders acknowledged, longest stall \
         {longest_stall:?}, failed: {failures:?}",
        acknowledged.len()
    );
    // Commits waited for the elections instead of failing. A request or reply lost with the
    // killed server (core NATS delivers at most once) is sent again with the unit's id.
    assert_eq!(failures, Vec::<String>::new());
    assert!(
        longest_stall < Duration::from_secs(15),
        "commits stalled for {longest_stall:?}"
    );
    settle_all(&all);
    assert_consistent(&all, &acknowledged, &BTreeMap::from([(product, 100_000)]));
    // Commits go on with two of three servers, and after the third is back.
    for h in &hosts {
        h.order(product, 1);
    }
    nats.restart(leader);
    for h in &hosts {
        h.order(product, 1);
    }
}

/// Waits until every host runs `version` of `name`.
fn all_run(hosts: &[&TestServer], name: &str, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hosts.iter().all(|h| h.context(name)["version"] == version) {
        assert!(
            Instant::now() < deadline,
            "not every host runs {name} {version}: {:?}",
            hosts
                .iter()
                .map(|h| h.context(name)["version"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_swap_and_a_rollback_on_one_host_switch_every_host_at_one_point_of_the_log() {
    let nats = Nats::start();
    let auditor = format!("auditor={}", TestComponent::Auditor.path());
    let hosts: Vec<TestServer> = (1..=3)
        .map(|i| host_with(&nats, DataDir::new(), &format!("h{i}"), &["--context", &auditor]))
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    let w = writer(&all);
    let product = hosts[0].register_product("shared", 100_000);
    settle_all(&all);
    all_run(&all, "auditor", "0.9.0");

    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(
        Targets::of(&hosts.iter().collect::<Vec<_>>()),
        product,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));
    // The swap is made on a host that does not write: it goes through the log like any unit.
    let v2 = std::fs::read(TestComponent::AuditorV2.path()).unwrap();
    let r = hosts[(w + 1) % 3].admin_with("PUT", "/admin/contexts/auditor", &v2);
    assert_eq!(r.status, 200, "{}", r.body);
    all_run(&all, "auditor", "2.0.0");
    std::thread::sleep(Duration::from_secs(1));
    let r = hosts[(w + 2) % 3].admin("POST", "/admin/contexts/auditor/rollback");
    assert_eq!(r.status, 200, "{}", r.body);
    all_run(&all, "auditor", "0.9.0");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let Load {
        acknowledged,
        failures,
        ..
    } = load.join().unwrap();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "no request failed during the swaps"
    );
    settle_all(&all);
    assert_consistent(&all, &acknowledged, &BTreeMap::from([(product, 100_000)]));

    // Every order was audited once, and in log order the versions switch exactly twice.
    let audits = hosts[0].get("/audits").json();
    for h in &hosts[1..] {
        assert_eq!(
            h.get("/audits").json(),
            audits,
            "every host holds the same audits"
        );
    }
    let versions: Vec<String> = hosts[0]
        .events_paged()
        .iter()
        .filter(|e| e["eventType"] == "Ordered")
        .map(|e| {
            let id = e["payload"]["id"].to_string();
            audits["by"][&id]
                .as_str()
                .unwrap_or_else(|| panic!("order {id} was not audited"))
                .to_string()
        })
        .collect();
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for v in &versions {
        match runs.last_mut() {
            Some((last, n)) if *last == v.as_str() => *n += 1,
            _ => runs.push((v.as_str(), 1)),
        }
    }
    eprintln!("audits in log order, by version: {runs:?}");
    assert_eq!(
        runs.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        ["0.9.0", "2.0.0", "0.9.0"],
        "one switch point for the swap and one for the rollback"
    );
}
