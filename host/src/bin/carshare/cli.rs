//! The command line, with clap: `carshare serve`, `carshare contexts ...`,
//! `carshare completions SHELL`, `--version`. Every option of `serve` can also come from a
//! `CARSHARE_*` variable or the config file; `settings.rs` merges them under one rule.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The car-sharing business as one runtime of WebAssembly bounded contexts.
#[derive(Debug, Parser)]
#[command(
    name = "carshare",
    version,
    about,
    after_help = "Start the whole system with `carshare serve`; `carshare serve --help` lists its options.\n\
                  Each option of serve may also be given as a CARSHARE_* environment variable \
                  (shown with each option) or as a camelCase key of the JSON config file; \
                  the command line wins over the environment, the environment over the file."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the whole system over HTTP.
    Serve(Box<ServeArgs>),
    /// Talk to a running server's admin API (the token comes from CARSHARE_ADMIN_TOKEN).
    Contexts(ContextsArgs),
    /// Read a running server's event log (the token comes from CARSHARE_ADMIN_TOKEN).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Operate a cluster: see its hosts, move the writer's lease, re-found a lost log.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Back up a server's data while it serves (--url), or a stopped server's (--data-dir).
    Backup(BackupArgs),
    /// Put a backup in place as a data directory's database (its server stopped).
    Restore(RestoreArgs),
    /// Start something new: `carshare new context NAME` makes a context crate to build on.
    #[command(subcommand)]
    New(NewCommand),
    /// Tools for developing and measuring carshare.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `carshare serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// JSON config file (camelCase keys, e.g. {"listen": "0.0.0.0:8080", "maxInstances": 32})
    #[arg(long, env = "CARSHARE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines as text for people, or JSON lines for log shippers [default: text]; the
    /// level comes from RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=carshare_host=debug)
    #[arg(long, env = "CARSHARE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Address to serve HTTP on [default: 127.0.0.1:8080]
    #[arg(long, env = "CARSHARE_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Where the database lives [default: ./carshare-data]
    #[arg(long, env = "CARSHARE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Compiled-component cache, shared by every data dir [default: $XDG_CACHE_HOME/carshare,
    /// else ~/.cache/carshare]
    #[arg(long, env = "CARSHARE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run context NAME from FILE (a .wasm component; `builtin` for the built-in one), added to
    /// the contexts kept with the data; the same FILE at a later start leaves a version
    /// swapped in since running; repeatable
    #[arg(
        long = "context",
        env = "CARSHARE_CONTEXTS",
        value_name = "NAME=FILE",
        value_delimiter = ','
    )]
    pub contexts: Vec<String>,
    /// Swap a context in when DIR/CONTEXT.wasm changes
    #[arg(long, env = "CARSHARE_WATCH", value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Serve as one host of a cluster whose log is replicated by these NATS JetStream servers
    /// (2.12 or later, run with `sync_interval: always`), comma-separated
    #[arg(long, env = "CARSHARE_CLUSTER", value_name = "URLS", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This host's name in the cluster [default: made up on the first start and kept in the
    /// data directory]
    #[arg(long, env = "CARSHARE_CLUSTER_HOST", value_name = "NAME")]
    pub cluster_host: Option<String>,
    /// NATS servers keeping each copy of the cluster's log [default: 3]
    #[arg(long, env = "CARSHARE_CLUSTER_REPLICAS", value_name = "N")]
    pub cluster_replicas: Option<u64>,
    /// The NATS user carshare connects as; its password comes from CARSHARE_CLUSTER_PASSWORD
    /// or the config file's clusterPassword, never from the command line
    #[arg(long, env = "CARSHARE_CLUSTER_USER", value_name = "USER")]
    pub cluster_user: Option<String>,
    /// How wasm instances get memory: a pool reserved at start, or on demand where virtual
    /// address space is limited (ulimit -v, valgrind) [default: pooling]
    #[arg(long, env = "CARSHARE_INSTANCE_ALLOCATOR", value_name = "KIND")]
    pub instance_allocator: Option<Allocator>,
    /// Partitions the log and the state are split into, each committing on its own; fixed when
    /// the data directory is made [default: 1]
    #[arg(long, env = "CARSHARE_PARTITIONS", value_name = "N")]
    pub partitions: Option<u64>,
    /// Memory the database may use for its page cache, in MiB [default: 64]
    #[arg(long, env = "CARSHARE_DB_CACHE_MB", value_name = "N")]
    pub db_cache_mb: Option<u64>,
    /// CPU time one call into a context may take, in ms [default: 1000]
    #[arg(long, env = "CARSHARE_CALL_DEADLINE_MS", value_name = "N")]
    pub call_deadline_ms: Option<u64>,
    /// Memory one context instance may use, in MiB [default: 64]
    #[arg(long, env = "CARSHARE_MEMORY_LIMIT_MB", value_name = "N")]
    pub memory_limit_mb: Option<u64>,
    /// Instances of one context alive at once [default: 64]
    #[arg(long, env = "CARSHARE_MAX_INSTANCES", value_name = "N")]
    pub max_instances: Option<u64>,
    /// Largest request body, in bytes [default: 1048576]
    #[arg(long, env = "CARSHARE_MAX_BODY_BYTES", value_name = "N")]
    pub max_body_bytes: Option<u64>,
    /// Connections open at once; idle ones are closed early near the limit [default: what the
    /// open-file limit allows, at most 100000]
    #[arg(long, env = "CARSHARE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,
    /// Connections open at once from one client address [default: 1024]
    #[arg(long, env = "CARSHARE_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub max_connections_per_client: Option<u64>,
    /// Attempts before a failing event is parked as a dead letter [default: 5]
    #[arg(long, env = "CARSHARE_EVENT_ATTEMPTS", value_name = "N")]
    pub event_attempts: Option<u64>,
    /// Wait after an event's first failure, doubling each time, in ms [default: 50]
    #[arg(long, env = "CARSHARE_EVENT_BACKOFF_MS", value_name = "N")]
    pub event_backoff_ms: Option<u64>,
    /// Calls the circuit breaker remembers [default: 100]
    #[arg(long, env = "CARSHARE_BREAKER_WINDOW", value_name = "N")]
    pub breaker_window: Option<u64>,
    /// Calls before the failure rate counts [default: 20]
    #[arg(long, env = "CARSHARE_BREAKER_MIN_CALLS", value_name = "N")]
    pub breaker_min_calls: Option<u64>,
    /// Failure rate, in percent, that opens the breaker [default: 50]
    #[arg(long, env = "CARSHARE_BREAKER_FAILURE_RATE", value_name = "P")]
    pub breaker_failure_rate: Option<u64>,
    /// How long an open breaker refuses calls, in ms [default: 30000]
    #[arg(long, env = "CARSHARE_BREAKER_OPEN_MS", value_name = "N")]
    pub breaker_open_ms: Option<u64>,
    /// Calls let through when half-open [default: 10]
    #[arg(long, env = "CARSHARE_BREAKER_PROBES", value_name = "N")]
    pub breaker_probes: Option<u64>,
    /// Synchronous calls in flight per context [default: 25]
    #[arg(long, env = "CARSHARE_BREAKER_MAX_CONCURRENT", value_name = "N")]
    pub breaker_max_concurrent: Option<u64>,
    /// Calls that used up their CPU deadline or memory limit that open the breaker at once
    /// [default: 3]
    #[arg(long, env = "CARSHARE_BREAKER_EXHAUSTED_CALLS", value_name = "N")]
    pub breaker_exhausted_calls: Option<u64>,
}

/// `carshare contexts ...`.
#[derive(Debug, Args)]
pub struct ContextsArgs {
    /// The server
    #[arg(
        long,
        global = true,
        env = "CARSHARE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// What to do.
    #[command(subcommand)]
    pub action: ContextsAction,
}

/// What `carshare contexts` does.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ContextsAction {
    /// List the contexts with their versions, cursors and breakers.
    List,
    /// Swap context NAME to the component in FILE.
    Swap {
        /// The context.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Add context NAME, from the component in FILE, to the running server (it runs after a
    /// restart too).
    Add {
        /// The context.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Remove context NAME from the running server (and from later starts); its state,
    /// events and cursors are kept, and adding it again resumes from them.
    Remove {
        /// The context.
        name: String,
    },
    /// Roll context NAME back to the version before its last swap.
    Rollback {
        /// The context.
        name: String,
    },
    /// Stop context NAME: its requests are refused (503) and its handlers pause at their
    /// cursor until it is started again.
    Stop {
        /// The context.
        name: String,
    },
    /// Start context NAME again: it serves requests and its handlers catch up from their cursor.
    Start {
        /// The context.
        name: String,
    },
}

/// The server an admin command talks to.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The server
    #[arg(long, env = "CARSHARE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

/// `carshare cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// This host's part in the cluster and every host present (the token comes from
    /// CARSHARE_ADMIN_TOKEN).
    Status(ServerArg),
    /// Have the writer step down, from any host: another host takes the lease within about
    /// a second, and this writer stays out of the running for 10 s.
    StepDown(ServerArg),
    /// Make the cluster's log anew from a stopped host's data, when the log lost records that
    /// data holds (NATS restored from an older backup, or lost). Refused when the log is not
    /// behind the data. Run it on the most advanced host's data directory, then start that
    /// host; hosts at the same point continue, the others join from a snapshot.
    Refound(RefoundArgs),
}

/// `carshare cluster refound`.
#[derive(Debug, Args)]
pub struct RefoundArgs {
    /// The cluster's NATS servers
    #[arg(
        long,
        env = "CARSHARE_CLUSTER",
        value_name = "URLS",
        value_delimiter = ',',
        required = true
    )]
    pub cluster: Vec<String>,
    /// The stopped host's data directory
    #[arg(long, env = "CARSHARE_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// NATS servers keeping each copy of the log
    #[arg(
        long,
        env = "CARSHARE_CLUSTER_REPLICAS",
        value_name = "N",
        default_value_t = 3
    )]
    pub cluster_replicas: usize,
    /// The NATS user (its password comes from CARSHARE_CLUSTER_PASSWORD)
    #[arg(long, env = "CARSHARE_CLUSTER_USER", value_name = "USER")]
    pub cluster_user: Option<String>,
}

/// `carshare backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (a file that does not exist yet). With --url it is written
    /// by the server, on the server's machine.
    pub dest: PathBuf,
    /// A running server to back up (the token comes from CARSHARE_ADMIN_TOKEN)
    #[arg(
        long,
        env = "CARSHARE_URL",
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub url: Option<String>,
    /// The data directory of a stopped server to back up
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `carshare restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup
    pub src: PathBuf,
    /// The data directory to restore into (its server stopped)
    #[arg(long, env = "CARSHARE_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Replace the database the data directory holds (it is kept beside, renamed)
    #[arg(long)]
    pub force: bool,
}

/// `--instance-allocator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// A pool reserved at start.
    Pooling,
    /// From the system, instance by instance.
    OnDemand,
}

impl From<Allocator> for carshare_host::InstanceAllocator {
    fn from(a: Allocator) -> Self {
        match a {
            Allocator::Pooling => carshare_host::InstanceAllocator::Pooling,
            Allocator::OnDemand => carshare_host::InstanceAllocator::OnDemand,
        }
    }
}

/// `carshare dev ...`.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Fill a data directory with real orders, placed in-process through the contexts.
    Fill(FillArgs),
    /// Build the context crate in DIR, serve it with the built-in contexts, and rebuild and
    /// swap it in on every save.
    Run(DevRunArgs),
}

/// `carshare dev run`.
#[derive(Debug, Args)]
pub struct DevRunArgs {
    /// The context crate [default: .]
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The context's name [default: the crate's package name]
    #[arg(long)]
    pub name: Option<String>,
    /// Address to serve HTTP on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Where the database lives [default: DIR/target/carshare-dev/data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the crate is built [default: DIR/target/carshare-dev]
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
}

/// `carshare new ...`.
#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// Make a context crate: a collection over HTTP, an event declared and published, a harness
    /// test; it builds with `cargo build --release --target wasm32-wasip2`.
    Context(NewContextArgs),
}

/// `carshare new context`.
#[derive(Debug, Args)]
pub struct NewContextArgs {
    /// The context's name (a-z, 0-9, -): its crate, its route (/NAMEs) and its events
    pub name: String,
    /// Where to make it [default: ./NAME]; must not exist, or be empty
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The carshare checkout to depend on [default: the one this binary was built from]
    #[arg(long, value_name = "DIR")]
    pub carshare: Option<PathBuf>,
}

/// `carshare dev fill`.
#[derive(Debug, Args)]
pub struct FillArgs {
    /// The data directory to fill (created if missing; what it holds stays)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Compiled-component cache [default: as for serve]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Orders to place
    #[arg(long, default_value_t = 100_000)]
    pub orders: u64,
    /// Customers the orders are spread over (customerId 1..=N)
    #[arg(long, default_value_t = 1000)]
    pub customers: u64,
    /// Stock changes of the product to make after the orders (one event each)
    #[arg(long, default_value_t = 0)]
    pub restocks: u64,
    /// Requests in flight at once
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Partitions of the data directory, when it is made (as for serve) [default: 1]
    #[arg(long, env = "CARSHARE_PARTITIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=carshare_core::MAX_PARTITIONS as i64))]
    pub partitions: Option<u32>,
    /// How wasm instances get memory [default: pooling]
    #[arg(long, value_name = "KIND")]
    pub instance_allocator: Option<Allocator>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One line of text per record.
    Text,
    /// One JSON object per line.
    Json,
}

/// `carshare events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are committed, one JSON object per line.
    Tail(TailArgs),
}

/// `carshare events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The server
    #[arg(long, env = "CARSHARE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Start after this sequence number (of every partition followed) [default: the head: new
    /// events only]
    #[arg(long)]
    pub after: Option<u64>,
    /// Only this partition's events [default: every partition's, each in its own order]
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Only events of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub r#type: Option<String>,
    /// Only events of this chain (a request id)
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Stop after this many events [default: follow for ever]
    #[arg(long)]
    pub count: Option<u64>,
    /// How often to ask for new events, in ms
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
}
