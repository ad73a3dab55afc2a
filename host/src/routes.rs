//! Which context serves a path: a table of collection prefixes taken from the contexts'
//! manifests. No wasmtime here; matching is on whole path segments (`/orders` serves
//! `/orders` and `/orders/1`, never `/ordersx`). The host keeps a few paths for itself
//! ([`RESERVED`]); no context may serve them.

/// Paths the host serves itself: the operator API, the probes and the root's `profile` link.
pub const RESERVED: &[&str] = &[
    "/admin",
    "/health",
    "/profile",
    "/metrics",
    "/openapi.json",
    "/asyncapi.json",
];

/// The route table.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// (prefix, context), longest prefix first.
    routes: Vec<(String, String)>,
}

/// A route that cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not of the form `/name`.
    #[error("route {0:?} must be a path like /orders")]
    Invalid(String),
    /// Another context serves it.
    #[error("route {route} is already served by {by}")]
    Taken {
        /// The route.
        route: String,
        /// The context that has it.
        by: String,
    },
}

impl RouteTable {
    /// The context serving `path`.
    pub fn lookup(&self, path: &str) -> Option<&str> {
        self.lookup_route(path).map(|(_, ctx)| ctx)
    }

    /// The route serving `path` and its context.
    pub fn lookup_route(&self, path: &str) -> Option<(&str, &str)> {
        self.routes
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(prefix, ctx)| (prefix.as_str(), ctx.as_str()))
    }

    /// Every route with the context serving it, in path order.
    pub fn routes(&self) -> Vec<(&str, &str)> {
        let mut all: Vec<(&str, &str)> = self
            .routes
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        all.sort();
        all
    }

    /// Checks that `context` may serve `routes` (replacing whatever it served before).
    pub fn check(&self, context: &str, routes: &[String]) -> Result<(), RouteError> {
        for r in routes {
            let valid = r.len() > 1
                && r.starts_with('/')
                && !r.ends_with('/')
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
                && !RESERVED.iter().any(|kept| {
                    r.strip_prefix(kept)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                });
            if !valid {
                return Err(RouteError::Invalid(r.clone()));
            }
            if let Some((_, by)) = self.routes.iter().find(|(p, by)| p == r && by != context) {
                return Err(RouteError::Taken {
                    route: r.clone(),
                    by: by.clone(),
                });
            }
        }
        Ok(())
    }

    /// Makes `context` serve exactly `routes`, after [`RouteTable::check`].
    pub fn set(&mut self, context: &str, routes: &[String]) -> Result<(), RouteError> {
        self.check(context, routes)?;
        self.routes.retain(|(_, c)| c != context);
        self.routes
            .extend(routes.iter().map(|r| (r.clone(), context.to_string())));
        self.routes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.set("order", &["/orders".into()]).unwrap();
        t.set("payment", &["/payments".into(), "/paymentCancellations".into()])
            .unwrap();
        t
    }

    #[test]
    fn matches_whole_segments() {
        let t = table();
        assert_eq!(t.lookup("/orders"), Some("order"));
        assert_eq!(t.lookup("/orders/7"), Some("order"));
        assert_eq!(t.lookup("/ordersx"), None);
        assert_eq!(t.lookup("/paymentCancellations/1"), Some("payment"));
        assert_eq!(t.lookup("/payments"), Some("payment"));
        assert_eq!(t.lookup("/"), None);
        assert_eq!(t.lookup(""), None);
    }

    #[test]
    fn refuses_collisions_and_bad_routes() {
        let mut t = table();
        assert_eq!(
            t.set("evil", &["/orders".into()]),
            Err(RouteError::Taken {
                route: "/orders".into(),
                by: "order".into()
            })
        );
        for bad in [
            "orders", "/", "/orders/", "/admin", "/admin/x", "/health", "/profile", "/metrics", "/a b",
        ] {
            assert!(
                matches!(t.check("x", &[bad.into()]), Err(RouteError::Invalid(_))),
                "{bad}"
            );
        }
        // A context may keep its own routes when it is replaced.
        t.set("order", &["/orders".into(), "/rentals".into()]).unwrap();
        assert_eq!(t.lookup("/rentals/1"), Some("order"));
        // Reserved means the whole segment: a collection may start with the same letters.
        t.check("x", &["/healthchecks".into(), "/profiles".into()])
            .unwrap();
        assert_eq!(
            t.routes(),
            vec![
                ("/orders", "order"),
                ("/paymentCancellations", "payment"),
                ("/payments", "payment"),
                ("/rentals", "order")
            ]
        );
    }
}
