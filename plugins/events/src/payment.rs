//! The payment context's events.

use carshare_guest::events::EventType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paid {
    /// The payment id.
    pub id: u64,
    /// The order it pays for.
    pub order_id: u64,
    /// The product ordered.
    pub product_id: u64,
    /// How many.
    pub qty: i64,
    /// `PaymentApproved`.
    pub status: String,
}

/// A refund of a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayCancelled {
    /// The refund's id.
    pub id: u64,
    /// The order refunded.
    pub order_id: u64,
    /// The product ordered.
    pub product_id: u64,
    /// How many.
    pub qty: i64,
    /// The payment refunded.
    pub payment_id: u64,
}

/// An order's payment was approved.
pub const PAID: EventType<Paid> =
    EventType::new("payment", "Paid", "An order's payment was approved.").keyed_by("the order id");

/// An order's payment was refunded.
pub const PAY_CANCELLED: EventType<PayCancelled> =
    EventType::new("payment", "PayCancelled", "An order's payment was refunded.").keyed_by("the order id");
