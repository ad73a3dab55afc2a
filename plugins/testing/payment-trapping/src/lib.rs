//! A payment context that traps (panics) on every payment after writing state and publishing,
//! so tests can see that a faulting callee leaves nothing behind and the host survives it.

use carshare_events::payment::{PAID, PAY_CANCELLED, Paid};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};

struct Trapping;

impl Context for Trapping {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "payment",
            version: "0.9.0-trapping",
            routes: &["/payments", "/paymentCancellations"],
            // What payment publishes, as any version of payment must (others subscribe).
            publishes: vec![PAID.declare(), PAY_CANCELLED.declare()],
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        if req.method == "POST" {
            state::put("half-done", &true)?;
            PAID.publish(
                Some(0),
                &Paid {
                    id: 0,
                    order_id: 0,
                    product_id: 0,
                    qty: 0,
                    status: String::new(),
                },
            )?;
            panic!("payment processor exploded");
        }
        Err(Error::NotFound("this payment context keeps nothing".into()))
    }
}

carshare_guest::context!(Trapping);
