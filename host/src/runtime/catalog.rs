//! The event catalog: which context publishes each event type, with which payload schema, and
//! who subscribes to it. Built from the manifests of the contexts a system runs, and checked
//! whenever that set or a version in it changes (start, add, swap, rollback), so that a
//! subscription that can never fire is refused instead of waiting silently:
//! - a subscription naming a loaded publisher that does not declare the type is refused (a
//!   misspelling, or a publisher version that stopped publishing what someone reads);
//! - a subscription naming a publisher that is not loaded waits for it, with a warning;
//! - a subscription naming no publisher needs some loaded context to declare the type;
//! - an event type has one publisher.
//!
//! The catalog is what `/asyncapi.json` and the system page show.

use serde::Serialize;

use super::Runtime;
use crate::wasm::Manifest;

/// The events of a running system.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Every event type a loaded context publishes, by name.
    pub events: Vec<CatalogEvent>,
    /// Subscriptions whose publisher is not loaded.
    pub waiting: Vec<Waiting>,
}

/// One event type.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEvent {
    /// Its name.
    pub event_type: String,
    /// The context that publishes it.
    pub publisher: String,
    /// That context's version.
    pub version: String,
    /// What happened.
    pub summary: String,
    /// What its key names; empty: nothing.
    pub key: String,
    /// JSON Schema of its payload.
    pub schema: serde_json::Value,
    /// Who subscribes to it.
    pub subscribers: Vec<CatalogSubscriber>,
}

/// A context subscribing to an event type.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSubscriber {
    /// The subscribing context.
    pub context: String,
    /// With several partitions, the payload field whose id places its handling.
    pub placed_by: Option<String>,
}

/// A subscription waiting for a publisher that is not loaded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// The subscribing context.
    pub context: String,
    /// The event type.
    pub event_type: String,
    /// The context expected to publish it.
    pub publisher: String,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} subscribes to {} from {}, which is not loaded: it receives none until {} is added",
            self.context, self.event_type, self.publisher, self.publisher
        )
    }
}

/// Why a set of contexts is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogError {
    /// A subscription names a loaded publisher that does not declare its type.
    #[error(
        "{subscriber} subscribes to {event_type} from {publisher}, but {publisher} {version} does not \
         publish {event_type} (it publishes {}){}",
        listed(publishes),
        hint(event_type, publishes.iter().map(String::as_str))
    )]
    NotPublished {
        /// The subscribing context.
        subscriber: String,
        /// The type it subscribes to.
        event_type: String,
        /// The publisher it names.
        publisher: String,
        /// That publisher's version.
        version: String,
        /// What that publisher declares.
        publishes: Vec<String>,
    },
    /// A subscription names no publisher, and no loaded context declares its type.
    #[error(
        "{subscriber} subscribes to {event_type}, which no loaded context publishes{hint}; a \
         subscription to the events of a context not loaded yet names that context"
    )]
    NoPublisher {
        /// The subscribing context.
        subscriber: String,
        /// The type.
        event_type: String,
        /// `: did you mean X?`, when a declared type is close.
        hint: String,
    },
    /// Two contexts declare the same type.
    #[error("{event_type} is published by both {first} and {second}: an event type has one publisher")]
    TwoPublishers {
        /// The type.
        event_type: String,
        /// One publisher.
        first: String,
        /// The other.
        second: String,
    },
}

/// The catalog of the contexts `manifests`, or why they do not fit together.
pub fn build<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> Result<Catalog, CatalogError> {
    let mut manifests: Vec<&Manifest> = manifests.into_iter().collect();
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    let mut events: Vec<CatalogEvent> = Vec::new();
    for m in &manifests {
        for d in &m.publishes {
            if let Some(e) = events.iter().find(|e| e.event_type == d.event_type) {
                return Err(CatalogError::TwoPublishers {
                    event_type: d.event_type.clone(),
                    first: e.publisher.clone(),
                    second: m.name.clone(),
                });
            }
            events.push(CatalogEvent {
                event_type: d.event_type.clone(),
                publisher: m.name.clone(),
                version: m.version.clone(),
                summary: d.summary.clone(),
                key: d.key.clone(),
                schema: d.schema.clone(),
                subscribers: Vec::new(),
            });
        }
    }
    let mut waiting = Vec::new();
    for m in &manifests {
        for s in &m.subscriptions {
            let found = events.iter_mut().find(|e| e.event_type == s.event_type);
            match (found, &s.publisher) {
                (Some(e), publisher) if publisher.as_ref().is_none_or(|p| *p == e.publisher) => {
                    e.subscribers.push(CatalogSubscriber {
                        context: m.name.clone(),
                        placed_by: s.placed_by.clone(),
                    });
                }
                (_, Some(publisher)) => match manifests.iter().find(|p| p.name == *publisher) {
                    Some(p) => {
                        return Err(CatalogError::NotPublished {
                            subscriber: m.name.clone(),
                            event_type: s.event_type.clone(),
                            publisher: publisher.clone(),
                            version: p.version.clone(),
                            publishes: p.published_types().into_iter().map(str::to_string).collect(),
                        });
                    }
                    None => waiting.push(Waiting {
                        context: m.name.clone(),
                        event_type: s.event_type.clone(),
                        publisher: publisher.clone(),
                    }),
                },
                (_, None) => {
                    return Err(CatalogError::NoPublisher {
                        subscriber: m.name.clone(),
                        event_type: s.event_type.clone(),
                        hint: hint(&s.event_type, events.iter().map(|e| e.event_type.as_str())),
                    });
                }
            }
        }
    }
    events.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    Ok(Catalog { events, waiting })
}

fn listed(types: &[String]) -> String {
    if types.is_empty() {
        "nothing".into()
    } else {
        types.join(", ")
    }
}

/// `: did you mean X?` for the declared type closest to `wanted`, if one is close (a few edits
/// apart, ignoring case).
fn hint<'a>(wanted: &str, declared: impl IntoIterator<Item = &'a str>) -> String {
    let wanted_lower = wanted.to_lowercase();
    declared
        .into_iter()
        .map(|t| (strsim::levenshtein(&wanted_lower, &t.to_lowercase()), t))
        .filter(|(d, _)| *d <= 3.max(wanted.len() / 4))
        .min()
        .map(|(_, t)| format!(": did you mean {t}?"))
        .unwrap_or_default()
}

impl Runtime {
    /// The event catalog of the contexts loaded now.
    pub fn catalog(&self) -> Result<Catalog, CatalogError> {
        build(&self.manifests())
    }

    /// The catalog the system would have with `changed` loaded as its context (added, or in
    /// place of its running version), or why that is refused. Its waiting subscriptions are
    /// logged.
    pub(super) fn catalog_with(&self, changed: &Manifest) -> Result<Catalog, CatalogError> {
        let mut manifests = self.manifests();
        manifests.retain(|m| m.name != changed.name);
        manifests.push(changed.clone());
        let catalog = build(&manifests)?;
        for w in catalog.waiting.iter().filter(|w| w.context == changed.name) {
            tracing::warn!("{w}");
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::{EventDeclaration, Placement, Subscription};

    fn context(name: &str, publishes: &[&str], subscribes: &[(&str, Option<&str>)]) -> Manifest {
        Manifest {
            name: name.into(),
            version: "1.0.0".into(),
            routes: vec![],
            subscriptions: subscribes
                .iter()
                .map(|(t, p)| Subscription {
                    event_type: t.to_string(),
                    publisher: p.map(str::to_string),
                    placed_by: None,
                })
                .collect(),
            publishes: publishes
                .iter()
                .map(|t| EventDeclaration {
                    event_type: t.to_string(),
                    summary: String::new(),
                    key: String::new(),
                    schema: serde_json::json!({"type": "object"}),
                })
                .collect(),
            placement: Placement::Partitioned,
            operations: vec![],
            schemas: vec![],
        }
    }

    #[test]
    fn subscribers_are_listed_with_their_publishers_events() {
        let set = [
            context(
                "delivery",
                &["Shipped", "DeliveryCanceled"],
                &[("Paid", Some("payment"))],
            ),
            context("payment", &["Paid"], &[]),
            context("view", &[], &[("Shipped", None), ("Paid", Some("payment"))]),
        ];
        let c = build(&set).unwrap();
        let names: Vec<_> = c.events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(names, ["DeliveryCanceled", "Paid", "Shipped"]);
        let paid: Vec<_> = c.events[1]
            .subscribers
            .iter()
            .map(|s| s.context.as_str())
            .collect();
        assert_eq!(paid, ["delivery", "view"]);
        assert!(c.waiting.is_empty());
    }

    #[test]
    fn a_misspelled_subscription_is_refused_with_the_closest_name() {
        let set = [
            context("delivery", &["Shipped", "DeliveryCanceled"], &[]),
            context("stray", &[], &[("DeliveryCancelled", Some("delivery"))]),
        ];
        let e = build(&set).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stray subscribes to DeliveryCancelled from delivery, but delivery 1.0.0 does not \
             publish DeliveryCancelled (it publishes Shipped, DeliveryCanceled): did you mean \
             DeliveryCanceled?"
        );
        let unnamed = [
            context("delivery", &["Shipped"], &[]),
            context("stray", &[], &[("shipped", None)]),
        ];
        assert!(matches!(
            build(&unnamed),
            Err(CatalogError::NoPublisher { hint, .. }) if hint == ": did you mean Shipped?"
        ));
        let far = [context("stray", &[], &[("Rated", None)])];
        assert!(matches!(build(&far), Err(CatalogError::NoPublisher { hint, .. }) if hint.is_empty()));
    }

    #[test]
    fn a_subscription_to_a_context_not_loaded_waits() {
        let set = [context("stray", &[], &[("Rated", Some("rating"))])];
        let c = build(&set).unwrap();
        assert_eq!(
            c.waiting,
            [Waiting {
                context: "stray".into(),
                event_type: "Rated".into(),
                publisher: "rating".into(),
            }]
        );
        assert!(c.waiting[0].to_string().contains("not loaded"));
    }

    #[test]
    fn a_type_has_one_publisher_and_a_subscription_names_the_right_one() {
        let twice = [context("a", &["X"], &[]), context("b", &["X"], &[])];
        assert!(matches!(build(&twice), Err(CatalogError::TwoPublishers { .. })));
        // `X` is published, but not by the context the subscription names.
        let other = [
            context("a", &["X"], &[]),
            context("b", &[], &[]),
            context("c", &[], &[("X", Some("b"))]),
        ];
        assert!(matches!(
            build(&other),
            Err(CatalogError::NotPublished { publishes, .. }) if publishes.is_empty()
        ));
    }
}
