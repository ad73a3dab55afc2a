//! Several hosts serving one system (`carshare serve --cluster nats://...`), on NATS JetStream:
//! the core's [`Replicator`] seam implemented with a JetStream stream as the replicated log.
//!
//! - `setup.rs`: joining: the stream `CARSHARE_LOG` (the log: one message per commit batch),
//!   the buckets `carshare_lease` (the writer's lease, which expires) and `carshare_meta` (the
//!   log's id, each host's id slot), and this host's name.
//! - `append.rs`: the writer's side: each batch appended with `Nats-Expected-Last-Sequence`
//!   (so a deposed writer is fenced) and `Nats-Msg-Id` (so a resend after a timeout is never
//!   stored twice), and units forwarded from other hosts, answered by the core.
//! - `follow.rs`: every host applies the log's records in order, from the position it stored.
//! - `components.rs`: the object store `carshare_components`, where a swap leaves the code it
//!   names for the other hosts.
//! - `lease.rs`: who writes. Safety never depends on the lease, only on fencing: the lease
//!   only makes one host try.

mod append;
mod components;
mod follow;
mod lease;
mod setup;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use carshare_core::{AppendError, ForwardFuture, Log, Replicator};
use serde::Serialize;

pub use setup::{ClusterConfig, SLOTS, join};

/// The stream that is the replicated log.
const STREAM: &str = "CARSHARE_LOG";
/// Its one subject.
const SUBJECT: &str = "carshare.log";
/// Where a host takes the units other hosts forward to it, when it writes.
fn commit_subject(host: &str) -> String {
    format!("carshare.commit.{host}")
}

/// How long the writer's lease lasts unless renewed, and how often its holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(5);
const LEASE_RENEW: Duration = Duration::from_secs(1);

/// One host's membership of the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    host: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    lease: jetstream::kv::Store,
    /// Components by SHA-256, for swaps.
    components: jetstream::object_store::ObjectStore,
    /// The runtime the writer's thread runs appends on.
    handle: tokio::runtime::Handle,
    /// Whether this host writes now: it holds the lease and has applied the whole log.
    writer: AtomicBool,
    /// Bumped each time this host takes the lease: part of its records' message ids.
    epoch: AtomicU64,
    /// The last position this host knows the log to have.
    log_last: AtomicU64,
    /// Where the log stood when this host joined: it is caught up once it has applied that.
    joined_at: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The host holding the lease, as last seen.
    writer_host: Option<String>,
    /// Set when this host holds the lease but must apply the log up to this position first
    /// (it just took the lease, or an append of its was fenced or left in doubt).
    catching_up: Option<u64>,
    /// An append was fenced or left in doubt: the lease task reads the log's end anew.
    behind: bool,
}

/// What a host shows of its part in the cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This host's name.
    pub host: String,
    /// `writer`, `catching up` (holds the lease, applying the log first) or `follower`.
    pub role: &'static str,
    /// The host that writes, as last seen.
    pub writer: Option<String>,
    /// The position of the last record applied here.
    pub applied: u64,
    /// The last position of the log this host knows of.
    pub log_last: u64,
    /// Records of the log not yet applied here.
    pub lag: u64,
    /// Whether this host has applied the log as it stood when the host joined.
    pub caught_up: bool,
}

impl Cluster {
    /// What this host shows of its part, with `log`'s applied position.
    pub fn status(&self, log: &Log) -> ClusterStatus {
        let s = &self.shared;
        let state = s.state.lock().unwrap_or_else(|p| p.into_inner());
        let applied = log.applied();
        let log_last = s.log_last.load(Ordering::Acquire).max(applied);
        ClusterStatus {
            host: s.host.clone(),
            role: if s.writer.load(Ordering::Acquire) {
                "writer"
            } else if state.catching_up.is_some() {
                "catching up"
            } else {
                "follower"
            },
            writer: state.writer_host.clone(),
            applied,
            log_last,
            lag: log_last - applied,
            caught_up: applied >= s.joined_at,
        }
    }

    /// Starts this host's part: applying the log, taking units forwarded to it, and the
    /// lease. The tasks end when the returned handle is stopped.
    pub fn run(&self, log: Log) -> Running {
        let tasks = vec![
            tokio::spawn(follow::follow(self.shared.clone(), log.clone())),
            tokio::spawn(append::serve_forwarded(self.shared.clone(), log.clone())),
            tokio::spawn(lease::hold(self.shared.clone(), log)),
        ];
        Running {
            shared: self.shared.clone(),
            tasks,
        }
    }
}

/// A host's running part in the cluster.
pub struct Running {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops writing and following, and hands the lease back at once (instead of letting it
    /// expire), so another host takes over without waiting.
    pub async fn stop(self) {
        self.shared.writer.store(false, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        lease::release(&self.shared).await;
    }
}

impl Replicator for Cluster {
    fn is_writer(&self) -> bool {
        self.shared.writer.load(Ordering::Acquire)
    }

    fn append(&self, record: &[u8], after: u64) -> Result<u64, AppendError> {
        let shared = self.shared.clone();
        let record = bytes::Bytes::copy_from_slice(record);
        // The core's writer thread is not one of the runtime's: it may wait on it here.
        self.shared
            .handle
            .block_on(async move { shared.append(record, after).await })
    }

    fn forward(&self, unit: Vec<u8>) -> ForwardFuture {
        let shared = self.shared.clone();
        Box::pin(async move { shared.forward(unit).await })
    }
}

impl Shared {
    /// This host no longer writes until it has applied the log to its end: an append of its
    /// was fenced (another host wrote) or its outcome is unknown.
    fn fall_behind(&self) {
        self.writer.store(false, Ordering::Release);
        // A record of the old epoch may still land late: a new record must not share its
        // message id, or JetStream would take it for that one.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state.lock().unwrap_or_else(|p| p.into_inner()).behind = true;
    }

    fn writer_host(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .writer_host
            .clone()
    }
}
