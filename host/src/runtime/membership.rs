//! Adding a context to a running system and removing one. The set of contexts is data, kept
//! with the system (`components.rs`): a context added here runs again after a restart, and one
//! removed stays removed, its state, events and cursors kept (added again, it goes on from its
//! cursors). In a cluster the set would have to go through the log like a swap does; that is
//! not built yet, so both are refused there with a reason.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{LoadContextError, Runtime};
use crate::components::ComponentStore;

/// What adding or removing a context did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// The context.
    pub name: String,
    /// Its version (the one added, or the one that ran until removed).
    pub version: String,
    /// SHA-256 of that component.
    pub digest: String,
    /// `added` or `removed`.
    pub change: &'static str,
    /// From the call to the change taking effect, in milliseconds.
    pub millis: f64,
}

impl Runtime {
    /// The store that keeps the set of contexts, if this runtime keeps one.
    pub(crate) fn component_store(&self) -> Option<&ComponentStore> {
        self.inner.components.as_ref()
    }

    /// Whether context `name` is loaded.
    pub fn has_context(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    /// Adds context `name`, from the component `bytes`, to the running system: checked and
    /// loaded like a swap (its routes may not collide, its name must be free), then recorded
    /// so that a restart runs it too. Its subscriber starts from its cursors (the start of the
    /// log for a new context; where it stood for one removed before).
    pub async fn add(&self, name: &str, bytes: &[u8]) -> Result<Membership, LoadContextError> {
        let started = Instant::now();
        let _one_at_a_time = self.inner.swapping.lock().await;
        self.refuse_in_cluster("adding")?;
        if self.slot(name).is_some() {
            return Err(LoadContextError::AlreadyLoaded(name.to_string()));
        }
        // Checked before anything is recorded: a component that will not load changes nothing.
        let plugin = self.loaded(name, Arc::from(bytes)).await?;
        let (version, digest) = (plugin.manifest().version.clone(), plugin.digest().to_string());
        drop(plugin);
        if let Some(store) = self.inner.components.clone() {
            let (n, b) = (name.to_string(), bytes.to_vec());
            tokio::task::spawn_blocking(move || {
                store.save(&n, &b, None)?;
                store.set_removed(&n, false)
            })
            .await
            .map_err(|e| LoadContextError::Persist(e.to_string()))?
            .map_err(|e| LoadContextError::Persist(e.to_string()))?;
        }
        if let Err(e) = self.load(name, bytes).await {
            // Recorded but not running: the record must not bring it up at the next start.
            if let Some(store) = &self.inner.components
                && let Err(mark) = store.set_removed(name, true)
            {
                tracing::error!(
                    "context {name} did not load, and could not be marked removed ({mark}): \
                     the next start will try to load it again"
                );
            }
            return Err(e);
        }
        let added = Membership {
            name: name.to_string(),
            version,
            digest,
            change: "added",
            millis: started.elapsed().as_secs_f64() * 1000.0,
        };
        tracing::info!("added context {name} {} in {:.1} ms", added.version, added.millis);
        Ok(added)
    }

    /// Removes context `name` from the running system: its routes answer 404 from now on, its
    /// subscriber stops after the step it is in, and a restart does not run it. Its state,
    /// events, cursors and dead letters stay (purging them is not built yet); requests in
    /// flight on it finish.
    pub async fn remove(&self, name: &str) -> Result<Membership, LoadContextError> {
        let started = Instant::now();
        let _one_at_a_time = self.inner.swapping.lock().await;
        self.refuse_in_cluster("removing")?;
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        // Recorded first: if that fails, nothing has changed.
        if let Some(store) = self.inner.components.clone() {
            let n = name.to_string();
            tokio::task::spawn_blocking(move || store.set_removed(&n, true))
                .await
                .map_err(|e| LoadContextError::Persist(e.to_string()))?
                .map_err(|e| LoadContextError::Persist(e.to_string()))?;
        }
        {
            let mut slots = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
            let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
            routes.set(name, &[]).expect("no routes never collide");
            slots.remove(name);
        }
        self.inner.dispatcher.unsubscribe(name).await;
        let current = slot.current();
        let removed = Membership {
            name: name.to_string(),
            version: current.manifest().version.clone(),
            digest: current.digest().to_string(),
            change: "removed",
            millis: started.elapsed().as_secs_f64() * 1000.0,
        };
        tracing::info!(
            "removed context {name} {} (its data is kept; adding it again resumes from its cursors)",
            removed.version
        );
        if let Ok(catalog) = self.catalog() {
            for w in catalog.waiting.iter().filter(|w| w.publisher == name) {
                tracing::warn!("{w}");
            }
        }
        Ok(removed)
    }

    fn refuse_in_cluster(&self, what: &str) -> Result<(), LoadContextError> {
        if self.inner.cluster.get().is_some() {
            return Err(LoadContextError::NotInCluster(format!(
                "{what} a context is not supported in a cluster yet: every host must agree on \
                 the set of contexts, and that set does not go through the log"
            )));
        }
        Ok(())
    }
}
