//! How long a hot swap takes, from the call to the new version serving a request: with the
//! compiled component in the on-disk cache (the usual case: a version seen before, e.g. a
//! rollback, or a restart), and without (a version never compiled on this machine).

use std::time::Duration;

use carshare_benches::{built_in, retagged, runtime, tokio};
use carshare_host::Request;
use criterion::{Criterion, criterion_group, criterion_main};

fn swap(c: &mut Criterion) {
    let rt = tokio();
    // The same order context twice, told apart by a custom section: every swap installs other
    // bytes than the running ones, as a real new version would be.
    let v1 = built_in("order").to_vec();
    let v2 = retagged(&v1, "v2");
    let mut g = c.benchmark_group("swap_order_until_serving");
    g.sample_size(20).measurement_time(Duration::from_secs(15));
    for cached in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(&rt, dir.path(), cached);
        let mut next_is_v2 = true;
        g.bench_function(if cached { "cached" } else { "compiled" }, |b| {
            b.iter(|| {
                let bytes = if next_is_v2 { &v2 } else { &v1 };
                next_is_v2 = !next_is_v2;
                rt.block_on(runtime.swap("order", bytes)).unwrap();
                let served = rt
                    .block_on(runtime.handle(Request::new("GET", "/orders?size=1", "http://b")))
                    .unwrap();
                assert_eq!(served.context, "order");
            })
        });
        let contexts = runtime.contexts().unwrap();
        let order = contexts.iter().find(|c| c.name == "order").unwrap();
        assert!(
            order.can_roll_back,
            "the benchmark swapped between two components"
        );
        rt.block_on(runtime.shutdown());
    }
    g.finish();
}

criterion_group!(benches, swap);
criterion_main!(benches);
