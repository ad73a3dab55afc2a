//! One process per host name. A host's name is its identity in the cluster: its id slot, the
//! subject units are forwarded to, its records' message ids. Two processes under one name (a
//! copied data directory started as a second host, a VM recovered while the original still
//! runs) would share all of that and overwrite each other's orders. So a process claims its
//! name in the bucket `carshare_presence` when it joins (a create, which fails if the key
//! exists) with a random nonce of its own, and renews the key while it runs; the key expires
//! [`PRESENCE_TTL`] after the process stops renewing it. A second process under a taken name
//! waits that long for the key to expire (the first may just have been killed) and is then
//! refused with what to do. A process that finds its name taken by another while it ran
//! (it was paused past the TTL) stops serving at once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation};
use carshare_core::FORMAT;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::setup::{ClusterError, fail};

/// How long a host's presence lasts unless renewed.
pub(super) const PRESENCE_TTL: Duration = Duration::from_secs(10);

/// How often a process renews its presence.
const RENEW: Duration = Duration::from_secs(2);

/// A process's claim on a host name: who it is, so that the refusal of a second process can
/// say which one holds the name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The host name.
    #[serde(default)]
    pub host: String,
    /// The process's random nonce, in hex.
    pub nonce: String,
    /// Its process id.
    pub pid: u32,
    /// The machine it runs on.
    pub machine: String,
    /// Its data directory.
    pub data_dir: String,
    /// When it joined (RFC 3339, UTC).
    pub since: String,
    /// The newest format of the log's records it reads.
    pub reads: u32,
    /// Its version of carshare.
    #[serde(default)]
    pub version: String,
}

impl Presence {
    fn of_this_process(host: &str, nonce: u64, data_dir: &Path) -> Presence {
        Presence {
            host: host.to_string(),
            nonce: format!("{nonce:016x}"),
            pid: std::process::id(),
            machine: machine_name(),
            data_dir: std::fs::canonicalize(data_dir)
                .unwrap_or_else(|_| data_dir.to_path_buf())
                .display()
                .to_string(),
            since: carshare_core::rfc3339_utc(carshare_core::now_millis()),
            reads: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
}

/// Claims `host` for this process (nonce `nonce`), waiting for the claim of an earlier process
/// under that name to expire; refuses if another process holds it.
pub(super) async fn acquire(
    store: &kv::Store,
    host: &str,
    nonce: u64,
    data_dir: &Path,
) -> Result<Presence, ClusterError> {
    let mine = Presence::of_this_process(host, nonce, data_dir);
    let deadline = Instant::now() + PRESENCE_TTL + Duration::from_secs(2);
    let mut said = false;
    loop {
        match store.create(host, mine.bytes()).await {
            Ok(_) => return Ok(mine),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                if Instant::now() >= deadline {
                    let holder = read(store, host).await.ok().flatten();
                    return Err(ClusterError(twin_refusal(host, holder.as_ref())));
                }
                if !std::mem::replace(&mut said, true) {
                    tracing::info!(
                        "host name {host} is held by another process: waiting up to {PRESENCE_TTL:?} \
                         for its claim to expire (it may just have stopped)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(fail(&format!("cannot claim the host name {host}"), e));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn twin_refusal(host: &str, holder: Option<&Presence>) -> String {
    let who = match holder {
        Some(p) => format!(
            "process {} on {} (data directory {}, carshare {}, since {})",
            p.pid, p.machine, p.data_dir, p.version, p.since
        ),
        None => "another process".to_string(),
    };
    format!(
        "cannot join the cluster: host name {host} is taken by {who}. Two processes under one \
         name would overwrite each other's data. Stop that process first, or start this one \
         under a name of its own (--cluster-host NAME): a copy of another host's data directory \
         joins as a new host that way."
    )
}

/// Renews this process's presence for as long as it runs. If another process holds the name
/// (this one was paused past the TTL and a second one started), this one must stop: it says
/// so through `fatal`.
pub(super) async fn renew(shared: Arc<Shared>) {
    let store = &shared.presence;
    let host = shared.host.as_str();
    let nonce = format!("{:016x}", shared.nonce);
    loop {
        tokio::time::sleep(RENEW).await;
        let entry = match store.entry(host).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("cannot read this host's presence: {e}");
                continue;
            }
        };
        let held = entry
            .as_ref()
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| {
                serde_json::from_slice::<Presence>(&e.value)
                    .ok()
                    .map(|p| (p, e.revision))
            });
        match held {
            Some((p, revision)) if p.nonce == nonce => {
                if let Err(e) = store.update(host, p.bytes(), revision).await {
                    tracing::debug!("cannot renew this host's presence: {e}");
                }
            }
            Some((p, _)) => {
                let reason = format!(
                    "host name {host} was taken by process {} on {} while this process could \
                     not renew its claim: this process stops serving",
                    p.pid, p.machine
                );
                shared.stop(reason.clone());
                shared.writer.store(false, Ordering::Release);
                shared.fatal.send_replace(Some(reason));
                return;
            }
            // Expired while this process was paused or cut off: nobody took it; claim again.
            None => {
                if store.create(host, shared.claim.bytes()).await.is_ok() {
                    tracing::warn!("this host's presence had expired; claimed the name {host} again");
                }
            }
        }
    }
}

/// Hands this process's claim back, if it still holds it.
pub(super) async fn release(shared: &Shared) {
    let nonce = format!("{:016x}", shared.nonce);
    if let Ok(Some(e)) = shared.presence.entry(shared.host.as_str()).await
        && e.operation == Operation::Put
        && serde_json::from_slice::<Presence>(&e.value).is_ok_and(|p| p.nonce == nonce)
    {
        let _ = shared
            .presence
            .delete_expect_revision(shared.host.as_str(), Some(e.revision))
            .await;
    }
}

/// The presence of `host`, if a process holds it.
async fn read(store: &kv::Store, host: &str) -> Result<Option<Presence>, String> {
    let entry = store.entry(host).await.map_err(|e| e.to_string())?;
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}

/// Every host present now.
pub(super) async fn all(store: &kv::Store) -> Result<Vec<Presence>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Some(mut p) = read(store, &key).await? {
            p.host = key;
            out.push(p);
        }
    }
    Ok(out)
}

/// This machine's name, for people reading a refusal.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
