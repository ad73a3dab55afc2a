//! The one fixture every test uses: [`TestServer`] starts the real `carshare` binary on
//! 127.0.0.1:0 on a data directory it owns (or one handed over from a server before it, for
//! restart tests), and talks to it over real HTTP/1.1. [`TestComponent`] names the
//! deliberately misbehaving or alternative components, built the first time a test asks; a test component
//! that no test uses is a compile error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token";

/// Every collection the built-in contexts serve.
pub const COLLECTIONS: &[&str] = &[
    "orders",
    "payments",
    "paymentCancellations",
    "deliveries",
    "cancellations",
    "products",
    "customerpages",
];

include!(concat!(env!("OUT_DIR"), "/test_components.rs"));

/// How the guests are built, shared with `host/build.rs`.
#[allow(dead_code)]
#[path = "../../build/plugins.rs"]
mod plugins;

/// Declares [`TestComponent`] from the list `host/build.rs` generates.
macro_rules! test_components {
    ($(($variant:ident, $stem:literal)),* $(,)?) => {
        /// A test component (a crate of `plugins/testing`). Every variant must be used by a
        /// test: one that is never constructed fails the build (`dead_code` is denied here).
        #[deny(dead_code)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum TestComponent {
            $(
                #[doc = concat!("`", $stem, ".wasm`")]
                $variant,
            )*
        }

        impl TestComponent {
            /// Where the component file is. The first call builds every test component (they
            /// share one cargo build), so a crate that depends on carshare never compiles them.
            pub fn path(self) -> &'static str {
                static BUILT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
                let built = BUILT.get_or_init(|| {
                    let stems: Vec<&str> = plugins::TEST_COMPONENTS.iter().map(|(_, stem)| *stem).collect();
                    let plugins_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
                    let target = Path::new(env!("CARSHARE_PLUGINS_TARGET_DIR"));
                    plugins::build(&plugins_dir, target, &stems)
                        .into_iter()
                        .map(|p| p.display().to_string())
                        .collect()
                });
                let stem = match self {
                    $(TestComponent::$variant => $stem,)*
                };
                let at = plugins::TEST_COMPONENTS
                    .iter()
                    .position(|(_, s)| *s == stem)
                    .expect("the generated list and the build's list are one list");
                &built[at]
            }
        }
    };
}

foreach_test_component!(test_components);

/// A data directory that outlives the servers started on it: a temporary one the fixture
/// owns, or one a test owns.
pub struct DataDir {
    path: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl DataDir {
    /// A fresh temporary directory, removed when the last holder drops it.
    pub fn new() -> DataDir {
        let dir = temp_dir();
        DataDir {
            path: dir.path().to_path_buf(),
            _owned: Some(dir),
        }
    }

    /// `path`, owned by the caller.
    pub fn at(path: &Path) -> DataDir {
        DataDir {
            path: path.to_path_buf(),
            _owned: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a server on this directory.
    pub fn start(self, extra: &[&str]) -> TestServer {
        TestServer::launch(self, extra, &[], true)
    }

    /// Starts a server on this directory with `env` added to its environment.
    pub fn start_env(self, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        TestServer::launch(self, extra, env, true)
    }

    /// Runs a server on this directory that must refuse to start: waits (up to `secs`) for it
    /// to exit, and hands back whether it failed, what it wrote to stderr, and the directory.
    pub fn refused(self, extra: &[&str], env: &[(&str, &str)], secs: u64) -> (bool, String, DataDir) {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let mut child = Command::new(env!("CARGO_BIN_EXE_carshare"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.path())
            .arg("--cache-dir")
            .arg(&cache)
            .args(extra)
            .envs(env.iter().copied())
            .env("CARSHARE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn carshare");
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server was to refuse to start, and still runs after {secs} s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = reader.join().unwrap();
        eprintln!("[refused server] {text}");
        (!status.success(), text, self)
    }
}

/// A running server process, with the data directory it runs on.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    dir: Option<DataDir>,
    log: mpsc::Receiver<String>,
    /// What the server logged until it was ready.
    pub startup: Vec<String>,
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl TestServer {
    /// Starts the server on a fresh data directory of its own with `extra` arguments,
    /// compiled components cached in one directory that every test shares.
    pub fn start(extra: &[&str]) -> TestServer {
        DataDir::new().start(extra)
    }

    /// Starts the server on `data_dir` with `extra` arguments and `env` added to its
    /// environment, choosing no cache directory for it.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        TestServer::launch(DataDir::at(data_dir), extra, env, false)
    }

    fn launch(dir: DataDir, extra: &[&str], env: &[(&str, &str)], shared_cache: bool) -> TestServer {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let mut args: Vec<&str> = Vec::new();
        if shared_cache {
            args.extend(["--cache-dir", cache.to_str().expect("a UTF-8 path")]);
        }
        args.extend_from_slice(extra);
        let data_dir = dir.path().to_path_buf();
        let mut command = Command::new(env!("CARGO_BIN_EXE_carshare"));
        if args.contains(&"--cluster") {
            // A cluster has one partition (until partitions spread over hosts): the suite run
            // with CARSHARE_PARTITIONS set runs its clusters as they are.
            command.env_remove("CARSHARE_PARTITIONS");
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(&args)
            .envs(env.iter().copied())
            .env("CARSHARE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn carshare");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut startup = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not become ready");
            };
            let ready = line
                .split("carshare ready on http://")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
            startup.push(line);
            if let Some(addr) = ready {
                return TestServer {
                    child,
                    addr,
                    dir: Some(dir),
                    log: rx,
                    startup,
                };
            }
        }
    }

    /// The first log line from now on (within `secs`) that contains every one of `needles`.
    pub fn log_line(&self, needles: &[&str], secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(left).ok()?;
            if needles.iter().all(|n| line.contains(n)) {
                return Some(line);
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory it runs on.
    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("the data directory").path()
    }

    /// Pauses the process (SIGSTOP): it holds its sockets and files, and does nothing.
    pub fn pause(&self) {
        Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// The server's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Kills the process with SIGKILL (no shutdown code runs); hands back its data directory.
    pub fn kill(mut self) -> DataDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.dir.take().expect("the data directory")
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully, its log lines, and
    /// its data directory.
    pub fn terminate(self) -> (bool, Vec<String>, DataDir) {
        self.signal("-TERM")
    }

    /// Sends SIGINT (Ctrl-C) and waits, like [`TestServer::terminate`].
    pub fn interrupt(self) -> (bool, Vec<String>, DataDir) {
        self.signal("-INT")
    }

    fn signal(mut self, signal: &str) -> (bool, Vec<String>, DataDir) {
        let pid = self.child.id().to_string();
        Command::new("kill").args([signal, &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        let lines: Vec<String> = self.log.try_iter().collect();
        (
            status.success(),
            lines,
            self.dir.take().expect("the data directory"),
        )
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request(method_get(), path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn admin(&self, method: &str, path: &str) -> Resp {
        self.admin_with(method, path, b"")
    }

    /// An admin request with a body.
    pub fn admin_with(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        self.request(method, path, &[("authorization", &auth)], body)
    }

    /// Every event in the log.
    /// Every event of every partition: partition 0's in log order, then partition 1's, and so
    /// on. Each says its partition.
    pub fn events(&self) -> Vec<Value> {
        (0..self.partitions()).flat_map(|p| self.events_in(p)).collect()
    }

    /// Every event of partition `p`, in log order, page by page.
    pub fn events_in(&self, p: u32) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map(|e| e["seq"].as_u64().unwrap()).unwrap_or(0);
            let r = self.admin("GET", &format!("/admin/events?after={p}:{after}&limit=1000"));
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.json()["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return all;
            }
            assert!(page.iter().all(|e| e["partition"] == p));
            all.extend(page);
        }
    }

    /// How many partitions the server runs.
    pub fn partitions(&self) -> u32 {
        let r = self.admin("GET", "/admin/events?limit=1");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["partitions"].as_u64().unwrap() as u32
    }

    /// Every cursor of context `ctx`: (the partition it is kept in, the partition whose events
    /// it goes through, where it stands).
    pub fn cursors(&self, ctx: &str) -> Vec<(u64, u64, u64)> {
        let sub = &self.context(ctx)["subscriber"];
        match sub["cursors"].as_array() {
            Some(c) if !c.is_empty() => c
                .iter()
                .map(|c| {
                    let n = |k: &str| c[k].as_u64().unwrap();
                    (n("partition"), n("source"), n("cursor"))
                })
                .collect(),
            _ => vec![(0, 0, sub["cursor"].as_u64().unwrap())],
        }
    }

    /// Moves every cursor of context `ctx` back to the start of its partition's log, so that
    /// it goes through every event again.
    pub fn rewind(&self, ctx: &str) {
        for (partition, source, _) in self.cursors(ctx) {
            let body = format!(r#"{{"seq":0,"partition":{partition},"source":{source}}}"#);
            let r = self.admin_with("POST", &format!("/admin/contexts/{ctx}/cursor"), body.as_bytes());
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["cursor"], 0);
        }
    }

    /// Polls `f` until it returns true or `secs` pass.
    pub fn wait_for(&self, secs: u64, mut f: impl FnMut(&TestServer) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The admin view of context `name`.
    pub fn context(&self, name: &str) -> Value {
        let r = self.admin("GET", "/admin/contexts");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .expect("context listed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn method_get() -> &'static str {
    "GET"
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`request`] to a server that may be gone or cut off: the error instead of a panic.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (413) and close before the whole body is sent: a failed write is
    // fine as long as the response can be read.
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read response: {e}"))?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err("the connection closed without a response".into());
    }
    Ok(parse(&raw))
}

pub fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    }
}

/// Runs the `carshare` binary with `args`, the admin token and `env`, to its end.
pub fn carshare(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_carshare"))
        .args(args)
        .envs(env.iter().copied())
        .env("CARSHARE_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run carshare")
}

/// A fresh temporary directory.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

impl TestServer {
    /// Registers a product and waits until the order context knows it.
    pub fn register_product(&self, modelname: &str, qty: i64) -> u64 {
        let r = self.post(
            "/products",
            &format!(r#"{{"modelname":"{modelname}","qty":{qty}}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["id"].as_u64().unwrap();
        self.settle();
        id
    }

    /// Waits until every running subscriber has handled every event.
    pub fn settle(&self) {
        let idle = self.wait_for(30, |s| {
            let r = s.admin("GET", "/admin/contexts");
            r.status == 200
                && r.json()["contexts"].as_array().unwrap().iter().all(|c| {
                    c["state"] != "running" || c["subscriber"].is_null() || c["subscriber"]["lag"] == 0
                })
        });
        assert!(
            idle,
            "subscribers did not catch up: {}",
            self.admin("GET", "/admin/contexts").body
        );
    }

    /// The events of the given types, in log order.
    pub fn events_of(&self, types: &[&str]) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| types.iter().any(|t| e["eventType"] == *t))
            .collect()
    }

    /// Places an order and returns its body.
    pub fn order(&self, product: u64, qty: i64) -> Value {
        let r = self.post(
            "/orders",
            &format!(r#"{{"productId":{product},"qty":{qty},"status":"order"}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()
    }

    /// `totalElements` of a collection.
    pub fn total(&self, collection: &str) -> u64 {
        let r = self.get(collection);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["page"]["totalElements"].as_u64().unwrap()
    }
}

impl TestServer {
    /// Every event in the log, however many.
    pub fn events_paged(&self) -> Vec<Value> {
        self.events()
    }

    /// Every item of a collection, page by page.
    pub fn all(&self, collection: &str) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 0.. {
            let r = self.get(&format!("/{collection}?size=1000&page={page}"));
            assert_eq!(r.status, 200, "{}", r.body);
            let body = r.json();
            all.extend(body["_embedded"][collection].as_array().unwrap().iter().cloned());
            if page + 1 >= body["page"]["totalPages"].as_u64().unwrap() {
                return all;
            }
        }
        all
    }
}

impl TestServer {
    /// The Prometheus scrape of `/metrics`.
    pub fn scrape(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        r.body
    }
}

/// The sum of the samples of `name` in a scrape whose labels include `labels` (each partition's,
/// say, when `labels` names none), 0 if there is none.
pub fn sample(scrape: &str, name: &str, labels: &str) -> f64 {
    series(scrape, name, labels).iter().map(|(_, v)| v).sum()
}

/// The samples of `name` in a scrape whose labels include `labels`: each one's labels (as
/// `a="x"` pairs) and value.
pub fn series<'a>(scrape: &'a str, name: &str, labels: &str) -> Vec<(Vec<&'a str>, f64)> {
    let wanted = split_labels(labels);
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let have = split_labels(labels);
            (metric == name && wanted.iter().all(|w| have.contains(w)))
                .then(|| (have, value.trim().parse::<f64>().unwrap()))
        })
        .collect()
}

/// `a="x",b="y"` as its pairs (label values here hold no commas).
fn split_labels(labels: &str) -> Vec<&str> {
    labels.split(',').filter(|l| !l.is_empty()).collect()
}

impl TestServer {
    /// A server with the test auditor (a subscriber that fails on demand) loaded beside the
    /// built-in contexts, parking an event after `attempts` attempts 5 ms apart.
    pub fn with_auditor(attempts: &str) -> TestServer {
        TestServer::with_auditor_and(attempts, &[])
    }

    /// [`TestServer::with_auditor`], with `extra` arguments.
    pub fn with_auditor_and(attempts: &str, extra: &[&str]) -> TestServer {
        let auditor = format!("auditor={}", TestComponent::Auditor.path());
        let mut args = vec![
            "--context",
            &auditor,
            "--event-attempts",
            attempts,
            "--event-backoff-ms",
            "5",
        ];
        args.extend_from_slice(extra);
        TestServer::start(&args)
    }

    /// Every dead letter, as `GET /admin/dead-letters` lists them.
    pub fn dead_letters(&self) -> Vec<Value> {
        let r = self.admin("GET", "/admin/dead-letters");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["deadLetters"].as_array().unwrap().clone()
    }
}

/// Asserts that `events` (as [`TestServer::events`] gives them) number each partition's events
/// from 1 without a gap.
pub fn assert_gap_free(events: &[Value]) {
    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events {
        let expected = next.entry(e["partition"].as_u64().unwrap()).or_insert(1);
        assert_eq!(e["seq"].as_u64().unwrap(), *expected, "no gap: {e}");
        *expected += 1;
    }
}
