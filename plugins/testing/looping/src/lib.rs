//! A context that never returns: `GET /loops/spin` and every `Ordered` event loop forever, so
//! tests can see the CPU deadline interrupt it. `GET /loops/ok` answers normally.

use carshare_events::order::ORDERED;
use carshare_guest::events::Handlers;
use carshare_guest::{Context, Error, Manifest, Request, Response};

struct Looping;

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

impl Context for Looping {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "looper",
            version: "1.0.0",
            routes: &["/loops"],
            publishes: Vec::new(),
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        match req.path.as_str() {
            "/loops/spin" => spin(),
            _ => Ok(Response::json(200, &serde_json::json!({ "ok": true }))),
        }
    }

    fn handlers() -> Handlers {
        Handlers::new().on_raw(&ORDERED, |_| spin())
    }
}

carshare_guest::context!(Looping);
