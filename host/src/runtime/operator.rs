//! What an operator does to a running system: stop and start a context, see every context
//! with its version, cursor, breaker and instances, retry a dead letter, move a cursor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use carshare_core::{BreakerStatus, CommitError, DeadLetter, RetryError, StorageError, SubscriberStatus};
use serde::Serialize;

use super::{Runtime, Slot};

/// What an operator sees of a context.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the component.
    pub digest: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// `running` or `stopped`.
    pub state: &'static str,
    /// Routes.
    pub routes: Vec<String>,
    /// Subscriptions.
    pub subscriptions: Vec<String>,
    /// The event types it publishes (their schemas are in `/asyncapi.json`).
    pub publishes: Vec<String>,
    /// With several partitions, the subscriptions handled where an id of the event lives:
    /// event type → the payload field naming it.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub placed_by: std::collections::BTreeMap<String, String>,
    /// Where its state lives with several partitions.
    pub placement: crate::wasm::Placement,
    /// Live instances.
    pub instances: usize,
    /// Its event cursor, lag and any failing event, if it subscribes.
    pub subscriber: Option<SubscriberStatus>,
    /// The circuit breaker in front of synchronous calls into it.
    pub breaker: BreakerStatus,
    /// Whether a rollback is possible.
    pub can_roll_back: bool,
}

impl Runtime {
    /// Stops or starts a context: a stopped context answers no request or call (callers get
    /// "unavailable") and receives no event; its cursor stays where it is, and it catches up
    /// when started. Returns false for an unknown context.
    pub fn set_running(&self, name: &str, running: bool) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        slot.running.store(running, Ordering::Release);
        self.inner.dispatcher.set_running(name, running);
        tracing::info!("context {name} {}", if running { "started" } else { "stopped" });
        true
    }

    /// The manifest of every loaded context, by name.
    pub(crate) fn manifests(&self) -> Vec<crate::wasm::Manifest> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|slot| slot.current().manifest().clone())
            .collect()
    }

    /// Every loaded context, by name.
    pub fn contexts(&self) -> Result<Vec<ContextInfo>, StorageError> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(name, slot)| {
                let p = slot.current();
                let m = p.manifest();
                Ok(ContextInfo {
                    version: m.version.clone(),
                    digest: p.digest().to_string(),
                    loaded_at: p.loaded_at().to_string(),
                    state: if slot.running.load(Ordering::Acquire) {
                        "running"
                    } else {
                        "stopped"
                    },
                    routes: m.routes.clone(),
                    subscriptions: m.event_types().into_iter().map(str::to_string).collect(),
                    publishes: m.published_types().into_iter().map(str::to_string).collect(),
                    placed_by: m
                        .subscriptions
                        .iter()
                        .filter_map(|s| s.placed_by.clone().map(|f| (s.event_type.clone(), f)))
                        .collect(),
                    placement: m.placement,
                    instances: p.instances(),
                    subscriber: self.inner.dispatcher.status(&name)?,
                    breaker: self.breaker(&name).status(Instant::now()),
                    can_roll_back: slot.previous.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
                    name,
                })
            })
            .collect()
    }

    /// Has context `subscriber` handle its dead letter again: event `seq` of partition
    /// `source` (see [`carshare_core::Dispatcher::retry_dead_letter`]).
    pub async fn retry_dead_letter(&self, subscriber: &str, source: u32, seq: u64) -> Result<(), RetryError> {
        self.inner
            .dispatcher
            .retry_dead_letter(subscriber, source, seq)
            .await
    }

    /// Moves `name`'s cursor over partition `source`'s events, kept in `partition`, to `to`
    /// (see [`carshare_core::Dispatcher::set_cursor`]). `name` is a context's or a native subscriber's.
    /// Returns false for an unknown name.
    pub async fn set_cursor(
        &self,
        name: &str,
        partition: u32,
        source: u32,
        to: u64,
    ) -> Result<bool, CommitError> {
        if self.slot(name).is_none() && !self.is_native(name) {
            return Ok(false);
        }
        self.inner
            .dispatcher
            .set_cursor(name, partition, source, to)
            .await
            .map(|_| true)
    }

    /// Every dead letter of every partition, each with the partition it is kept in.
    pub fn dead_letters(&self) -> Result<Vec<(u32, DeadLetter)>, StorageError> {
        let mut all = Vec::new();
        for log in self.inner.partitions.logs() {
            for letter in log.snapshot()?.dead_letters(None)? {
                all.push((log.partition(), letter));
            }
        }
        Ok(all)
    }
}
