//! How a context describes its HTTP operations for the host's OpenAPI document: each
//! [`Operation`] names its method and path, its query parameters, the JSON Schema of its body
//! and of each status it may answer. [`crate::rest::Collection`] builds the usual ones; a
//! context adds its own (a search, a cancellation).
//!
//! Schemas are `serde_json` values; `#/components/schemas/<name>` refers to a schema a
//! context declares in its manifest, or to `Error`, which the host declares (the JSON body of
//! every error: `{"error", "message", "status"}`).

use serde_json::{Value, json};

/// A reference to a named schema.
pub fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A query parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Name.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// JSON Schema of its value.
    pub schema: Value,
}

/// One HTTP operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Method.
    pub method: &'static str,
    /// Path, with `{id}` for the id of an item.
    pub path: String,
    /// What it does.
    pub summary: String,
    /// Query parameters.
    pub parameters: Vec<Parameter>,
    /// JSON Schema of the request body, if it takes one.
    pub request_body: Option<Value>,
    /// Each status it may answer, with the JSON Schema of the body (none: no body).
    pub responses: Vec<(u16, Option<Value>)>,
    /// With several partitions, the field of the request body naming the id whose partition
    /// the request runs in (see [`Operation::partition_by`]).
    pub partition_by: Option<&'static str>,
}

impl Operation {
    /// `method path`, doing `summary`, with no parameters, body or responses yet.
    pub fn new(method: &'static str, path: impl Into<String>, summary: impl Into<String>) -> Self {
        Operation {
            method,
            path: path.into(),
            summary: summary.into(),
            parameters: Vec::new(),
            request_body: None,
            responses: Vec::new(),
            partition_by: None,
        }
    }

    /// With several partitions, runs the request where the id the body's `field` names lives
    /// (`POST /cancellations {"orderId": 7}` where order 7 lives), instead of a partition the
    /// host chooses. A request without that field runs in one the host chooses.
    pub fn partition_by(mut self, field: &'static str) -> Self {
        self.partition_by = Some(field);
        self
    }

    /// With a query parameter.
    pub fn param(
        mut self,
        name: &'static str,
        description: &'static str,
        required: bool,
        schema: Value,
    ) -> Self {
        self.parameters.push(Parameter {
            name,
            description,
            required,
            schema,
        });
        self
    }

    /// Taking a JSON body of `schema`.
    pub fn body(mut self, schema: Value) -> Self {
        self.request_body = Some(schema);
        self
    }

    /// Answering `status` with a body of `schema`.
    pub fn answers(mut self, status: u16, schema: Value) -> Self {
        self.responses.push((status, Some(schema)));
        self
    }

    /// Answering `status` without a body.
    pub fn answers_empty(mut self, status: u16) -> Self {
        self.responses.push((status, None));
        self
    }

    /// Answering each of `statuses` with an error body.
    pub fn errors(mut self, statuses: &[u16]) -> Self {
        for s in statuses {
            self.responses.push((*s, Some(schema_ref("Error"))));
        }
        self
    }
}

/// JSON Schema of an integer field that may also come as a string holding a decimal integer
/// (as the reference's Jackson accepted, and httpie sends).
pub fn lenient_integer(minimum: i64, maximum: i64) -> Value {
    json!({
        "oneOf": [
            { "type": "integer", "minimum": minimum, "maximum": maximum },
            { "type": "string", "pattern": "^-?[0-9]+$" }
        ]
    })
}

/// JSON Schema of a HAL resource: `properties` (each field's schema), which of them are
/// `required`, and `_links`.
pub fn resource(properties: Value, required: &[&str]) -> Value {
    let mut props = properties;
    if let Value::Object(map) = &mut props {
        map.insert("_links".into(), json!({ "type": "object" }));
    }
    json!({ "type": "object", "properties": props, "required": required })
}
