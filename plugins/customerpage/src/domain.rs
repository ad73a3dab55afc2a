//! The customer's view of an order, built only from events. Each event is a fact about the
//! order; the row keeps every fact once (by event sequence number), and its status is the
//! furthest step any fact reached, so the row is the same whatever order the events arrive in
//! and however often they are redelivered.

use carshare_guest::api;
use carshare_guest::rest::{Entity, Key};
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields of an event's payload the view reads, read straight from the JSON text without
/// building a tree of it (three events per order reach this context). Every other field is
/// skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Facts {
    pub id: Int,
    pub order_id: Int,
    pub product_id: Int,
    pub qty: Int,
    pub customer_id: Int,
}

/// A JSON value read as an integer if it is one: like `Value::as_u64` and `Value::as_i64`, a
/// value that is missing, not a number, or not an integer of the asked range is none.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum Int {
    #[default]
    None,
    Unsigned(u64),
    Negative(i64),
}

impl Int {
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Int::Unsigned(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_i64(self) -> Option<i64> {
        match self {
            Int::Unsigned(n) => i64::try_from(n).ok(),
            Int::Negative(n) => Some(n),
            Int::None => None,
        }
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyValue;
        impl<'de> Visitor<'de> for AnyValue {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Int, E> {
                Ok(Int::Unsigned(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Int, E> {
                Ok(u64::try_from(n).map_or(Int::Negative(n), Int::Unsigned))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Int, E> {
                Ok(Int::None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Int, E> {
                Ok(Int::None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Int, E> {
                Ok(Int::None)
            }
            fn visit_unit<E>(self) -> Result<Int, E> {
                Ok(Int::None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Int, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Int::None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Int, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Int::None)
            }
        }
        d.deserialize_any(AnyValue)
    }
}

/// One step in an order's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub event_type: String,
    pub status: String,
    /// The event's sequence number in its partition's log.
    pub seq: u64,
    pub at: String,
    /// The event's id: unique across partitions (rows written before it was kept have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
}

/// Which event a fact came from, and when it was committed.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub id: &'a str,
    pub seq: u64,
    pub at: &'a str,
}

impl Step {
    /// Whether this step is the event `seen`.
    fn is(&self, seen: &Seen<'_>) -> bool {
        if self.event_id.is_empty() {
            // Kept before ids were, with one partition: the sequence number says it.
            self.seq == seen.seq
        } else {
            self.event_id == seen.id
        }
    }
}

/// One row per order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub id: u64,
    pub order_id: u64,
    pub product_id: Option<u64>,
    pub qty: Option<i64>,
    pub customer_id: Option<u64>,
    pub payment_id: Option<u64>,
    pub delivery_id: Option<u64>,
    pub status: String,
    pub history: Vec<Step>,
}

impl Entity for Row {
    fn id(&self) -> u64 {
        self.id
    }

    fn key_of(&self, field: &str) -> Key {
        match field {
            "customerId" => self.customer_id.into(),
            "orderId" => self.order_id.into(),
            "status" => self.status.as_str().into(),
            _ => Key::Null,
        }
    }
}

/// The JSON Schema of a row of the view as clients read it.
pub fn row_schema() -> Value {
    let optional = serde_json::json!({ "type": ["integer", "null"] });
    api::resource(
        serde_json::json!({
            "id": { "type": "integer" },
            "orderId": { "type": "integer" },
            "productId": optional,
            "qty": optional,
            "customerId": optional,
            "paymentId": optional,
            "deliveryId": optional,
            "status": { "type": "string" },
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["eventType", "status", "seq", "at"],
                    "properties": {
                        "eventType": { "type": "string" },
                        "status": { "type": "string" },
                        "seq": { "type": "integer" },
                        "at": { "type": "string" },
                        "eventId": { "type": "string" }
                    }
                }
            }
        }),
        &["id", "orderId", "status", "history"],
    )
}

impl Row {
    /// An empty row for `order_id`, before any fact.
    pub fn new(order_id: u64) -> Self {
        Row {
            id: order_id,
            order_id,
            product_id: None,
            qty: None,
            customer_id: None,
            payment_id: None,
            delivery_id: None,
            status: String::new(),
            history: Vec::new(),
        }
    }
}

/// The status each event type means for the order, and how far along that is.
pub fn status_of(event_type: &str) -> Option<(&'static str, u8)> {
    Some(match event_type {
        "Ordered" => ("Ordered", 1),
        "Paid" => ("OrderApproved", 2),
        "Shipped" => ("Shipped", 3),
        "DeliveryCanceled" => ("DeliveryCancelled", 4),
        "PayCancelled" => ("PaymentCancelled", 5),
        // Order publishes OrderCancelled only for an order it cancelled; an order it rejected
        // never gets one. So a row with both facts is an order cancelled before the shortage
        // reached it, exactly as the order context decided.
        "OutOfStock" => ("OrderRejected", 6),
        "OrderCancelled" => ("OrderCancelled", 7),
        _ => return None,
    })
}

/// The order an event is about.
pub fn order_id_of(event_type: &str, payload: &Facts) -> Option<u64> {
    match event_type {
        "Ordered" | "OrderCancelled" => payload.id.as_u64(),
        _ => payload.order_id.as_u64(),
    }
}

/// Applies the fact (`event_type`, `payload`) of event `seen` to `row`. Returns whether the
/// row changed; a fact seen before changes nothing. The history is in commit time order (with
/// several partitions, facts of one order come from several logs, and may arrive in another).
pub fn apply(row: &mut Row, event_type: &str, payload: &Facts, seen: Seen<'_>) -> bool {
    let Some((status, _)) = status_of(event_type) else {
        return false;
    };
    if row.history.iter().any(|s| s.is(&seen)) {
        return false;
    }
    match event_type {
        "Ordered" => {
            row.product_id = payload.product_id.as_u64();
            row.qty = payload.qty.as_i64();
            row.customer_id = payload.customer_id.as_u64();
        }
        "Paid" => row.payment_id = payload.id.as_u64(),
        "Shipped" => row.delivery_id = payload.id.as_u64(),
        _ => {}
    }
    let step = Step {
        event_type: event_type.into(),
        status: status.into(),
        seq: seen.seq,
        at: seen.at.into(),
        event_id: seen.id.into(),
    };
    let pos = row
        .history
        .partition_point(|s| (s.at.as_str(), s.seq) < (seen.at, seen.seq));
    row.history.insert(pos, step);
    row.status = row
        .history
        .iter()
        .filter_map(|s| status_of(&s.event_type))
        .max_by_key(|(_, rank)| *rank)
        .map(|(st, _)| st.to_string())
        .unwrap_or_default();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The facts of a payload, read as the handler reads them.
    fn f(payload: Value) -> Facts {
        serde_json::from_str(&payload.to_string()).unwrap()
    }

    fn facts() -> Vec<(&'static str, Facts, u64)> {
        vec![
            (
                "Ordered",
                f(json!({"id": 9, "productId": 2, "qty": 1, "customerId": 5})),
                1,
            ),
            ("Paid", f(json!({"id": 4, "orderId": 9})), 2),
            ("Shipped", f(json!({"id": 3, "orderId": 9, "paymentId": 4})), 5),
            ("PayCancelled", f(json!({"id": 1, "orderId": 9})), 8),
        ]
    }

    /// Event `seq` of one log, committed `at`.
    fn seen(seq: u64, at: &'static str) -> Seen<'static> {
        Seen {
            id: Box::leak(format!("{:016x}-{seq:016x}", 7).into_boxed_str()),
            seq,
            at,
        }
    }

    fn build(order: &[usize]) -> Row {
        let f = facts();
        let mut row = Row::new(9);
        for &i in order {
            let (t, p, seq) = &f[i];
            apply(&mut row, t, p, seen(*seq, "2026-01-01T00:00:00.000Z"));
        }
        row
    }

    #[test]
    fn the_row_is_the_same_whatever_the_arrival_order() {
        let expected = build(&[0, 1, 2, 3]);
        assert_eq!(expected.status, "PaymentCancelled");
        assert_eq!(
            (expected.payment_id, expected.delivery_id, expected.customer_id),
            (Some(4), Some(3), Some(5))
        );
        for order in [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            assert_eq!(build(&order), expected, "{order:?}");
        }
    }

    #[test]
    fn a_redelivered_fact_changes_nothing() {
        let mut row = build(&[0, 1]);
        let before = row.clone();
        assert!(!apply(
            &mut row,
            "Paid",
            &f(json!({"id": 4, "orderId": 9})),
            seen(2, "later")
        ));
        assert_eq!(row, before);
        assert!(!apply(&mut row, "ProductChanged", &f(json!({})), seen(3, "x")));
    }

    #[test]
    fn facts_from_two_partitions_with_one_sequence_number_are_two_facts_in_time_order() {
        let mut row = Row::new(9);
        let at = |t: &'static str| Seen {
            id: "",
            seq: 0,
            at: t,
        };
        let shortage = Seen {
            id: "000000000000000a-0000000000000003",
            seq: 3,
            ..at("2026-01-01T00:00:02.000Z")
        };
        let refund = Seen {
            id: "000000000000000b-0000000000000003",
            seq: 3,
            ..at("2026-01-01T00:00:03.000Z")
        };
        assert!(apply(&mut row, "PayCancelled", &f(json!({"orderId": 9})), refund));
        assert!(apply(&mut row, "OutOfStock", &f(json!({"orderId": 9})), shortage));
        assert!(!apply(
            &mut row,
            "OutOfStock",
            &f(json!({"orderId": 9})),
            shortage
        ));
        let steps: Vec<&str> = row.history.iter().map(|s| s.event_type.as_str()).collect();
        assert_eq!(steps, ["OutOfStock", "PayCancelled"]);
        assert_eq!(row.status, "OrderRejected");
    }

    #[test]
    fn a_step_kept_before_event_ids_is_known_by_its_sequence_number() {
        let mut row: Row = serde_json::from_value(json!({
            "id": 9, "orderId": 9, "status": "Ordered",
            "history": [{"eventType": "Ordered", "status": "Ordered", "seq": 1, "at": "t"}]
        }))
        .unwrap();
        assert!(!apply(&mut row, "Ordered", &f(json!({"id": 9})), seen(1, "t")));
        assert!(apply(
            &mut row,
            "Paid",
            &f(json!({"id": 4, "orderId": 9})),
            seen(2, "t")
        ));
        assert_eq!(row.history.len(), 2);
    }

    #[test]
    fn a_cancelled_order_stays_cancelled_when_a_shortage_arrives_later() {
        let mut row = build(&[0, 1]);
        apply(&mut row, "OrderCancelled", &f(json!({"id": 9})), seen(10, "t"));
        apply(&mut row, "OutOfStock", &f(json!({"orderId": 9})), seen(11, "t"));
        assert_eq!(row.status, "OrderCancelled");
        let mut rejected = build(&[0, 1]);
        apply(
            &mut rejected,
            "OutOfStock",
            &f(json!({"orderId": 9})),
            seen(11, "t"),
        );
        apply(
            &mut rejected,
            "PayCancelled",
            &f(json!({"orderId": 9})),
            seen(12, "t"),
        );
        assert_eq!(rejected.status, "OrderRejected");
    }

    #[test]
    fn facts_read_integers_as_a_json_tree_would() {
        let payloads = [
            json!({"id": 7, "qty": -2, "customerId": "5", "productId": 1.5, "orderId": null}),
            json!({"id": u64::MAX, "qty": u64::MAX, "extra": {"id": 1, "list": [1, {"a": []}]}}),
            json!({"id": -1, "qty": i64::MIN, "orderId": true, "customerId": [3]}),
            json!({}),
        ];
        for p in payloads {
            let facts = f(p.clone());
            assert_eq!(facts.id.as_u64(), p["id"].as_u64(), "{p}");
            assert_eq!(facts.order_id.as_u64(), p["orderId"].as_u64(), "{p}");
            assert_eq!(facts.product_id.as_u64(), p["productId"].as_u64(), "{p}");
            assert_eq!(facts.customer_id.as_u64(), p["customerId"].as_u64(), "{p}");
            assert_eq!(facts.qty.as_i64(), p["qty"].as_i64(), "{p}");
        }
    }

    #[test]
    fn a_paid_before_its_order_is_kept() {
        let row = build(&[1]);
        assert_eq!(row.status, "OrderApproved");
        assert_eq!(row.payment_id, Some(4));
        assert_eq!(row.product_id, None);
    }
}
