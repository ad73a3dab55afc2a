//! The order context: takes orders over `/orders`, has payment take the money in the same unit
//! of work, and follows the order's status from the events of the other contexts.

pub mod domain;

use carshare_guest::body::Body;
use carshare_guest::call::call;
use carshare_guest::rest::{Collection, Target, method_not_allowed};
use carshare_guest::{Context, Error, Event, Manifest, Request, Response, events, state};
use serde_json::json;

use domain::{NewOrder, Order, Ordered, Paid};

const ORDERS: Collection = Collection::new(
    "orders",
    "order",
    &["id", "productId", "qty", "status", "customerId"],
);

struct OrderContext;

impl Context for OrderContext {
    fn manifest() -> Manifest {
        Manifest {
            name: "order",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/orders"],
            subscriptions: &["Paid"],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match (ORDERS.target(&req.path)?, req.method.as_str()) {
            (Target::Collection, "GET") => ORDERS.page(&req, ORDERS.all::<Order>()?),
            (Target::Collection, "POST") => place(&req),
            (Target::Collection, _) => Err(method_not_allowed(&req, &["GET", "POST"])),
            (Target::Item(id), "GET") => Ok(ORDERS.ok(&req, &ORDERS.require::<Order>(id)?)),
            (Target::Item(id), "PUT" | "PATCH") => {
                ORDERS.require::<Order>(id)?;
                Err(Error::MethodNotAllowed(format!(
                    "{} is not allowed on {}: an order's status is owned by the server",
                    req.method, req.path
                )))
            }
            (Target::Item(id), _) => {
                ORDERS.require::<Order>(id)?;
                Err(method_not_allowed(&req, &["GET"]))
            }
            (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on orders"))),
        }
    }

    fn handle_event(event: Event) -> Result<(), Error> {
        match event.event_type.as_str() {
            "Paid" => {
                let paid: Paid = event.payload()?;
                // The order and its payment commit in one unit, so a Paid without its order
                // is a fault worth parking, not something to skip silently.
                let mut order: Order = ORDERS.require(paid.order_id)?;
                if domain::on_paid(&mut order) {
                    ORDERS.save(&order)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Places an order: validate, record it, publish `Ordered`, and take the payment through a
/// synchronous call, all in this request's unit of work. If payment fails, the error aborts the
/// unit, and neither the order nor its event nor the payment exists afterwards.
fn place(req: &Request) -> Result<Response, Error> {
    let new = NewOrder::parse(&Body(req.json_object()?))?;
    let order = new.into_order(state::next_id("order"));
    ORDERS.save(&order)?;
    events::publish("Ordered", Some(order.id), &Ordered::from(&order))?;
    let payment = Request::new("POST", "/payments", &req.base_url).with_json(&json!({
        "orderId": order.id,
        "productId": order.product_id,
        "qty": order.qty,
        "status": "OrderApproved",
    }));
    match call("payment", payment) {
        Ok(r) if r.status == 200 || r.status == 201 => Ok(ORDERS.created(req, &order)),
        Ok(r) => Err(Error::Internal(format!(
            "payment answered {} to a new payment",
            r.status
        ))),
        Err(Error::Refused(m)) => Err(Error::Refused(format!("payment declined: {m}"))),
        Err(Error::Unavailable(m) | Error::Internal(m)) => Err(Error::Unavailable(format!(
            "payment is unavailable, try again later: {m}"
        ))),
        Err(e) => Err(Error::Internal(format!(
            "payment rejected the order's request: {}",
            e.message()
        ))),
    }
}

carshare_guest::context!(OrderContext);
