//! Real abuse against the real server: floods of idle connections (from one client and from
//! many), errors on keep-alive connections, and faults whose engine text must stay in the log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{Resp, TestComponent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream as AsyncStream};

/// Reads one response (with a `content-length`) from a keep-alive connection; `None` when the
/// server closed it instead.
fn read_response(s: &mut TcpStream) -> Option<Resp> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = crate::common::parse(&raw[..end + 4]);
            let len: usize = head.header("content-length").map_or(0, |v| v.parse().unwrap());
            if raw.len() >= end + 4 + len {
                return Some(crate::common::parse(&raw[..end + 4 + len]));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn send(s: &mut TcpStream, method: &str, path: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Whether the server has closed `s` (a read sees the end, or a reset).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn a_reply_on_a_connection_about_to_close_says_so_and_others_keep_it_open() {
    let s = TestServer::start(&[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A body the server reads, then refuses: the connection carries on.
    send(
        &mut c,
        "POST",
        "/orders",
        "Content-Type: application/json\r\n",
        b"{nope",
    );
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("connection"), None);
    send(&mut c, "GET", "/orders/999", "", b"");
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.header("connection"), None);
    send(&mut c, "GET", "/health/live", "", b"");
    assert_eq!(read_response(&mut c).unwrap().status, 200, "still open");

    // A body refused before it is read (declared too large) leaves the connection unusable:
    // the reply says it closes, and it does.
    let head = "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n";
    c.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut c));

    // So does an admin request refused before its body is read.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(
        &mut c,
        "PUT",
        "/admin/contexts/order",
        "Authorization: Bearer wrong\r\n",
        b"xx",
    );
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut c));
}

#[test]
fn fault_replies_carry_no_engine_text_and_the_log_keeps_it() {
    let hog = format!("hog={}", TestComponent::MemoryHog.path());
    let s = TestServer::start(&["--context", &hog, "--memory-limit-mb", "16"]);
    let product = s.register_product("test1", 10);
    let mut bodies = Vec::new();
    let r = s.get("/hogs/eat");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (500, Some("context_fault"))
    );
    bodies.push(r.body);
    // A trapping payment reaches the client through order's own error: the same rule holds.
    let trapping = std::fs::read(TestComponent::PaymentTrapping.path()).unwrap();
    let swapped = s.admin_with("PUT", "/admin/contexts/payment", &trapping);
    assert_eq!(swapped.status, 200, "{}", swapped.body);
    let r = s.post("/orders", &format!(r#"{{"productId":{product},"qty":1}}"#));
    assert_eq!(r.status, 503, "{}", r.body);
    bodies.push(r.body);
    for body in &bodies {
        for engine_text in ["backtrace", "wasm trap", "0x", "unreachable", ".wasm", "!"] {
            assert!(!body.contains(engine_text), "{engine_text:?} in {body}");
        }
        assert!(body.contains("the server log has the details"), "{body}");
    }
    let (_, log, _) = s.terminate();
    assert!(
        log.iter()
            .any(|l| l.contains("backtrace") || l.contains("wasm trap")),
        "the engine's detail is logged: {log:?}"
    );
}

/// Opens `n` keep-alive connections from `source`, each after one answered request, and
/// returns those the server kept (the others it closed at once).
async fn idle_connections(addr: SocketAddr, source: [u8; 4], n: usize) -> Vec<AsyncStream> {
    let mut kept = Vec::new();
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let mut c = socket.connect(addr).await.unwrap();
        let ok = async {
            c.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
                .await?;
            let mut buf = [0u8; 512];
            let n = c.read(&mut buf).await?;
            Ok::<_, std::io::Error>(n > 0 && buf.starts_with(b"HTTP/1.1 200"))
        };
        if tokio::time::timeout(Duration::from_secs(10), ok)
            .await
            .is_ok_and(|r| r.unwrap_or(false))
        {
            kept.push(c);
        }
    }
    kept
}

/// How long a new client at 127.0.0.1 waits for a business answer.
fn a_newcomer_is_served(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let r = crate::common::request(addr, "GET", "/orders?size=1", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_keep_a_new_client_waiting() {
    let s = TestServer::start(&[]);
    let idle_rss = s.rss_kib();
    let mut held = Vec::new();
    // 40 client addresses with 250 connections each: under the per-client cap.
    for i in 0..40u8 {
        held.extend(idle_connections(s.addr, [127, 0, 0, 10 + i], 250).await);
    }
    assert_eq!(held.len(), 10_000, "every connection was taken");
    let addr = s.addr;
    let waits: Vec<Duration> =
        tokio::task::spawn_blocking(move || (0..20).map(|_| a_newcomer_is_served(addr)).collect())
            .await
            .unwrap();
    let mut sorted = waits.clone();
    sorted.sort();
    eprintln!(
        "with {} idle connections open: a new client served in median {:?}, worst {:?}; \
         server RSS {} MiB idle, {} MiB holding them",
        held.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        idle_rss / 1024,
        s.rss_kib() / 1024
    );
    assert!(sorted[sorted.len() - 1] < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_connections_gets_its_share_and_everyone_else_is_served() {
    let s = TestServer::start(&[]);
    let held = idle_connections(s.addr, [127, 0, 0, 2], 1_100).await;
    assert_eq!(held.len(), 1_024, "the per-client cap");
    let addr = s.addr;
    let wait = tokio::task::spawn_blocking(move || a_newcomer_is_served(addr))
        .await
        .unwrap();
    eprintln!("one client holding 1,024 connections: a new client served in {wait:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_connection_limit_idle_connections_make_room() {
    let s = TestServer::start(&["--max-connections", "100"]);
    let mut held = Vec::new();
    for i in 0..4u8 {
        held.extend(idle_connections(s.addr, [127, 0, 0, 20 + i], 25).await);
    }
    assert_eq!(held.len(), 100);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The server is full of idle connections: a newcomer is served, and the longest idle
    // connections were closed for it, down to the low-water mark.
    let addr = s.addr;
    tokio::task::spawn_blocking(move || a_newcomer_is_served(addr))
        .await
        .unwrap();
    let mut closed = 0;
    for c in &mut held {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(20), c.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 20, "{closed} idle connections were closed");
    assert!(held.len() - closed <= 80, "down to the low-water mark");
}

/// Reads answered by the product context in `window`, from 4 clients.
fn product_reads(addr: SocketAddr, window: Duration) -> u64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut n = 0;
                    while started.elapsed() < window {
                        assert_eq!(
                            crate::common::request(addr, "GET", "/products/1", &[], b"").status,
                            200
                        );
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    })
}

/// What hammering a misbehaving context's route did to the others: the share of their
/// throughput they kept, and the hammered route's statuses (with bodies).
struct Hammered {
    /// Over the whole 6 s of hammering, cut-off included.
    share: f64,
    /// Over its last 4 s, once the breaker had (in these tests) opened.
    share_after: f64,
    alone: u64,
    during: u64,
    statuses: Vec<(u16, Duration, String)>,
}

/// Hammers `route` from 8 clients for 6 s while 4 others read a product, after measuring the
/// readers alone for 2 s.
fn hammer(s: &TestServer, route: &str) -> Hammered {
    let addr = s.addr;
    let baseline = product_reads(addr, Duration::from_secs(2));
    // Each client asks again soon, but does not spin: 8 of them still ask for far more CPU
    // than the machine has (each request may burn its whole deadline). The load generator
    // shares the server's two cores: the figure is a floor.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hammer: Vec<_> = (0..8)
        .map(|_| {
            let (stop, statuses, route) = (stop.clone(), statuses.clone(), route.to_string());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = crate::common::request(addr, "GET", &route, &[], b"");
                    statuses
                        .lock()
                        .unwrap()
                        .push((r.status, started.elapsed(), r.body));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let first = product_reads(addr, Duration::from_secs(2));
    let after = product_reads(addr, Duration::from_secs(4));
    let during = first + after;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammer {
        h.join().unwrap();
    }
    let statuses = std::mem::take(&mut *statuses.lock().unwrap());
    Hammered {
        share: (during as f64 / 6.0) / (baseline as f64 / 2.0),
        share_after: (after as f64 / 4.0) / (baseline as f64 / 2.0),
        alone: baseline / 2,
        during: during / 6,
        statuses,
    }
}

impl Hammered {
    fn report(&self, what: &str) {
        let faults = self.statuses.iter().filter(|(st, ..)| *st == 500).count();
        let cut_off = self.statuses.iter().filter(|(st, ..)| *st == 503).count();
        eprintln!(
            "with {what} hammered, the other contexts kept {:.0} % of their throughput ({} reads/s \
             alone, {} during: {faults} faults, then {cut_off} requests refused at once); \
             {:.0} % in the last 4 s",
            100.0 * self.share,
            self.alone,
            self.during,
            100.0 * self.share_after,
        );
    }

    /// Asserts the misbehaving context was cut off by its breaker after three calls that used
    /// up a limit (plus those already running then: at most its share of 4).
    fn assert_cut_off(&self) {
        let faults = self.statuses.iter().filter(|(st, ..)| *st == 500).count();
        let cut_off: Vec<_> = self.statuses.iter().filter(|(st, ..)| *st == 503).collect();
        assert!(
            (3..=3 + 4).contains(&faults),
            "three used-up limits open the breaker: {faults} faults"
        );
        assert!(!cut_off.is_empty(), "the misbehaving context was cut off");
        for (_, _, body) in &cut_off {
            assert!(
                body.contains("circuit is open"),
                "refused without running: {body}"
            );
        }
    }
}

#[test]
fn a_context_that_keeps_hitting_its_deadline_is_cut_off_and_the_others_go_on() {
    let looper = format!("looper={}", TestComponent::Looping.path());
    let s = TestServer::start(&["--context", &looper, "--call-deadline-ms", "200"]);
    s.register_product("test1", 10);
    let h = hammer(&s, "/loops/spin");
    h.report("a context looping until its deadline");
    h.assert_cut_off();
    let looper = s.context("looper");
    assert_eq!(looper["breaker"]["state"], "open", "{looper}");
    // Only the looper's breaker opened; the business is untouched.
    assert_eq!(s.context("product")["breaker"]["state"], "closed");
    assert_eq!(
        s.get("/loops/ok").status,
        503,
        "its fast answer until the breaker lets probes in"
    );
    assert_eq!(s.post("/orders", r#"{"productId":1,"qty":1}"#).status, 201);
}

#[test]
fn a_context_that_keeps_running_out_of_memory_is_cut_off_and_the_others_go_on() {
    let hog = format!("hog={}", TestComponent::MemoryHog.path());
    let s = TestServer::start(&["--context", &hog, "--memory-limit-mb", "64"]);
    s.register_product("test1", 10);
    let h = hammer(&s, "/hogs/eat");
    h.report("a context eating memory until its limit");
    h.assert_cut_off();
    assert_eq!(s.context("hog")["breaker"]["state"], "open");
    assert_eq!(s.context("product")["breaker"]["state"], "closed");
    assert_eq!(s.post("/orders", r#"{"productId":1,"qty":1}"#).status, 201);
}
