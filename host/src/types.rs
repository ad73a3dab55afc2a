//! The host's own request, response and error types: what the runtime, the HTTP edge and
//! embedders use. The WIT-generated equivalents never leave `wasm/`.

use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// 400.
    BadRequest(String),
    /// 403.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed(String),
    /// 409.
    Conflict(String),
    /// 422.
    Refused(String),
    /// 503.
    Unavailable(String),
    /// 500.
    Internal(String),
}

/// Why a call into a context produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The context answered with a domain error.
    Domain(DomainError),
    /// No context of that name is loaded.
    NoSuchContext(String),
    /// An operator stopped the context.
    Stopped(String),
    /// The context has no free instance (its instance cap is reached).
    Busy(String),
    /// The context faulted: a trap, its CPU deadline, or its memory limit. The instance was
    /// discarded.
    Fault {
        /// The context.
        context: String,
        /// What happened, in words fit for a client (`exceeded its CPU deadline of 1s`).
        message: String,
        /// What the engine said (trap text, a wasm backtrace): for the server log and the
        /// operator's dead letters, never for a client.
        detail: String,
    },
    /// Synchronous calls nested deeper than the host allows (a call cycle).
    TooDeep(String),
    /// The circuit breaker (or the bulkhead) in front of the context refused the call at once.
    CircuitOpen {
        /// The context.
        context: String,
        /// Why: open, probing, or full.
        reason: String,
    },
}

impl CallError {
    /// The error with a fault's engine detail: for logs and dead letters, never for clients
    /// (whose text is the [`Display`](fmt::Display) one).
    pub fn detailed(&self) -> String {
        match self {
            CallError::Fault { detail, .. } if !detail.is_empty() => format!("{self}: {detail}"),
            e => e.to_string(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Domain(e) => write!(f, "{e:?}"),
            CallError::NoSuchContext(c) => write!(f, "no context named {c}"),
            CallError::Stopped(c) => write!(f, "the {c} context is stopped"),
            CallError::Busy(c) => write!(f, "the {c} context has no free instance"),
            CallError::Fault { context, message, .. } => {
                write!(f, "the {context} context failed: {message}")
            }
            CallError::TooDeep(c) => write!(f, "synchronous calls nested too deep at {c}"),
            CallError::CircuitOpen { context, reason } => {
                write!(f, "calls to {context} are refused: {reason}")
            }
        }
    }
}

impl std::error::Error for CallError {}
