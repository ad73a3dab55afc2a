//! carshare-events: the events of the built-in contexts, one typed definition each.
//!
//! A context that publishes one of these uses its definition to declare and publish it; a
//! context that subscribes uses the same definition in its handler table, so both sides agree
//! on the name and the payload at compile time. A context of one's own that reacts to orders
//! depends on this crate (and defines its own events next to its code the same way).
//!
//! The payloads are what the log has always held: field names in camelCase, ids as integers.
//! Two traps of the original system are kept for its clients and named here: delivery's event
//! is `DeliveryCanceled` (one l) while a cancelled delivery's status is `DeliveryCancelled`, and
//! `OrderCancelled` carries the order id as `id` (it has the `Ordered` shape), not `orderId`.
#![deny(missing_docs)]

pub mod delivery;
pub mod order;
pub mod payment;
pub mod product;

use carshare_guest::events::EventType;

/// Every event type defined here, by publisher, as (name, publisher): for tests and tools
/// that must know the whole catalog.
pub fn all() -> Vec<(&'static str, &'static str)> {
    fn entry<P>(t: &EventType<P>) -> (&'static str, &'static str) {
        (t.name(), t.publisher())
    }
    vec![
        entry(&order::ORDERED),
        entry(&order::ORDER_CANCELLED),
        entry(&payment::PAID),
        entry(&payment::PAY_CANCELLED),
        entry(&delivery::SHIPPED),
        entry(&delivery::DELIVERY_CANCELED),
        entry(&product::PRODUCT_REGISTERED),
        entry(&product::PRODUCT_CHANGED),
        entry(&product::OUT_OF_STOCK),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_name_is_defined_once() {
        let mut names: Vec<_> = all().into_iter().map(|(n, _)| n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
    }

    #[test]
    fn payloads_keep_the_logs_shape() {
        let o = order::Ordered {
            id: 1,
            product_id: 2,
            qty: 3,
            customer_id: None,
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"id": 1, "productId": 2, "qty": 3})
        );
        let schema = order::ORDERED.declare().schema;
        assert_eq!(schema["required"], json!(["id", "productId", "qty"]));
        assert_eq!(
            schema["properties"]["customerId"]["type"],
            json!(["integer", "null"])
        );
        let stock = product::OUT_OF_STOCK.declare();
        assert_eq!(stock.key, "the order id");
        assert_eq!(
            stock.schema["required"],
            json!(["orderId", "productId", "qty", "available"])
        );
    }
}
