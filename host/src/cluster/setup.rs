//! Joining a cluster: connect to the NATS servers, make sure the log's stream and the buckets
//! exist (any host may be the first: every step is idempotent), learn the log's id (the first
//! host to join makes it) and this host's name and id slot, and claim the name for this process
//! (`presence.rs`). A host starting on an empty data directory fetches a snapshot of a
//! caught-up host first (`snapshot.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store, stream};

use super::presence::{self, PRESENCE_TTL};
use super::{Cluster, LEASE_TTL, STREAM, SUBJECT, Shared, State};

/// How many hosts may take ids of their own (see `carshare_core::LogBuilder::id_slot`).
pub const SLOTS: u64 = 16;

const LEASE_BUCKET: &str = "carshare_lease";
pub(super) const META_BUCKET: &str = "carshare_meta";
const PRESENCE_BUCKET: &str = "carshare_presence";
pub(super) const COMPONENTS_BUCKET: &str = "carshare_components";
const SNAPSHOTS_BUCKET: &str = "carshare_snapshots";

/// How long a snapshot stays in `carshare_snapshots`: long enough to download.
const SNAPSHOT_KEEP: Duration = Duration::from_secs(3600);

/// How long a JetStream API request (stream info, consumer creation, a lease update) waits.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How long joining keeps trying while the NATS servers are still forming their cluster. Three
/// servers that start together on a loaded machine have been seen to take over 30 s to elect
/// the JetStream meta leader; a host that gives up earlier only makes its supervisor restart it.
const JOIN_PATIENCE: Duration = Duration::from_secs(90);

/// After how long waiting for JetStream is logged, so a host that waits says why.
const JOIN_QUIET: Duration = Duration::from_secs(5);

/// Where the cluster is and who this host is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://127.0.0.1:4222`); any one is enough to reach the cluster.
    pub servers: Vec<String>,
    /// This host's name (letters, digits, `-` and `_`); `None`: the one kept in the data
    /// directory, made up on the first start.
    pub host: Option<String>,
    /// How many NATS servers keep each copy of the log and the buckets (3 in production;
    /// 1 for a single development server).
    pub replicas: usize,
    /// The NATS user and password carshare connects as (a `user:password@` in a server URL
    /// does the same). Only carshare's user may publish to carshare's subjects: see the
    /// accounts in `scripts/cluster`.
    pub credentials: Option<(String, String)>,
}

/// Why a host could not join, or could not serve with the data it has.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub(super) String);

pub(super) fn fail(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError(format!("cannot join the cluster: {what}: {e}"))
}

/// Connects to the NATS servers of `config` as `name`, with its credentials.
pub(super) async fn connect(config: &ClusterConfig, name: &str) -> Result<async_nats::Client, ClusterError> {
    let mut servers = Vec::with_capacity(config.servers.len());
    let mut credentials = config.credentials.clone();
    for url in &config.servers {
        let (url, userinfo) = split_userinfo(url);
        servers.push(url);
        if credentials.is_none() {
            credentials = userinfo;
        }
    }
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(super::append::FORWARD_TIMEOUT));
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user, password);
    }
    options
        .connect(servers.clone())
        .await
        .map_err(|e| fail(&format!("cannot reach {}", servers.join(",")), e))
}

/// `nats://user:password@host:port` as the URL without its user and password, and them.
/// (The NATS client reads them from the URL but does not use them.)
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}://{host}"),
                Some((user.to_string(), password.to_string())),
            )
        }
        None => (url.to_string(), None),
    }
}

/// A host that has joined: its part, and what its log must be opened with.
pub struct Joined {
    /// This host's part in the cluster (the log's replicator).
    pub cluster: Cluster,
    /// The cluster's log id.
    pub log_id: u64,
    /// This host's id slot, of [`SLOTS`].
    pub slot: u64,
}

/// Joins the cluster of `config`, as the host kept in `data_dir` (or named in `config`). A
/// data directory without a database is filled from a snapshot of a caught-up host first.
pub async fn join(config: &ClusterConfig, data_dir: &Path) -> Result<Joined, ClusterError> {
    let host = host_name(config, data_dir)?;
    let client = connect(config, &format!("carshare {host}")).await?;
    // JetStream's own requests fail fast while a stream elects a leader, and are retried by
    // whoever made them; only a forwarded unit waits as long as the client allows.
    let mut js = jetstream::new(client.clone());
    js.set_timeout(JETSTREAM_TIMEOUT);
    let replicas = config.replicas.max(1);
    let stream = patiently("create the log's stream", || {
        js.get_or_create_stream(log_stream(replicas, None))
    })
    .await?;
    let lease = bucket(&js, LEASE_BUCKET, replicas, LEASE_TTL).await?;
    let meta = bucket(&js, META_BUCKET, replicas, Duration::ZERO).await?;
    let presence = bucket(&js, PRESENCE_BUCKET, replicas, PRESENCE_TTL).await?;
    let components = object_store(&js, COMPONENTS_BUCKET, replicas, Duration::ZERO).await?;
    let snapshots = object_store(&js, SNAPSHOTS_BUCKET, replicas, SNAPSHOT_KEEP).await?;
    let log_id = patiently("read the log's id", || log_id(&meta)).await?;
    let nonce = random_u64();
    let claim = presence::acquire(&presence, &host, nonce, data_dir).await?;
    let slot = patiently("claim an id slot", || slot(&meta, &host)).await?;
    let joined_at = stream
        .get_info()
        .await
        .map_err(|e| fail("cannot read the log's end", e))?
        .state
        .last_sequence;
    let shared = Shared {
        host,
        nonce,
        claim,
        client,
        js,
        stream,
        lease,
        presence,
        components,
        snapshots,
        handle: tokio::runtime::Handle::current(),
        writer: AtomicBool::new(false),
        verified: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        log_last: AtomicU64::new(joined_at),
        applied: AtomicU64::new(0),
        joined_at,
        fatal: tokio::sync::watch::channel(None).0,
        state: Mutex::new(State::default()),
    };
    let cluster = Cluster {
        shared: Arc::new(shared),
    };
    let database = data_dir.join("carshare.redb");
    if !database.exists() && joined_at > 0 {
        cluster.shared.fetch_snapshot(&database).await?;
    }
    Ok(Joined {
        cluster,
        log_id,
        slot,
    })
}

/// The log's stream, kept by `replicas` servers, its first position `first` if not 1.
pub(super) fn log_stream(replicas: usize, first: Option<u64>) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Resends of a record after a timeout are recognised for this long.
        duplicate_window: Duration::from_secs(600),
        // The log is the database: nothing is ever taken out of it.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        first_sequence: first,
        ..Default::default()
    }
}

async fn object_store(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<object_store::ObjectStore, ClusterError> {
    patiently(&format!("create the object store {name}"), || async {
        match js.get_object_store(name).await {
            Ok(store) => Ok(store),
            Err(_) => {
                js.create_object_store(object_store::Config {
                    bucket: name.into(),
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    max_age,
                    ..Default::default()
                })
                .await
            }
        }
    })
    .await
}

/// Runs `step` until it succeeds or [`JOIN_PATIENCE`] is over: right after the NATS servers
/// start, JetStream answers "temporarily unavailable" until they have elected a leader.
pub(super) async fn patiently<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, ClusterError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() >= JOIN_PATIENCE => {
                return Err(fail(&format!("cannot {what}"), e));
            }
            Err(e) => {
                if !told && started.elapsed() >= JOIN_QUIET {
                    told = true;
                    tracing::warn!(
                        "cannot {what} yet ({e}); trying again for up to {}s",
                        JOIN_PATIENCE.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
}

pub(super) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    patiently(&format!("create the bucket {name}"), || async {
        match js.get_key_value(name).await {
            Ok(store) => Ok(store),
            Err(_) => {
                js.create_key_value(kv::Config {
                    bucket: name.into(),
                    history: 1,
                    max_age,
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
            }
        }
    })
    .await
}

/// The cluster's log id: made by the first host to ask.
pub(super) async fn log_id(meta: &kv::Store) -> Result<u64, ClusterError> {
    let mine = random_u64();
    if meta.create("log_id", mine.to_string().into()).await.is_ok() {
        return Ok(mine);
    }
    let stored = meta
        .get("log_id")
        .await
        .map_err(|e| fail("cannot read the log's id", e))?
        .ok_or_else(|| {
            ClusterError("cannot join the cluster: the log's id is missing from carshare_meta".into())
        })?;
    std::str::from_utf8(&stored)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ClusterError("cannot join the cluster: the log's id in carshare_meta is not a number".into())
        })
}

/// This host's id slot: the one it claimed before, else the first free one.
async fn slot(meta: &kv::Store, host: &str) -> Result<u64, ClusterError> {
    for s in 0..SLOTS {
        let holder = meta
            .get(format!("slot.{s}"))
            .await
            .map_err(|e| fail("cannot read the id slots", e))?;
        if holder.as_deref() == Some(host.as_bytes()) {
            return Ok(s);
        }
    }
    for s in 0..SLOTS {
        if meta
            .create(format!("slot.{s}"), host.to_string().into())
            .await
            .is_ok()
        {
            return Ok(s);
        }
    }
    Err(ClusterError(format!(
        "cannot join the cluster: all {SLOTS} id slots are taken by other hosts"
    )))
}

/// This host's name: from the configuration, else the one kept in `data_dir`, else a new one
/// (kept there for the next start).
fn host_name(config: &ClusterConfig, data_dir: &Path) -> Result<String, ClusterError> {
    let file = data_dir.join("cluster-host");
    let name = match &config.host {
        Some(name) => name.clone(),
        None => match std::fs::read_to_string(&file) {
            Ok(name) => name.trim().to_string(),
            Err(_) => {
                let name = format!("host-{:08x}", random_u64() as u32);
                std::fs::write(&file, &name)
                    .map_err(|e| fail(&format!("cannot write {}", file.display()), e))?;
                name
            }
        },
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ClusterError(format!(
            "cannot join the cluster: the host name {name:?} must be 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok(name)
}

pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
