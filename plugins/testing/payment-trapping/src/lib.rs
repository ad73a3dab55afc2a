//! A payment context that traps (panics) on every payment after writing state and publishing,
//! so tests can see that a faulting callee leaves nothing behind and the host survives it.

use carshare_guest::{Context, Error, Event, Manifest, Request, Response, events, state};

struct Trapping;

impl Context for Trapping {
    fn manifest() -> Manifest {
        Manifest {
            placed_by: &[],
            placement: carshare_guest::Placement::Partitioned,
            name: "payment",
            version: "0.9.0-trapping",
            routes: &["/payments", "/paymentCancellations"],
            subscriptions: &[],
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        if req.method == "POST" {
            state::put("half-done", &true)?;
            events::publish("Paid", Some(0), &serde_json::json!({"id": 0, "orderId": 0}))?;
            panic!("payment processor exploded");
        }
        Err(Error::NotFound("this payment context keeps nothing".into()))
    }

    fn handle_event(_event: Event) -> Result<(), Error> {
        Ok(())
    }
}

carshare_guest::context!(Trapping);
