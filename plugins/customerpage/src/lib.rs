//! The customerpage context: the customers' read model (CQRS). One row per order with its
//! current status and its history, built only from events. Read-only over HTTP.

pub mod domain;

use carshare_events::delivery::{DELIVERY_CANCELED, SHIPPED};
use carshare_events::order::{ORDER_CANCELLED, ORDERED};
use carshare_events::payment::{PAID, PAY_CANCELLED};
use carshare_events::product::OUT_OF_STOCK;
use carshare_guest::events::Handlers;
use carshare_guest::rest::{Collection, Target};
use carshare_guest::{Context, Error, Event, Manifest, Request, Response};

use domain::Row;

/// Rows sort by id (the order's id), and are found by customer.
const PAGES: Collection = Collection::new("customerpages", "customerpage", &["customerId"], "CustomerPage");

struct CustomerPageContext;

impl Context for CustomerPageContext {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "customerpage",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/customerpages"],
            publishes: Vec::new(),
            operations: vec![
                PAGES.list_operation(),
                PAGES.get_operation(),
                PAGES.search_operation("findByOrderId", "orderId", "the order's id"),
                PAGES.search_operation("findByCustomerId", "customerId", "the customer's id"),
            ],
            schemas: vec![("CustomerPage", domain::row_schema())],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        let target = PAGES.target(&req.path)?;
        if req.method != "GET" {
            return Err(Error::MethodNotAllowed(format!(
                "{} is not allowed on {}: the customer page is a read-only view built from events",
                req.method, req.path
            )));
        }
        match target {
            Target::Collection => PAGES.list::<Row>(&req),
            Target::Item(id) => Ok(PAGES.ok(&req, &PAGES.require::<Row>(id)?)),
            Target::Search(q) if q == "findByOrderId" => {
                // A row's id is its order's id.
                PAGES.find::<Row>(&req, id_param(&req, "orderId")?)
            }
            Target::Search(q) if q == "findByCustomerId" => {
                let id = id_param(&req, "customerId")?;
                PAGES.search::<Row>(&req, "customerId", id.into())
            }
            Target::Search(q) => Err(Error::NotFound(format!(
                "no search {q:?} on customerpages; there are findByOrderId and findByCustomerId"
            ))),
        }
    }

    /// Every event of an order's life moves its row; each is read raw, for the few fields the
    /// view needs.
    fn handlers() -> Handlers {
        Handlers::new()
            .on_raw(&ORDERED, view)
            .on_raw(&PAID, view)
            .on_raw(&SHIPPED, view)
            .on_raw(&DELIVERY_CANCELED, view)
            .on_raw(&PAY_CANCELLED, view)
            .on_raw(&ORDER_CANCELLED, view)
            .on_raw(&OUT_OF_STOCK, view)
            // A shortage is published where the product lives; the row lives with its order.
            .placed_by("orderId")
    }
}

/// Moves the row of the order `event` is about.
fn view(event: &Event) -> Result<(), Error> {
    if domain::status_of(&event.event_type).is_none() {
        return Ok(());
    }
    let payload: domain::Facts = event.payload()?;
    let Some(order_id) = domain::order_id_of(&event.event_type, &payload) else {
        return Err(Error::Internal(format!(
            "{} #{} names no order",
            event.event_type, event.seq
        )));
    };
    let mut row = PAGES.load::<Row>(order_id)?.unwrap_or_else(|| Row::new(order_id));
    let seen = domain::Seen {
        id: &event.id,
        seq: event.seq,
        at: &event.timestamp,
    };
    if domain::apply(&mut row, &event.event_type, &payload, seen) {
        PAGES.save(&row)?;
    }
    Ok(())
}

fn id_param(req: &Request, name: &str) -> Result<u64, Error> {
    let v = req
        .query_param(name)
        .ok_or_else(|| Error::BadRequest(format!("{name} is required")))?;
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::BadRequest(format!("{name} must be a positive integer, not {v:?}")))
}

carshare_guest::context!(CustomerPageContext);
