//! A component that says it is the order context but also claims payment's `/payments` route,
//! so a swap of it must be refused.

use carshare_events::order::{ORDER_CANCELLED, ORDERED};
use carshare_guest::{Context, Error, Manifest, Request, Response};

struct Greedy;

impl Context for Greedy {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "order",
            version: "6.6.6",
            routes: &["/orders", "/payments"],
            // What order publishes, so that its routes are what is wrong with it.
            publishes: vec![ORDERED.declare(), ORDER_CANCELLED.declare()],
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(_req: Request) -> Result<Response, Error> {
        Err(Error::Internal("must never serve".into()))
    }
}

carshare_guest::context!(Greedy);
