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

impl NewEvent {
    /// The end of the JSON the log will store for this event, from `"source"` on: everything
    /// that does not depend on where it lands in the log. Units encode it on their own threads,
    /// so that the one writer thread only adds the sequence number, id, type and timestamp
    /// ([`Event::stored_with`]).
    pub(crate) fn stored_tail(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec(&Tail {
            source: &self.source,
            key: self.key.as_deref(),
            payload: &self.payload,
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
        })?;
        // Drop the opening brace: the numbering goes first.
        out.remove(0);
        Ok(out)
    }
}

/// [`Event`]'s fields from `source` on, serialized exactly as [`Event`] serializes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tail<'a> {
    source: &'a str,
    key: Option<&'a str>,
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a str>,
}

/// Appends `v` as 16 lower-case hex digits (what `{v:016x}` writes, without the formatter).
fn push_hex16(s: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        s.push(char::from(DIGITS[((v >> (shift * 4)) & 0xf) as usize]));
    }
}

/// The log id and sequence number an event id (`{log id:016x}-{seq:016x}`) names, or `None`
/// if `id` is not one (a request id, say).
pub(crate) fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (log, seq) = id.split_once('-')?;
    if log.len() != 16 || seq.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(log, 16).ok()?,
        u64::from_str_radix(seq, 16).ok()?,
    ))
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
    /// stamped with its unit's commit time. Takes `new` whole: its strings move into the event.
    pub(crate) fn numbered(new: NewEvent, seq: u64, log_id: u64, timestamp: &str) -> Event {
        let mut event_id = String::with_capacity(33);
        push_hex16(&mut event_id, log_id);
        event_id.push('-');
        push_hex16(&mut event_id, seq);
        Event {
            seq,
            event_id,
            event_type: new.event_type,
            timestamp: timestamp.to_string(),
            source: new.source,
            key: new.key,
            payload: new.payload,
            correlation_id: new.correlation_id,
            causation_id: new.causation_id,
        }
    }

    /// The JSON the log stores for this event, given `tail`, the end of it that its unit
    /// encoded (see [`NewEvent::stored_tail`]): byte for byte what serializing the event gives,
    /// with only the numbering written here, on the writer's thread.
    pub(crate) fn stored_with(&self, tail: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(96 + self.event_type.len() + tail.len());
        out.extend_from_slice(b"{\"seq\":");
        serde_json::to_writer(&mut out, &self.seq)?;
        out.extend_from_slice(b",\"eventId\":");
        serde_json::to_writer(&mut out, &self.event_id)?;
        out.extend_from_slice(b",\"eventType\":");
        serde_json::to_writer(&mut out, &self.event_type)?;
        out.extend_from_slice(b",\"timestamp\":");
        serde_json::to_writer(&mut out, &self.timestamp)?;
        out.push(b',');
        out.extend_from_slice(tail);
        Ok(out)
    }

    /// The payload, parsed.
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(self.payload.get()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(key: Option<&str>, cause: Option<(&str, &str)>, payload: &str) -> NewEvent {
        NewEvent {
            source: "or\"der".into(),
            event_type: "Ordered\u{e9}\n".into(),
            key: key.map(str::to_string),
            payload: RawValue::from_string(payload.into()).unwrap(),
            correlation_id: cause.map(|c| c.0.to_string()),
            causation_id: cause.map(|c| c.1.to_string()),
        }
    }

    #[test]
    fn an_event_id_names_its_log_and_sequence_number_and_nothing_else_does() {
        let event = Event::numbered(new_event(None, None, "{}"), 42, 0xfeed_0000_0000_0001, "t");
        assert_eq!(parse_event_id(&event.event_id), Some((0xfeed_0000_0000_0001, 42)));
        for not_one in [
            "",
            "-",
            "req-1",
            "0000-0001",
            "feed000000000001-00000000000000zz",
            "0123456789abcdef0-0000000000000001",
        ] {
            assert_eq!(parse_event_id(not_one), None, "{not_one:?}");
        }
    }

    /// The writer's fast path stores exactly what serializing the event stored before it, so
    /// logs written either way read the same.
    #[test]
    fn stored_bytes_are_the_serialized_event() {
        for new in [
            new_event(
                Some("7"),
                Some(("req-1", "0000-0001")),
                r#"{"id":7,"note":"a \"b\" \\ c"}"#,
            ),
            new_event(None, None, "{}"),
            new_event(Some("k\u{1}"), Some(("c", "d")), r#"{ "spaced" : [1, 2] }"#),
        ] {
            for (seq, log_id) in [(1, 0), (42, 0x0123_4567_89ab_cdef), (u64::MAX, u64::MAX)] {
                let event = Event::numbered(new.clone(), seq, log_id, "2026-11-30T20:00:00.123Z");
                assert_eq!(event.event_id, format!("{log_id:016x}-{seq:016x}"));
                let fast = event.stored_with(&new.stored_tail().unwrap()).unwrap();
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    serde_json::to_string(&event).unwrap()
                );
            }
        }
    }
}
