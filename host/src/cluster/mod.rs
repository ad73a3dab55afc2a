//! Several hosts serving one system (`carshare serve --cluster nats://...`), on NATS JetStream:
//! the core's [`Replicator`] seam implemented with a JetStream stream as the replicated log.
//!
//! - `setup.rs`: joining: the stream `CARSHARE_LOG` (the log: one message per commit batch),
//!   the buckets `carshare_lease` (the writer's lease, which expires), `carshare_meta` (the
//!   log's id, each host's id slot) and `carshare_presence`, the object stores, and this host's
//!   name.
//! - `presence.rs`: one process per host name: a key that expires unless its process renews
//!   it, so a second process under the same name (a copied data directory) is refused.
//! - `continuity.rs`: before a host serves, its replica must be a prefix of the log: not ahead
//!   of it, not behind a gap, not of another log; and re-founding a lost or restored log from
//!   the most advanced replica.
//! - `append.rs`: the writer's side: each batch appended with `Nats-Expected-Last-Sequence`
//!   (so a deposed writer is fenced) and `Nats-Msg-Id` (so a resend after a timeout is never
//!   stored twice), and units forwarded from other hosts, answered by the core.
//! - `follow.rs`: every host applies the log's messages in order, from the position it stored;
//!   messages that are not the next record are refused and reported, a record it cannot read
//!   stops it.
//! - `lease.rs`: who writes. Safety never depends on the lease, only on fencing: the lease
//!   only makes one host try, and only a host fit to write (caught up, storage sound) tries.
//! - `control.rs`: asking the writer to step down, from any host.
//! - `snapshot.rs`: a new host joins from a snapshot of a caught-up host instead of replaying
//!   the whole log.
//! - `components.rs`: the object store `carshare_components`, where a swap leaves the code it
//!   names for the other hosts.

mod append;
mod components;
mod continuity;
mod control;
mod follow;
mod lease;
mod presence;
mod setup;
mod snapshot;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use carshare_core::{AppendError, ForwardFuture, Log, Replicator};
use serde::Serialize;
use tokio::sync::watch;

pub use continuity::{RefoundError, Refounded, refound};
pub use control::{StepDownError, SteppedDown};
pub use presence::Presence;
pub use setup::{ClusterConfig, ClusterError, SLOTS, join};

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

/// Bytes of a log message kept for its headers: the rest of the servers' `max_payload` is the
/// largest record.
const HEADER_ROOM: usize = 4096;

/// How many refused messages a host remembers, to show them.
const REFUSED_SHOWN: usize = 16;

/// One host's membership of the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    host: String,
    /// Random, made when this process joined: tells this process from any other that uses
    /// (or used) the same host name.
    nonce: u64,
    /// What this process claimed its name with (`presence.rs`).
    claim: presence::Presence,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    lease: jetstream::kv::Store,
    presence: jetstream::kv::Store,
    /// Components by SHA-256, for swaps.
    components: jetstream::object_store::ObjectStore,
    /// Snapshots of replicas, for hosts that join.
    snapshots: jetstream::object_store::ObjectStore,
    /// The runtime the writer's thread runs appends on.
    handle: tokio::runtime::Handle,
    /// Whether this host writes now: it holds the lease and has applied the whole log.
    writer: AtomicBool,
    /// Whether this host's replica was found to continue the log (`continuity.rs`).
    verified: AtomicBool,
    /// Bumped each time this host takes the lease: part of its records' message ids.
    epoch: AtomicU64,
    /// The last position this host knows the log to have.
    log_last: AtomicU64,
    /// The position this host's replica has taken the log up to (kept from the log's own).
    applied: AtomicU64,
    /// Where the log stood when this host joined: it is caught up once it has applied that.
    joined_at: u64,
    /// Set when this process must stop serving (it lost its host name to another process).
    fatal: watch::Sender<Option<String>>,
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
    /// Why this host stopped applying the log (a record it cannot apply, a log behind its
    /// replica): it takes no writes and stands for no lease until an operator acts.
    stopped: Option<String>,
    /// Why this host does not stand for the writer's lease now, if it does not.
    unfit: Option<String>,
    /// Until when this host does not stand for the lease (it stepped down).
    resting_until: Option<Instant>,
    /// How many messages of the log this host refused, and the last few.
    refused_total: u64,
    refused: VecDeque<Refused>,
}

/// A message of the log that a host refused to apply.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// Its position in the log.
    pub position: u64,
    /// Why it was refused.
    pub reason: String,
}

/// What a host shows of its part in the cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This host's name.
    pub host: String,
    /// `writer`, `catching up` (holds the lease, applying the log first), `follower` or
    /// `stopped` (it stopped applying the log: see `stopped`).
    pub role: &'static str,
    /// The host that writes, as last seen.
    pub writer: Option<String>,
    /// The position of the last message of the log taken here.
    pub applied: u64,
    /// The last position of the log this host knows of.
    pub log_last: u64,
    /// Messages of the log not yet taken here.
    pub lag: u64,
    /// Whether this host takes writes: its replica continues the log, and it has applied the
    /// log as it stood when the host joined.
    pub caught_up: bool,
    /// Why this host stopped applying the log, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Why this host does not stand for the writer's lease, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_standing: Option<String>,
    /// How many messages of the log this host refused (not records of this log following the
    /// last one applied).
    pub refused: u64,
    /// The last of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_refused: Vec<Refused>,
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
            role: if state.stopped.is_some() {
                "stopped"
            } else if s.writer.load(Ordering::Acquire) {
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
            caught_up: s.takes_writes(&state, applied),
            stopped: state.stopped.clone(),
            not_standing: state.unfit.clone(),
            refused: state.refused_total,
            last_refused: state.refused.iter().cloned().collect(),
        }
    }

    /// Starts this host's part: applying the log, taking units forwarded to it, the lease,
    /// renewing its presence, answering control requests and serving snapshots. The tasks end
    /// when the returned handle is stopped.
    pub fn run(&self, log: Log) -> Running {
        let s = &self.shared;
        s.applied.store(log.applied(), Ordering::Release);
        let tasks = vec![
            tokio::spawn(follow::track_applied(s.clone(), log.watch_applied())),
            tokio::spawn(follow::follow(s.clone(), log.clone())),
            tokio::spawn(append::serve_forwarded(s.clone(), log.clone())),
            tokio::spawn(lease::hold(s.clone(), log.clone())),
            tokio::spawn(presence::renew(s.clone())),
            tokio::spawn(control::serve(s.clone(), log.clone())),
            tokio::spawn(snapshot::serve(s.clone(), log)),
        ];
        Running {
            shared: s.clone(),
            tasks,
        }
    }

    /// Resolves with the reason once this process must stop serving: another process took
    /// its host name (see `presence.rs`).
    pub async fn fatal(&self) -> String {
        let mut fatal = self.shared.fatal.subscribe();
        match fatal.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as the cluster: never.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Cluster {
    /// Leaves without having run: hands this process's claim on its host name back (a host
    /// that was refused at start).
    pub async fn leave(&self) {
        presence::release(&self.shared).await;
    }
}

/// A host's running part in the cluster.
pub struct Running {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops writing and following, and hands the lease and the host's presence back at once
    /// (instead of letting them expire), so another host takes over without waiting, and this
    /// host can start again at once.
    pub async fn stop(self) {
        self.shared.writer.store(false, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        lease::release(&self.shared).await;
        presence::release(&self.shared).await;
    }
}

impl Replicator for Cluster {
    fn is_writer(&self) -> bool {
        self.shared.writer.load(Ordering::Acquire)
    }

    fn caught_up(&self) -> bool {
        let s = &self.shared;
        let state = s.state.lock().unwrap_or_else(|p| p.into_inner());
        s.takes_writes(&state, s.applied.load(Ordering::Acquire))
    }

    fn max_record_bytes(&self) -> usize {
        self.shared.max_message_bytes()
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
    /// Whether this host takes writes, with `state` locked and `applied` its position.
    fn takes_writes(&self, state: &State, applied: u64) -> bool {
        self.verified.load(Ordering::Acquire) && state.stopped.is_none() && applied >= self.joined_at
    }

    /// The largest message the NATS servers take, less room for headers.
    fn max_message_bytes(&self) -> usize {
        self.client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
            .max(HEADER_ROOM)
    }

    /// This host no longer writes until it has applied the log to its end: an append of its
    /// was fenced (another host wrote) or its outcome is unknown.
    fn fall_behind(&self) {
        self.writer.store(false, Ordering::Release);
        // A record of the old epoch may still land late: a new record must not share its
        // message id, or JetStream would take it for that one.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state().behind = true;
    }

    /// This host stops applying the log and taking writes, for `reason`, until an operator
    /// acts (restart, upgrade, restore).
    fn stop(&self, reason: String) {
        self.writer.store(false, Ordering::Release);
        let mut state = self.state();
        if state.stopped.is_none() {
            tracing::error!("stopped applying the cluster's log: {reason}");
            state.stopped = Some(reason);
        }
    }

    /// Notes messages of the log this host refused.
    fn refused(&self, refused: Vec<(u64, String)>) {
        let mut state = self.state();
        for (position, reason) in refused {
            tracing::error!("refused the message at position {position} of the cluster's log: {reason}");
            state.refused_total += 1;
            if state.refused.len() == REFUSED_SHOWN {
                state.refused.pop_front();
            }
            state.refused.push_back(Refused { position, reason });
        }
    }

    fn writer_host(&self) -> Option<String> {
        self.state().writer_host.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain data behind: go on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
