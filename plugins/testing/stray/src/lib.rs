//! A context written outside this repository, as a third party would, that gets its events
//! wrong, for tests of the event catalog:
//! - 1.0.0 subscribes to `Rated` from a `rating` context that is not loaded (a subscription
//!   waiting for its publisher: loaded, with a warning) and to `Shipped`; it declares `Strayed`,
//!   and `POST /strays {"type": "..."}` publishes an event of the type named, declared or not.
//! - 2.0.0 subscribes to `DeliveryCancelled` from delivery, which publishes `DeliveryCanceled`:
//!   a misspelling, which must be refused wherever it would load.

use carshare_events::delivery::{Delivery, SHIPPED};
use carshare_guest::events::{EventType, Handlers};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};
use serde::{Deserialize, Serialize};

/// What `Strayed` carries.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Strayed {
    /// How many events this context has published.
    count: u64,
}

const STRAYED: EventType<Strayed> = EventType::new("stray", "Strayed", "The stray context published.");
/// Published by nobody loaded: a context that may come later.
const RATED: EventType<serde_json::Value> = EventType::new("rating", "Rated", "A rating.");
/// Delivery's event, misspelled.
const MISSPELLED: EventType<serde_json::Value> =
    EventType::new("delivery", "DeliveryCancelled", "Misspelled.");

fn is_v2() -> bool {
    env!("CARGO_PKG_VERSION") == "2.0.0"
}

struct Stray;

impl Context for Stray {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Single,
            name: "stray",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/strays"],
            publishes: vec![STRAYED.declare()],
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match req.method.as_str() {
            "POST" => {
                let body = req.json_object()?;
                let ty = body["type"].as_str().unwrap_or("Strayed").to_string();
                let count = state::get::<u64>("count")?.unwrap_or(0) + 1;
                state::put("count", &count)?;
                // Any name, to see the host refuse an undeclared one: a leaked string makes
                // an event type of it, as a context computing its event names would.
                let ty: &'static str = Box::leak(ty.into_boxed_str());
                EventType::<Strayed>::new("stray", ty, "").publish(None, &Strayed { count })?;
                Ok(Response::json(
                    201,
                    &serde_json::json!({ "published": ty, "count": count }),
                ))
            }
            _ => Ok(Response::json(
                200,
                &serde_json::json!({ "shipped": state::get::<u64>("shipped")?.unwrap_or(0) }),
            )),
        }
    }

    fn handlers() -> Handlers {
        let table = Handlers::new().on(&SHIPPED, |_: Delivery| {
            let n = state::get::<u64>("shipped")?.unwrap_or(0);
            state::put("shipped", &(n + 1))
        });
        if is_v2() {
            table.on_raw(&MISSPELLED, |_| Ok(()))
        } else {
            table.on_raw(&RATED, |_| Ok(()))
        }
    }
}

carshare_guest::context!(Stray);
