//! An embedder's own subscribers, written in Rust: registered through the runtime under a name
//! no context has, they run on the runtime's dispatcher, so they get the same cursors,
//! retries, dead letters, admin API (`/admin/subscribers`, cursor moves, dead-letter retries)
//! and metrics as a context's subscriber. A name is one set of cursors: a subscriber named like
//! a context, or a context named like a subscriber, is refused, whichever comes second.

use std::sync::Arc;

use carshare_core::{EventHandler, StorageError, SubscribeError, SubscriberStatus};
use serde::Serialize;

use super::Runtime;

/// One native subscriber, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NativeSubscriberInfo {
    /// Its name (its cursors').
    pub name: String,
    /// Its cursors, lag and any failing event.
    pub subscriber: Option<SubscriberStatus>,
}

impl Runtime {
    /// Subscribes `handler` to the events of every partition under `name`, from where `name`'s
    /// cursors stand (the start, the first time). Refused if a context or another subscriber
    /// holds the name.
    pub fn subscribe(&self, name: &str, handler: Arc<dyn EventHandler>) -> Result<(), SubscribeError> {
        // The slots' lock orders this against a context being loaded under the same name.
        let slots = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        let mut natives = self.inner.natives.lock().unwrap_or_else(|p| p.into_inner());
        if slots.contains_key(name) || natives.contains(name) {
            return Err(SubscribeError::NameTaken(name.to_string()));
        }
        self.inner.dispatcher.subscribe(name, handler, true)?;
        natives.insert(name.to_string());
        tracing::info!("native subscriber {name} subscribed");
        Ok(())
    }

    /// Whether `name` is a native subscriber's.
    pub(crate) fn is_native(&self, name: &str) -> bool {
        self.inner
            .natives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Every native subscriber, by name.
    pub fn native_subscribers(&self) -> Result<Vec<NativeSubscriberInfo>, StorageError> {
        let names: Vec<String> = self
            .inner
            .natives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        names
            .into_iter()
            .map(|name| {
                Ok(NativeSubscriberInfo {
                    subscriber: self.inner.dispatcher.status(&name)?,
                    name,
                })
            })
            .collect()
    }
}
