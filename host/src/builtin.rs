//! The contexts built into the binary: the car-sharing business's five components, compiled
//! by `build.rs` from `plugins/` and embedded, so the server needs no files to start.

include!(concat!(env!("OUT_DIR"), "/contexts.rs"));
