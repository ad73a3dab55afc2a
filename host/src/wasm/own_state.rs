//! A context's view of the unit of work: its own keys and nothing else, every key and value
//! within the host's bounds. The imports go through this one type, so the rule "a context sees
//! only its own keys" is written once.

use carshare_core::Unit;

/// Keys and values are bounded so one bad guest cannot bloat the database.
const MAX_KEY_LEN: usize = 1024;
const MAX_VALUE_LEN: usize = 1 << 20;

/// The state of `context` inside `unit`.
pub(super) struct OwnState<'a> {
    pub context: &'a str,
    pub unit: &'a mut Unit,
}

fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.len() > MAX_KEY_LEN {
        wasmtime::bail!("state key longer than {MAX_KEY_LEN} bytes");
    }
    Ok(())
}

fn check_value(what: &str, len: usize) -> wasmtime::Result<()> {
    if len > MAX_VALUE_LEN {
        wasmtime::bail!("{what} longer than {MAX_VALUE_LEN} bytes");
    }
    Ok(())
}

impl OwnState<'_> {
    pub fn get(&mut self, key: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.unit.get(self.context, key)?)
    }

    pub fn peek(&mut self, key: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.unit.peek(self.context, key)?)
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>) -> wasmtime::Result<()> {
        check_key(key)?;
        check_value("state value", value.len())?;
        self.unit.set(self.context, key, value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> wasmtime::Result<()> {
        check_key(key)?;
        self.unit.delete(self.context, key);
        Ok(())
    }

    pub fn scan(&mut self, prefix: &str) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        check_key(prefix)?;
        Ok(self.unit.scan(self.context, prefix)?)
    }

    pub fn next_id(&mut self, sequence: &str) -> wasmtime::Result<u64> {
        check_key(sequence)?;
        Ok(self.unit.next_id(self.context, sequence)?)
    }

    /// Publishes an event from this context; `payload` must be a JSON object.
    pub fn publish(
        &mut self,
        event_type: &str,
        key: Option<String>,
        payload: String,
    ) -> wasmtime::Result<()> {
        if event_type.is_empty() || event_type.len() > 128 {
            wasmtime::bail!("event type must be 1 to 128 bytes");
        }
        check_value("event payload", payload.len())?;
        // Checked, not parsed into a tree: the log keeps the text as the guest wrote it.
        let raw = serde_json::value::RawValue::from_string(payload)?;
        if !raw.get().trim_start().starts_with('{') {
            wasmtime::bail!("the payload of {event_type} is not a JSON object");
        }
        self.unit.publish_raw(self.context, event_type, key, raw);
        Ok(())
    }
}
