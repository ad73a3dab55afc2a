//! The delivery context's events.

use carshare_guest::events::EventType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A delivery, or the cancellation of one (the same fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The delivery's (or the cancellation's) id.
    pub id: u64,
    /// The order delivered.
    pub order_id: u64,
    /// The order's payment.
    pub payment_id: u64,
    /// `Shipped` or `DeliveryCancelled`.
    pub status: String,
}

/// A paid order's car is on its way.
pub const SHIPPED: EventType<Delivery> =
    EventType::new("delivery", "Shipped", "A paid order's car was delivered.").keyed_by("the order id");

/// An order's delivery was cancelled and its payment refunded (the event is spelled with one
/// l; the status it carries, `DeliveryCancelled`, with two).
pub const DELIVERY_CANCELED: EventType<Delivery> = EventType::new(
    "delivery",
    "DeliveryCanceled",
    "An order's delivery was cancelled and its payment refunded.",
)
.keyed_by("the order id");
