//! carshare-load: a small, bounded HTTP load generator for carshare.
//!
//! `carshare-load [--url http://127.0.0.1:8080] [--connections 32] [--requests 20000]
//!  [--seconds 30] [--path /orders] [--body '{"productId":1,"qty":1}']`
//!
//! Opens keep-alive connections, POSTs the body to the path until the request count or the
//! time is used up (whichever comes first), and prints throughput, the status counts and
//! latency percentiles. It only targets the URL it is given; use loopback addresses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    host: String,
    connections: usize,
    requests: usize,
    seconds: u64,
    path: String,
    body: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1:8080".into(),
        connections: 32,
        requests: 20_000,
        seconds: 30,
        path: "/orders".into(),
        body: r#"{"productId":1,"qty":1}"#.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag} needs a number"));
        match flag.as_str() {
            "--url" => a.host = v.trim_start_matches("http://").trim_end_matches('/').to_string(),
            "--connections" => a.connections = num(&v)?.max(1),
            "--requests" => a.requests = num(&v)?,
            "--seconds" => a.seconds = num(&v)? as u64,
            "--path" => a.path = v,
            "--body" => a.body = v,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("carshare-load: {e}");
            std::process::exit(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_conn = args.requests.div_ceil(args.connections);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (host, path, body) = (args.host.clone(), args.path.clone(), args.body.clone());
            tokio::spawn(async move { worker(&host, &path, &body, per_conn, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut errors = 0usize;
    for t in tasks {
        match t.await {
            Ok(r) => {
                latencies.extend(r.0);
                for (k, v) in r.1 {
                    *statuses.entry(k).or_default() += v;
                }
                errors += r.2;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "requests: {} in {elapsed:.2}s = {:.0} req/s",
        latencies.len(),
        latencies.len() as f64 / elapsed
    );
    println!("statuses: {statuses:?}, connection errors: {errors}");
    println!(
        "latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
}

async fn worker(
    host: &str,
    path: &str,
    body: &str,
    n: usize,
    deadline: Instant,
) -> (Vec<Duration>, BTreeMap<u16, usize>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    let mut sender = None;
    let mut done = 0;
    while done < n && Instant::now() < deadline {
        if sender.is_none() {
            match TcpStream::connect(host).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    match http1::handshake(TokioIo::new(s)).await {
                        Ok((tx, conn)) => {
                            tokio::spawn(conn);
                            sender = Some(tx);
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let tx = sender.as_mut().expect("connected above");
        let req = hyper::Request::post(path)
            .header("host", host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid request");
        let t = Instant::now();
        match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                lat.push(t.elapsed());
                *statuses.entry(status).or_insert(0) += 1;
                done += 1;
            }
            Err(_) => {
                errors += 1;
                sender = None;
            }
        }
    }
    (lat, statuses, errors)
}
