//! Loading a context, and replacing its code while it serves: swap and rollback. A new
//! version is checked in full before anything changes (it compiles, implements the world,
//! says it is the context it replaces, and grabs no other context's route); then one pointer
//! swap sends new requests and event steps to it, while those in flight finish on the old one.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use carshare_core::SubscribeError;
use serde::Serialize;

use super::subscriber::{Subscriber, reach};
use super::{LoadContextError, Runtime, Slot};
use crate::components::Stored;
use crate::metrics::SwapLabels;
use crate::wasm::{Limits, Plugin};

/// What a swap or rollback did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Swapped {
    /// The context.
    pub name: String,
    /// The version now serving.
    pub version: String,
    /// The version it replaced (what a rollback restores).
    pub previous_version: String,
    /// SHA-256 of the component now serving.
    pub digest: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// From the call to the new version serving, in milliseconds (compiling or loading from
    /// the cache, checking, instantiating, persisting, switching).
    pub millis: f64,
    /// Where each partition's log stood when the new version took over, as `partition:seq`:
    /// its handlers run the old version's code up to about there and the new one's after,
    /// each dispatcher step on one of them, never a mix.
    pub positions: Vec<String>,
}

impl Runtime {
    pub(super) fn limits_for(&self, name: &str) -> Limits {
        self.inner
            .options
            .context_limits
            .get(name)
            .unwrap_or(&self.inner.options.limits)
            .clone()
    }

    /// The components swapped in earlier, kept across restarts: name → (current, previous).
    pub fn swapped_components(&self) -> std::io::Result<BTreeMap<String, Stored>> {
        let Some(store) = &self.inner.components else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for name in store.names()? {
            if let Some(found) = store.load(&name)? {
                out.insert(name, found);
            }
        }
        Ok(out)
    }

    /// Replaces the code of context `name` with the component `bytes`, while it serves.
    ///
    /// The component is compiled (or loaded from the cache), instantiated and checked first:
    /// it must implement the world, say it is `name`, and serve no route of another context.
    /// Only then, in one step, new requests and event steps go to it; requests and steps in
    /// flight finish on the version they started on. The event cursor belongs to the context,
    /// not the version, so the new version continues exactly where the old one was. The old
    /// version is kept for [`Runtime::rollback`], and the swap is recorded so that it survives
    /// a restart.
    pub async fn swap(&self, name: &str, bytes: &[u8]) -> Result<Swapped, LoadContextError> {
        let started = Instant::now();
        let _one_at_a_time = self.inner.swapping.lock().await;
        let swapped = match self.inner.cluster.get() {
            Some(cluster) => {
                self.swap_in_cluster(cluster, name, Arc::from(bytes), started)
                    .await
            }
            None => self.swap_locked(name, Arc::from(bytes), started).await,
        };
        self.count_swap(name, "swap", swapped.is_ok());
        swapped
    }

    fn count_swap(&self, name: &str, kind: &'static str, ok: bool) {
        self.metrics()
            .swaps
            .get_or_create(&SwapLabels {
                context: name.to_string(),
                kind,
                outcome: if ok { "ok" } else { "refused" },
            })
            .inc();
    }

    /// Restores the version that ran before the last swap (the same way a swap installs one);
    /// rolling back twice returns to where it started.
    pub async fn rollback(&self, name: &str) -> Result<Swapped, LoadContextError> {
        let rolled = self.rollback_locked(name).await;
        self.count_swap(name, "rollback", rolled.is_ok());
        rolled
    }

    async fn rollback_locked(&self, name: &str) -> Result<Swapped, LoadContextError> {
        let started = Instant::now();
        // Held from reading the previous version to installing it, so two rollbacks at once
        // cannot both install the same version and lose the other.
        let _one_at_a_time = self.inner.swapping.lock().await;
        if let Some(cluster) = self.inner.cluster.get() {
            return self.rollback_in_cluster(cluster, name, started).await;
        }
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        let previous = slot
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| LoadContextError::NoPrevious(name.to_string()))?;
        self.swap_locked(name, previous, started).await
    }

    /// [`Runtime::swap`], with the swap lock held by the caller.
    async fn swap_locked(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        started: Instant,
    ) -> Result<Swapped, LoadContextError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadContextError::NoSuchContext(name.to_string()))?;
        let plugin = self.loaded(name, bytes).await?;
        self.install(name, &slot, Arc::new(plugin), started).await
    }

    /// `bytes` loaded with `name`'s limits, refused unless it is a version of `name` that fits
    /// the event catalog of the others.
    pub(super) async fn loaded(&self, name: &str, bytes: Arc<[u8]>) -> Result<Plugin, LoadContextError> {
        let plugin = Plugin::load(&self.inner.engine, bytes, self.limits_for(name))
            .await
            .map_err(LoadContextError::Load)?;
        if plugin.manifest().name != name {
            return Err(LoadContextError::WrongContext {
                expected: name.to_string(),
                found: plugin.manifest().name.clone(),
            });
        }
        // Its subscriptions must be able to fire, and what others read from it must still be
        // published.
        self.catalog_with(plugin.manifest())
            .map_err(|e| LoadContextError::Catalog(Box::new(e)))?;
        Ok(plugin)
    }

    pub(super) async fn install(
        &self,
        name: &str,
        slot: &Slot,
        new: Arc<Plugin>,
        started: Instant,
    ) -> Result<Swapped, LoadContextError> {
        let old = slot.current();
        if self.inner.partitions.count() > 1 && new.manifest().placement != old.manifest().placement {
            return Err(LoadContextError::Placement(format!(
                "{name} {} keeps its state {:?} and {} {:?}: with several partitions a version \
                 cannot move where the context's state lives",
                old.manifest().version,
                old.manifest().placement,
                new.manifest().version,
                new.manifest().placement
            )));
        }
        let routes = new.manifest().routes.clone();
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(name, &routes)
            .map_err(LoadContextError::Route)?;
        // Recorded before it takes effect: if recording fails, nothing has changed. Writing
        // and syncing the files blocks, so it runs on a blocking thread.
        if let Some(store) = self.inner.components.clone() {
            let (n, current, previous) = (name.to_string(), new.bytes().clone(), old.bytes().clone());
            tokio::task::spawn_blocking(move || store.save(&n, &current, Some(&previous)))
                .await
                .map_err(|e| LoadContextError::Persist(e.to_string()))?
                .map_err(|e| LoadContextError::Persist(e.to_string()))?;
        }
        self.inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(name, &routes)
            .map_err(LoadContextError::Route)?;
        *slot.plugin.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        *slot.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old.bytes().clone());
        let positions: Vec<String> = self
            .inner
            .partitions
            .logs()
            .iter()
            .map(|l| format!("{}:{}", l.partition(), l.head()))
            .collect();
        // A version placing events by other ids reads other partitions' events: its workers
        // change (from the cursors the old ones left).
        if reach(new.manifest()) != reach(old.manifest()) {
            self.subscribe_context(name, slot.running.load(std::sync::atomic::Ordering::Acquire));
        }
        // A breaker opened by the old version must not keep refusing calls to the new one
        // (after a rollback from a faulting version, above all).
        self.breaker(name).reset();
        let swapped = Swapped {
            name: name.to_string(),
            version: new.manifest().version.clone(),
            previous_version: old.manifest().version.clone(),
            digest: new.digest().to_string(),
            loaded_at: new.loaded_at().to_string(),
            millis: started.elapsed().as_secs_f64() * 1000.0,
            positions,
        };
        tracing::info!(
            "swapped context {name}: {} -> {} in {:.1} ms",
            swapped.previous_version,
            swapped.version,
            swapped.millis
        );
        Ok(swapped)
    }

    /// Makes `previous` what a rollback of `name` restores (after a restart, from disk).
    pub fn set_previous(&self, name: &str, previous: Vec<u8>) -> bool {
        match self.slot(name) {
            Some(slot) => {
                *slot.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(previous));
                true
            }
            None => false,
        }
    }

    /// Loads context `name` from component bytes, routes its collections and subscribes it
    /// from its durable cursor.
    pub async fn load(&self, name: &str, bytes: &[u8]) -> Result<(), LoadContextError> {
        let plugin = Plugin::load(&self.inner.engine, Arc::from(bytes), self.limits_for(name))
            .await
            .map_err(LoadContextError::Load)?;
        let m = plugin.manifest().clone();
        let code = if plugin.code_from_cache() {
            "cached"
        } else {
            "compiled"
        };
        if m.name != name {
            return Err(LoadContextError::WrongContext {
                expected: name.to_string(),
                found: m.name,
            });
        }
        let mut slots = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.contains_key(&m.name) {
            return Err(LoadContextError::AlreadyLoaded(m.name));
        }
        // The name is the context's cursors: an embedder's own subscriber must not hold it.
        if self.is_native(&m.name) {
            return Err(LoadContextError::SubscriberName(SubscribeError::NameTaken(
                m.name,
            )));
        }
        self.inner
            .dispatcher
            .claim(&m.name)
            .map_err(LoadContextError::SubscriberName)?;
        if let Err(e) = self
            .inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(&m.name, &m.routes)
        {
            self.inner.dispatcher.release(&m.name);
            return Err(LoadContextError::Route(e));
        }
        slots.insert(
            m.name.clone(),
            Arc::new(Slot {
                plugin: RwLock::new(Arc::new(plugin)),
                previous: Mutex::new(None),
                running: AtomicBool::new(true),
            }),
        );
        drop(slots);
        self.subscribe_context(&m.name, true);
        tracing::info!(
            "loaded context {} {} (routes {:?}, subscribes {:?}, machine code {code})",
            m.name,
            m.version,
            m.routes,
            m.event_types()
        );
        Ok(())
    }

    /// Subscribes context `name` to the dispatcher, with the reach its current version's
    /// manifest gives it (a subscription before replaces it).
    fn subscribe_context(&self, name: &str, running: bool) {
        let Some(slot) = self.slot(name) else { return };
        let subscriber = Subscriber {
            runtime: Arc::downgrade(&self.inner),
            name: name.to_string(),
            reach: reach(slot.current().manifest()),
        };
        // Claimed when the context was loaded: this dispatcher holds the name.
        if let Err(e) = self
            .inner
            .dispatcher
            .subscribe(name, Arc::new(subscriber), running)
        {
            tracing::error!("context {name} receives no events: {e}");
        }
    }
}
