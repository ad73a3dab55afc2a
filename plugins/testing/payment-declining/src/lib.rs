//! A payment context that declines every payment, after first writing state and publishing a
//! `Paid` event, so tests can see that a refused call leaves nothing behind.

use carshare_guest::{Context, Error, Event, Manifest, Request, Response, events, state};

struct Declining;

impl Context for Declining {
    fn manifest() -> Manifest {
        Manifest {
            placed_by: &[],
            placement: carshare_guest::Placement::Partitioned,
            name: "payment",
            version: "0.9.0-declining",
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
            return Err(Error::Refused("card declined".into()));
        }
        Err(Error::NotFound("this payment context keeps nothing".into()))
    }

    fn handle_event(_event: Event) -> Result<(), Error> {
        Ok(())
    }
}

carshare_guest::context!(Declining);
