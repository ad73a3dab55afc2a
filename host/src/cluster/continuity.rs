//! A host serves only on a replica that continues the cluster's log. Before it serves, its
//! replica's position and last record are checked against the log ([`Cluster::verify`]):
//!
//! - **ahead of the log** (the replica has taken positions the log does not hold: NATS was
//!   restored from an older backup, or its stream was made anew): refused. Those positions
//!   hold acknowledged writes the log lost; serving would hand their ids out again.
//! - **behind a gap** (the log starts after the replica's position: it was re-founded): refused;
//!   the host joins from a snapshot instead, on an empty data directory.
//! - **of another log** (the record at the replica's last position is not the one it applied):
//!   refused.
//!
//! When the log lost records that a replica holds (NATS restored from an older backup, or lost
//! entirely), [`refound`] makes the log anew from that replica: a stream whose first position
//! follows the replica's, opened by a record that names the replica's last record as the one
//! it follows. Hosts at that same point continue; the others join from a snapshot.

use std::path::Path;
use std::sync::atomic::Ordering;

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, kv};
use carshare_core::{FORMAT, Log, ReplicaPosition};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::setup::{self, COMPONENTS_BUCKET, ClusterConfig, ClusterError, META_BUCKET, patiently};
use super::{Cluster, STREAM, SUBJECT};

/// Why a host stops: the log ends at `end`, before this replica's position `applied`.
pub(super) fn ahead(applied: u64, end: u64) -> String {
    format!(
        "this host's replica has taken the cluster's log up to position {applied}, and the log \
         ends at position {end}: the log is older than this replica (its NATS servers were \
         restored from an older backup, or its stream was made anew). Nothing was changed. To \
         keep what this replica holds beyond the log, stop every host and re-found the log from \
         the most advanced replica (carshare cluster refound --data-dir DIR); to drop it, start \
         this host on an empty data directory"
    )
}

/// The first fields of a record, enough to tell which one it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    prev: u64,
    log_id: u64,
}

impl Cluster {
    /// Checks that `log`, this host's replica, continues the cluster's log; this host takes
    /// writes only once it has.
    pub async fn verify(&self, log: &Log) -> Result<(), ClusterError> {
        let s = &self.shared;
        let at = log
            .replica_position()
            .map_err(|e| ClusterError(format!("cannot read where this replica stands: {e}")))?;
        let info = patiently("read the log's state", || s.stream.get_info()).await?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        check_position(&at, first, last)?;
        if at.record_id != 0 {
            // The record this replica applied last, or (when the log was re-founded from this
            // very point) the record that opens the log, which names it.
            let (position, named) = if at.record_position >= first.max(1) {
                let m = self.message(at.record_position).await?;
                (at.record_position, m.map(|e| e.id))
            } else {
                let m = self.message(at.applied + 1).await?;
                (at.applied + 1, m.map(|e| e.prev))
            };
            if let Some(named) = named
                && named != at.record_id
            {
                return Err(ClusterError(format!(
                    "this host's data does not continue the cluster's log: the record it applied \
                     last (position {}, {:016x}) is not the one the log holds ({named:016x} at \
                     position {position}). It holds another log's data, or the log was re-founded \
                     from another replica. Start this host on an empty data directory (move this \
                     one aside): it joins from a snapshot of a caught-up host",
                    at.record_position, at.record_id
                )));
            }
        }
        s.verified.store(true, Ordering::Release);
        Ok(())
    }

    /// The record at `position` of the log, if the message there is one of this log.
    async fn message(&self, position: u64) -> Result<Option<Envelope>, ClusterError> {
        let s = &self.shared;
        let m = match s.stream.get_raw_message(position).await {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        Ok(serde_json::from_slice::<Envelope>(&m.payload)
            .ok()
            .filter(|e| e.log_id != 0))
    }
}

/// Where a replica at `at` stands against a log holding positions `first..=last`.
fn check_position(at: &ReplicaPosition, first: u64, last: u64) -> Result<(), ClusterError> {
    if at.applied > last {
        return Err(ClusterError(ahead(at.applied, last)));
    }
    if at.applied + 1 < first {
        return Err(ClusterError(format!(
            "this host's replica stops at position {}, and the cluster's log now starts at \
             position {first}: it cannot catch up from the log (the log was re-founded from a \
             replica further on). Start this host on an empty data directory (move this one \
             aside): it joins from a snapshot of a caught-up host",
            at.applied
        )));
    }
    Ok(())
}

/// What [`refound`] did.
#[derive(Debug, Clone)]
pub struct Refounded {
    /// The log's id (this replica's).
    pub log_id: u64,
    /// The position of the record that opens the log anew.
    pub position: u64,
    /// Where the log ended before (none if it was lost).
    pub previous_end: Option<u64>,
    /// Components the contexts' pointers name, stored again from this data directory.
    pub components: usize,
    /// Components a pointer names that this data directory does not hold.
    pub missing_components: Vec<String>,
}

/// Why [`refound`] refused or failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefoundError(String);

/// Makes the cluster's log anew from the replica in `data_dir` (whose host must be stopped):
/// only when the log is behind that replica, or gone. The replica keeps everything it holds;
/// the log continues from its position.
pub async fn refound(config: &ClusterConfig, data_dir: &Path) -> Result<Refounded, RefoundError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| RefoundError(format!("{what}: {e}"));
    let log = Log::open(data_dir.join("carshare.redb"))
        .map_err(|e| fail("cannot open this host's data (is its host still running?)", &e))?;
    let at = log
        .replica_position()
        .map_err(|e| fail("cannot read the replica", &e))?;
    let (log_id, head) = (log.id(), log.head());
    let pointers = pointers(&log).map_err(|e| fail("cannot read the contexts' pointers", &e))?;
    log.close();
    drop(log);
    if at.applied == 0 {
        return Err(RefoundError(
            "this data directory holds no replica of a cluster's log".into(),
        ));
    }
    let client = setup::connect(config, "carshare refound")
        .await
        .map_err(|e| RefoundError(e.to_string()))?;
    let js = jetstream::new(client);
    let replicas = config.replicas.max(1);
    let meta = setup::bucket(&js, META_BUCKET, replicas, std::time::Duration::ZERO)
        .await
        .map_err(|e| RefoundError(e.to_string()))?;
    let previous_end = match js.get_stream(STREAM).await {
        Ok(mut stream) => {
            let last = stream
                .info()
                .await
                .map_err(|e| fail("cannot read the log", &e))?
                .state
                .last_sequence;
            if last >= at.applied {
                return Err(RefoundError(format!(
                    "the cluster's log is not behind this replica (it ends at position {last}, \
                     the replica at {}): there is nothing to re-found, and doing so would drop \
                     records. Start this host as usual",
                    at.applied
                )));
            }
            // A log with records has the cluster's id; an empty one (NATS lost, and a host
            // that tried to join since made an id) takes this replica's.
            check_log_id(&meta, log_id, last == 0).await?;
            js.delete_stream(STREAM)
                .await
                .map_err(|e| fail("cannot remove the old log", &e))?;
            Some(last)
        }
        Err(_) => {
            check_log_id(&meta, log_id, true).await?;
            None
        }
    };
    let stream = js
        .create_stream(setup::log_stream(replicas, Some(at.applied + 1)))
        .await
        .map_err(|e| fail("cannot make the log anew", &e))?;
    drop(stream);
    let position = open_log(&js, log_id, &at, head).await?;
    let (components, missing_components) = store_components(&js, replicas, data_dir, &pointers).await?;
    Ok(Refounded {
        log_id,
        position,
        previous_end,
        components,
        missing_components,
    })
}

/// The cluster's log id must be this replica's; when the log holds nothing (`replace`), it
/// becomes this replica's.
async fn check_log_id(meta: &kv::Store, log_id: u64, replace: bool) -> Result<(), RefoundError> {
    let stored = meta
        .get("log_id")
        .await
        .map_err(|e| RefoundError(format!("cannot read the log's id: {e}")))?;
    let stored: Option<u64> = stored.and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse().ok()));
    match stored {
        Some(id) if id == log_id => Ok(()),
        Some(id) if !replace => Err(RefoundError(format!(
            "this replica is of log {log_id:016x}, and the cluster's is {id:016x}: re-found from a \
             replica of the cluster's own log"
        ))),
        _ => meta
            .put("log_id", log_id.to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| RefoundError(format!("cannot store the log's id: {e}"))),
    }
}

/// Appends the record that opens the new log right after the replica's position: it follows
/// the replica's last record, and its events (none) continue from the replica's `head`.
async fn open_log(
    js: &jetstream::Context,
    log_id: u64,
    at: &ReplicaPosition,
    head: u64,
) -> Result<u64, RefoundError> {
    let record = serde_json::json!({
        "format": FORMAT, "logId": log_id, "id": setup::random_u64() | 1, "prev": at.record_id,
        "millis": carshare_core::now_millis(), "firstSeq": head + 1, "units": [],
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        NATS_MESSAGE_ID,
        format!("refound-{log_id:016x}-{}", at.applied + 1).as_str(),
    );
    headers.insert(NATS_EXPECTED_LAST_SEQUENCE, at.applied.to_string().as_str());
    let ack = js
        .publish_with_headers(SUBJECT, headers, record.to_string().into())
        .await
        .map_err(|e| RefoundError(format!("cannot open the new log: {e}")))?
        .await
        .map_err(|e| RefoundError(format!("cannot open the new log: {e}")))?;
    if ack.sequence != at.applied + 1 {
        return Err(RefoundError(format!(
            "the new log's first record landed at position {}, not {}",
            ack.sequence,
            at.applied + 1
        )));
    }
    Ok(ack.sequence)
}

/// The digests the contexts' pointers name (`runtime/replicated.rs`), current and previous.
fn pointers(log: &Log) -> Result<Vec<String>, carshare_core::StorageError> {
    let rows = log.snapshot()?.scan("_sys", "contexts/")?;
    let mut digests = Vec::new();
    for (_, value) in rows {
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
        for field in ["digest", "previous"] {
            if let Some(d) = v[field].as_str() {
                digests.push(d.to_string());
            }
        }
    }
    Ok(digests)
}

/// Stores the components named by `digests` in the object store again from the data
/// directory's component files, where the store lost them. Returns how many it stored, and
/// the digests it found nowhere.
async fn store_components(
    js: &jetstream::Context,
    replicas: usize,
    data_dir: &Path,
    digests: &[String],
) -> Result<(usize, Vec<String>), RefoundError> {
    let store = match js.get_object_store(COMPONENTS_BUCKET).await {
        Ok(s) => s,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: COMPONENTS_BUCKET.into(),
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| RefoundError(format!("cannot make the object store {COMPONENTS_BUCKET}: {e}")))?,
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(data_dir.join("contexts")) {
        for entry in dir.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                files.push((hex(&Sha256::digest(&bytes)), bytes));
            }
        }
    }
    let (mut stored, mut missing) = (0, Vec::new());
    for digest in digests {
        if store.info(digest).await.is_ok() {
            continue;
        }
        match files.iter().find(|(d, _)| d == digest) {
            Some((_, bytes)) => {
                let mut reader = bytes.as_slice();
                store
                    .put(digest.as_str(), &mut reader)
                    .await
                    .map_err(|e| RefoundError(format!("cannot store component {digest}: {e}")))?;
                stored += 1;
            }
            None => missing.push(digest.clone()),
        }
    }
    Ok((stored, missing))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
