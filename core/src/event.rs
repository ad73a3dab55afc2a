//! Events: what a context hands the log (`NewEvent`) and what the log hands back once the event
//! is committed (`Event`), with its place in the log and its identity.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event a context published inside a unit of work, not yet committed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The context that published it.
    pub source: String,
    /// The event type, e.g. `Ordered`.
    pub event_type: String,
    /// The ordering key (the order id where there is one).
    pub key: Option<String>,
    /// The payload: a JSON object.
    pub payload: Value,
}

/// A committed event, as stored in the log and as subscribers receive it.
///
/// The JSON form is the log's envelope: `{"seq","eventId","eventType","timestamp","source","key","payload"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The global sequence number: gap-free, starting at 1, in commit order.
    pub seq: u64,
    /// A unique id: the log's random id and the sequence number.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// When the unit that published it committed, RFC 3339 in UTC.
    pub timestamp: String,
    /// The context that published it.
    pub source: String,
    /// The ordering key.
    pub key: Option<String>,
    /// The payload, a JSON object.
    pub payload: Value,
}

impl Event {
    /// `new` as the log stores it: numbered `seq`, identified by the log's id and `seq`, and
    /// stamped with its unit's commit time.
    pub(crate) fn numbered(new: &NewEvent, seq: u64, log_id: u64, timestamp: &str) -> Event {
        Event {
            seq,
            event_id: format!("{log_id:016x}-{seq:016x}"),
            event_type: new.event_type.clone(),
            timestamp: timestamp.to_string(),
            source: new.source.clone(),
            key: new.key.clone(),
            payload: new.payload.clone(),
        }
    }
}
