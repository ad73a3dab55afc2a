//! The admin API's bearer token: checked before any body is read, compared in constant time.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use super::error::ApiError;

/// Proof that a request carried the admin token: only [`authorize`] makes one, and the admin
/// API takes one, so no path reaches it unchecked.
pub(super) struct Authorized(());

/// 403 when no token is configured (the admin API is off), 401 for a missing or wrong one.
pub(super) fn authorize(expected: Option<&str>, headers: &HeaderMap) -> Result<Authorized, ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::admin_disabled());
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::unauthorized());
    }
    Ok(Authorized(()))
}

/// Compares without an early exit, so response time does not reveal a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"s", b""));
    }
}
