//! Reading fields out of a JSON request body with errors that name the field, so a client
//! learns exactly what was wrong (`qty must be an integer of at least 1`), not a parser's
//! line and column.

use serde_json::{Map, Value};

use crate::Error;

/// A JSON object body.
pub struct Body(pub Map<String, Value>);

impl Body {
    /// A required integer field in `min..=max`.
    pub fn int(&self, field: &str, min: i64, max: i64) -> Result<i64, Error> {
        self.opt_int(field, min, max)?
            .ok_or_else(|| Error::BadRequest(format!("{field} is required")))
    }

    /// An optional integer field in `min..=max` (absent or `null` gives `None`).
    pub fn opt_int(&self, field: &str, min: i64, max: i64) -> Result<Option<i64>, Error> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(range_error(field, min, max)),
            },
            Some(_) => Err(Error::BadRequest(format!("{field} must be an integer"))),
        }
    }

    /// A required id field (an integer of at least 1).
    pub fn id(&self, field: &str) -> Result<u64, Error> {
        Ok(self.int(field, 1, i64::MAX)? as u64)
    }

    /// A required non-empty string field of at most `max_len` characters.
    pub fn string(&self, field: &str, max_len: usize) -> Result<String, Error> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(Error::BadRequest(format!("{field} is required"))),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(Error::BadRequest(format!("{field} must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max_len => Err(Error::BadRequest(format!(
                "{field} must be at most {max_len} characters"
            ))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::BadRequest(format!("{field} must be a string"))),
        }
    }
}

fn range_error(field: &str, min: i64, max: i64) -> Error {
    if max == i64::MAX {
        Error::BadRequest(format!("{field} must be an integer of at least {min}"))
    } else {
        Error::BadRequest(format!("{field} must be an integer from {min} to {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Body {
        Body(v.as_object().unwrap().clone())
    }

    #[test]
    fn integers_are_checked_by_type_and_range() {
        let b = body(json!({"qty": 2, "neg": -1, "s": "2", "f": 1.5, "n": null, "big": 1e30}));
        assert_eq!(b.int("qty", 1, 10), Ok(2));
        assert_eq!(
            b.int("neg", 1, 10),
            Err(Error::BadRequest("neg must be an integer from 1 to 10".into()))
        );
        assert_eq!(
            b.int("s", 1, 10),
            Err(Error::BadRequest("s must be an integer".into()))
        );
        assert!(b.int("f", 1, 10).is_err());
        assert!(b.int("big", 1, i64::MAX).is_err());
        assert_eq!(b.int("n", 1, 10), Err(Error::BadRequest("n is required".into())));
        assert_eq!(b.opt_int("missing", 1, 10), Ok(None));
    }

    #[test]
    fn strings_must_be_present_and_not_blank() {
        let b = body(json!({"a": "x", "e": "  ", "n": 3}));
        assert_eq!(b.string("a", 5), Ok("x".into()));
        assert!(b.string("e", 5).is_err());
        assert!(b.string("n", 5).is_err());
        assert!(b.string("z", 5).is_err());
        assert!(body(json!({"a": "toolong"})).string("a", 3).is_err());
    }
}
