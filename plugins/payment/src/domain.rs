//! The payment domain, free of any host.

use carshare_guest::Error;
use carshare_guest::api;
use carshare_guest::body::Body;
use carshare_guest::rest::{Entity, Key};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A payment that was taken.
pub const PAID: &str = "Paid";
/// A payment that was refunded.
pub const CANCELLED: &str = "PaymentCancelled";

/// A payment (and, with status `PaymentCancelled`, a payment cancellation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: u64,
    pub order_id: u64,
    pub product_id: u64,
    pub qty: i64,
    pub status: String,
}

impl Entity for Payment {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "status" => self.status.as_str().into(),
            "orderId" => self.order_id.into(),
            _ => Key::Null,
        }
    }
}

/// The JSON Schema of a payment as clients read it.
pub fn payment_schema() -> serde_json::Value {
    api::resource(
        json!({
            "id": { "type": "integer" },
            "orderId": { "type": "integer" },
            "productId": { "type": "integer" },
            "qty": { "type": "integer" },
            "status": { "type": "string", "enum": [PAID, CANCELLED, "OrderApproved"] },
        }),
        &["id", "orderId", "productId", "qty", "status"],
    )
}

/// The JSON Schema of a refund as clients read it.
pub fn cancellation_schema() -> serde_json::Value {
    api::resource(
        json!({
            "id": { "type": "integer" },
            "orderId": { "type": "integer" },
            "productId": { "type": "integer" },
            "qty": { "type": "integer" },
            "status": { "type": "string" },
            "paymentId": { "type": "integer" },
        }),
        &["id", "orderId", "productId", "qty", "status", "paymentId"],
    )
}

/// A validated request to take a payment.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    pub order_id: u64,
    pub product_id: u64,
    pub qty: i64,
}

impl NewPayment {
    /// Validates the order context's request; the `status` it sends is ignored.
    pub fn parse(body: &Body) -> Result<Self, Error> {
        Ok(NewPayment {
            order_id: body.id("orderId")?,
            product_id: body.id("productId")?,
            qty: body.int("qty", 1, i64::MAX)?,
        })
    }

    /// The payment this becomes under `id`.
    pub fn into_payment(self, id: u64) -> Payment {
        Payment {
            id,
            order_id: self.order_id,
            product_id: self.product_id,
            qty: self.qty,
            status: PAID.into(),
        }
    }
}

/// The events' payloads.
pub use carshare_events::payment::{Paid, PayCancelled};

impl From<&Payment> for Paid {
    fn from(p: &Payment) -> Self {
        Paid {
            id: p.id,
            order_id: p.order_id,
            product_id: p.product_id,
            qty: p.qty,
            status: p.status.clone(),
        }
    }
}

/// A refund: the payment's fields, with its own id and the refunded payment's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    pub id: u64,
    pub order_id: u64,
    pub product_id: u64,
    pub qty: i64,
    pub status: String,
    pub payment_id: u64,
}

impl Entity for Cancellation {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "orderId" => self.order_id.into(),
            _ => Key::Null,
        }
    }
}

impl Cancellation {
    /// The refund of `p` under `id`.
    pub fn of(p: &Payment, id: u64) -> Self {
        Cancellation {
            id,
            order_id: p.order_id,
            product_id: p.product_id,
            qty: p.qty,
            status: CANCELLED.into(),
            payment_id: p.id,
        }
    }
}

impl From<&Cancellation> for PayCancelled {
    fn from(c: &Cancellation) -> Self {
        PayCancelled {
            id: c.id,
            order_id: c.order_id,
            product_id: c.product_id,
            qty: c.qty,
            payment_id: c.payment_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payment_is_paid_whatever_status_is_sent() {
        let b = Body(
            json!({"orderId": 3, "productId": 1, "qty": 2, "status": "OrderApproved"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let p = NewPayment::parse(&b).unwrap().into_payment(5);
        assert_eq!(
            p,
            Payment {
                id: 5,
                order_id: 3,
                product_id: 1,
                qty: 2,
                status: PAID.into()
            }
        );
        assert_eq!(Paid::from(&p).status, PAID);
    }

    #[test]
    fn a_payment_without_order_is_refused() {
        let b = Body(json!({"productId": 1, "qty": 2}).as_object().unwrap().clone());
        assert!(matches!(NewPayment::parse(&b), Err(Error::BadRequest(_))));
    }
}
