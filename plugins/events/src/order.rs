//! The order context's events.

use carshare_guest::events::EventType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An order as its events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ordered {
    /// The order id.
    pub id: u64,
    /// The product ordered.
    pub product_id: u64,
    /// How many.
    pub qty: i64,
    /// The customer, when the order named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<u64>,
}

/// An order was placed (and its payment taken in the same unit).
pub const ORDERED: EventType<Ordered> =
    EventType::new("order", "Ordered", "An order was placed and paid for.").keyed_by("the order id");

/// An order was cancelled by its client; the payload is the order (its id in `id`).
pub const ORDER_CANCELLED: EventType<Ordered> = EventType::new(
    "order",
    "OrderCancelled",
    "An order was cancelled; its stock goes back to the product.",
)
.keyed_by("the order id");
