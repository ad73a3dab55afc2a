//! A payment context that declines every payment, after first writing state and publishing a
//! `Paid` event, so tests can see that a refused call leaves nothing behind.

use carshare_events::payment::{PAID, PAY_CANCELLED, Paid};
use carshare_guest::{Context, Error, Manifest, Request, Response, state};

struct Declining;

impl Context for Declining {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "payment",
            version: "0.9.0-declining",
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
            return Err(Error::Refused("card declined".into()));
        }
        Err(Error::NotFound("this payment context keeps nothing".into()))
    }
}

carshare_guest::context!(Declining);
