//! The product domain: a car model's stock, and the rule that makes overselling impossible.
//! Product is the authority on stock. It applies orders in log order, and takes stock for an
//! order only if there is enough; otherwise the order is rejected (and compensated by the
//! order context). So stock never goes negative, and stock plus the units held by live orders
//! always equals what was registered and restocked.

use carshare_guest::Error;
use carshare_guest::api;
use carshare_guest::body::Body;
use carshare_guest::rest::{Entity, Key};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The largest stock a product may have.
pub const MAX_QTY: i64 = 1_000_000_000;

/// A car model and its stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    pub modelname: String,
    pub qty: i64,
}

impl Entity for Product {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "modelname" => self.modelname.as_str().into(),
            "qty" => self.qty.into(),
            _ => Key::Null,
        }
    }
}

/// The JSON Schema of a product as clients read it.
pub fn product_schema() -> serde_json::Value {
    api::resource(
        json!({
            "id": { "type": "integer" },
            "modelname": { "type": "string" },
            "qty": { "type": "integer" },
        }),
        &["id", "modelname", "qty"],
    )
}

/// The JSON Schema of a product as clients send it: both fields for a new one or a PUT,
/// either for a PATCH (numbers may come as strings).
pub fn new_product_schema(required: &[&str]) -> serde_json::Value {
    json!({
        "type": "object",
        "required": required,
        "properties": {
            "modelname": { "type": "string", "minLength": 1, "maxLength": 200 },
            "qty": api::lenient_integer(0, MAX_QTY),
        }
    })
}

/// A validated new product.
pub fn parse_new(body: &Body) -> Result<(String, i64), Error> {
    Ok((body.string("modelname", 200)?, body.int("qty", 0, MAX_QTY)?))
}

/// Applies a client's change (PUT needs both fields, PATCH either). Returns whether anything
/// changed.
pub fn apply_change(p: &mut Product, body: &Body, replace: bool) -> Result<bool, Error> {
    let before = p.clone();
    if replace || body.0.contains_key("modelname") {
        p.modelname = body.string("modelname", 200)?;
    }
    if replace || body.0.contains_key("qty") {
        p.qty = body.int("qty", 0, MAX_QTY)?;
    }
    if body
        .0
        .keys()
        .any(|k| !["modelname", "qty", "id", "_links"].contains(&k.as_str()))
    {
        return Err(Error::BadRequest("a product has only modelname and qty".into()));
    }
    Ok(*p != before)
}

/// Stock an order holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub product_id: u64,
    pub qty: i64,
    /// Given back (the order was cancelled). A released hold is kept, not deleted, so that a
    /// redelivered `Ordered` finds the order already decided on and takes nothing again.
    #[serde(default)]
    pub released: bool,
}

/// What to do with an order's demand on a product.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take `qty` from stock.
    Take,
    /// Not enough stock (or no such product): reject with the stock there was.
    Reject { available: i64 },
}

/// Decides on an order for `qty` of `product`.
pub fn decide(product: Option<&Product>, qty: i64) -> Decision {
    match product {
        Some(p) if qty >= 1 && p.qty >= qty => Decision::Take,
        Some(p) => Decision::Reject { available: p.qty },
        None => Decision::Reject { available: 0 },
    }
}

/// The payload of `OutOfStock`.
pub use carshare_events::product::OutOfStock;

/// A product as its events carry it.
impl From<&Product> for carshare_events::product::Product {
    fn from(p: &Product) -> Self {
        carshare_events::product::Product {
            id: p.id,
            modelname: p.modelname.clone(),
            qty: p.qty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Body {
        Body(v.as_object().unwrap().clone())
    }

    #[test]
    fn stock_is_taken_only_when_there_is_enough() {
        let p = Product {
            id: 1,
            modelname: "a".into(),
            qty: 3,
        };
        assert_eq!(decide(Some(&p), 3), Decision::Take);
        assert_eq!(decide(Some(&p), 4), Decision::Reject { available: 3 });
        assert_eq!(decide(None, 1), Decision::Reject { available: 0 });
        assert_eq!(decide(Some(&p), 0), Decision::Reject { available: 3 });
    }

    #[test]
    fn changes_are_validated() {
        let mut p = Product {
            id: 1,
            modelname: "a".into(),
            qty: 3,
        };
        assert_eq!(apply_change(&mut p, &body(json!({"qty": 5})), false), Ok(true));
        assert_eq!(p.qty, 5);
        assert!(apply_change(&mut p, &body(json!({"qty": -1})), false).is_err());
        assert!(
            apply_change(&mut p, &body(json!({"qty": 1})), true).is_err(),
            "PUT needs modelname"
        );
        assert!(apply_change(&mut p, &body(json!({"price": 1})), false).is_err());
        assert_eq!(apply_change(&mut p, &body(json!({"qty": 5})), false), Ok(false));
        assert_eq!(
            parse_new(&body(json!({"modelname": "test1", "qty": 100}))),
            Ok(("test1".into(), 100))
        );
        assert!(parse_new(&body(json!({"modelname": "", "qty": 1}))).is_err());
        assert!(parse_new(&body(json!({"modelname": "x", "qty": null}))).is_err());
    }
}
