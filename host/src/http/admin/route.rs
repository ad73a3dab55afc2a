//! The operator API's routes as a type: a method and path under `/admin` parse into one
//! [`AdminRoute`], or into the 404 or 405 that says why not.

use hyper::Method;

use crate::http::error::ApiError;

/// One operation of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::http) enum AdminRoute {
    /// `GET /admin/events?after=&limit=`
    Events,
    /// `GET /admin/contexts`
    Contexts,
    /// `POST /admin/contexts/{name}/stop` and `/start`
    SetRunning { name: String, running: bool },
    /// `PUT /admin/contexts/{name}` with a component as the body
    Swap { name: String },
    /// `POST /admin/contexts/{name}` with a component as the body: a new context
    Add { name: String },
    /// `DELETE /admin/contexts/{name}`
    Remove { name: String },
    /// `POST /admin/contexts/{name}/rollback`
    Rollback { name: String },
    /// `GET /admin/subscribers`: the contexts' and the native subscribers' cursors
    Subscribers,
    /// `POST /admin/contexts/{name}/cursor` (or `/admin/subscribers/{name}/cursor`, which
    /// also moves a native subscriber's) with `{"seq": N}`
    Cursor { name: String },
    /// `GET /admin/dead-letters`
    DeadLetters,
    /// `POST /admin/dead-letters/{subscriber}/{seq}/retry`
    RetryDeadLetter { subscriber: String, seq: String },
    /// `GET /admin/cluster`
    Cluster,
    /// `POST /admin/cluster/step-down`
    StepDown,
    /// `POST /admin/backup` with `{"path": "/absolute/dest.redb"}`
    Backup,
}

impl AdminRoute {
    /// Whether `path` is under `/admin`.
    pub(in crate::http) fn is_admin(path: &str) -> bool {
        path == "/admin" || path.starts_with("/admin/")
    }

    /// The route `method` and `path` name.
    pub(in crate::http) fn parse(method: &Method, path: &str) -> Result<AdminRoute, ApiError> {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
        let m = method.as_str();
        let only = |allowed: &str| Err(ApiError::method_not_allowed(m, path, allowed));
        let name = |n: &str| n.to_string();
        match (m, segs.as_slice()) {
            ("GET", ["events"]) => Ok(AdminRoute::Events),
            (_, ["events"]) => only("GET"),
            ("GET", ["contexts"]) => Ok(AdminRoute::Contexts),
            (_, ["contexts"]) => only("GET"),
            ("POST", ["contexts", n, action @ ("stop" | "start")]) => Ok(AdminRoute::SetRunning {
                name: name(n),
                running: *action == "start",
            }),
            (_, ["contexts", _, "stop" | "start"]) => only("POST"),
            ("PUT", ["contexts", n]) => Ok(AdminRoute::Swap { name: name(n) }),
            ("POST", ["contexts", n]) => Ok(AdminRoute::Add { name: name(n) }),
            ("DELETE", ["contexts", n]) => Ok(AdminRoute::Remove { name: name(n) }),
            (_, ["contexts", _]) => only("PUT, POST, DELETE"),
            ("POST", ["contexts", n, "rollback"]) => Ok(AdminRoute::Rollback { name: name(n) }),
            (_, ["contexts", _, "rollback"]) => only("POST"),
            ("POST", ["contexts", n, "cursor"]) => Ok(AdminRoute::Cursor { name: name(n) }),
            (_, ["contexts", _, "cursor"]) => only("POST"),
            ("GET", ["subscribers"]) => Ok(AdminRoute::Subscribers),
            (_, ["subscribers"]) => only("GET"),
            ("POST", ["subscribers", n, "cursor"]) => Ok(AdminRoute::Cursor { name: name(n) }),
            (_, ["subscribers", _, "cursor"]) => only("POST"),
            ("GET", ["dead-letters"]) => Ok(AdminRoute::DeadLetters),
            (_, ["dead-letters"]) => only("GET"),
            ("POST", ["dead-letters", s, seq, "retry"]) => Ok(AdminRoute::RetryDeadLetter {
                subscriber: name(s),
                seq: seq.to_string(),
            }),
            (_, ["dead-letters", _, _, "retry"]) => only("POST"),
            ("GET", ["cluster"]) => Ok(AdminRoute::Cluster),
            (_, ["cluster"]) => only("GET"),
            ("POST", ["cluster", "step-down"]) => Ok(AdminRoute::StepDown),
            (_, ["cluster", "step-down"]) => only("POST"),
            ("POST", ["backup"]) => Ok(AdminRoute::Backup),
            (_, ["backup"]) => only("POST"),
            _ => Err(ApiError::no_admin_resource(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_refuse() {
        assert_eq!(
            AdminRoute::parse(&Method::POST, "/admin/contexts/order/stop"),
            Ok(AdminRoute::SetRunning {
                name: "order".into(),
                running: false
            })
        );
        assert_eq!(
            AdminRoute::parse(&Method::PUT, "/admin/contexts/order/"),
            Ok(AdminRoute::Swap { name: "order".into() })
        );
        assert_eq!(
            AdminRoute::parse(&Method::DELETE, "/admin/events")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            AdminRoute::parse(&Method::GET, "/admin/nope").unwrap_err().status,
            404
        );
        assert!(AdminRoute::is_admin("/admin") && !AdminRoute::is_admin("/administrator"));
    }
}
