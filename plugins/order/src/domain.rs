//! The order domain, free of any host: what an order is, how a new one is validated, and how
//! its status moves. The status belongs to the server; clients never set it.

use carshare_guest::Error;
use carshare_guest::api;
use carshare_guest::body::Body;
use carshare_guest::rest::{Entity, Key};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Accepted, payment being taken.
pub const ORDERED: &str = "Ordered";
/// Paid.
pub const APPROVED: &str = "OrderApproved";
/// The car was delivered.
pub const SHIPPED: &str = "Shipped";
/// Cancelled and refunded.
pub const CANCELLED: &str = "OrderCancelled";
/// Product had not enough stock; refunded.
pub const REJECTED: &str = "OrderRejected";

/// The largest quantity one order may ask for.
pub const MAX_QTY: i64 = 1_000_000;

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: u64,
    pub product_id: u64,
    pub qty: i64,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<u64>,
}

impl Entity for Order {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "qty" => self.qty.into(),
            "productId" => self.product_id.into(),
            "customerId" => self.customer_id.into(),
            "status" => self.status.as_str().into(),
            _ => Key::Null,
        }
    }
}

/// The JSON Schema of an order as clients read it.
pub fn order_schema() -> serde_json::Value {
    api::resource(
        json!({
            "id": { "type": "integer" },
            "productId": { "type": "integer" },
            "qty": { "type": "integer" },
            "status": { "type": "string", "enum": [ORDERED, APPROVED, SHIPPED, CANCELLED, REJECTED] },
            "customerId": { "type": "integer" },
        }),
        &["id", "productId", "qty", "status"],
    )
}

/// The JSON Schema of a new order as clients send it (numbers may come as strings).
pub fn new_order_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["productId", "qty"],
        "properties": {
            "productId": api::lenient_integer(1, i64::MAX),
            "qty": api::lenient_integer(1, MAX_QTY),
            "customerId": api::lenient_integer(1, i64::MAX),
            "status": { "description": "accepted and ignored: the server owns the status" },
        }
    })
}

/// A validated request for a new order.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub product_id: u64,
    pub qty: i64,
    pub customer_id: Option<u64>,
}

impl NewOrder {
    /// Validates a client's body. A client-sent `status` (reference clients send `"order"`) is
    /// accepted and ignored.
    pub fn parse(body: &Body) -> Result<Self, Error> {
        Ok(NewOrder {
            product_id: body.id("productId")?,
            qty: body.int("qty", 1, MAX_QTY)?,
            customer_id: body.opt_int("customerId", 1, i64::MAX)?.map(|c| c as u64),
        })
    }

    /// The order this becomes under `id`.
    pub fn into_order(self, id: u64) -> Order {
        Order {
            id,
            product_id: self.product_id,
            qty: self.qty,
            status: ORDERED.into(),
            customer_id: self.customer_id,
        }
    }
}

/// The payload of `Ordered` and `OrderCancelled`.
pub use carshare_events::order::Ordered;

impl From<&Order> for Ordered {
    fn from(o: &Order) -> Self {
        Ordered {
            id: o.id,
            product_id: o.product_id,
            qty: o.qty,
            customer_id: o.customer_id,
        }
    }
}

/// What order asks payment for: `POST /payments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    pub order_id: u64,
    pub product_id: u64,
    pub qty: i64,
    pub status: &'static str,
}

impl From<&Order> for PaymentRequest {
    fn from(o: &Order) -> Self {
        PaymentRequest {
            order_id: o.id,
            product_id: o.product_id,
            qty: o.qty,
            status: "OrderApproved",
        }
    }
}

/// Applies a payment: `Ordered` becomes `OrderApproved`. Returns whether anything changed, so
/// a redelivered `Paid`, or one arriving after the order moved on, changes nothing.
pub fn on_paid(order: &mut Order) -> bool {
    advance(order, |o| o.status == ORDERED, APPROVED)
}

/// Moves `order` to `to` if `allowed` says it may, and reports whether it moved. Every status
/// change goes through here, so statuses only ever move forward and final ones stay.
fn advance(order: &mut Order, allowed: impl Fn(&Order) -> bool, to: &str) -> bool {
    if !allowed(order) {
        return false;
    }
    order.status = to.into();
    true
}

/// Whether the order is over (cancelled or rejected): nothing changes it any more.
pub fn is_final(order: &Order) -> bool {
    order.status == CANCELLED || order.status == REJECTED
}

/// Applies a delivery: a paid (or not yet paid) order becomes `Shipped`. Returns whether
/// anything changed.
pub fn on_shipped(order: &mut Order) -> bool {
    advance(order, |o| o.status == ORDERED || o.status == APPROVED, SHIPPED)
}

/// Applies a refund: the order is cancelled, unless it is over already. Returns whether it
/// changed (and so whether `OrderCancelled` is to be published).
pub fn on_refunded(order: &mut Order) -> bool {
    advance(order, |o| !is_final(o), CANCELLED)
}

/// Applies a stock shortage: the order is rejected, unless it is over already. Returns whether
/// it changed (and so whether its refund is to be asked for).
pub fn on_out_of_stock(order: &mut Order) -> bool {
    advance(order, |o| !is_final(o), REJECTED)
}

/// What order knows of a product: its replica, from `ProductRegistered` and `ProductChanged`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductReplica {
    pub id: u64,
    pub qty: i64,
    /// The sequence number of the event it was taken from.
    #[serde(default)]
    pub seq: u64,
}

/// Refuses early what product would refuse: an unknown product, or more than its last known
/// stock. (Product stays the authority: orders racing for the last units are settled there.)
pub fn check_stock(new: &NewOrder, product: Option<&ProductReplica>) -> Result<(), Error> {
    match product {
        None => Err(Error::Refused(format!("product {} is not known", new.product_id))),
        Some(p) if p.qty < new.qty => Err(Error::Refused(format!(
            "only {} of product {} in stock, {} ordered",
            p.qty, p.id, new.qty
        ))),
        Some(_) => Ok(()),
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
    fn payment_is_asked_with_the_order_s_id_product_and_quantity() {
        let o = NewOrder::parse(&body(json!({"productId": 3, "qty": 2})))
            .unwrap()
            .into_order(9);
        assert_eq!(
            serde_json::to_string(&PaymentRequest::from(&o)).unwrap(),
            r#"{"orderId":9,"productId":3,"qty":2,"status":"OrderApproved"}"#
        );
    }

    #[test]
    fn a_reference_client_order_is_accepted_and_its_status_ignored() {
        let n = NewOrder::parse(&body(json!({"productId": 1, "qty": 2, "status": "Shipped"}))).unwrap();
        let o = n.into_order(9);
        assert_eq!(o.status, ORDERED);
        assert_eq!((o.id, o.product_id, o.qty, o.customer_id), (9, 1, 2, None));
    }

    #[test]
    fn an_httpie_order_with_every_field_a_string_is_accepted() {
        let n = NewOrder::parse(&body(
            json!({"productId": "1", "qty": "2", "customerId": "5", "status": "order"}),
        ))
        .unwrap();
        assert_eq!((n.product_id, n.qty, n.customer_id), (1, 2, Some(5)));
    }

    #[test]
    fn invalid_orders_are_refused() {
        for b in [
            json!({"qty": 1}),
            json!({"productId": 1}),
            json!({"productId": 1, "qty": 0}),
            json!({"productId": 1, "qty": -3}),
            json!({"productId": "one", "qty": 1}),
            json!({"productId": " 1", "qty": 1}),
            json!({"productId": 1, "qty": "1.5"}),
            json!({"productId": 0, "qty": 1}),
            json!({"productId": 1, "qty": null}),
            json!({"productId": 1, "qty": 2.5}),
            json!({"productId": 1, "qty": 1, "customerId": "x"}),
        ] {
            assert!(
                matches!(NewOrder::parse(&body(b.clone())), Err(Error::BadRequest(_))),
                "{b}"
            );
        }
    }

    #[test]
    fn statuses_only_move_forward_and_final_ones_stay() {
        let mut o = NewOrder {
            product_id: 1,
            qty: 1,
            customer_id: None,
        }
        .into_order(1);
        assert!(on_shipped(&mut o));
        assert!(!on_paid(&mut o), "a late Paid does not undo Shipped");
        assert_eq!(o.status, SHIPPED);
        assert!(on_refunded(&mut o));
        assert!(!on_refunded(&mut o), "a second refund changes nothing");
        assert!(!on_shipped(&mut o));
        assert!(!on_out_of_stock(&mut o));
        assert_eq!(o.status, CANCELLED);
        let mut r = NewOrder {
            product_id: 1,
            qty: 1,
            customer_id: None,
        }
        .into_order(2);
        assert!(on_out_of_stock(&mut r));
        assert!(!on_refunded(&mut r), "a rejected order stays rejected");
        assert_eq!(r.status, REJECTED);
    }

    #[test]
    fn stock_is_checked_against_the_replica() {
        let n = NewOrder {
            product_id: 7,
            qty: 3,
            customer_id: None,
        };
        assert!(matches!(check_stock(&n, None), Err(Error::Refused(_))));
        assert!(
            check_stock(
                &n,
                Some(&ProductReplica {
                    id: 7,
                    qty: 2,
                    seq: 1
                })
            )
            .is_err()
        );
        assert!(
            check_stock(
                &n,
                Some(&ProductReplica {
                    id: 7,
                    qty: 3,
                    seq: 1
                })
            )
            .is_ok()
        );
    }

    #[test]
    fn paid_is_applied_once() {
        let mut o = NewOrder {
            product_id: 1,
            qty: 1,
            customer_id: None,
        }
        .into_order(1);
        assert!(on_paid(&mut o));
        assert_eq!(o.status, APPROVED);
        assert!(!on_paid(&mut o));
        o.status = CANCELLED.into();
        assert!(!on_paid(&mut o));
        assert_eq!(o.status, CANCELLED);
    }
}
