//! Events, typed: each event type has one definition, an [`EventType`] naming the context that
//! publishes it and its payload type, used both to publish it and to subscribe to it, so a
//! misspelled name or a payload of the wrong shape is a compile error rather than a
//! subscription that never fires.
//!
//! A publisher lists the types it publishes in its manifest ([`EventType::declare`]: the
//! payload's JSON Schema comes from the payload type); the host refuses any other. A subscriber
//! lists its handlers in one table, [`Handlers`], which yields both the manifest's
//! subscriptions and the dispatch of each event to its handler.
//!
//! An event belongs to the current unit of work: it is in the log if and only if the unit
//! commits.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::carshare::context::events as host;
use crate::{Error, Event};

/// What an event's payload is: a JSON object with a schema. Any type that serializes to a
/// JSON object, deserializes and derives `schemars::JsonSchema` is one.
pub trait Payload: Serialize + DeserializeOwned + JsonSchema {}

impl<T: Serialize + DeserializeOwned + JsonSchema> Payload for T {}

/// One event type: its name, the context that publishes it and its payload type `P`.
///
/// ```ignore
/// pub const RATED: EventType<Rated> =
///     EventType::new("rating", "Rated", "A shipped order was rated.").keyed_by("the order id");
/// ```
pub struct EventType<P> {
    publisher: &'static str,
    name: &'static str,
    summary: &'static str,
    key: &'static str,
    payload: PhantomData<fn() -> P>,
}

impl<P> EventType<P> {
    /// Event type `name`, published by context `publisher`, meaning `summary`.
    pub const fn new(publisher: &'static str, name: &'static str, summary: &'static str) -> Self {
        EventType {
            publisher,
            name,
            summary,
            key: "",
            payload: PhantomData,
        }
    }

    /// This type, saying what its events' key names (`the order id`): events of one key are
    /// delivered in the order they were published.
    pub const fn keyed_by(mut self, key: &'static str) -> Self {
        self.key = key;
        self
    }

    /// Its name, e.g. `Ordered`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The context that publishes it.
    pub const fn publisher(&self) -> &'static str {
        self.publisher
    }
}

impl<P: Payload> EventType<P> {
    /// Publishes an event of this type with `payload`, ordered by `key` (the order id where
    /// there is one). The context must declare the type in its manifest.
    pub fn publish(&self, key: Option<u64>, payload: &P) -> Result<(), Error> {
        let json = serde_json::to_string(payload)
            .map_err(|e| Error::Internal(format!("cannot encode {}: {e}", self.name)))?;
        let mut digits = itoa::Buffer::new();
        host::publish(self.name, key.map(|k| digits.format(k)), &json);
        Ok(())
    }

    /// The declaration of this type for the publisher's manifest, with the JSON Schema of `P`.
    pub fn declare(&self) -> Declaration {
        Declaration {
            event_type: self.name,
            summary: self.summary,
            key: self.key,
            schema: schema_of::<P>(),
        }
    }

    /// The payload of `event` (which must be of this type) as `P`; a payload that does not fit
    /// is the publisher's error, reported as internal so the dispatcher retries and parks it.
    pub fn payload_of(&self, event: &Event) -> Result<P, Error> {
        event.payload()
    }
}

/// JSON Schema (draft 7) of `P`, with every subschema inline, so it stands alone wherever the
/// host puts it (the AsyncAPI document).
pub fn schema_of<P: JsonSchema>() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<P>().to_value();
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
    }
    schema
}

/// An event type a context publishes, as its manifest declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// Name.
    pub event_type: &'static str,
    /// What happened.
    pub summary: &'static str,
    /// What its key names; empty: nothing.
    pub key: &'static str,
    /// JSON Schema of the payload.
    pub schema: serde_json::Value,
}

type Run = Box<dyn Fn(&Event) -> Result<(), Error> + Send + Sync>;

/// One subscription and its handler.
struct Entry {
    event_type: &'static str,
    publisher: &'static str,
    placed_by: Option<&'static str>,
    run: Run,
}

/// The events a context subscribes to, each with its handler: the manifest's subscriptions and
/// the dispatch of each event both come from this one table (see [`crate::Context::handlers`]).
///
/// ```ignore
/// Handlers::new()
///     .on(&ORDERED, take_stock)
///     .placed_by("productId")
///     .on(&ORDER_CANCELLED, give_back)
///     .placed_by("productId")
/// ```
#[derive(Default)]
pub struct Handlers {
    entries: Vec<Entry>,
}

impl Handlers {
    /// No subscriptions.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// Handles events of type `ty` with `handle`, given the decoded payload.
    pub fn on<P: Payload + 'static>(self, ty: &EventType<P>, handle: fn(P) -> Result<(), Error>) -> Self {
        self.push(ty, Box::new(move |e| handle(e.payload()?)))
    }

    /// Handles events of type `ty` with `handle`, given the decoded payload and the event (its
    /// sequence number, time, id).
    pub fn on_event<P: Payload + 'static>(
        self,
        ty: &EventType<P>,
        handle: fn(P, &Event) -> Result<(), Error>,
    ) -> Self {
        self.push(ty, Box::new(move |e| handle(e.payload()?, e)))
    }

    /// Handles events of type `ty` with `handle`, given the event as it is: for a handler that
    /// reads a few fields of many types straight from the payload's text.
    pub fn on_raw<P>(self, ty: &EventType<P>, handle: fn(&Event) -> Result<(), Error>) -> Self {
        self.push(ty, Box::new(handle))
    }

    fn push<P>(mut self, ty: &EventType<P>, run: Run) -> Self {
        assert!(
            self.entries.iter().all(|e| e.event_type != ty.name),
            "{} is handled twice",
            ty.name
        );
        self.entries.push(Entry {
            event_type: ty.name,
            publisher: ty.publisher,
            placed_by: None,
            run,
        });
        self
    }

    /// With several partitions, handles the subscription added last where the id its payload's
    /// `field` names lives (`placed_by("productId")`: a product's stock changes where the
    /// product lives), instead of in the partition the event was published in.
    pub fn placed_by(mut self, field: &'static str) -> Self {
        let last = self
            .entries
            .last_mut()
            .expect("placed_by follows the subscription it places");
        last.placed_by = Some(field);
        self
    }

    /// The subscriptions, as (event type, publisher, placed by).
    pub fn subscriptions(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static str, Option<&'static str>)> + '_ {
        self.entries
            .iter()
            .map(|e| (e.event_type, e.publisher, e.placed_by))
    }

    /// Runs `event`'s handler; an event nobody here handles is ignored (it is not delivered
    /// unless subscribed to, but a version that dropped a subscription may still see one).
    pub fn dispatch(&self, event: &Event) -> Result<(), Error> {
        match self.entries.iter().find(|e| e.event_type == event.event_type) {
            Some(entry) => (entry.run)(event),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Rated {
        order_id: u64,
        stars: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    }

    const RATED: EventType<Rated> = EventType::new("rating", "Rated", "rated").keyed_by("the order id");
    const UNRATED: EventType<Rated> = EventType::new("rating", "Unrated", "unrated");

    fn event(ty: &str, payload: &str) -> Event {
        Event {
            seq: 1,
            id: "e1".into(),
            event_type: ty.into(),
            source: "rating".into(),
            key: None,
            timestamp: "2026-12-08T00:00:00Z".into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn a_declaration_carries_the_payloads_schema() {
        let d = RATED.declare();
        assert_eq!((d.event_type, d.key), ("Rated", "the order id"));
        assert_eq!(d.schema["type"], "object");
        assert_eq!(d.schema["properties"]["orderId"]["type"], "integer");
        assert_eq!(d.schema["required"], serde_json::json!(["orderId", "stars"]));
        assert!(d.schema.get("$schema").is_none());
    }

    fn failing(_: Rated) -> Result<(), Error> {
        Err(Error::Conflict("handled".into()))
    }

    #[test]
    fn one_table_gives_the_subscriptions_and_the_dispatch() {
        let table = Handlers::new()
            .on(&RATED, failing)
            .placed_by("orderId")
            .on_raw(&UNRATED, |_| Ok(()));
        let subs: Vec<_> = table.subscriptions().collect();
        assert_eq!(
            subs,
            vec![("Rated", "rating", Some("orderId")), ("Unrated", "rating", None)]
        );
        let rated = event("Rated", r#"{"orderId": 1, "stars": 5}"#);
        assert_eq!(table.dispatch(&rated), Err(Error::Conflict("handled".into())));
        let bad = event("Rated", r#"{"orderId": "x"}"#);
        assert!(matches!(table.dispatch(&bad), Err(Error::Internal(m)) if m.contains("bad payload")));
        assert_eq!(table.dispatch(&event("Other", "{}")), Ok(()));
    }

    #[test]
    #[should_panic(expected = "handled twice")]
    fn a_type_is_handled_once() {
        let _ = Handlers::new().on(&RATED, failing).on(&RATED, failing);
    }
}
