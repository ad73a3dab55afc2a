//! One call into a component through the runtime, as a request takes it (route, unit of work,
//! pooled instance on a blocking thread, guest code, back): a read that commits nothing, and
//! a new order, which also calls payment synchronously and commits durably.

use std::time::Duration;

use carshare_benches::{runtime, tokio};
use carshare_host::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn call(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio();
    let runtime = runtime(&rt, dir.path(), true);
    let post = || {
        let mut r = Request::new("POST", "/orders", "http://bench");
        r.body = br#"{"productId":1,"qty":1}"#.to_vec();
        r
    };
    let mut product = Request::new("POST", "/products", "http://bench");
    product.body = br#"{"modelname":"bench","qty":1000000000}"#.to_vec();
    rt.block_on(runtime.handle(product)).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // order learns of the product
    rt.block_on(runtime.handle(post())).unwrap();

    let mut g = c.benchmark_group("component_call");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("get_order", |b| {
        b.iter(|| {
            rt.block_on(runtime.handle(Request::new("GET", "/orders/1", "http://bench")))
                .unwrap()
        })
    });
    g.bench_function("place_order_with_payment", |b| {
        b.iter(|| rt.block_on(runtime.handle(post())).unwrap())
    });
    g.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, call);
criterion_main!(benches);
