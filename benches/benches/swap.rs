//! How long a hot swap takes, from the call to the new version serving a request: with the
//! compiled component in the on-disk cache (the usual case: a version seen before, e.g. a
//! rollback, or a restart), and without (a version never compiled on this machine).

use std::time::Duration;

use carshare_core::Log;
use carshare_host::{Request, Runtime, RuntimeOptions, WasmEngine, artifacts};
use criterion::{Criterion, criterion_group, criterion_main};

fn runtime(rt: &tokio::runtime::Runtime, dir: &std::path::Path, cached: bool) -> Runtime {
    rt.block_on(async {
        let log = Log::open(dir.join("bench.redb")).unwrap();
        let cache = dir.join("cache");
        let engine = WasmEngine::new(cached.then_some(cache.as_path())).unwrap();
        let options = RuntimeOptions {
            component_dir: Some(dir.join("contexts")),
            ..RuntimeOptions::default()
        };
        let runtime = Runtime::new(log, engine, options).unwrap();
        for (name, bytes) in artifacts::DEFAULT_CONTEXTS {
            runtime.load(name, bytes).unwrap();
        }
        runtime
    })
}

fn swap(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let v1 = artifacts::DEFAULT_CONTEXTS
        .iter()
        .find(|(n, _)| *n == "order")
        .unwrap()
        .1
        .to_vec();
    let v2 = std::fs::read(artifacts::ORDER_V2).unwrap();
    let mut g = c.benchmark_group("swap_order_until_serving");
    g.sample_size(20).measurement_time(Duration::from_secs(15));
    for cached in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(&rt, dir.path(), cached);
        let mut next_is_v2 = true;
        g.bench_function(if cached { "cached" } else { "compiled" }, |b| {
            b.iter(|| {
                let (bytes, version) = if next_is_v2 {
                    (&v2, "2.0.0")
                } else {
                    (&v1, "0.1.0")
                };
                next_is_v2 = !next_is_v2;
                runtime.swap("order", bytes).unwrap();
                let served = rt
                    .block_on(runtime.handle(Request::new("GET", "/orders?size=1", "http://b")))
                    .unwrap();
                assert_eq!(served.version, version);
            })
        });
        rt.block_on(runtime.shutdown());
    }
    g.finish();
}

criterion_group!(benches, swap);
criterion_main!(benches);
