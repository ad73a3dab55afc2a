//! The delivery domain: a car brought to the customer, and its cancellation.

use carshare_guest::api;
use carshare_guest::rest::{Entity, Key};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The car was brought to the customer.
pub const SHIPPED: &str = "Shipped";
/// The delivery was cancelled (the car returned, or never sent).
pub const CANCELLED: &str = "DeliveryCancelled";

/// A delivery; a cancellation has the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: u64,
    pub order_id: u64,
    pub payment_id: u64,
    pub status: String,
}

impl Entity for Delivery {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "orderId" => self.order_id.into(),
            "status" => self.status.as_str().into(),
            _ => Key::Null,
        }
    }
}

/// The JSON Schema of a delivery (or a cancellation: the same fields) as clients read it.
pub fn delivery_schema() -> serde_json::Value {
    api::resource(
        json!({
            "id": { "type": "integer" },
            "orderId": { "type": "integer" },
            "paymentId": { "type": "integer" },
            "status": { "type": "string", "enum": [SHIPPED, CANCELLED] },
        }),
        &["id", "orderId", "paymentId", "status"],
    )
}

/// A delivery as its events carry it.
impl From<&Delivery> for carshare_events::delivery::Delivery {
    fn from(d: &Delivery) -> Self {
        carshare_events::delivery::Delivery {
            id: d.id,
            order_id: d.order_id,
            payment_id: d.payment_id,
            status: d.status.clone(),
        }
    }
}

/// What delivery needs of payment's answer to a refund.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    pub payment_id: u64,
}

/// Whether a paid order should be shipped: not if it was shipped already (a redelivered
/// `Paid`) and not if it was cancelled before its `Paid` was handled.
pub fn should_ship(already_shipped: bool, cancelled: bool) -> bool {
    !already_shipped && !cancelled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_once_and_never_after_a_cancellation() {
        assert!(should_ship(false, false));
        assert!(!should_ship(true, false));
        assert!(!should_ship(false, true));
    }
}
