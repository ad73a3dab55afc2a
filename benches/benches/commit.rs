//! The unit-of-work commit: one unit at a time (every commit pays its own fsync) against many
//! concurrent units (group commit: they share fsyncs). Each unit writes one key and publishes
//! one event, like a small request. `partitions/N` spreads 128 concurrent units over N
//! partitions, each with its own writer: the writers' group-commit rate together, as N grows.

use std::time::{Duration, Instant};

use carshare_core::{Log, LogBuilder, Partitions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn unit(log: &Log, i: u64) -> carshare_core::Unit {
    let mut u = log.begin().unwrap();
    u.set(
        "order",
        &format!("orders/{i:020}"),
        br#"{"id":1,"qty":1}"#.to_vec(),
    );
    u.publish(
        "order",
        "Ordered",
        Some(i.to_string()),
        json!({"id": i, "productId": 1, "qty": 1}),
    );
    u
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("bench.redb")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("unit_commit");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(8));
    let mut n = 0u64;
    g.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            n += 1;
            log.commit_blocking(unit(&log, n)).unwrap()
        })
    });
    for concurrency in [16u64, 128] {
        g.bench_function(format!("concurrent_{concurrency}"), |b| {
            b.iter_custom(|iters| concurrently(&rt, iters, concurrency, |_| log.clone()))
        });
    }
    g.finish();
}

/// Commits `iters` units from `concurrency` tasks, task `t` into `log_of(t)`; how long it took.
fn concurrently(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    concurrency: u64,
    log_of: impl Fn(u64) -> Log,
) -> Duration {
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let log = log_of(t);
                tokio::spawn(async move {
                    let mut i = t;
                    while i < iters {
                        let u = unit(&log, 1_000_000_000 + i);
                        log.commit(u).await.unwrap();
                        i += concurrency;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    start.elapsed()
}

/// 128 units in flight at any time, unit `i` in partition `i % N`, for N = 1, 2, 4.
fn partitions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("unit_commit_partitions");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(8));
    for n in [1u32, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let parts = Partitions::open(dir.path(), n, |_| LogBuilder::default()).unwrap();
        let concurrency = 128u64;
        g.bench_function(format!("{n}"), |b| {
            b.iter_custom(|iters| {
                concurrently(&rt, iters, concurrency, |t| {
                    parts.log((t % u64::from(n)) as u32).clone()
                })
            })
        });
        parts.close();
    }
    g.finish();
}

criterion_group!(benches, commit, partitions);
criterion_main!(benches);
