//! What the benchmarks share: a tokio runtime shaped like the server's (two workers, as this
//! machine has two cores), and a [`Runtime`] running the built-in contexts on a fresh data
//! directory, so each bench measures its subject and not its own setup code.

use std::path::Path;

use carshare_core::Log;
use carshare_host::{DEFAULT_CONTEXTS, Runtime, RuntimeOptions, WasmEngine};

/// A multi-threaded tokio runtime with two workers.
pub fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A runtime with every built-in context loaded, its database in `dir`. Compiled components
/// are cached in `dir/cache` when `cache` is true; otherwise every load compiles.
pub fn runtime(rt: &tokio::runtime::Runtime, dir: &Path, cache: bool) -> Runtime {
    rt.block_on(async {
        let log = Log::open(dir.join("bench.redb")).expect("open the log");
        let cache_dir = dir.join("cache");
        let engine = WasmEngine::new(cache.then_some(cache_dir.as_path())).expect("an engine");
        let options = RuntimeOptions {
            component_dir: Some(dir.join("contexts")),
            ..RuntimeOptions::default()
        };
        let runtime = Runtime::new(log, engine, options).expect("a runtime");
        for (name, bytes) in DEFAULT_CONTEXTS {
            runtime.load(name, bytes).await.expect("a built-in context loads");
        }
        runtime
    })
}

/// The built-in component of context `name`.
pub fn built_in(name: &str) -> &'static [u8] {
    DEFAULT_CONTEXTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no built-in context {name}"))
}

/// `component` with a custom section named `carshare-bench` holding `tag` appended: the same
/// code, but other bytes, so the compile cache sees a component it has never compiled.
pub fn retagged(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"carshare-bench";
    let mut payload = leb128(name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(payload.len() as u64));
    out.extend(payload);
    out
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
