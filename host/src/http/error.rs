//! The one place where errors become HTTP: a status, a JSON body
//! `{"error": "<kind>", "message": "...", "status": N}`, and `Retry-After` where a retry can
//! succeed. Internal details are logged here, not sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};

use carshare_core::{CommitError, RetryError, StorageError};

use crate::runtime::{LoadContextError, RequestError};
use crate::types::{CallError, DomainError};

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable kind, snake_case.
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u32>,
    /// The methods the resource allows, for a 405's `Allow` header.
    pub allow: Option<String>,
    /// Whether the connection closes after this reply (the request's body was not read, so
    /// the connection cannot carry another request): the client is told so.
    pub close: bool,
}

impl ApiError {
    /// An error with no retry hint.
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            allow: None,
            close: false,
        }
    }

    /// This error, sent on a connection that closes after it.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// 405: `method` is not one of `allowed` (comma-separated) on `path`.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        let mut e = ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; allowed: {allowed}"),
        );
        e.allow = Some(allowed.to_string());
        e
    }

    fn retry(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 with `message`.
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "bad_request", message)
    }

    /// 400: a POST, PUT or PATCH body that is not JSON.
    pub(super) fn malformed_json(e: &serde_json::Error) -> Self {
        ApiError::new(400, "malformed_json", format!("the body is not valid JSON: {e}"))
    }

    /// 400: the body could not be read (the client broke off, or sent bad chunking).
    pub(super) fn unreadable_body(e: &dyn std::fmt::Display) -> Self {
        ApiError::bad_request(format!("could not read the body: {e}"))
    }

    /// 408: the body did not arrive in time.
    pub(super) fn body_timeout() -> Self {
        ApiError::new(408, "request_timeout", "the body did not arrive in time")
    }

    /// 413: a body over `max` bytes.
    pub(super) fn too_large(max: usize) -> Self {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the body is larger than {max} bytes"),
        )
    }

    /// 403: no admin token is configured, so the admin API is off.
    pub(super) fn admin_disabled() -> Self {
        ApiError::new(
            403,
            "forbidden",
            "the admin API is disabled: set CARSHARE_ADMIN_TOKEN",
        )
    }

    /// 401: the admin token is missing or wrong.
    pub(super) fn unauthorized() -> Self {
        ApiError::new(
            401,
            "unauthorized",
            "a valid Authorization: Bearer token is required",
        )
    }

    /// 404: nothing of the admin API lives at `path`.
    pub(super) fn no_admin_resource(path: &str) -> Self {
        ApiError::new(404, "not_found", format!("no admin resource at {path}"))
    }

    /// 404: this host serves no cluster.
    pub(super) fn not_a_cluster() -> Self {
        ApiError::new(
            404,
            "not_found",
            "this host serves no cluster (it was not started with --cluster)",
        )
    }

    /// 503: the cluster's NATS servers did not answer.
    pub(super) fn cluster_unreachable(e: &str) -> Self {
        ApiError::new(
            503,
            "unavailable",
            format!("cannot reach the cluster's NATS servers: {e}"),
        )
        .retry(1)
    }

    /// 404: no context is called `name`.
    pub(super) fn no_context(name: &str) -> Self {
        ApiError::new(404, "not_found", format!("no context named {name}"))
    }

    /// 404: `subscriber` has no dead letter `seq`.
    pub(super) fn no_dead_letter(subscriber: &str, seq: &str) -> Self {
        ApiError::new(404, "not_found", format!("no dead letter {seq} of {subscriber}"))
    }

    /// 500: a context answered with a status HTTP cannot carry.
    pub(super) fn invalid_status(context: &str) -> Self {
        ApiError::new(
            500,
            "context_fault",
            format!("{context} answered an invalid status"),
        )
    }

    /// An operator's cursor move that did not go through.
    pub(super) fn cursor_not_moved(e: CommitError) -> Self {
        match e {
            CommitError::Conflict => ApiError::new(
                409,
                "conflict",
                "the subscriber kept moving the cursor; try again",
            ),
            e => e.into(),
        }
    }

    /// An operator's retry of dead letter `seq` of `subscriber` that did not go through; the
    /// letter stays parked.
    pub(super) fn retry_failed(subscriber: &str, seq: u64, e: RetryError) -> Self {
        match e {
            RetryError::NotFound => ApiError::no_dead_letter(subscriber, &seq.to_string()),
            RetryError::Failed(e) => {
                ApiError::new(409, "retry_failed", format!("still failing, kept: {}", e.message))
            }
            RetryError::Commit(CommitError::Conflict) => {
                ApiError::new(409, "retry_failed", "a concurrent retry won; kept if it failed")
            }
            RetryError::Commit(e) => e.into(),
            RetryError::Storage(e) => e.into(),
            e => {
                tracing::error!("retrying a dead letter failed: {e}");
                ApiError::new(500, "internal", e.to_string())
            }
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.kind, "message": self.message, "status": self.status });
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() =
            hyper::StatusCode::from_u16(self.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(v) = self.allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            resp.headers_mut().insert(ALLOW, v);
        }
        if self.close {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == 401 {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NoRoute(path) => {
                ApiError::new(404, "not_found", format!("no context serves {path}"))
            }
            RequestError::Call(c) => c.into(),
            RequestError::Storage(e) => {
                tracing::error!("request failed: {e}");
                ApiError::new(500, "storage", "the database failed; nothing was changed")
            }
            RequestError::Contention => ApiError::new(
                503,
                "contention",
                "too many concurrent changes to the same data; retry",
            )
            .retry(1),
            RequestError::ShuttingDown => {
                ApiError::new(503, "shutting_down", "the server is shutting down").retry(5)
            }
            RequestError::Log(e) => e.into(),
            RequestError::OutsidePartition(m) => {
                tracing::error!("a context broke the partition rule: {m}");
                ApiError::new(500, "outside_partition", m)
            }
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Domain(d) => d.into(),
            CallError::NoSuchContext(c) | CallError::Stopped(c) => ApiError::new(
                503,
                "unavailable",
                format!("the {c} context is not running; retry later"),
            )
            .retry(5),
            e @ CallError::CircuitOpen { .. } => ApiError::new(503, "unavailable", e.to_string()).retry(5),
            CallError::Busy(c) => ApiError::new(
                503,
                "busy",
                format!("the {c} context is at its instance limit; retry"),
            )
            .retry(1),
            e @ (CallError::Fault { .. } | CallError::TooDeep(_)) => {
                // Trap text and wasm backtraces are for the log; the client gets the words.
                tracing::error!("{}", e.detailed());
                ApiError::new(500, "context_fault", e.to_string())
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::BadRequest(m) => ApiError::new(400, "bad_request", m),
            DomainError::Forbidden(m) => ApiError::new(403, "forbidden", m),
            DomainError::NotFound(m) => ApiError::new(404, "not_found", m),
            DomainError::MethodNotAllowed(m) => ApiError::new(405, "method_not_allowed", m),
            DomainError::Conflict(m) => ApiError::new(409, "conflict", m),
            DomainError::Refused(m) => ApiError::new(422, "refused", m),
            DomainError::Unavailable(m) => ApiError::new(503, "unavailable", m).retry(5),
            DomainError::Internal(m) => {
                tracing::error!("a context reported an internal error: {m}");
                ApiError::new(500, "internal", "the context failed; see the server log")
            }
        }
    }
}

/// A refused swap, rollback, addition or removal: nothing changed, and a version that was
/// running goes on serving.
impl From<LoadContextError> for ApiError {
    fn from(e: LoadContextError) -> Self {
        let msg = match e {
            LoadContextError::NoSuchContext(_) | LoadContextError::NotInCluster(_) => {
                format!("{e}; nothing changed")
            }
            _ => format!("{e}; nothing changed, and the running version (if any) goes on serving"),
        };
        match e {
            LoadContextError::NoSuchContext(_) => ApiError::new(404, "not_found", msg),
            LoadContextError::Load(_) => ApiError::new(400, "invalid_component", msg),
            LoadContextError::WrongContext { .. } => ApiError::new(422, "wrong_context", msg),
            LoadContextError::Route(_) => ApiError::new(409, "route_conflict", msg),
            LoadContextError::Placement(_) => ApiError::new(409, "placement_change", msg),
            LoadContextError::NoPrevious(_) => ApiError::new(409, "no_previous_version", msg),
            LoadContextError::SubscriberName(_) => ApiError::new(409, "subscriber_name_taken", msg),
            LoadContextError::AlreadyLoaded(_) => ApiError::new(409, "context_exists", msg),
            LoadContextError::NotInCluster(_) => ApiError::new(501, "not_in_cluster", msg),
            LoadContextError::Catalog(_) => ApiError::new(409, "event_catalog", msg),
            _ => {
                tracing::error!("{msg}");
                ApiError::new(500, "internal", msg)
            }
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Closed => ApiError::new(503, "shutting_down", "the server is shutting down"),
            CommitError::Unavailable(m) => {
                tracing::warn!("the cluster's log did not take a unit: {m}");
                ApiError::new(503, "unavailable", format!("nothing was changed: {m}; retry")).retry(1)
            }
            CommitError::Overloaded(waiting) => {
                tracing::error!("the writer's queue is full ({waiting} units): a unit was refused");
                ApiError::new(
                    503,
                    "overloaded",
                    format!(
                        "{waiting} changes are waiting to be written already: nothing was changed; retry"
                    ),
                )
                .retry(1)
            }
            CommitError::Abandoned => {
                tracing::warn!("a unit was given up: the cluster's writer did not take it in time");
                ApiError::new(
                    503,
                    "unavailable",
                    "the cluster did not take the change in time, and made sure it never will: \
                     nothing was changed; retry",
                )
                .retry(1)
            }
            CommitError::OutsidePartition(m) => ApiError::new(500, "outside_partition", m),
            CommitError::TooLarge { bytes, max } => ApiError::new(
                413,
                "too_large",
                format!(
                    "the change takes {bytes} bytes in the cluster's log, more than the {max} bytes \
                     one record may take: nothing was changed"
                ),
            ),
            CommitError::Unknown(m) => {
                tracing::error!("the outcome of a commit is unknown: {m}");
                ApiError::new(
                    503,
                    "outcome_unknown",
                    "the cluster's writer did not answer: the change may have been made; look \
                     before you retry",
                )
            }
            e => {
                tracing::error!("a commit failed: {e}");
                ApiError::new(500, "storage", "the database failed")
            }
        }
    }
}

impl From<crate::cluster::StepDownError> for ApiError {
    fn from(e: crate::cluster::StepDownError) -> Self {
        use crate::cluster::StepDownError;
        match e {
            StepDownError::NoWriter => ApiError::new(409, "no_writer", e.to_string()),
            StepDownError::Unreachable(..) => ApiError::new(503, "unavailable", e.to_string()).retry(1),
        }
    }
}

impl From<crate::runtime::BackupError> for ApiError {
    fn from(e: crate::runtime::BackupError) -> Self {
        use crate::runtime::BackupError;
        match e {
            BackupError::Destination(m) => ApiError::new(400, "bad_request", m),
            BackupError::Storage(e) => {
                tracing::error!("a backup failed: {e}");
                ApiError::new(500, "storage", format!("the backup failed: {e}"))
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        tracing::error!("a read failed: {e}");
        ApiError::new(500, "storage", "the database failed")
    }
}
