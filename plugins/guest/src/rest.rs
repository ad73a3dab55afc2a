//! REST collections the way Spring Data REST serves them, written once for every context:
//! routing within a collection, storage of entities under ordered keys, HAL resources with
//! `_links`, and pages (`?page=&size=&sort=field,asc|desc`) with `_embedded` and `page`.

use std::cmp::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::{Error, Request, Response, state};

/// Spring Data REST's default page size.
const DEFAULT_SIZE: usize = 20;
/// Spring Data REST's default maximum page size; larger requests are clamped to it.
const MAX_SIZE: usize = 1000;

/// A stored entity with an integer id.
pub trait Entity: Serialize + DeserializeOwned {
    /// The id.
    fn id(&self) -> u64;
}

/// What a request addresses within a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/orders`
    Collection,
    /// `/orders/{id}`
    Item(u64),
    /// `/orders/search/{query}`
    Search(String),
}

/// One HTTP collection of one entity type.
pub struct Collection {
    /// The collection, e.g. `orders` (also the `_embedded` key and the key prefix in state).
    pub name: &'static str,
    /// The singular link relation, e.g. `order`.
    pub rel: &'static str,
    /// The fields a client may sort by.
    pub sortable: &'static [&'static str],
}

impl Collection {
    /// The collection `name` of `rel`s, sortable by `sortable`.
    pub const fn new(name: &'static str, rel: &'static str, sortable: &'static [&'static str]) -> Self {
        Collection { name, rel, sortable }
    }

    /// Whether `path` is this collection or below it.
    pub fn serves(&self, path: &str) -> bool {
        let rest = path.strip_prefix('/').and_then(|p| p.strip_prefix(self.name));
        matches!(rest, Some(r) if r.is_empty() || r.starts_with('/'))
    }

    /// What `path` addresses; 404 for anything else below the collection.
    pub fn target(&self, path: &str) -> Result<Target, Error> {
        let rest = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.name))
            .ok_or_else(|| Error::NotFound(format!("no resource at {path}")))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Ok(Target::Collection);
        }
        let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            [id] => match id.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Target::Item(n)),
                _ => Err(Error::NotFound(format!("no {} with id {id}", self.name))),
            },
            ["search", query] => Ok(Target::Search(query.to_string())),
            _ => Err(Error::NotFound(format!("no resource at {path}"))),
        }
    }

    /// The state key of entity `id`: zero-padded so keys sort by id.
    pub fn key(&self, id: u64) -> String {
        format!("{}/{id:020}", self.name)
    }

    /// Entity `id`, if it exists.
    pub fn load<T: Entity>(&self, id: u64) -> Result<Option<T>, Error> {
        state::get(&self.key(id))
    }

    /// Entity `id`, or 404.
    pub fn require<T: Entity>(&self, id: u64) -> Result<T, Error> {
        self.load(id)?
            .ok_or_else(|| Error::NotFound(format!("no {} with id {id}", self.name)))
    }

    /// Stores `entity` under its id.
    pub fn save<T: Entity>(&self, entity: &T) -> Result<(), Error> {
        state::put(&self.key(entity.id()), entity)
    }

    /// Every entity, in id order.
    pub fn all<T: Entity>(&self) -> Result<Vec<T>, Error> {
        state::scan(&format!("{}/", self.name))
    }

    /// The absolute URL of entity `id`.
    pub fn href(&self, request: &Request, id: u64) -> String {
        format!("{}/{}/{id}", request.base_url, self.name)
    }

    /// `entity` as a HAL resource: its fields (with `id`) and `_links`.
    pub fn resource<T: Entity>(&self, request: &Request, entity: &T) -> Value {
        let mut v = serde_json::to_value(entity).unwrap_or(Value::Null);
        let href = self.href(request, entity.id());
        if let Value::Object(map) = &mut v {
            let mut links = Map::new();
            links.insert("self".into(), json!({ "href": href }));
            links.insert(self.rel.into(), json!({ "href": href }));
            map.insert("_links".into(), Value::Object(links));
        }
        v
    }

    /// 200 with `entity`.
    pub fn ok<T: Entity>(&self, request: &Request, entity: &T) -> Response {
        Response::json(200, &self.resource(request, entity))
    }

    /// 201 with `entity` and its `Location`.
    pub fn created<T: Entity>(&self, request: &Request, entity: &T) -> Response {
        Response::json(201, &self.resource(request, entity))
            .with_header("location", &self.href(request, entity.id()))
    }

    /// The page of `items` that `request` asks for, sorted as it asks, in Spring Data REST's
    /// shape. `path` is the path the page is served at (the collection or a search).
    pub fn page<T: Entity>(&self, request: &Request, items: Vec<T>) -> Result<Response, Error> {
        let pr = PageRequest::parse(request, self.sortable)?;
        let mut values: Vec<Value> = items.iter().map(|e| self.resource(request, e)).collect();
        if !pr.sort.is_empty() {
            values.sort_by(|a, b| {
                pr.sort
                    .iter()
                    .map(|(field, asc)| {
                        let o = compare(&a[field.as_str()], &b[field.as_str()]);
                        if *asc { o } else { o.reverse() }
                    })
                    .find(|o| *o != Ordering::Equal)
                    .unwrap_or(Ordering::Equal)
            });
        }
        let total = values.len();
        let pages = total.div_ceil(pr.size);
        let content: Vec<Value> = values
            .into_iter()
            .skip(pr.page.saturating_mul(pr.size))
            .take(pr.size)
            .collect();
        let base = format!("{}{}", request.base_url, request.path);
        let self_href = if request.query.is_empty() {
            base.clone()
        } else {
            format!("{base}?{}", request.query)
        };
        let mut links = Map::new();
        links.insert("self".into(), json!({ "href": self_href }));
        let page_href = |n: usize| {
            let mut q = format!("page={n}&size={}", pr.size);
            for (f, asc) in &pr.sort {
                q.push_str(&format!("&sort={f},{}", if *asc { "asc" } else { "desc" }));
            }
            json!({ "href": format!("{base}?{q}") })
        };
        if pages > 1 {
            links.insert("first".into(), page_href(0));
            links.insert("last".into(), page_href(pages - 1));
        }
        if pr.page > 0 && pr.page < pages {
            links.insert("prev".into(), page_href(pr.page - 1));
        }
        if pr.page + 1 < pages {
            links.insert("next".into(), page_href(pr.page + 1));
        }
        let mut embedded = Map::new();
        embedded.insert(self.name.to_string(), Value::Array(content));
        Ok(Response::json(
            200,
            &json!({
                "_embedded": embedded,
                "_links": links,
                "page": { "size": pr.size, "totalElements": total, "totalPages": pages, "number": pr.page },
            }),
        ))
    }
}

/// 405 naming what is allowed.
pub fn method_not_allowed(request: &Request, allowed: &[&str]) -> Error {
    Error::MethodNotAllowed(format!(
        "{} is not allowed on {}; allowed: {}",
        request.method,
        request.path,
        allowed.join(", ")
    ))
}

/// Paging and sorting parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Zero-based page number.
    pub page: usize,
    /// Page size, 1 to 1000.
    pub size: usize,
    /// Sort keys, each a field and whether ascending.
    pub sort: Vec<(String, bool)>,
}

impl PageRequest {
    /// Reads `page`, `size` and `sort` from the query; 400 for values that make no sense.
    pub fn parse(request: &Request, sortable: &[&str]) -> Result<Self, Error> {
        let number = |name: &str, default: usize| -> Result<usize, Error> {
            match request.query_param(name) {
                None => Ok(default),
                Some(v) if v.is_empty() => Ok(default),
                Some(v) => v.parse::<usize>().map_err(|_| {
                    Error::BadRequest(format!("{name} must be a non-negative integer, not {v:?}"))
                }),
            }
        };
        let page = number("page", 0)?;
        let size = number("size", DEFAULT_SIZE)?;
        if size == 0 {
            return Err(Error::BadRequest("size must be at least 1".into()));
        }
        let mut sort = Vec::new();
        for s in request.query_all("sort") {
            let mut parts = s.split(',').map(str::trim);
            let field = parts.next().unwrap_or_default();
            if field.is_empty() {
                continue;
            }
            if !sortable.contains(&field) {
                return Err(Error::BadRequest(format!(
                    "cannot sort by {field:?}; sortable fields: {}",
                    sortable.join(", ")
                )));
            }
            let asc = match parts.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("") | Some("asc") => true,
                Some("desc") => false,
                Some(d) => {
                    return Err(Error::BadRequest(format!(
                        "sort direction must be asc or desc, not {d:?}"
                    )));
                }
            };
            sort.push((field.to_string(), asc));
        }
        Ok(PageRequest {
            page,
            size: size.min(MAX_SIZE),
            sort,
        })
    }
}

/// Orders JSON values for sorting: nulls first, then numbers, strings, booleans.
fn compare(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Number(_) => 1,
            Value::String(_) => 2,
            Value::Bool(_) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    struct Thing {
        id: u64,
        qty: i64,
    }
    impl Entity for Thing {
        fn id(&self) -> u64 {
            self.id
        }
    }

    const THINGS: Collection = Collection::new("things", "thing", &["id", "qty"]);

    fn req(query: &str) -> Request {
        let mut r = Request::new("GET", "/things", "http://h");
        r.query = query.into();
        r
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn targets() {
        assert_eq!(THINGS.target("/things"), Ok(Target::Collection));
        assert_eq!(THINGS.target("/things/"), Ok(Target::Collection));
        assert_eq!(THINGS.target("/things/7"), Ok(Target::Item(7)));
        assert_eq!(
            THINGS.target("/things/search/findByX"),
            Ok(Target::Search("findByX".into()))
        );
        assert!(THINGS.target("/things/abc").is_err());
        assert!(THINGS.target("/things/0").is_err());
        assert!(THINGS.target("/things/1/2").is_err());
        assert!(THINGS.serves("/things/1") && THINGS.serves("/things") && !THINGS.serves("/thingsx"));
    }

    #[test]
    fn pages_sort_and_link() {
        let items = (1..=5)
            .map(|i| Thing {
                id: i,
                qty: (i as i64 * 7) % 5,
            })
            .collect::<Vec<_>>();
        let r = THINGS.page(&req("page=1&size=2&sort=qty,desc"), items).unwrap();
        let b = body(&r);
        assert_eq!(
            b["page"],
            json!({"size": 2, "totalElements": 5, "totalPages": 3, "number": 1})
        );
        let qtys: Vec<i64> = b["_embedded"]["things"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["qty"].as_i64().unwrap())
            .collect();
        // qty by id: 2, 4, 1, 3, 0 → desc: 4, 3, 2, 1, 0 → page 1 of size 2: [2, 1]
        assert_eq!(qtys, vec![2, 1]);
        assert_eq!(
            b["_links"]["next"]["href"],
            "http://h/things?page=2&size=2&sort=qty,desc"
        );
        assert_eq!(
            b["_links"]["prev"]["href"],
            "http://h/things?page=0&size=2&sort=qty,desc"
        );
        assert_eq!(
            b["_embedded"]["things"][0]["_links"]["self"]["href"],
            "http://h/things/1"
        );
    }

    #[test]
    fn bad_paging_is_a_400() {
        for q in ["page=-1", "size=abc", "size=0", "sort=nope", "sort=qty,sideways"] {
            assert!(
                matches!(PageRequest::parse(&req(q), &["qty"]), Err(Error::BadRequest(_))),
                "{q}"
            );
        }
        assert_eq!(PageRequest::parse(&req("size=5000"), &[]).unwrap().size, 1000);
    }
}
