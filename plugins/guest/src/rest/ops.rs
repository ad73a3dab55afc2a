//! The operations a collection describes for the OpenAPI document: its listing, an item, a
//! creation, a search. A context lists those it serves in its manifest, with its own.

use serde_json::{Value, json};

use super::Collection;
use crate::api::{Operation, schema_ref};

impl Collection {
    /// `GET /<name>`: a page of the collection.
    pub fn list_operation(&self) -> Operation {
        Operation::new(
            "GET",
            format!("/{}", self.name),
            format!("A page of {}", self.name),
        )
        .param(
            "page",
            "zero-based page number",
            false,
            json!({ "type": "integer", "minimum": 0 }),
        )
        .param(
            "size",
            "page size (at most 1000)",
            false,
            json!({ "type": "integer", "minimum": 1 }),
        )
        .param(
            "sort",
            "field,asc|desc: by id or by an indexed field",
            false,
            json!({ "type": "string", "pattern": self.sort_pattern() }),
        )
        .answers(200, self.page_schema())
        .errors(&[400])
    }

    /// `GET /<name>/{id}`: one entity.
    pub fn get_operation(&self) -> Operation {
        Operation::new(
            "GET",
            format!("/{}/{{id}}", self.name),
            format!("One of the {}", self.name),
        )
        .answers(200, schema_ref(self.schema))
        .errors(&[404])
    }

    /// `GET /<name>/search/<query>?<param>=`: the page of entities with `param` equal to an id.
    pub fn search_operation(&self, query: &str, param: &'static str, description: &'static str) -> Operation {
        Operation::new(
            "GET",
            format!("/{}/search/{query}", self.name),
            format!("The {} with the given {param}", self.name),
        )
        .param(
            param,
            description,
            true,
            json!({ "type": "integer", "minimum": 1 }),
        )
        .param(
            "page",
            "zero-based page number",
            false,
            json!({ "type": "integer", "minimum": 0 }),
        )
        .param(
            "size",
            "page size (at most 1000)",
            false,
            json!({ "type": "integer", "minimum": 1 }),
        )
        .answers(200, self.page_schema())
        .errors(&[400])
    }

    /// The schema of a page of this collection.
    pub fn page_schema(&self) -> Value {
        let mut embedded = serde_json::Map::new();
        embedded.insert(
            self.name.to_string(),
            json!({ "type": "array", "items": schema_ref(self.schema) }),
        );
        json!({
            "type": "object",
            "required": ["_embedded", "_links", "page"],
            "properties": {
                "_embedded": { "type": "object", "properties": embedded },
                "_links": { "type": "object" },
                "page": {
                    "type": "object",
                    "required": ["size", "totalElements", "totalPages", "number"],
                    "properties": {
                        "size": { "type": "integer" },
                        "totalElements": { "type": "integer" },
                        "totalPages": { "type": "integer" },
                        "number": { "type": "integer" }
                    }
                }
            }
        })
    }

    /// A regular expression of the `sort` values the collection takes.
    fn sort_pattern(&self) -> String {
        format!("^({})(,(asc|desc|ASC|DESC))?$", self.sortable().join("|"))
    }
}
