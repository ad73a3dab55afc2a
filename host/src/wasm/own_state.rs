//! A context's view of the unit of work: its own keys and nothing else, every key and value
//! within the host's bounds. The imports go through this one type, so the rule "a context sees
//! only its own keys" is written once.

use carshare_core::{IndexPage, Unit};

/// Keys and values are bounded so one bad guest cannot bloat the database.
const MAX_KEY_LEN: usize = 1024;
const MAX_VALUE_LEN: usize = 1 << 20;
/// Index terms are bounded like keys; a scan or a page returns at most this many rows.
const MAX_TERM_LEN: usize = 1024;
const MAX_ROWS: u32 = 10_000;

/// The state of `context` inside `unit`.
pub(super) struct OwnState<'a> {
    pub context: &'a str,
    /// The event types the context declares.
    pub publishes: &'a [String],
    pub unit: &'a mut Unit,
}

fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.len() > MAX_KEY_LEN {
        wasmtime::bail!("state key longer than {MAX_KEY_LEN} bytes");
    }
    Ok(())
}

fn check_index(index: &str, term: Option<&[u8]>) -> wasmtime::Result<()> {
    if index.is_empty() || index.len() > MAX_KEY_LEN {
        wasmtime::bail!("an index name must be 1 to {MAX_KEY_LEN} bytes");
    }
    if term.is_some_and(|t| t.len() > MAX_TERM_LEN) {
        wasmtime::bail!("index term longer than {MAX_TERM_LEN} bytes");
    }
    Ok(())
}

fn check_rows(limit: u32) -> wasmtime::Result<()> {
    if limit > MAX_ROWS {
        wasmtime::bail!("at most {MAX_ROWS} rows at once, not {limit}");
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

    pub fn peek_at(&mut self, id: u64, key: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.unit.peek_at(self.context, id, key)?)
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

    pub fn scan(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        check_key(prefix)?;
        if let Some(a) = after {
            check_key(a)?;
        }
        check_rows(limit)?;
        Ok(self.unit.scan_from(self.context, prefix, after, limit as usize)?)
    }

    pub fn index_put(&mut self, index: &str, term: &[u8], id: u64) -> wasmtime::Result<()> {
        check_index(index, Some(term))?;
        self.unit.index_put(self.context, index, term, id);
        Ok(())
    }

    pub fn index_delete(&mut self, index: &str, term: &[u8], id: u64) -> wasmtime::Result<()> {
        check_index(index, Some(term))?;
        self.unit.index_delete(self.context, index, term, id);
        Ok(())
    }

    pub fn index_count(&mut self, index: &str, term: Option<&[u8]>) -> wasmtime::Result<u64> {
        check_index(index, term)?;
        Ok(self.unit.index_count(self.context, index, term)?)
    }

    pub fn index_page(
        &mut self,
        index: &str,
        term: Option<&[u8]>,
        offset: u64,
        limit: u32,
        descending: bool,
    ) -> wasmtime::Result<Vec<u64>> {
        check_index(index, term)?;
        check_rows(limit)?;
        Ok(self.unit.index_page(IndexPage {
            context: self.context,
            index,
            term,
            offset,
            limit: limit as usize,
            descending,
        })?)
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
        if !self.publishes.iter().any(|t| t == event_type) {
            wasmtime::bail!(
                "{} published {event_type:?}, which its manifest does not declare (it declares {:?}); \
                 declare it in the manifest's publishes",
                self.context,
                self.publishes
            );
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
