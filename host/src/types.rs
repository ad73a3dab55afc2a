//! The host's own request, response and error types: what the runtime, the HTTP edge and
//! embedders use. The WIT-generated equivalents never leave `wasm/`.

/// A request to a context: from a client through the gateway, or a synchronous call.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Upper-case method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Scheme and authority for links in responses.
    pub base_url: String,
    /// The calling context; `None` for a client.
    pub caller: Option<String>,
    /// The client request's id (its `x-request-id`, or one the server made): the correlation
    /// id of every event the request's unit publishes.
    pub request_id: Option<String>,
}

impl Request {
    /// A client request with no headers and no body.
    pub fn new(method: &str, path_and_query: &str, base_url: &str) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            base_url: base_url.to_string(),
            caller: None,
            request_id: None,
        }
    }
}

/// A context's response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// A domain error a context returned (the WIT `context-error` variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// 409.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 422.
    #[error("refused: {0}")]
    Refused(String),
    /// 503.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error("internal: {0}")]
    Internal(String),
}

/// Why a call into a context produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The context answered with a domain error.
    #[error(transparent)]
    Domain(DomainError),
    /// No context of that name is loaded.
    #[error("no context named {0}")]
    NoSuchContext(String),
    /// An operator stopped the context.
    #[error("the {0} context is stopped")]
    Stopped(String),
    /// The context has no free instance (its instance cap is reached).
    #[error("the {0} context has no free instance")]
    Busy(String),
    /// The context faulted: a trap, its CPU deadline, or its memory limit. The instance was
    /// discarded.
    #[error("the {context} context failed: {message}")]
    Fault {
        /// The context.
        context: String,
        /// What happened, in words fit for a client (`exceeded its CPU deadline of 1s`).
        message: String,
        /// What the engine said (trap text, a wasm backtrace): for the server log and the
        /// operator's dead letters, never for a client.
        detail: String,
        /// Whether the call used up a resource limit (its CPU deadline or its memory) first:
        /// a fault that cost the machine the most, which its breaker weighs accordingly.
        exhausted: bool,
    },
    /// Synchronous calls nested deeper than the host allows (a call cycle).
    #[error("synchronous calls nested too deep at {0}")]
    TooDeep(String),
    /// The circuit breaker (or the bulkhead) in front of the context refused the call at once.
    #[error("calls to {context} are refused: {reason}")]
    CircuitOpen {
        /// The context.
        context: String,
        /// Why: open, probing, or full.
        reason: String,
    },
}

impl CallError {
    /// The error with a fault's engine detail: for logs and dead letters, never for clients
    /// (whose text is the `Display` one).
    pub fn detailed(&self) -> String {
        match self {
            CallError::Fault { detail, .. } if !detail.is_empty() => format!("{self}: {detail}"),
            e => e.to_string(),
        }
    }
}
