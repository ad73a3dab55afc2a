//! Publishing events. An event belongs to the current unit of work: it is in the log if and
//! only if the unit commits.

use serde::Serialize;

use crate::Error;
use crate::bindings::carshare::context::events as host;

/// Publishes `event_type` with `payload` (which must serialize to a JSON object), ordered by
/// `key` (the order id where there is one).
pub fn publish(event_type: &str, key: Option<u64>, payload: &impl Serialize) -> Result<(), Error> {
    let json = serde_json::to_string(payload)
        .map_err(|e| Error::Internal(format!("cannot encode {event_type}: {e}")))?;
    let mut digits = itoa::Buffer::new();
    host::publish(event_type, key.map(|k| digits.format(k)), &json);
    Ok(())
}
