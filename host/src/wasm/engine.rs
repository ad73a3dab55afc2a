//! The one wasmtime `Engine` of the process, the `Linker` with every host interface, and
//! compilation with an on-disk cache of compiled components keyed by content hash, so a
//! restart loads machine code (~0.3 ms) instead of compiling again (~85 ms a context).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::BoundedContext;
use super::instance::InstanceState;

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A component ready to instantiate.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// Hex SHA-256 of the component's bytes.
    pub digest: String,
    /// Whether its machine code came from the cache rather than a compilation.
    pub cached: bool,
}

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceAllocator {
    /// From a pool reserved at start (the default): instantiation is fast and memory is reused,
    /// but the pool reserves terabytes of address space up front.
    #[default]
    Pooling,
    /// From the system, one instance at a time: for places that limit virtual address space
    /// (`ulimit -v`, strict overcommit, valgrind).
    OnDemand,
}

/// The engine, its linker and the compile cache.
pub struct WasmEngine {
    pub(super) engine: Engine,
    pub(super) linker: Linker<InstanceState>,
    cache_dir: Option<PathBuf>,
    compat: String,
    /// Told of every call, once set.
    pub(super) observer: std::sync::OnceLock<Arc<dyn super::CallObserver>>,
}

impl WasmEngine {
    /// An engine with epoch interruption and the pooling allocator; compiled components are
    /// cached in `cache_dir` when given.
    pub fn new(cache_dir: Option<&Path>) -> wasmtime::Result<Arc<Self>> {
        WasmEngine::with_allocator(cache_dir, InstanceAllocator::Pooling)
    }

    /// [`WasmEngine::new`] with instances allocated as `allocator` says.
    pub fn with_allocator(
        cache_dir: Option<&Path>,
        allocator: InstanceAllocator,
    ) -> wasmtime::Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Calls run on fibers; a synchronous call chain nests them, so they get room.
        config.async_stack_size(4 << 20);
        if allocator == InstanceAllocator::Pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(1000)
                .total_core_instances(6000)
                .total_memories(1000)
                .total_tables(3000)
                .max_memory_size(1 << 30)
                .max_memories_per_module(1)
                .max_tables_per_module(1);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        BoundedContext::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("carshare-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Arc::new(WasmEngine {
            engine,
            linker,
            cache_dir: cache_dir.map(Path::to_path_buf),
            compat,
            observer: std::sync::OnceLock::new(),
        }))
    }

    /// Has `observer` told how long every call into a context runs. One observer per engine:
    /// returns false (and changes nothing) if one was set before.
    pub fn observe(&self, observer: Arc<dyn super::CallObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Compiles `bytes`, or loads the cached machine code of the same bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let digest = digest_of(bytes);
        let compiled = |component, cached| Compiled {
            component,
            digest: digest.clone(),
            cached,
        };
        let Some(dir) = &self.cache_dir else {
            return Ok(compiled(Component::new(&self.engine, bytes)?, false));
        };
        let path = dir.join(format!("{digest}-{}.cwasm", self.compat));
        if path.exists() {
            // SAFETY: the file is one an engine of this configuration wrote (its name carries
            // the engine's compatibility hash and the source digest) into a cache directory of
            // this user's, written whole and renamed into place; wasmtime checks the header
            // and version before using it. Whoever can write there can run code as this user
            // already.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            match loaded {
                Ok(c) => return Ok(compiled(c, true)),
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        // Write to a temporary name and rename, so a crash never leaves half a file that a
        // later start would try to load.
        // The cache is shared by every server of this user: the temporary name is unique to
        // this process and this compilation.
        static TMP: AtomicU64 = AtomicU64::new(0);
        let n = TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        if std::fs::write(&tmp, component.serialize()?).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(compiled(component, false))
    }
}

/// The SHA-256 of a component, in hex: its digest everywhere (the compile cache, the admin
/// API, the store of contexts).
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
