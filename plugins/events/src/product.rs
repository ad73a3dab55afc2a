//! The product context's events.

use carshare_guest::events::EventType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A car model and its stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Product {
    /// The product id.
    pub id: u64,
    /// The model's name.
    pub modelname: String,
    /// Cars in stock.
    pub qty: i64,
}

/// Product could not serve an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutOfStock {
    /// The order refused.
    pub order_id: u64,
    /// The product it asked for.
    pub product_id: u64,
    /// How many it asked for.
    pub qty: i64,
    /// How many there were.
    pub available: i64,
}

/// A product was registered.
pub const PRODUCT_REGISTERED: EventType<Product> =
    EventType::new("product", "ProductRegistered", "A product was registered.");

/// A product's name or stock changed (by a client, or by an order taking or giving back stock:
/// then its key is the order id).
pub const PRODUCT_CHANGED: EventType<Product> =
    EventType::new("product", "ProductChanged", "A product's name or stock changed.")
        .keyed_by("the order id, when an order changed the stock");

/// An order asked for more than the product had; the order is rejected.
pub const OUT_OF_STOCK: EventType<OutOfStock> = EventType::new(
    "product",
    "OutOfStock",
    "An order asked for more than was in stock.",
)
.keyed_by("the order id");
