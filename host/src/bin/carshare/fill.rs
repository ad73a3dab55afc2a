//! `carshare dev fill`: fills a data directory with orders placed through the real contexts,
//! in-process (no HTTP), as fast as the runtime takes them: for volume tests and for the
//! benchmarks that need a system with millions of rows. Each order is a real one (payment,
//! stock, delivery, the customer's view), spread over `--customers` customers; `--restocks`
//! adds that many stock changes of the product (one event each, and order's replica follows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carshare_host::{CallError, Config, DomainError, Request, RequestError, Runtime};

use crate::cli::FillArgs;

/// Orders the product can take.
const STOCK: i64 = 1_000_000_000;

/// Runs the fill; returns what to print, or an error.
pub async fn run(args: FillArgs) -> Result<String, String> {
    let mut config = Config {
        data_dir: args.data_dir.clone(),
        cache_dir: args.cache_dir.clone(),
        partitions: args.partitions.unwrap_or(1),
        ..Config::default()
    };
    if let Some(a) = args.instance_allocator {
        config.instance_allocator = a.into();
    }
    let runtime = carshare_host::open(&config).await.map_err(|e| e.to_string())?;
    let result = fill(&runtime, &args).await;
    runtime.shutdown().await;
    result
}

async fn fill(runtime: &Runtime, args: &FillArgs) -> Result<String, String> {
    let started = Instant::now();
    let base = "http://carshare.fill";
    match runtime.handle(Request::new("GET", "/products/1", base)).await {
        Ok(_) => {}
        Err(RequestError::Call(CallError::Domain(DomainError::NotFound(_)))) => {
            let mut r = Request::new("POST", "/products", base);
            r.body = format!(r#"{{"modelname":"fill","qty":{STOCK}}}"#).into_bytes();
            send(runtime, r, 201).await?;
        }
        Err(e) => return Err(e.to_string()),
    }
    let customers = args.customers.max(1);
    let orders = spread(runtime, args.orders, args.concurrency, "orders", move |n| {
        let mut r = Request::new("POST", "/orders", base);
        let customer = 1 + n % customers;
        r.body = format!(r#"{{"productId":1,"qty":1,"customerId":{customer}}}"#).into_bytes();
        (r, 201)
    })
    .await?;
    let restocks = spread(runtime, args.restocks, args.concurrency, "restocks", |n| {
        let mut r = Request::new("PATCH", "/products/1", base);
        r.body = format!(r#"{{"qty":{}}}"#, STOCK - (n % 1000) as i64).into_bytes();
        (r, 200)
    })
    .await?;
    caught_up(runtime).await?;
    Ok(format!(
        "filled {} with {orders} orders and {restocks} restocks in {:.1} s; the log holds {} events \
         in {} partition(s)",
        args.data_dir.display(),
        started.elapsed().as_secs_f64(),
        runtime.partitions().logs().iter().map(|l| l.head()).sum::<u64>(),
        runtime.partitions().count()
    ))
}

/// Sends `total` requests made by `make` from `concurrency` tasks; returns how many were sent.
async fn spread(
    runtime: &Runtime,
    total: u64,
    concurrency: usize,
    what: &'static str,
    make: impl Fn(u64) -> (Request, u16) + Send + Sync + 'static + Copy,
) -> Result<u64, String> {
    if total == 0 {
        return Ok(0);
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (runtime, next) = (runtime.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<(), String>(());
                    }
                    let (request, expected) = make(n);
                    send(&runtime, request, expected).await?;
                }
            })
        })
        .collect();
    let progress = {
        let next = next.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = next.load(Ordering::Relaxed).min(total);
                eprintln!(
                    "carshare dev fill: {done} of {total} {what} ({:.0}/s)",
                    done as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut result = Ok(total);
    for t in tasks {
        if let Err(e) = t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            result = Err(e);
        }
    }
    progress.abort();
    result
}

/// Serves `request`, retrying what a busy system asks to retry; anything but `expected` is an
/// error.
async fn send(runtime: &Runtime, request: Request, expected: u16) -> Result<(), String> {
    for _ in 0..100 {
        match runtime.handle(request.clone()).await {
            Ok(served) if served.response.status == expected => return Ok(()),
            Ok(served) => {
                return Err(format!(
                    "{} {} answered {}: {}",
                    request.method,
                    request.path,
                    served.response.status,
                    String::from_utf8_lossy(&served.response.body)
                ));
            }
            // Busy or briefly unavailable (a breaker, a full bulkhead): wait and go on.
            Err(RequestError::Contention)
            | Err(RequestError::Call(
                CallError::Busy(_)
                | CallError::CircuitOpen { .. }
                | CallError::Domain(DomainError::Unavailable(_)),
            )) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(format!("{} {}: {e}", request.method, request.path)),
        }
    }
    Err(format!("{} {} kept conflicting", request.method, request.path))
}

/// Waits until every running subscriber has handled every event.
async fn caught_up(runtime: &Runtime) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let contexts = runtime.contexts().map_err(|e| e.to_string())?;
        let lag: u64 = contexts
            .iter()
            .filter_map(|c| c.subscriber.as_ref())
            .map(|s| s.lag)
            .sum();
        if lag == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(format!("subscribers still {lag} events behind after an hour"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
