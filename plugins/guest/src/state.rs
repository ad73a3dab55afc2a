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

/// The value at `key`, decoded as `T`, read without the commit-time check: for advisory data
/// only, such as a replica of another context's state.
pub fn peek<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    host::peek(key).map(|bytes| decode(key, &bytes)).transpose()
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

/// Every value whose key starts with `prefix`, in key order, decoded as `T`.
pub fn scan<T: DeserializeOwned>(prefix: &str) -> Result<Vec<T>, Error> {
    host::scan(prefix).iter().map(|(k, v)| decode(k, v)).collect()
}

/// A new id from the sequence `name`.
pub fn next_id(name: &str) -> u64 {
    host::next_id(name)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("stored value {key} is unreadable: {e}")))
}
