//! The order context: takes orders over `/orders`, has payment take the money in the same unit
//! of work, follows each order's status from the other contexts' events, and cancels orders
//! (through delivery, which refunds the payment).

pub mod domain;

use carshare_events::delivery::{Delivery, SHIPPED};
use carshare_events::order::{ORDER_CANCELLED, ORDERED};
use carshare_events::payment::{PAID, PAY_CANCELLED, Paid, PayCancelled};
use carshare_events::product::{OUT_OF_STOCK, OutOfStock, PRODUCT_CHANGED, PRODUCT_REGISTERED, Product};
use carshare_guest::api::{Operation, schema_ref};
use carshare_guest::body::Body;
use carshare_guest::call::call;
use carshare_guest::events::Handlers;
use carshare_guest::rest::{Collection, Target, method_not_allowed};
use carshare_guest::{Context, Error, Event, Manifest, Request, Response, log, state};
use serde_json::json;

use domain::{NewOrder, Order, Ordered, PaymentRequest, ProductReplica};

/// Orders sort by id or by quantity; every other field would cost each order an index entry
/// and is refused as a sort, with the list of those supported.
const ORDERS: Collection = Collection::new("orders", "order", &["qty"], "Order");

struct OrderContext;

impl Context for OrderContext {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "order",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/orders"],
            publishes: vec![ORDERED.declare(), ORDER_CANCELLED.declare()],
            operations: vec![
                ORDERS.list_operation(),
                ORDERS.get_operation(),
                Operation::new(
                    "POST",
                    "/orders",
                    "Place an order: its payment is taken in the same unit of work",
                )
                .body(schema_ref("NewOrder"))
                .answers(201, schema_ref("Order"))
                .errors(&[400, 422, 503]),
                Operation::new(
                    "DELETE",
                    "/orders/{id}",
                    "Cancel an order: delivery cancelled, payment refunded",
                )
                .answers_empty(204)
                .errors(&[404, 503]),
            ],
            schemas: vec![
                ("Order", domain::order_schema()),
                ("NewOrder", domain::new_order_schema()),
            ],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match (ORDERS.target(&req.path)?, req.method.as_str()) {
            (Target::Collection, "GET") => ORDERS.list::<Order>(&req),
            (Target::Collection, "POST") => place(&req),
            (Target::Collection, _) => Err(method_not_allowed(&req, &["GET", "POST"])),
            (Target::Item(id), "GET") => Ok(ORDERS.ok(&req, &ORDERS.require::<Order>(id)?)),
            (Target::Item(id), "DELETE") => cancel(&req, ORDERS.require(id)?),
            (Target::Item(id), "PUT" | "PATCH") => {
                ORDERS.require::<Order>(id)?;
                Err(Error::MethodNotAllowed(format!(
                    "{} is not allowed on {}: an order's status is owned by the server; DELETE cancels it",
                    req.method, req.path
                )))
            }
            (Target::Item(id), _) => {
                ORDERS.require::<Order>(id)?;
                Err(method_not_allowed(&req, &["GET", "DELETE"]))
            }
            (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on orders"))),
        }
    }

    fn handlers() -> Handlers {
        Handlers::new()
            .on(&PAID, |p: Paid| update(p.order_id, domain::on_paid))
            .on(&SHIPPED, |d: Delivery| update(d.order_id, domain::on_shipped))
            .on(&PAY_CANCELLED, refunded)
            .on(&OUT_OF_STOCK, out_of_stock)
            // A shortage is handled where the order lives.
            .placed_by("orderId")
            .on_event(&PRODUCT_REGISTERED, replicate)
            .on_event(&PRODUCT_CHANGED, replicate)
    }
}

/// On `PayCancelled`: the order is cancelled, unless it is over already.
fn refunded(c: PayCancelled) -> Result<(), Error> {
    let mut order: Order = ORDERS.require(c.order_id)?;
    if domain::on_refunded(&mut order) {
        ORDERS.save(&order)?;
        ORDER_CANCELLED.publish(Some(order.id), &Ordered::from(&order))?;
    }
    Ok(())
}

/// On `OutOfStock`: the order is rejected and its payment refunded.
fn out_of_stock(e: OutOfStock) -> Result<(), Error> {
    let id = e.order_id;
    let mut order: Order = ORDERS.require(id)?;
    if domain::on_out_of_stock(&mut order) {
        ORDERS.save(&order)?;
        // The compensation: delivery cancels (or never makes) the delivery and refunds the
        // payment, in this same unit.
        cancel_delivery(&event_base(), id)?;
        log::warn(&format!(
            "order {id} rejected: product is out of stock; payment refunded"
        ));
    }
    Ok(())
}

/// On `ProductRegistered` and `ProductChanged`: the product's replica follows.
fn replicate(p: Product, event: &Event) -> Result<(), Error> {
    let p = ProductReplica {
        id: p.id,
        qty: p.qty,
        seq: event.seq,
    };
    // A redelivered older event (a retried dead letter, a rewound cursor) must not set the
    // replica back.
    if state::get::<ProductReplica>(&replica_key(p.id))?.is_some_and(|known| known.seq > p.seq) {
        return Ok(());
    }
    state::put(&replica_key(p.id), &p)
}

fn replica_key(product: u64) -> String {
    format!("product/{product}")
}

/// Links in responses to synchronous calls made from event handlers are never seen by a
/// client; any base will do.
fn event_base() -> String {
    "http://carshare.internal".into()
}

/// Loads an order, applies `f`, and saves it if `f` changed it. The order and its events
/// commit in one unit, so an event about an order it cannot find is a fault worth parking,
/// not something to skip silently.
fn update(id: u64, f: fn(&mut Order) -> bool) -> Result<(), Error> {
    let mut order: Order = ORDERS.require(id)?;
    if f(&mut order) {
        ORDERS.save(&order)?;
    }
    Ok(())
}

/// Places an order: validate, check the stock (see [`check_stock`]), record it, publish
/// `Ordered`, and take the payment through a synchronous call, all in this request's unit of
/// work. If payment fails, the error aborts the unit, and neither the order nor its event nor
/// the payment exists afterwards.
fn place(req: &Request) -> Result<Response, Error> {
    let new = NewOrder::parse(&Body(req.json_object()?))?;
    check_stock(&new, &req.base_url)?;
    let order = new.into_order(state::next_id("order"));
    ORDERS.insert(&order)?;
    ORDERED.publish(Some(order.id), &Ordered::from(&order))?;
    // Only the status matters here: payment is asked not to write out the payment it took.
    let payment = Request::new("POST", "/payments", &req.base_url)
        .with_json(&PaymentRequest::from(&order))
        .minimal();
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

/// Checks the stock against the replica first: it is peeked, because it is advisory and a
/// replica updated meanwhile must not make every concurrent order conflict. The replica follows
/// product's events, so it lags behind a product registered or restocked a moment ago; when it
/// misses or looks short, product itself (the authority) is asked in this unit before the
/// order is refused, so a product a client has just registered is orderable at once. If product
/// cannot be asked, the replica's answer stands, and without one the client is told to retry.
fn check_stock(new: &NewOrder, base_url: &str) -> Result<(), Error> {
    // The replica of a product is kept where the product's events are handled: where the
    // product lives.
    let replica = state::peek_at::<ProductReplica>(new.product_id, &replica_key(new.product_id))?;
    if domain::check_stock(new, replica.as_ref()).is_ok() {
        return Ok(());
    }
    let ask = Request::new("GET", &format!("/products/{}", new.product_id), base_url);
    match call("product", ask) {
        Ok(r) if r.status == 200 => domain::check_stock(new, Some(&r.parse::<ProductReplica>()?)),
        Ok(r) => Err(Error::Internal(format!(
            "product answered {} to a read of product {}",
            r.status, new.product_id
        ))),
        Err(Error::NotFound(_)) => domain::check_stock(new, None),
        Err(Error::Unavailable(m) | Error::Internal(m)) if replica.is_none() => {
            Err(Error::Unavailable(format!(
                "product {} cannot be checked now, try again later: {m}",
                new.product_id
            )))
        }
        Err(_) => domain::check_stock(new, replica.as_ref()),
    }
}

/// Cancels an order (`DELETE /orders/{id}`): delivery cancels the delivery and refunds the
/// payment, synchronously; the order becomes `OrderCancelled` when the refund's event arrives.
/// Cancelling an order that is over already changes nothing.
fn cancel(req: &Request, order: Order) -> Result<Response, Error> {
    if !domain::is_final(&order) {
        cancel_delivery(&req.base_url, order.id)?;
        log::info(&format!(
            "order {} cancelled by its customer: delivery cancelled, payment refunded",
            order.id
        ));
    }
    Ok(Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    })
}

fn cancel_delivery(base_url: &str, order_id: u64) -> Result<(), Error> {
    let r = Request::new("POST", "/cancellations", base_url).with_json(&json!({ "orderId": order_id }));
    match call("delivery", r) {
        Ok(_) => Ok(()),
        // Unavailable (stopped, busy, breaker open) is worth waiting for; a fault in delivery
        // or payment is not, and stays a fault, so an event that hits one is parked for an
        // operator instead of blocking order's event stream forever.
        Err(Error::Unavailable(m)) => Err(Error::Unavailable(format!(
            "cancelling needs delivery and payment, try again later: {m}"
        ))),
        Err(Error::Internal(m)) => Err(Error::Internal(format!(
            "cancelling order {order_id} failed: {m}"
        ))),
        Err(e) => Err(Error::Internal(format!(
            "delivery refused to cancel order {order_id}: {}",
            e.message()
        ))),
    }
}

carshare_guest::context!(OrderContext);
