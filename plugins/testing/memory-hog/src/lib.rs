//! A context that grabs memory until it is stopped: `GET /hogs/eat` allocates 1 MiB at a time
//! and keeps it, so tests can see the memory limit end the call. `GET /hogs/ok` answers
//! normally.

use carshare_guest::{Context, Error, Manifest, Request, Response};

struct Hog;

impl Context for Hog {
    fn manifest() -> Manifest {
        Manifest {
            placement: carshare_guest::Placement::Partitioned,
            name: "hog",
            version: "1.0.0",
            routes: &["/hogs"],
            publishes: Vec::new(),
            operations: Vec::new(),
            schemas: Vec::new(),
        }
    }

    fn handle_request(req: Request) -> Result<Response, Error> {
        if req.path == "/hogs/eat" {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                kept.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        Ok(Response::json(200, &serde_json::json!({ "ok": true })))
    }
}

carshare_guest::context!(Hog);
