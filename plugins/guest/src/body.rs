//! Reading fields out of a JSON request body with errors that name the field, so a client
//! learns exactly what was wrong (`qty must be an integer of at least 1`), not a parser's
//! line and column.
//!
//! Numeric fields are read as the reference system's Jackson read them: a JSON integer, or a
//! JSON string holding a decimal integer (`"100"`), because its clients used httpie, whose
//! `qty=100` sends a string. Nothing else passes: not `"two"`, `" 7"`, `"1.5"`, `1.5`, `true`,
//! arrays, or values out of range.

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
            Some(Value::Number(n)) if n.is_f64() => {
                Err(Error::BadRequest(format!("{field} must be an integer")))
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(range_error(field, min, max)),
            },
            Some(Value::String(s)) if is_decimal_integer(s) => match s.parse::<i64>() {
                Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
                // Only digits, so the one way to fail is being too large for an i64.
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

/// An optional sign and 1 to 20 ASCII digits, nothing around them: what Jackson coerces from a
/// string into an integer field. (More digits cannot be in range; refusing them early keeps a
/// megabyte of zeros from being parsed.)
fn is_decimal_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
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
        let b = body(json!({"qty": 2, "neg": -1, "s": "two", "f": 1.5, "n": null, "big": 1e30}));
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
    fn decimal_strings_count_as_integers_as_jackson_reads_them() {
        let b = body(json!({
            "qty": "100", "neg": "-3", "plus": "+7", "zeros": "007", "big": "99999999999999999999",
            "huge": "1".repeat(1000),
        }));
        assert_eq!(b.int("qty", 1, 1000), Ok(100));
        assert_eq!(b.int("neg", -10, 10), Ok(-3));
        assert_eq!(b.int("plus", 1, 10), Ok(7));
        assert_eq!(b.int("zeros", 1, 10), Ok(7));
        assert_eq!(b.id("qty"), Ok(100));
        assert_eq!(
            b.int("qty", 1, 10),
            Err(Error::BadRequest("qty must be an integer from 1 to 10".into()))
        );
        assert_eq!(
            b.int("big", 1, i64::MAX),
            Err(Error::BadRequest("big must be an integer of at least 1".into()))
        );
        assert!(b.int("huge", 1, i64::MAX).is_err());
        for bad in [
            json!("two"),
            json!(" 7"),
            json!("7 "),
            json!(""),
            json!("-"),
            json!("1.5"),
            json!("1e3"),
            json!("0x10"),
            json!("٣"),
            json!(true),
            json!([1]),
            json!({"v": 1}),
            json!(1.5),
        ] {
            let b = body(json!({ "qty": bad }));
            assert_eq!(
                b.int("qty", 1, 10),
                Err(Error::BadRequest("qty must be an integer".into())),
                "{bad}"
            );
        }
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
