//! carshare-load: an HTTP load generator for carshare (and for `carshare-ceiling`).
//!
//! Closed loop (the default): `--connections` keep-alive connections each send a request as
//! soon as the previous one is answered, until `--requests` are done or `--seconds` pass.
//! Open loop (`--rate N`): requests are due at a constant N per second whatever the server
//! does, spread over the connections, and each latency is measured from the moment its request
//! was due, so time spent queueing behind a slow server counts (no coordinated omission). The
//! requests of each millisecond are due together at its start, and a thread of its own
//! releases them on time (tokio's timer would release each up to a millisecond late).
//!
//! `{n}` in the body is replaced by the request's number. With `--wait-caught-up`, after the
//! load it polls the admin API (token from CARSHARE_ADMIN_TOKEN) until every running
//! subscriber has handled every event, and says how long that took. The last line is a
//! summary for scripts: `result requests=.. seconds=.. rps=.. p50_ms=.. p99_ms=.. ...`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Parser, Clone)]
#[command(about = "Load for carshare: closed loop, or open loop at a constant rate")]
struct Args {
    /// The server (loopback addresses only: this is a load generator); several, separated by
    /// commas (the hosts of a cluster), share the connections in turn
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
    /// Keep-alive connections
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests to send at most (closed loop)
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Seconds to run at most
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Open loop: requests due per second
    #[arg(long)]
    rate: Option<u64>,
    /// HTTP method
    #[arg(long, default_value = "POST")]
    method: String,
    /// Path
    #[arg(long, default_value = "/orders")]
    path: String,
    /// Body; `{n}` is replaced by the request's number
    #[arg(long, default_value = r#"{"productId":1,"qty":1}"#)]
    body: String,
    /// After the load, wait until every subscriber has caught up, and say how long it took
    #[arg(long)]
    wait_caught_up: bool,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    errors: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.errors += other.errors;
    }
}

/// One keep-alive connection, reconnected after an error.
struct Conn {
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn send(&mut self, args: &Args, n: u64, tally: &mut Tally, started: Instant) {
        if self.sender.is_none() {
            match TcpStream::connect(&self.host).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    match http1::handshake(TokioIo::new(s)).await {
                        Ok((tx, conn)) => {
                            tokio::spawn(conn);
                            self.sender = Some(tx);
                        }
                        Err(_) => {
                            tally.errors += 1;
                            return;
                        }
                    }
                }
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return;
                }
            }
        }
        let body = args.body.replace("{n}", &n.to_string());
        let req = hyper::Request::builder()
            .method(args.method.as_str())
            .uri(args.path.as_str())
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let tx = self.sender.as_mut().expect("connected above");
        match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                tally.latencies.push(started.elapsed());
                *tally.statuses.entry(status).or_insert(0) += 1;
            }
            Err(_) => {
                tally.errors += 1;
                self.sender = None;
            }
        }
    }
}

/// Each connection sends its next request when the last is answered.
async fn closed_loop(args: Arc<Args>, hosts: Vec<String>) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let connections = args.connections.max(1);
    // Exactly `requests` in all: the first `requests % connections` connections send one more.
    let share = |c: usize| args.requests / connections + usize::from(c < args.requests % connections);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (args, host) = (args.clone(), hosts[c % hosts.len()].clone());
            let first: usize = (0..c).map(share).sum();
            let mine = share(c);
            tokio::spawn(async move {
                let mut conn = Conn { host, sender: None };
                let mut tally = Tally::default();
                let mut i = 0;
                while i < mine && Instant::now() < deadline {
                    let n = (first + i) as u64;
                    conn.send(&args, n, &mut tally, Instant::now()).await;
                    i += 1;
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        match t.await {
            Ok(tally) => all.merge(tally),
            Err(_) => all.errors += 1,
        }
    }
    all
}

/// Requests fall due at a constant rate; free connections take them in order. A request
/// waiting for a connection waits on the clock: its latency runs from when it was due.
async fn open_loop(args: Arc<Args>, hosts: Vec<String>, rate: u64) -> Tally {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|c| {
            let (args, host, rx) = (args.clone(), hosts[c % hosts.len()].clone(), rx.clone());
            tokio::spawn(async move {
                let mut conn = Conn { host, sender: None };
                let mut tally = Tally::default();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((n, due)) = next else {
                        return tally;
                    };
                    conn.send(&args, n, &mut tally, due).await;
                }
            })
        })
        .collect();
    let total = (rate * args.seconds).min(args.requests as u64);
    // The requests are released by a thread of their own: tokio's timer rounds every deadline
    // up to the next whole millisecond, so a request released by it went out up to 1 ms after
    // it was due, and that delay (the load generator's, not the server's) counted in its
    // latency. The thread sleeps as precisely as the kernel's timers (tens of microseconds).
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let start = Instant::now();
            for n in 0..total {
                let due = start + due_after_start(n, rate);
                if let Some(early) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(early);
                }
                if tx.send((n, due)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the pacer thread");
    let mut all = Tally::default();
    for t in tasks {
        match t.await {
            Ok(tally) => all.merge(tally),
            Err(_) => all.errors += 1,
        }
    }
    // The connections ran out of requests: the pacer has released its last one.
    if pacer.join().is_err() {
        all.errors += 1;
    }
    all
}

/// When request `n` (from 0) of an open loop at `rate` per second falls due, counted from the
/// start: at the start of the millisecond its even spacing puts it in. The requests of one
/// millisecond go out together: released one by one (every 200 µs at 5,000/s), they cost the
/// load generator twice the CPU, taken from the server on the same machine.
fn due_after_start(n: u64, rate: u64) -> Duration {
    let millis = u128::from(n) * 1000 / u128::from(rate.max(1));
    Duration::from_millis(millis.try_into().unwrap_or(u64::MAX))
}

/// Polls the admin API until no running subscriber lags; how long that took.
async fn caught_up(host: &str) -> Result<Duration, String> {
    let token = std::env::var("CARSHARE_ADMIN_TOKEN").map_err(|_| "set CARSHARE_ADMIN_TOKEN")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let stream = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
        let (mut tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/admin/contexts")
            .header("host", host)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let lagging = v["contexts"]
            .as_array()
            .ok_or("no contexts in the admin answer")?
            .iter()
            .any(|c| c["state"] == "running" && c["subscriber"]["lag"].as_u64().unwrap_or(0) > 0);
        if !lagging {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("subscribers did not catch up within 120 s".into())
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let hosts: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim_start_matches("http://").trim_end_matches('/').to_string())
        .collect();
    let start = Instant::now();
    let mut tally = match args.rate {
        Some(rate) => open_loop(args.clone(), hosts.clone(), rate).await,
        None => closed_loop(args.clone(), hosts.clone()).await,
    };
    let elapsed = start.elapsed().as_secs_f64();
    tally.latencies.sort();
    let lat = &tally.latencies;
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rps = lat.len() as f64 / elapsed;
    let mode = match args.rate {
        Some(r) => format!("open loop at {r}/s, latency from when each request was due"),
        None => format!("closed loop, {} connections", args.connections),
    };
    println!("{mode}");
    println!("requests: {} in {elapsed:.2}s = {rps:.0} req/s", lat.len());
    println!(
        "statuses: {:?}, connection errors: {}",
        tally.statuses, tally.errors
    );
    println!(
        "latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    let mut summary = format!(
        "result requests={} seconds={elapsed:.3} rps={rps:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={}",
        lat.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        tally.errors
    );
    for (status, n) in &tally.statuses {
        summary.push_str(&format!(" status_{status}={n}"));
    }
    if args.wait_caught_up {
        // The first URL's host is asked: in a cluster every host sees the cursors the
        // writer's subscribers commit.
        match caught_up(&hosts[0]).await {
            Ok(d) => {
                println!(
                    "every subscriber caught up {:.2} s after the load",
                    d.as_secs_f64()
                );
                summary.push_str(&format!(" caught_up_s={:.3}", d.as_secs_f64()));
            }
            Err(e) => {
                eprintln!("carshare-load: {e}");
                summary.push_str(" caught_up_s=never");
            }
        }
    }
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::due_after_start;
    use std::time::Duration;

    fn due_ms(n: u64, rate: u64) -> u64 {
        due_after_start(n, rate).as_millis() as u64
    }

    #[test]
    fn requests_fall_due_evenly_at_the_start_of_their_millisecond() {
        // 5,000/s: five at the start of each millisecond.
        let first: Vec<u64> = (0..12).map(|n| due_ms(n, 5000)).collect();
        assert_eq!(first, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]);
        assert_eq!(due_ms(49_999, 5000), 9_999);
        // Slower than one a millisecond: each at its own time, rounded down.
        assert_eq!(due_ms(1, 100), 10);
        assert_eq!(due_ms(7, 100), 70);
        assert_eq!(due_ms(1, 3), 333);
        assert_eq!(due_ms(2, 3), 666);
        assert_eq!(due_ms(3, 3), 1000);
        // No drift over a long run: request n of r per second is due at n/r seconds.
        assert_eq!(due_after_start(3_600_000, 1000), Duration::from_secs(3600));
        assert_eq!(due_ms(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn a_rate_of_zero_counts_as_one_a_second() {
        assert_eq!(due_ms(2, 0), 2000);
    }
}
