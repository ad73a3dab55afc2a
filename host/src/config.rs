//! What a server is told to be: [`Config`], with its defaults. Where the values come from (the
//! command line, `CARSHARE_*` variables, a config file) is the `carshare` binary's business.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use carshare_core::{BreakerConfig, RetryPolicy};

use crate::cluster::ClusterConfig;
use crate::wasm::{InstanceAllocator, Limits};

/// Everything `carshare serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Where compiled components are cached; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Contexts loaded from files instead of (or besides) the embedded ones: name → path.
    pub contexts: BTreeMap<String, PathBuf>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections at most from one client address.
    pub max_connections_per_client: usize,
    /// How failing events are retried before they are parked.
    pub retry: RetryPolicy,
    /// The circuit breaker and bulkhead in front of synchronous calls.
    pub breaker: BreakerConfig,
    /// Sandbox limits of particular contexts, instead of `limits`.
    pub context_limits: BTreeMap<String, Limits>,
    /// A directory whose `<context>.wasm` files are swapped in when they change.
    pub watch: Option<PathBuf>,
    /// How wasm instances get their memory.
    pub instance_allocator: InstanceAllocator,
    /// Bytes the database may keep in its page cache, shared out among the partitions.
    pub db_cache_bytes: usize,
    /// Partitions the log and the state are split into; fixed when the data directory is made
    /// (see `carshare_core::Partitions`).
    pub partitions: u32,
    /// The cluster this host serves in (`None`: a single process on its own database).
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("carshare-data"),
            cache_dir: None,
            admin_token: None,
            contexts: BTreeMap::new(),
            limits: Limits::default(),
            max_body: 1 << 20,
            max_connections: crate::fds::default_max_connections(),
            max_connections_per_client: 1024,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            context_limits: BTreeMap::new(),
            watch: None,
            instance_allocator: InstanceAllocator::default(),
            db_cache_bytes: 64 << 20,
            partitions: 1,
            cluster: None,
        }
    }
}

/// Where compiled components are cached when nothing says otherwise: the user's cache
/// directory (`$XDG_CACHE_HOME/carshare`, else `~/.cache/carshare`), so that every data dir
/// of this user shares one compilation of each component and a new data dir starts in
/// milliseconds; `<data-dir>/cache` when there is no home to put it in.
pub fn default_cache_dir(data_dir: &std::path::Path) -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|base| base.join("carshare"))
        .unwrap_or_else(|| data_dir.join("cache"))
}
