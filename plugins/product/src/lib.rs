//! The product context: car models and their stock over `/products`. It settles stock from the
//! order events, asynchronously, so ordering never waits for product; see `domain.rs` for why
//! this cannot oversell.

pub mod domain;

use carshare_events::order::{ORDER_CANCELLED, ORDERED, Ordered};
use carshare_events::product::{OUT_OF_STOCK, PRODUCT_CHANGED, PRODUCT_REGISTERED};
use carshare_guest::api::{Operation, schema_ref};
use carshare_guest::body::Body;
use carshare_guest::events::Handlers;
use carshare_guest::rest::{Collection, Target, method_not_allowed};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};

use domain::{Decision, Hold, OutOfStock, Product};

/// Products sort by id or model name. Stock changes with every order, so an index by quantity
/// would cost every order two index writes; sorting by qty is refused with the fields that can.
const PRODUCTS: Collection = Collection::new("products", "product", &["modelname"], "Product");

struct ProductContext;

impl Context for ProductContext {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "product",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/products"],
            publishes: vec![
                PRODUCT_REGISTERED.declare(),
                PRODUCT_CHANGED.declare(),
                OUT_OF_STOCK.declare(),
            ],
            operations: vec![
                PRODUCTS.list_operation(),
                PRODUCTS.get_operation(),
                Operation::new("POST", "/products", "Register a car model with its stock")
                    .body(schema_ref("NewProduct"))
                    .answers(201, schema_ref("Product"))
                    .errors(&[400]),
                Operation::new(
                    "PUT",
                    "/products/{id}",
                    "Replace a product's model name and stock",
                )
                .body(schema_ref("NewProduct"))
                .answers(200, schema_ref("Product"))
                .errors(&[400, 404]),
                Operation::new(
                    "PATCH",
                    "/products/{id}",
                    "Change a product's model name or stock",
                )
                .body(domain::new_product_schema(&[]))
                .answers(200, schema_ref("Product"))
                .errors(&[400, 404]),
            ],
            schemas: vec![
                ("Product", domain::product_schema()),
                ("NewProduct", domain::new_product_schema(&["modelname", "qty"])),
            ],
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match (PRODUCTS.target(&req.path)?, req.method.as_str()) {
            (Target::Collection, "GET") => PRODUCTS.list::<Product>(&req),
            (Target::Collection, "POST") => register(&req),
            (Target::Collection, _) => Err(method_not_allowed(&req, &["GET", "POST"])),
            (Target::Item(id), "GET") => Ok(PRODUCTS.ok(&req, &PRODUCTS.require::<Product>(id)?)),
            (Target::Item(id), m @ ("PUT" | "PATCH")) => change(&req, id, m == "PUT"),
            (Target::Item(id), _) => {
                PRODUCTS.require::<Product>(id)?;
                Err(method_not_allowed(&req, &["GET", "PUT", "PATCH"]))
            }
            (Target::Search(q), _) => Err(Error::NotFound(format!("no search {q:?} on products"))),
        }
    }

    /// A product's stock changes where the product lives, whichever partition the order was
    /// placed in.
    fn handlers() -> Handlers {
        Handlers::new()
            .on(&ORDERED, take)
            .placed_by("productId")
            .on(&ORDER_CANCELLED, give_back)
            .placed_by("productId")
    }
}

fn register(req: &Request) -> Result<Response, Error> {
    let (modelname, qty) = domain::parse_new(&Body(req.json_object()?))?;
    let p = Product {
        id: state::next_id("product"),
        modelname,
        qty,
    };
    PRODUCTS.insert(&p)?;
    PRODUCT_REGISTERED.publish(None, &(&p).into())?;
    Ok(PRODUCTS.created(req, &p))
}

fn change(req: &Request, id: u64, replace: bool) -> Result<Response, Error> {
    let mut p: Product = PRODUCTS.require(id)?;
    if domain::apply_change(&mut p, &Body(req.json_object()?), replace)? {
        PRODUCTS.save(&p)?;
        PRODUCT_CHANGED.publish(None, &(&p).into())?;
    }
    Ok(PRODUCTS.ok(req, &p))
}

fn hold_key(order: u64) -> String {
    format!("held/{order:020}")
}

fn cancelled_key(order: u64) -> String {
    format!("cancelled/{order:020}")
}

fn rejected_key(order: u64) -> String {
    format!("rejected/{order:020}")
}

/// On `Ordered`: take the stock or reject the order. Idempotent: an order already decided on
/// is not decided again.
fn take(o: Ordered) -> Result<(), Error> {
    if state::get::<Hold>(&hold_key(o.id))?.is_some()
        || state::get::<bool>(&rejected_key(o.id))?.is_some()
        || state::get::<bool>(&cancelled_key(o.id))?.is_some()
    {
        return Ok(());
    }
    let product: Option<Product> = PRODUCTS.load(o.product_id)?;
    match domain::decide(product.as_ref(), o.qty) {
        Decision::Take => {
            let mut p = product.expect("decide takes only from a product");
            p.qty -= o.qty;
            PRODUCTS.save(&p)?;
            state::put(
                &hold_key(o.id),
                &Hold {
                    product_id: p.id,
                    qty: o.qty,
                    released: false,
                },
            )?;
            PRODUCT_CHANGED.publish(Some(o.id), &(&p).into())
        }
        Decision::Reject { available } => {
            state::put(&rejected_key(o.id), &true)?;
            let e = OutOfStock {
                order_id: o.id,
                product_id: o.product_id,
                qty: o.qty,
                available,
            };
            OUT_OF_STOCK.publish(Some(o.id), &e)
        }
    }
}

/// On `OrderCancelled`: give back what the order held, once.
fn give_back(o: Ordered) -> Result<(), Error> {
    let Some(mut hold) = state::get::<Hold>(&hold_key(o.id))? else {
        // Cancelled before its Ordered was applied (that one was parked and may be retried):
        // remember, so a late Ordered takes nothing for an order that is over.
        return state::put(&cancelled_key(o.id), &true);
    };
    if hold.released {
        return Ok(());
    }
    let mut p: Product = PRODUCTS.require(hold.product_id)?;
    p.qty += hold.qty;
    PRODUCTS.save(&p)?;
    hold.released = true;
    state::put(&hold_key(o.id), &hold)?;
    PRODUCT_CHANGED.publish(Some(o.id), &(&p).into())
}

carshare_guest::context!(ProductContext);
