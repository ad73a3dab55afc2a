//! Assembling and running the whole server: join the cluster (if one is configured), open the
//! log, build the engine, load the contexts (built-in ones unless replaced from files), bind,
//! announce readiness, serve until told to stop, then shut down in order: connections, the
//! cluster's tasks (handing the writer's lease back), dispatcher, log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carshare_core::{Log, Partitions, StorageError, SubscribeError};
use tokio::net::TcpListener;

use crate::cluster::ClusterError;
use crate::config::Config;
use crate::embed::{Component, ContextPlan};
use crate::http::{App, BasePathError, ConnectionLimits, serve};
use crate::runtime::{LoadContextError, Runtime, RuntimeOptions};
use crate::wasm::WasmEngine;

/// Why a system could not be opened or started, or why it stopped serving: what it was
/// doing, and the error that stopped it (its `source`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be made.
    #[error("cannot create {}: {source}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Joining the cluster failed, or the replica does not fit its log.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The log (a partition's database) could not be opened.
    #[error("cannot open the log: {0}")]
    Log(#[source] StorageError),
    /// wasmtime could not be set up.
    #[error("cannot start wasmtime: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store of swapped components could not be opened or read.
    #[error("cannot read the swapped components: {0}")]
    ComponentStore(#[source] std::io::Error),
    /// A component file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadComponent {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A context would not load.
    #[error("cannot load context {name}: {source}")]
    LoadContext {
        /// The context.
        name: String,
        /// Why.
        source: LoadContextError,
    },
    /// The contexts' events do not fit together: a subscription could never fire, or an event
    /// type has two publishers.
    #[error("the contexts' events do not fit together: {0}")]
    Catalog(#[source] crate::runtime::CatalogError),
    /// A built-in context was asked for that does not exist.
    #[error("no built-in context named {name:?}; the built-in ones are {known:?}")]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The built-in contexts' names.
        known: Vec<&'static str>,
    },
    /// A native subscriber could not be subscribed (its name is taken).
    #[error("cannot subscribe {name}: {source}")]
    Subscribe {
        /// The subscriber's name.
        name: String,
        /// Why.
        source: SubscribeError,
    },
    /// The base path is not usable.
    #[error(transparent)]
    BasePath(#[from] BasePathError),
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// This process had to stop serving (in a cluster: another process took its host name).
    #[error("{0}")]
    Stopped(String),
}

/// A started server: its runtime and the address it listens on.
pub struct Started {
    /// The runtime.
    pub runtime: Runtime,
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    listener: TcpListener,
    config: Config,
}

/// Opens the log and the engine and loads the contexts (built-in ones, unless replaced from
/// files or by earlier swaps): the whole runtime, serving nothing yet. [`start`] binds it to an
/// address; an embedder or a tool may use it without HTTP.
pub async fn open(config: &Config) -> Result<Runtime, StartError> {
    // `NAME=builtin` names the built-in component of that name (a file so named is `./builtin`).
    let given = |name: &String, path: &std::path::PathBuf| {
        let builtin = (path.as_os_str() == "builtin")
            .then(|| crate::builtin::DEFAULT_CONTEXTS.iter().find(|(n, _)| n == name))
            .flatten();
        match builtin {
            Some((_, bytes)) => Component::Bytes(bytes.to_vec()),
            None => Component::File(path.clone()),
        }
    };
    let plan = ContextPlan {
        builtin: None,
        given: config
            .contexts
            .iter()
            .map(|(name, path)| (name.clone(), given(name, path)))
            .collect(),
    };
    open_with(config, &plan).await
}

/// [`open`], running the contexts of `plan`.
pub(crate) async fn open_with(config: &Config, plan: &ContextPlan) -> Result<Runtime, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let mut builder = Log::builder().cache_bytes(config.db_cache_bytes);
    let cluster = match &config.cluster {
        Some(c) => {
            let joined = crate::cluster::join(c, &config.data_dir).await?;
            builder = builder
                .log_id(joined.log_id)
                .id_slot(joined.slot, crate::cluster::SLOTS)
                .replicator(Arc::new(joined.cluster.clone()));
            Some(joined.cluster)
        }
        None => None,
    };
    // The page cache is the process's, shared out among the partitions (each keeps a few MiB).
    let per_partition = (config.db_cache_bytes / config.partitions.max(1) as usize).max(4 << 20);
    let partitions = match Partitions::open(&config.data_dir, config.partitions, |_| {
        builder.clone().cache_bytes(per_partition)
    }) {
        Ok(p) => p,
        Err(e) => {
            if let Some(cluster) = &cluster {
                cluster.leave().await;
            }
            return Err(StartError::Log(e));
        }
    };
    if let Some(cluster) = &cluster
        && let Err(e) = cluster.verify(partitions.log(0)).await
    {
        partitions.close();
        cluster.leave().await;
        return Err(StartError::Cluster(e));
    }
    let cache = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| crate::config::default_cache_dir(&config.data_dir));
    let engine = WasmEngine::with_allocator(Some(&cache), config.instance_allocator)
        .map_err(|e| StartError::Engine(e.into()))?;
    let options = RuntimeOptions {
        limits: config.limits.clone(),
        retry: config.retry.clone(),
        breaker: config.breaker.clone(),
        context_limits: config.context_limits.clone(),
        component_dir: Some(config.data_dir.join("contexts")),
        ..RuntimeOptions::default()
    };
    let runtime =
        Runtime::with_partitions(partitions, engine, options).map_err(StartError::ComponentStore)?;
    if let Some(cluster) = cluster {
        runtime.join_cluster(cluster);
    }

    // What runs: see `context_set.rs`.
    let (sources, records) = match crate::context_set::resolve(&runtime, plan, config.cluster.is_none()) {
        Ok(s) => s,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e);
        }
    };
    for (name, bytes, previous) in sources {
        if let Err(e) = runtime.load(&name, &bytes).await {
            // Contexts loaded so far have started their subscribers: stop them cleanly.
            runtime.shutdown().await;
            return Err(StartError::LoadContext { name, source: e });
        }
        if let Some(previous) = previous {
            runtime.set_previous(&name, previous);
        }
    }
    // Checked once all are loaded: a subscriber may load before its publisher.
    match runtime.catalog() {
        Ok(catalog) => {
            for w in &catalog.waiting {
                tracing::warn!("{w}");
            }
        }
        Err(e) => {
            runtime.shutdown().await;
            return Err(StartError::Catalog(e));
        }
    }
    // Only now that they run: a refused start changes nothing.
    if let Err(e) = crate::context_set::record(&runtime, records) {
        runtime.shutdown().await;
        return Err(e);
    }
    Ok(runtime)
}

/// Opens everything and binds, but serves nothing yet.
pub async fn start(config: Config) -> Result<Started, StartError> {
    let runtime = open(&config).await?;
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            runtime.shutdown().await;
            return Err(StartError::Listen {
                addr: config.listen,
                source: e,
            });
        }
    };
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    Ok(Started {
        runtime,
        addr,
        listener,
        config,
    })
}

impl Started {
    /// Serves until `shutdown` resolves, then shuts down cleanly. In a cluster it also stops
    /// when this process must not go on serving (another process took its host name): then
    /// it returns why.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let app = App::new(self.runtime.clone())
            .with_admin_token(self.config.admin_token.clone())
            .with_max_body(self.config.max_body);
        serve_until(self.runtime, app, &self.config, self.listener, shutdown).await
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (or the cluster says this process must
/// stop), then shuts down in order: readiness, connections, the watcher, the runtime.
pub(crate) async fn serve_until(
    runtime: Runtime,
    app: App,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    // Every connection is a descriptor: take what the system allows, and hold no more
    // connections than that leaves room for.
    let mut max_connections = config.max_connections;
    if let Some(files) = crate::fds::raise_nofile_limit()
        && crate::fds::connections_for(files) < max_connections
    {
        max_connections = crate::fds::connections_for(files);
        tracing::warn!("holding at most {max_connections} connections: the open-file limit is {files}");
    }
    tracing::info!(
        "carshare ready on http://{addr}{} (data in {}, admin API {})",
        app.base_path(),
        shown(&config.data_dir),
        if config.admin_token.is_some() { "on" } else { "off" }
    );
    let watcher = config
        .watch
        .clone()
        .map(|dir| tokio::spawn(crate::watch::watch(dir, runtime.clone())));
    let draining = runtime.clone();
    let fatal = Arc::new(std::sync::Mutex::new(None));
    let noted = fatal.clone();
    let shutdown = async move {
        let lost = async {
            match draining.cluster() {
                Some(cluster) => cluster.fatal().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            reason = lost => {
                tracing::error!("stopping: {reason}");
                *noted.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            }
        }
        // Readiness fails first, so a balancer stops sending while requests finish.
        draining.begin_shutdown();
    };
    serve(
        listener,
        app,
        ConnectionLimits {
            max_total: max_connections,
            max_per_client: config.max_connections_per_client,
        },
        Duration::from_secs(10),
        shutdown,
    )
    .await;
    if let Some(w) = watcher {
        w.abort();
    }
    runtime.shutdown().await;
    tracing::info!("carshare stopped");
    match fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(reason) => Err(StartError::Stopped(reason)),
        None => Ok(()),
    }
}

fn shown(p: &PathBuf) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.clone())
        .display()
        .to_string()
}
