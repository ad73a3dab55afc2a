//! Events: what a context hands the log (`NewEvent`) and what the log hands back once the event
//! is committed (`Event`), with its place in the log, its identity and its cause. Payloads stay
//! the JSON text they were published as: the log stores and hands them on without parsing them
//! again.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// An event a context published inside a unit of work, not yet committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewEvent {
    /// The context that published it.
    pub source: String,
    /// The event type, e.g. `Ordered`.
    pub event_type: String,
    /// The ordering key (the order id where there is one).
    pub key: Option<String>,
    /// The payload: a JSON object.
    pub payload: Box<RawValue>,
    /// The request or event that set off the chain this event belongs to.
    pub correlation_id: Option<String>,
    /// The request or event that directly caused it.
    pub causation_id: Option<String>,
}

/// A committed event, as stored in the log and as subscribers receive it.
///
/// The JSON form is the log's envelope:
/// `{"seq","eventId","eventType","timestamp","source","key","payload","correlationId","causationId"}`
/// (the last two only when known).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The payload, a JSON object, as its publisher wrote it.
    pub payload: Box<RawValue>,
    /// The request id (or, failing one, the event id) that set off the chain of requests and
    /// events this one belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The request or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.event_id == other.event_id
            && self.event_type == other.event_type
            && self.timestamp == other.timestamp
            && self.source == other.source
            && self.key == other.key
            && self.payload.get() == other.payload.get()
            && self.correlation_id == other.correlation_id
            && self.causation_id == other.causation_id
    }
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
            correlation_id: new.correlation_id.clone(),
            causation_id: new.causation_id.clone(),
        }
    }

    /// The payload, parsed.
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(self.payload.get()).unwrap_or(Value::Null)
    }
}
