//! The delivery context: brings the car when an order is paid (`Paid` → `Shipped`), and
//! cancels deliveries over `/cancellations`, refunding the payment through a synchronous call
//! in the same unit of work, so a cancellation and its refund exist together or not at all.

pub mod domain;

use carshare_events::delivery::{DELIVERY_CANCELED, SHIPPED};
use carshare_events::payment::{PAID, Paid};
use carshare_guest::api::{Operation, schema_ref};
use carshare_guest::body::Body;
use carshare_guest::call::call;
use carshare_guest::events::Handlers;
use carshare_guest::rest::{Collection, Target, method_not_allowed};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};
use serde_json::json;

use domain::{Delivery, Refund};

/// Deliveries and cancellations sort by id.
const DELIVERIES: Collection = Collection::new("deliveries", "delivery", &[], "Delivery");
const CANCELLATIONS: Collection = Collection::new("cancellations", "cancellation", &[], "Delivery");

struct DeliveryContext;

impl Context for DeliveryContext {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "delivery",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/deliveries", "/cancellations"],
            publishes: vec![SHIPPED.declare(), DELIVERY_CANCELED.declare()],
            operations: vec![
                DELIVERIES.list_operation(),
                DELIVERIES.get_operation(),
                CANCELLATIONS.list_operation(),
                CANCELLATIONS.get_operation(),
                Operation::new(
                    "POST",
                    "/cancellations",
                    "Cancel an order's delivery and refund its payment (once per order)",
                )
                .body(json!({
                    "type": "object",
                    "required": ["orderId"],
                    "properties": { "orderId": carshare_guest::api::lenient_integer(1, i64::MAX) }
                }))
                .answers(200, schema_ref("Delivery"))
                .answers(201, schema_ref("Delivery"))
                .errors(&[400, 404, 503])
                // The order's delivery and payment live where the order does.
                .partition_by("orderId"),
            ],
            schemas: vec![("Delivery", domain::delivery_schema())],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        if CANCELLATIONS.serves(&req.path) {
            return match (CANCELLATIONS.target(&req.path)?, req.method.as_str()) {
                (Target::Collection, "GET") => CANCELLATIONS.list::<Delivery>(&req),
                (Target::Collection, "POST") => cancel(&req),
                (Target::Item(id), "GET") => {
                    Ok(CANCELLATIONS.ok(&req, &CANCELLATIONS.require::<Delivery>(id)?))
                }
                (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on cancellations"))),
                (Target::Collection, _) => Err(method_not_allowed(&req, &["GET", "POST"])),
                _ => Err(method_not_allowed(&req, &["GET"])),
            };
        }
        match (DELIVERIES.target(&req.path)?, req.method.as_str()) {
            (Target::Collection, "GET") => DELIVERIES.list::<Delivery>(&req),
            (Target::Item(id), "GET") => Ok(DELIVERIES.ok(&req, &DELIVERIES.require::<Delivery>(id)?)),
            (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on deliveries"))),
            (Target::Item(id), _) => {
                DELIVERIES.require::<Delivery>(id)?;
                Err(method_not_allowed(&req, &["GET"]))
            }
            (Target::Collection, _) => Err(method_not_allowed(&req, &["GET"])),
        }
    }

    fn handlers() -> Handlers {
        Handlers::new().on(&PAID, ship)
    }
}

fn delivery_key(order: u64) -> String {
    format!("delivery-by-order/{order}")
}

fn cancellation_key(order: u64) -> String {
    format!("cancellation-by-order/{order}")
}

/// On `Paid`: bring the car, once, unless the order was cancelled first.
fn ship(paid: Paid) -> Result<(), Error> {
    let shipped = state::get::<u64>(&delivery_key(paid.order_id))?.is_some();
    let cancelled = state::get::<u64>(&cancellation_key(paid.order_id))?.is_some();
    if !domain::should_ship(shipped, cancelled) {
        return Ok(());
    }
    let d = Delivery {
        id: state::next_id("delivery"),
        order_id: paid.order_id,
        payment_id: paid.id,
        status: domain::SHIPPED.into(),
    };
    DELIVERIES.insert(&d)?;
    state::put(&delivery_key(d.order_id), &d.id)?;
    SHIPPED.publish(Some(d.order_id), &(&d).into())
}

/// Cancels an order's delivery and refunds its payment. Idempotent per order: cancelling again
/// returns the first cancellation and refunds nothing more.
fn cancel(req: &Request) -> Result<Response, Error> {
    let order_id = Body(req.json_object()?).id("orderId")?;
    if let Some(id) = state::get::<u64>(&cancellation_key(order_id))? {
        return Ok(CANCELLATIONS.ok(req, &CANCELLATIONS.require::<Delivery>(id)?));
    }
    let refund_req = Request::new("POST", "/paymentCancellations", &req.base_url)
        .with_json(&json!({ "orderId": order_id }));
    let refund: Refund = match call("payment", refund_req) {
        Ok(r) => r.parse()?,
        Err(Error::NotFound(_)) => {
            return Err(Error::NotFound(format!("no paid order {order_id}")));
        }
        Err(Error::Unavailable(m)) => {
            return Err(Error::Unavailable(format!(
                "payment is unavailable, try again later: {m}"
            )));
        }
        Err(Error::Internal(m)) => return Err(Error::Internal(format!("the refund failed: {m}"))),
        Err(e) => {
            return Err(Error::Internal(format!(
                "payment refused the refund: {}",
                e.message()
            )));
        }
    };
    if let Some(id) = state::get::<u64>(&delivery_key(order_id))? {
        let mut d: Delivery = DELIVERIES.require(id)?;
        d.status = domain::CANCELLED.into();
        DELIVERIES.save(&d)?;
    }
    let c = Delivery {
        id: state::next_id("cancellation"),
        order_id,
        payment_id: refund.payment_id,
        status: domain::CANCELLED.into(),
    };
    CANCELLATIONS.insert(&c)?;
    state::put(&cancellation_key(order_id), &c.id)?;
    DELIVERY_CANCELED.publish(Some(order_id), &(&c).into())?;
    Ok(CANCELLATIONS.created(req, &c))
}

carshare_guest::context!(DeliveryContext);
