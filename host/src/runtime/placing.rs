//! Where a request runs, with several partitions (`carshare_core::Partitions`). A unit of work
//! runs in one partition, so a request goes where what it names lives:
//!
//! - a context kept in one partition (`placement: single`): partition 0;
//! - a path naming an id after the route (`/orders/42`): where that id lives;
//! - an operation whose manifest names a body field (`POST /cancellations {"orderId": 42}`):
//!   where the id in that field lives;
//! - any other `GET` (a listing, a count, a search): every partition at once, read only;
//! - any other request (one that creates): a partition the host chooses, spread evenly.
//!
//! A synchronous call stays in its caller's unit, and so in the caller's partition (an order
//! and its payment commit together), unless it names an id that lives elsewhere: then it reads
//! that partition and may not write (`Unit::enter`); a `GET` of a collection reads every
//! partition.

use std::sync::atomic::Ordering;

use super::Runtime;
use crate::types::Request;
use crate::wasm::{Manifest, Placement, Plugin};

/// Where a client request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// In this partition.
    In(u32),
    /// Reading every partition, writing none.
    All,
}

/// What a synchronous call reads beyond its caller's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallView {
    /// Another partition (where the id it names lives).
    One(u32),
    /// Every partition (a listing).
    All,
}

impl Runtime {
    /// Where a client request to `plugin` runs.
    pub(super) fn place_request(&self, plugin: &Plugin, request: &Request) -> Place {
        let partitions = &self.inner.partitions;
        let n = partitions.count();
        if n == 1 {
            return Place::In(0);
        }
        let m = plugin.manifest();
        if m.placement == Placement::Single {
            return Place::In(0);
        }
        if let Some(id) = named_id(m, request) {
            return Place::In(partitions.of_id(id));
        }
        if request.method == "GET" {
            return Place::All;
        }
        Place::In(self.inner.next_partition.fetch_add(1, Ordering::Relaxed) % n)
    }

    /// What a synchronous call to `plugin` from a unit of partition `caller` reads beyond it,
    /// if anything.
    pub(super) fn place_call(&self, plugin: &Plugin, request: &Request, caller: u32) -> Option<CallView> {
        let partitions = &self.inner.partitions;
        if partitions.count() == 1 {
            return None;
        }
        let m = plugin.manifest();
        if m.placement == Placement::Single {
            return (caller != 0).then_some(CallView::One(0));
        }
        if let Some(id) = named_id(m, request) {
            let p = partitions.of_id(id);
            return (p != caller).then_some(CallView::One(p));
        }
        let lists =
            request.method == "GET" && m.routes.iter().any(|r| request.path.trim_end_matches('/') == r);
        lists.then_some(CallView::All)
    }
}

/// The id `request` names for `m`: a positive integer right after one of its routes in the
/// path, or in the body field its operation names.
fn named_id(m: &Manifest, request: &Request) -> Option<u64> {
    for route in &m.routes {
        if let Some(rest) = request.path.strip_prefix(route.as_str())
            && let Some(rest) = rest.strip_prefix('/')
        {
            let segment = rest.split('/').next().unwrap_or("");
            return segment.parse::<u64>().ok().filter(|id| *id > 0);
        }
    }
    let field = m
        .operations
        .iter()
        .find(|o| o.method == request.method && o.path == request.path)?
        .partition_by
        .as_deref()?;
    let body: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&request.body).ok()?;
    match body.get(field)? {
        serde_json::Value::Number(n) => n.as_u64(),
        // As the contexts read it: a string holding a decimal integer counts too.
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::named_id;
    use crate::types::Request;
    use crate::wasm::{Manifest, Operation, Placement};

    fn manifest() -> Manifest {
        Manifest {
            name: "delivery".into(),
            version: "1".into(),
            routes: vec!["/deliveries".into(), "/cancellations".into()],
            subscriptions: vec![],
            publishes: vec![],
            placement: Placement::Partitioned,
            operations: vec![Operation {
                method: "POST".into(),
                path: "/cancellations".into(),
                summary: String::new(),
                parameters: vec![],
                request_body: None,
                responses: vec![],
                partition_by: Some("orderId".into()),
            }],
            schemas: vec![],
        }
    }

    fn request(method: &str, path: &str, body: &str) -> Request {
        let mut r = Request::new(method, path, "http://x");
        r.body = body.as_bytes().to_vec();
        r
    }

    #[test]
    fn a_request_names_an_id_by_its_path_or_the_field_its_operation_declares() {
        let m = manifest();
        assert_eq!(named_id(&m, &request("GET", "/deliveries/42", "")), Some(42));
        assert_eq!(named_id(&m, &request("PATCH", "/deliveries/42/x", "")), Some(42));
        assert_eq!(named_id(&m, &request("GET", "/deliveries", "")), None);
        assert_eq!(named_id(&m, &request("GET", "/deliveries/search/x", "")), None);
        assert_eq!(named_id(&m, &request("GET", "/deliveries/0", "")), None);
        assert_eq!(
            named_id(&m, &request("POST", "/cancellations", r#"{"orderId":7}"#)),
            Some(7)
        );
        assert_eq!(
            named_id(&m, &request("POST", "/cancellations", r#"{"orderId":"7"}"#)),
            Some(7)
        );
        assert_eq!(
            named_id(&m, &request("POST", "/cancellations", r#"{"orderId":"x"}"#)),
            None
        );
        assert_eq!(
            named_id(&m, &request("POST", "/deliveries", r#"{"orderId":7}"#)),
            None
        );
    }
}
