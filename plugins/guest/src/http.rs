//! The plain Rust types a context works with: request, response, error, event, manifest.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::carshare::context::types as wit;

/// An HTTP request, or a synchronous call from another context.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Upper-case method.
    pub method: String,
    /// Path without the query, e.g. `/orders/1`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Scheme and authority for links, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The calling context, or `None` for a client.
    pub caller: Option<String>,
}

impl Request {
    /// A request for a synchronous call to another context (the host fills in the caller).
    pub fn new(method: &str, path: &str, base_url: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            base_url: base_url.to_string(),
            caller: None,
        }
    }

    /// This request with `value` as its JSON body.
    pub fn with_json(mut self, value: &impl Serialize) -> Self {
        self.body = serde_json::to_vec(value).unwrap_or_default();
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }

    /// A header's value (names are lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// This request asking the context it calls for no representation in the answer
    /// (`Prefer: return=minimal`, RFC 7240): for a caller that only needs to know it worked.
    pub fn minimal(mut self) -> Self {
        self.headers.push(("prefer".into(), "return=minimal".into()));
        self
    }

    /// Whether this is a call from another context that asked for no representation in the
    /// answer ([`Request::minimal`]). Clients' requests always get one: the OpenAPI document
    /// promises it.
    pub fn wants_minimal(&self) -> bool {
        self.caller.is_some()
            && self.header("prefer").is_some_and(|v| {
                v.split([',', ';'])
                    .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
            })
    }

    /// The body as a JSON object, or a 400 saying why it is not one.
    pub fn json_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        if self.body.is_empty() {
            return Err(Error::BadRequest("a JSON object body is required".into()));
        }
        match serde_json::from_slice(&self.body) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err(Error::BadRequest("the body must be a JSON object".into())),
            Err(e) => Err(Error::BadRequest(format!("malformed JSON: {e}"))),
        }
    }

    /// The decoded values of query parameter `name`, in order.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
            .collect()
    }

    /// The first decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_all(name).into_iter().next()
    }
}

/// Decodes `%XX` escapes and `+` (as a space), leaving malformed escapes as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with `value` as a JSON body (HAL media type, as Spring Data REST answers).
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/hal+json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The body parsed as JSON of type `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Internal(format!("unexpected response body: {e}")))
    }
}

/// A domain error; the host turns it into the HTTP status of the same name. Returning one
/// aborts the unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
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
    /// 422: the business refuses.
    Refused(String),
    /// 503: try again later.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl Error {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Error::BadRequest(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::MethodNotAllowed(m)
            | Error::Conflict(m)
            | Error::Refused(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A committed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Gap-free sequence number in its partition's log (with several partitions, two events
    /// may share one: `id` is what is unique).
    pub seq: u64,
    /// Unique id, across partitions.
    pub id: String,
    /// Type, e.g. `Paid`.
    pub event_type: String,
    /// Publishing context.
    pub source: String,
    /// Ordering key.
    pub key: Option<String>,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// JSON object.
    pub payload: String,
}

impl Event {
    /// The payload as `T`; a payload that does not fit is an error of the publisher, reported
    /// as internal so the dispatcher retries and then parks it.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| {
            Error::Internal(format!(
                "{} #{} has a bad payload: {e}",
                self.event_type, self.seq
            ))
        })
    }
}

/// What a context declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Context name.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
    /// HTTP collections served, e.g. `/orders`.
    pub routes: &'static [&'static str],
    /// The event types it publishes ([`crate::events::EventType::declare`]); the host refuses
    /// any other. What it subscribes to comes from [`crate::Context::handlers`].
    pub publishes: Vec<crate::events::Declaration>,
    /// Where the context's state lives when the system has several partitions.
    pub placement: Placement,
    /// The HTTP operations served, for the host's OpenAPI document.
    pub operations: Vec<crate::api::Operation>,
    /// Named JSON Schemas the operations refer to (`#/components/schemas/<name>`).
    pub schemas: Vec<(&'static str, serde_json::Value)>,
}

/// Where a context's state lives when the system has several partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Spread over the partitions: each entity where its id says, each event handled where it
    /// was published (or where [`crate::events::Handlers::placed_by`] says). Ids from `state::next_id` are
    /// handed out per partition, so an entity created in a unit lives in that unit's partition.
    #[default]
    Partitioned,
    /// All of it in partition 0: for a context whose state is not made of entities (a mode, a
    /// tally of everything); its requests and events are all handled there.
    Single,
}

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
            base_url: r.base_url,
            caller: r.caller,
        }
    }
}

impl From<Request> for wit::Request {
    fn from(r: Request) -> Self {
        wit::Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
            base_url: r.base_url,
            caller: r.caller,
        }
    }
}

impl From<Response> for wit::Response {
    fn from(r: Response) -> Self {
        wit::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<wit::Response> for Response {
    fn from(r: wit::Response) -> Self {
        Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<Error> for wit::ContextError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => wit::ContextError::BadRequest(m),
            Error::Forbidden(m) => wit::ContextError::Forbidden(m),
            Error::NotFound(m) => wit::ContextError::NotFound(m),
            Error::MethodNotAllowed(m) => wit::ContextError::MethodNotAllowed(m),
            Error::Conflict(m) => wit::ContextError::Conflict(m),
            Error::Refused(m) => wit::ContextError::Refused(m),
            Error::Unavailable(m) => wit::ContextError::Unavailable(m),
            Error::Internal(m) => wit::ContextError::Internal(m),
        }
    }
}

impl From<wit::ContextError> for Error {
    fn from(e: wit::ContextError) -> Self {
        match e {
            wit::ContextError::BadRequest(m) => Error::BadRequest(m),
            wit::ContextError::Forbidden(m) => Error::Forbidden(m),
            wit::ContextError::NotFound(m) => Error::NotFound(m),
            wit::ContextError::MethodNotAllowed(m) => Error::MethodNotAllowed(m),
            wit::ContextError::Conflict(m) => Error::Conflict(m),
            wit::ContextError::Refused(m) => Error::Refused(m),
            wit::ContextError::Unavailable(m) => Error::Unavailable(m),
            wit::ContextError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        Event {
            seq: e.seq,
            id: e.id,
            event_type: e.event_type,
            source: e.source,
            key: e.key,
            timestamp: e.timestamp,
            payload: e.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_answer_is_what_a_calling_context_prefers() {
        let call = |prefer: &str| Request {
            caller: Some("order".into()),
            headers: vec![("prefer".into(), prefer.into())],
            ..Request::new("POST", "/x", "http://h")
        };
        for yes in [
            "return=minimal",
            "Return=Minimal",
            "handling=lenient, return=minimal",
            " return=minimal ; x",
        ] {
            assert!(call(yes).wants_minimal(), "{yes}");
        }
        for no in ["return=representation", "minimal", "return=minimalist", ""] {
            assert!(!call(no).wants_minimal(), "{no}");
        }
        let mut client = call("return=minimal");
        client.caller = None;
        assert!(!client.wants_minimal());
        assert!(Request::new("POST", "/x", "h").minimal().header("prefer") == Some("return=minimal"));
    }

    #[test]
    fn query_parameters_are_decoded() {
        let mut r = Request::new("GET", "/orders", "http://x");
        r.query = "sort=id%2Cdesc&sort=qty&page=2&q=a+b&bad=%zz&tail=%4".into();
        assert_eq!(r.query_all("sort"), vec!["id,desc", "qty"]);
        assert_eq!(r.query_param("page").as_deref(), Some("2"));
        assert_eq!(r.query_param("q").as_deref(), Some("a b"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("tail").as_deref(), Some("%4"));
        assert_eq!(r.query_param("none"), None);
    }
}
