//! The payment context: takes a payment when order asks (synchronously, inside the order's unit
//! of work) and publishes `Paid`. Clients may read payments; only the order context may create
//! one, so no payment exists without its order.

pub mod domain;

use carshare_events::payment::{PAID, PAY_CANCELLED};
use carshare_guest::api::Operation;
use carshare_guest::body::Body;
use carshare_guest::rest::{Collection, Target, method_not_allowed};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};

use domain::{Cancellation, NewPayment, Paid, PayCancelled, Payment};
use serde_json::json;

/// Payments sort by id or status; refunds by id.
const PAYMENTS: Collection = Collection::new("payments", "payment", &["status"], "Payment");
const CANCELLATIONS: Collection = Collection::new(
    "paymentCancellations",
    "paymentCancellation",
    &[],
    "PaymentCancellation",
);

struct PaymentContext;

impl Context for PaymentContext {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "payment",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/payments", "/paymentCancellations"],
            publishes: vec![PAID.declare(), PAY_CANCELLED.declare()],
            operations: vec![
                PAYMENTS.list_operation(),
                PAYMENTS.get_operation(),
                Operation::new(
                    "POST",
                    "/payments",
                    "Taken by the order context only; refused to clients",
                )
                .body(json!({ "type": "object" }))
                .errors(&[403]),
                CANCELLATIONS.list_operation(),
                CANCELLATIONS.get_operation(),
                Operation::new(
                    "POST",
                    "/paymentCancellations",
                    "Made by the delivery context only; refused to clients",
                )
                .body(json!({ "type": "object" }))
                .errors(&[403]),
            ],
            schemas: vec![
                ("Payment", domain::payment_schema()),
                ("PaymentCancellation", domain::cancellation_schema()),
            ],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        if CANCELLATIONS.serves(&req.path) {
            return match (CANCELLATIONS.target(&req.path)?, req.method.as_str()) {
                (Target::Collection, "GET") => CANCELLATIONS.list::<Cancellation>(&req),
                (Target::Collection, "POST") => refund(&req),
                (Target::Item(id), "GET") => {
                    Ok(CANCELLATIONS.ok(&req, &CANCELLATIONS.require::<Cancellation>(id)?))
                }
                (Target::Search(q), _) => Err(Error::NotFound(format!(
                    "no search {q:?} on paymentCancellations"
                ))),
                _ => Err(method_not_allowed(&req, &["GET"])),
            };
        }
        match (PAYMENTS.target(&req.path)?, req.method.as_str()) {
            (Target::Collection, "GET") => PAYMENTS.list::<Payment>(&req),
            (Target::Collection, "POST") => take(&req),
            (Target::Collection, _) => Err(method_not_allowed(&req, &["GET", "POST"])),
            (Target::Item(id), "GET") => Ok(PAYMENTS.ok(&req, &PAYMENTS.require::<Payment>(id)?)),
            (Target::Item(id), _) => {
                PAYMENTS.require::<Payment>(id)?;
                Err(method_not_allowed(&req, &["GET"]))
            }
            (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on payments"))),
        }
    }
}

/// Takes the payment for an order. Idempotent per order: asking again for the same order
/// returns the payment already taken instead of charging twice.
fn take(req: &Request) -> Result<Response, Error> {
    if req.caller.as_deref() != Some("order") {
        return Err(Error::Forbidden(
            "payments are taken by the order context; place an order instead".into(),
        ));
    }
    let new = NewPayment::parse(&Body(req.json_object()?))?;
    let index = format!("by-order/{}", new.order_id);
    if let Some(id) = state::get::<u64>(&index)? {
        return Ok(PAYMENTS.ok(req, &PAYMENTS.require::<Payment>(id)?));
    }
    let payment = new.into_payment(state::next_id("payment"));
    PAYMENTS.insert(&payment)?;
    state::put(&index, &payment.id)?;
    PAID.publish(Some(payment.order_id), &Paid::from(&payment))?;
    Ok(PAYMENTS.created(req, &payment))
}

/// Refunds the payment of an order, when delivery asks (inside the cancelling unit of work).
/// Idempotent per order: a second request returns the first refund, never refunds twice.
fn refund(req: &Request) -> Result<Response, Error> {
    if req.caller.as_deref() != Some("delivery") {
        return Err(Error::Forbidden(
            "refunds are made by the delivery context; cancel the order instead".into(),
        ));
    }
    let order_id = Body(req.json_object()?).id("orderId")?;
    let index = format!("refund-by-order/{order_id}");
    if let Some(id) = state::get::<u64>(&index)? {
        return Ok(CANCELLATIONS.ok(req, &CANCELLATIONS.require::<Cancellation>(id)?));
    }
    let payment_id = state::get::<u64>(&format!("by-order/{order_id}"))?
        .ok_or_else(|| Error::NotFound(format!("no payment for order {order_id}")))?;
    let mut payment: Payment = PAYMENTS.require(payment_id)?;
    payment.status = domain::CANCELLED.into();
    PAYMENTS.save(&payment)?;
    let c = Cancellation::of(&payment, state::next_id("paymentCancellation"));
    CANCELLATIONS.insert(&c)?;
    state::put(&index, &c.id)?;
    PAY_CANCELLED.publish(Some(order_id), &PayCancelled::from(&c))?;
    Ok(CANCELLATIONS.created(req, &c))
}

carshare_guest::context!(PaymentContext);
