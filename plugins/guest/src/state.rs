//! The context's own key-value state, as JSON values. Writes belong to the current unit of
//! work: they commit with it or vanish with it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::carshare::context::state as host;

/// The value at `key`, decoded as `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    host::get(key).map(|bytes| decode(key, &bytes)).transpose()
}

/// Whether a value is stored at `key`: a read like [`get`], checked again at commit, without
/// decoding the value.
pub fn exists(key: &str) -> bool {
    host::get(key).is_some()
}

/// The value at `key`, decoded as `T`, read without the commit-time check: for advisory data
/// only, such as a replica of another context's state.
pub fn peek<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    host::peek(key).map(|bytes| decode(key, &bytes)).transpose()
}

/// [`peek`] of `key` as the partition where entity `id` lives holds it now: for advisory data
/// kept with another entity, such as a replica of product `id` kept by the handler of
/// product `id`'s events (which runs where product `id` lives). With one partition, or in this
/// unit's own, it is [`peek`].
pub fn peek_at<T: DeserializeOwned>(id: u64, key: &str) -> Result<Option<T>, Error> {
    host::peek_at(id, key)
        .map(|bytes| decode(key, &bytes))
        .transpose()
}

/// Stores `value` at `key`.
pub fn put<T: Serialize>(key: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::Internal(format!("cannot encode {key}: {e}")))?;
    host::set(key, &bytes);
    Ok(())
}

/// Removes `key`.
pub fn delete(key: &str) {
    host::delete(key)
}

/// Up to `limit` values whose key starts with `prefix` (after `after`, if given), in key
/// order, with their keys, decoded as `T`.
pub fn scan<T: DeserializeOwned>(
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<(String, T)>, Error> {
    host::scan(prefix, after, limit)
        .into_iter()
        .map(|(k, v)| decode(&k, &v).map(|t| (k, t)))
        .collect()
}

/// Puts entity `id` under `term` in the ordered index `index`.
pub fn index_put(index: &str, term: &[u8], id: u64) {
    host::index_put(index, term, id)
}

/// Removes entity `id` under `term` from the index `index`.
pub fn index_delete(index: &str, term: &[u8], id: u64) {
    host::index_delete(index, term, id)
}

/// How many entries `index` holds (with `term` only, if given), as committed before this
/// unit began: one read, whatever the index holds.
pub fn index_count(index: &str, term: Option<&[u8]>) -> u64 {
    host::index_count(index, term)
}

/// The ids of up to `limit` entries of `index` (with `term` only, if given), in (term, id)
/// order or the reverse, after skipping `offset`: costs the page, whatever the index holds.
pub fn index_page(index: &str, term: Option<&[u8]>, offset: u64, limit: u32, descending: bool) -> Vec<u64> {
    host::index_page(index, term, offset, limit, descending)
}

/// A new id from the sequence `name`.
pub fn next_id(name: &str) -> u64 {
    host::next_id(name)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("stored value {key} is unreadable: {e}")))
}
