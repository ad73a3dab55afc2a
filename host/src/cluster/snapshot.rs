//! A new host joins from a snapshot of a caught-up host instead of replaying the whole log
//! from position 1 (which also becomes impossible once the log was re-founded, and so starts
//! later). A host starting on an empty data directory asks on `carshare.snapshot` (a queue
//! group: one caught-up host answers); that host writes a consistent copy of its replica (a
//! backup, `core/src/backup.rs`), stores it in the object store `carshare_snapshots`, and
//! answers with its name; the new host fetches it, puts it in place as its database, and
//! applies the log from the snapshot's position on. Snapshots expire from the store after an
//! hour, and the new host removes its own once it has it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use carshare_core::Log;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::setup::ClusterError;

const SUBJECT: &str = "carshare.snapshot";
const QUEUE: &str = "carshare-snapshot";

/// How long a new host waits for a snapshot: a caught-up host writes and uploads it first.
const WAIT: Duration = Duration::from_secs(300);

/// How long a new host waits for any host to take its request before it replays the log.
const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// A snapshot ready to fetch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    /// Its name in `carshare_snapshots`.
    name: String,
    /// The host that made it.
    host: String,
    /// The log position it holds.
    position: u64,
    /// Its size.
    bytes: u64,
}

impl Shared {
    /// Fills `dest` (a database that does not exist yet) with a snapshot of a caught-up host.
    /// If no host answers and the log starts at position 1, leaves it empty: the host then
    /// replays the whole log.
    pub(super) async fn fetch_snapshot(&self, dest: &Path) -> Result<(), ClusterError> {
        let started = Instant::now();
        let first = self
            .stream
            .get_info()
            .await
            .map(|i| i.state.first_sequence)
            .unwrap_or(1);
        let ready = match self.ask_for_snapshot().await {
            Ok(ready) => ready,
            Err(e) if first <= 1 => {
                tracing::warn!("no snapshot to join from ({e}): applying the whole log instead");
                return Ok(());
            }
            Err(e) => {
                return Err(ClusterError(format!(
                    "cannot join the cluster: the log starts at position {first}, so this host \
                     needs a snapshot of a caught-up host, and got none: {e}"
                )));
            }
        };
        let tmp = dest.with_extension("snapshot");
        let got = self.download(&ready.name, &tmp).await;
        let _ = self.snapshots.delete(ready.name.as_str()).await;
        got?;
        std::fs::rename(&tmp, dest).map_err(|e| {
            ClusterError(format!(
                "cannot put the snapshot in place as {}: {e}",
                dest.display()
            ))
        })?;
        tracing::info!(
            "joined from a snapshot of host {} at position {} ({} bytes) in {:?}",
            ready.host,
            ready.position,
            ready.bytes,
            started.elapsed()
        );
        Ok(())
    }

    async fn ask_for_snapshot(&self) -> Result<Ready, String> {
        let deadline = Instant::now() + FIRST_ANSWER;
        loop {
            let asked = self.client.request(SUBJECT, self.host.clone().into());
            match tokio::time::timeout(WAIT, asked).await {
                Ok(Ok(reply)) => match serde_json::from_slice::<Ready>(&reply.payload) {
                    Ok(ready) => return Ok(ready),
                    // The host that took the request could not make one (it is catching up
                    // itself): another may, the next time.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => return Err(String::from_utf8_lossy(&reply.payload).into_owned()),
                },
                // No host takes requests yet (or every one is busy catching up): a while.
                Ok(Err(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => return Err(format!("no host answered: {e}")),
                Err(_) => return Err(format!("no snapshot within {WAIT:?}")),
            }
        }
    }

    async fn download(&self, name: &str, to: &Path) -> Result<(), ClusterError> {
        let fail = |e: &dyn std::fmt::Display| ClusterError(format!("cannot fetch snapshot {name}: {e}"));
        let mut object = self.snapshots.get(name).await.map_err(|e| fail(&e))?;
        let mut file = tokio::fs::File::create(to).await.map_err(|e| fail(&e))?;
        tokio::io::copy(&mut object, &mut file)
            .await
            .map_err(|e| fail(&e))?;
        file.sync_all().await.map_err(|e| fail(&e))?;
        Log::inspect(to).map_err(|e| fail(&e))?;
        Ok(())
    }
}

/// Answers snapshot requests for as long as this host runs, while it is caught up.
pub(super) async fn serve(shared: Arc<Shared>, log: Log) {
    loop {
        let mut requests = match shared.client.queue_subscribe(SUBJECT, QUEUE.into()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot take snapshot requests: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply else { continue };
            let joiner = String::from_utf8_lossy(&message.payload).into_owned();
            let answer = match make(&shared, &log, &joiner).await {
                Ok(ready) => serde_json::to_vec(&ready).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("cannot make a snapshot for host {joiner}: {e}");
                    e.into_bytes()
                }
            };
            if let Err(e) = shared.client.publish(reply, answer.into()).await {
                tracing::warn!("cannot answer a snapshot request: {e}");
            }
        }
    }
}

/// Writes a snapshot of this host's replica and stores it for `joiner`.
async fn make(shared: &Shared, log: &Log, joiner: &str) -> Result<Ready, String> {
    let caught_up = {
        let state = shared.state();
        shared.takes_writes(&state, log.applied())
    };
    if !caught_up {
        return Err(format!("host {} is not caught up with the log", shared.host));
    }
    let dir = PathBuf::from(&shared.claim.data_dir);
    let file = dir.join(format!(
        "snapshot-{joiner}-{:016x}.redb",
        super::setup::random_u64()
    ));
    let backup = {
        let (log, file) = (log.clone(), file.clone());
        tokio::task::spawn_blocking(move || log.backup(&file))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let name = format!("{}-{}-{joiner}", shared.host, backup.position.applied);
    let stored = async {
        let mut reader = tokio::fs::File::open(&file).await.map_err(|e| e.to_string())?;
        shared
            .snapshots
            .put(name.as_str(), &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot store the snapshot: {e}"))
    }
    .await;
    let _ = std::fs::remove_file(&file);
    stored?;
    shared
        .log_last
        .fetch_max(backup.position.applied, Ordering::AcqRel);
    tracing::info!(
        "made a snapshot at position {} ({} bytes) for host {joiner}",
        backup.position.applied,
        backup.bytes
    );
    Ok(Ready {
        name,
        host: shared.host.clone(),
        position: backup.position.applied,
        bytes: backup.bytes,
    })
}
