//! Swaps across a cluster. A swap (or rollback) on any host stores the component in the
//! cluster's object store and commits a pointer, `_sys/contexts/<name>` = its digest, through
//! the log; every host meets the pointer in log order and switches to the code it names
//! (`follow_pointers`). Each dispatcher step reads the pointer of its context and refuses to
//! run on other code (`check_pointer`): a step that ran on the old version after the pointer
//! moved conflicts at the writer, and one that would run before this host has switched waits.
//! So no event after the swap's log position is handled by the old version, and none is
//! skipped, on whichever host the subscribers run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carshare_core::{CommitError, Unit};
use serde::{Deserialize, Serialize};

use super::{LoadContextError, Runtime, Swapped};
use crate::cluster::Cluster;
use crate::wasm::Plugin;

/// The pseudo-context whose state holds the pointers; no context can be named so.
const SYS: &str = "_sys";

fn pointer_key(name: &str) -> String {
    format!("contexts/{name}")
}

/// Which code a context runs, cluster-wide.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pointer {
    /// SHA-256 of the component.
    digest: String,
    /// Its version, for people.
    version: String,
    /// The digest of the code it replaced: what a rollback restores.
    previous: Option<String>,
}

impl Runtime {
    /// In a cluster, swaps `name` to `bytes` through the log (the swap lock is held).
    pub(super) async fn swap_in_cluster(
        &self,
        cluster: &Cluster,
        name: &str,
        bytes: Arc<[u8]>,
        started: Instant,
    ) -> Result<Swapped, LoadContextError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        let plugin = self.checked(name, bytes).await?;
        let current = slot.current();
        // Both: the other hosts fetch the new code, and a rollback (on any host) the old.
        for stored in [&plugin, &*current] {
            cluster
                .put_component(stored.digest(), stored.bytes())
                .await
                .map_err(LoadContextError::Persist)?;
        }
        let pointer = Pointer {
            digest: plugin.digest().to_string(),
            version: plugin.manifest().version.clone(),
            previous: Some(current.digest().to_string()),
        };
        self.commit_pointer(name, &pointer).await?;
        // This host switches now; the others when they apply the pointer (so may this one's
        // watcher, which then finds it done).
        self.install(name, &slot, Arc::new(plugin), started).await
    }

    /// In a cluster, rolls `name` back to the code its pointer replaced.
    pub(super) async fn rollback_in_cluster(
        &self,
        cluster: &Cluster,
        name: &str,
        started: Instant,
    ) -> Result<Swapped, LoadContextError> {
        let previous = self
            .pointer(name)?
            .and_then(|p| p.previous)
            .ok_or_else(|| LoadContextError::NoPrevious(name.to_string()))?;
        let bytes = cluster
            .get_component(&previous)
            .await
            .map_err(LoadContextError::Persist)?;
        self.swap_in_cluster(cluster, name, Arc::from(bytes), started)
            .await
    }

    /// `bytes` loaded as context `name`, with its routes checked before the pointer to it is
    /// committed (installing checks them again, too late to keep it out of the log).
    async fn checked(&self, name: &str, bytes: Arc<[u8]>) -> Result<Plugin, LoadContextError> {
        let plugin = self.loaded(name, bytes).await?;
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(name, &plugin.manifest().routes)
            .map_err(LoadContextError::Route)?;
        Ok(plugin)
    }

    async fn commit_pointer(&self, name: &str, pointer: &Pointer) -> Result<(), LoadContextError> {
        let value = serde_json::to_vec(pointer).map_err(|e| LoadContextError::Persist(e.to_string()))?;
        let failed =
            |e: &dyn std::fmt::Display| LoadContextError::Persist(format!("the swap was not committed: {e}"));
        for _ in 0..=self.inner.options.conflict_retries {
            let mut unit = self.inner.log.begin().map_err(|e| failed(&e))?;
            // Read, so that two swaps of one context at once cannot both commit.
            unit.get(SYS, &pointer_key(name)).map_err(|e| failed(&e))?;
            unit.set(SYS, &pointer_key(name), value.clone());
            match self.inner.log.commit(unit).await {
                Ok(_) => return Ok(()),
                Err(CommitError::Conflict) => continue,
                Err(e) => return Err(failed(&e)),
            }
        }
        Err(failed(&"it kept conflicting with other swaps"))
    }

    /// The pointer of `name` in this host's replica.
    fn pointer(&self, name: &str) -> Result<Option<Pointer>, LoadContextError> {
        let value = self
            .inner
            .log
            .snapshot()
            .and_then(|mut s| s.get(SYS, &pointer_key(name)))
            .map_err(|e| LoadContextError::Persist(e.to_string()))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// In a cluster, whether `plugin` is the code the log says `unit`'s context runs, read in
    /// `unit` (so that a pointer that moves before the unit commits makes it conflict). `Err`
    /// says why not: the step must wait for this host to switch.
    pub(super) fn check_pointer(&self, unit: &mut Unit, plugin: &Plugin) -> Result<(), String> {
        if self.cluster().is_none() {
            return Ok(());
        }
        let name = &plugin.manifest().name;
        let value = unit.get(SYS, &pointer_key(name)).map_err(|e| e.to_string())?;
        match value.and_then(|v| serde_json::from_slice::<Pointer>(&v).ok()) {
            Some(p) if p.digest != plugin.digest() => Err(format!(
                "the cluster runs {name} {} and this host still {}: waiting for it to switch",
                p.version,
                plugin.manifest().version
            )),
            _ => Ok(()),
        }
    }

    /// Each host of a cluster: whenever it has applied more of the log, switches every
    /// context whose pointer names other code than it runs. A context whose code cannot be
    /// loaded here is stopped (503) rather than left on the old code.
    pub(crate) async fn follow_pointers(self) {
        let mut applied = self.inner.log.watch_applied();
        loop {
            self.switch_to_pointers().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), applied.changed()).await;
        }
    }

    async fn switch_to_pointers(&self) {
        let Some(cluster) = self.cluster() else { return };
        let pointers = match self
            .inner
            .log
            .snapshot()
            .and_then(|mut s| s.scan(SYS, "contexts/"))
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot read the contexts' pointers: {e}");
                return;
            }
        };
        for (key, value) in pointers {
            let Some(name) = key.strip_prefix("contexts/") else {
                continue;
            };
            let Ok(pointer) = serde_json::from_slice::<Pointer>(&value) else {
                continue;
            };
            let Some(slot) = self.slot(name) else { continue };
            if slot.current().digest() == pointer.digest {
                continue;
            }
            let started = Instant::now();
            let _one_at_a_time = self.inner.swapping.lock().await;
            if slot.current().digest() == pointer.digest {
                continue;
            }
            let switched = match cluster.get_component(&pointer.digest).await {
                Ok(bytes) => match self.checked(name, Arc::from(bytes)).await {
                    Ok(plugin) => self.install(name, &slot, Arc::new(plugin), started).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(LoadContextError::Persist(e)),
            };
            let mut stopped = self
                .inner
                .stopped_for_code
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match switched {
                Ok(s) => {
                    if stopped.remove(name) {
                        self.set_running(name, true);
                    }
                    tracing::info!("switched {name} to {} as the cluster's log says", s.version);
                }
                Err(e) => {
                    stopped.insert(name.to_string());
                    self.set_running(name, false);
                    tracing::error!(
                        "cannot switch {name} to {} as the cluster's log says: {e}; stopped it here",
                        pointer.version
                    );
                }
            }
        }
    }
}
