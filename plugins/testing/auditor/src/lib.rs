//! A subscriber that fails on demand, for tests of dead letters: `PUT /audits/mode
//! {"failing": true}` makes it fail on every `Ordered`; `{"failOnQty": 3}` makes it record an
//! order of quantity 3 and then fail (so the failure must undo the record), `{"trapOnQty": 3}`
//! makes it trap on one. `GET /audits` lists the orders it recorded, and which version of it
//! recorded each (for tests of swaps: the same sources are built as 0.9.0 and as 2.0.0).
//! `POST /audits/restock {"productId", "qty"}` records a restock and sets the product's stock
//! in the same unit, through a synchronous call: one unit that writes where the auditor lives
//! (partition 0) and where the product does, for tests of the partition rule.

use carshare_events::order::ORDERED;
use carshare_guest::body::Body;
use carshare_guest::call::call;
use carshare_guest::events::Handlers;
use carshare_guest::{Context, Error, Event, Manifest, Request, Response, state};

struct Auditor;

impl Context for Auditor {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Single,
            name: "auditor",
            version: env!("CARGO_PKG_VERSION"),
            routes: &["/audits"],
            publishes: Vec::new(),
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/audits/mode") => {
                let mode = Body(req.json_object()?).0;
                state::put("mode", &mode)?;
                Ok(Response::json(200, &mode))
            }
            ("GET", "/audits") => {
                // A test component: the tests audit far fewer than a page of scan rows.
                let rows: Vec<(String, serde_json::Value)> = state::scan("audit/", None, 10_000)?;
                let ids: Vec<&serde_json::Value> = rows.iter().map(|(_, a)| &a["id"]).collect();
                let by: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(_, a)| (a["id"].to_string(), a["version"].clone()))
                    .collect();
                Ok(Response::json(
                    200,
                    &serde_json::json!({ "audited": ids, "by": by }),
                ))
            }
            ("POST", "/audits/restock") => {
                let body = req.json_object()?;
                let product = body["productId"]
                    .as_u64()
                    .ok_or_else(|| Error::BadRequest("productId must be a positive integer".into()))?;
                state::put(&format!("restock/{product:020}"), &body)?;
                let set = Request::new("PATCH", &format!("/products/{product}"), &req.base_url)
                    .with_json(&serde_json::json!({ "qty": body["qty"] }));
                let r = call("product", set)?;
                Ok(Response::json(
                    r.status,
                    &serde_json::json!({ "restocked": product }),
                ))
            }
            _ => Err(Error::NotFound(format!("no {} {}", req.method, req.path))),
        }
    }

    fn handlers() -> Handlers {
        Handlers::new().on_raw(&ORDERED, audit)
    }
}

/// Records an order, or fails as the mode says.
fn audit(event: &Event) -> Result<(), Error> {
    let mode = state::get::<serde_json::Value>("mode")?.unwrap_or_default();
    if mode["failing"] == true {
        return Err(Error::Internal("the auditor is failing on purpose".into()));
    }
    let order = event.payload::<serde_json::Value>()?;
    let id = order["id"].as_u64().unwrap_or(0);
    let audit = serde_json::json!({ "id": id, "version": env!("CARGO_PKG_VERSION") });
    state::put(&format!("audit/{id:020}"), &audit)?;
    if order["qty"].is_u64() && order["qty"] == mode["failOnQty"] {
        return Err(Error::Internal(format!(
            "the auditor fails on order {id} on purpose"
        )));
    }
    if order["qty"].is_u64() && order["qty"] == mode["trapOnQty"] {
        panic!("the auditor traps on order {id} on purpose");
    }
    Ok(())
}

carshare_guest::context!(Auditor);
