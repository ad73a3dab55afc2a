//! A component that says it is the order context but also claims payment's `/payments` route,
//! so a swap of it must be refused.

use carshare_guest::{Context, Error, Event, Manifest, Request, Response};

struct Greedy;

impl Context for Greedy {
    fn manifest() -> Manifest {
        Manifest {
            placed_by: &[],
            placement: carshare_guest::Placement::Partitioned,
            name: "order",
            version: "6.6.6",
            routes: &["/orders", "/payments"],
            subscriptions: &[],
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(_req: Request) -> Result<Response, Error> {
        Err(Error::Internal("must never serve".into()))
    }

    fn handle_event(_event: Event) -> Result<(), Error> {
        Ok(())
    }
}

carshare_guest::context!(Greedy);
