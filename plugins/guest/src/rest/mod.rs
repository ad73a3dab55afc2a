//! REST collections the way Spring Data REST serves them, written once for every context:
//! routing within a collection, entities stored under ordered keys and kept in ordered
//! indexes, HAL resources with `_links`, and pages (`?page=&size=&sort=field,asc|desc`) with
//! `_embedded` and `page` (`page.rs`), and the operations a collection describes for the
//! OpenAPI document (`ops.rs`).
//!
//! Every entity is in its collection's index by id, and in one index per field the collection
//! names in `indexed`; [`Collection::save`] keeps them current. A listing reads one page of an
//! index and loads that page's entities: its cost is the page's, whatever the collection holds.

mod ops;
mod page;

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub use page::PageRequest;

use crate::{Error, Request, Response, state};

/// A stored entity with an integer id.
pub trait Entity: Serialize + DeserializeOwned {
    /// The id.
    fn id(&self) -> u64;
    /// The value of `field` as an index key, for each field its collection indexes.
    fn key_of(&self, field: &str) -> Key;
}

/// A field's value as an index orders it: nulls first, then integers, then text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// No value.
    Null,
    /// An integer.
    Int(i128),
    /// Text, ordered by its UTF-8 bytes.
    Text(String),
}

impl Key {
    /// The bytes the host orders entries by: a tag, then the value so that byte order is
    /// value order (integers big-endian with the sign bit flipped).
    pub fn term(&self) -> Vec<u8> {
        match self {
            Key::Null => vec![0],
            Key::Int(n) => {
                let mut t = vec![1];
                t.extend_from_slice(&((*n as u128) ^ (1u128 << 127)).to_be_bytes());
                t
            }
            Key::Text(s) => {
                let mut t = vec![2];
                t.extend_from_slice(s.as_bytes());
                t
            }
        }
    }
}

impl From<u64> for Key {
    fn from(n: u64) -> Self {
        Key::Int(i128::from(n))
    }
}

impl From<i64> for Key {
    fn from(n: i64) -> Self {
        Key::Int(i128::from(n))
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::Text(s.to_string())
    }
}

impl<T: Into<Key>> From<Option<T>> for Key {
    fn from(v: Option<T>) -> Self {
        v.map_or(Key::Null, Into::into)
    }
}

thread_local! {
    /// The index terms of each entity loaded or saved during the current call, or `None` for
    /// a key known to hold nothing (the glue clears it when a call begins), so that saving it
    /// needs no second read to know what changed. Ordered by key rather than hashed: a call
    /// holds at most a page of them, and SipHash over every key showed in profiles.
    static LOADED: RefCell<BTreeMap<String, Option<Vec<Vec<u8>>>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Forgets what the last call loaded; called by the glue when a call begins.
pub(crate) fn begin_call() {
    LOADED.with(|l| l.borrow_mut().clear());
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
    /// The collection, e.g. `orders` (also the `_embedded` key, the key prefix in state, and
    /// the name of its index by id).
    pub name: &'static str,
    /// The singular link relation, e.g. `order`.
    pub rel: &'static str,
    /// The fields with an index of their own: the collection sorts by them (as well as by
    /// id), and searches by them.
    pub indexed: &'static [&'static str],
    /// The name of its entity's JSON Schema in the OpenAPI document, e.g. `Order`.
    pub schema: &'static str,
}

impl Collection {
    /// The collection `name` of `rel`s, indexed by `indexed`, its entity described by the
    /// schema named `schema`.
    pub const fn new(
        name: &'static str,
        rel: &'static str,
        indexed: &'static [&'static str],
        schema: &'static str,
    ) -> Self {
        Collection {
            name,
            rel,
            indexed,
            schema,
        }
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

    /// The state key of entity `id`: zero-padded so keys sort by id. Every load and save
    /// builds one, so it is written out by hand rather than through `format!` (whose padding
    /// goes one character at a time, which shows in a profile).
    pub fn key(&self, id: u64) -> String {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(id);
        let mut key = String::with_capacity(self.name.len() + 21);
        key.push_str(self.name);
        key.push('/');
        // A u64 has at most 20 digits.
        key.extend(std::iter::repeat_n('0', 20usize.saturating_sub(digits.len())));
        key.push_str(digits);
        key
    }

    /// The index of `field`.
    fn index(&self, field: &str) -> String {
        [self.name, "/", field].concat()
    }

    /// The index terms of `entity`, one per indexed field.
    fn terms<T: Entity>(&self, entity: &T) -> Vec<Vec<u8>> {
        self.indexed.iter().map(|f| entity.key_of(f).term()).collect()
    }

    /// Entity `id`, if it exists.
    pub fn load<T: Entity>(&self, id: u64) -> Result<Option<T>, Error> {
        let key = self.key(id);
        let found: Option<T> = state::get(&key)?;
        let terms = found.as_ref().map(|entity| self.terms(entity));
        LOADED.with(|l| l.borrow_mut().insert(key, terms));
        Ok(found)
    }

    /// Entity `id`, or 404.
    pub fn require<T: Entity>(&self, id: u64) -> Result<T, Error> {
        self.load(id)?
            .ok_or_else(|| Error::NotFound(format!("no {} with id {id}", self.name)))
    }

    /// Stores a new `entity`, whose id was just taken from [`state::next_id`]. Creating is
    /// never an overwrite: the key is read first (a read the host checks again at commit), so
    /// an entity already stored under the id is a 409, and one stored there by a unit that
    /// commits first makes this unit run again (with a new id) instead of replacing it.
    pub fn insert<T: Entity>(&self, entity: &T) -> Result<(), Error> {
        let key = self.key(entity.id());
        if state::exists(&key) {
            return Err(Error::Conflict(format!(
                "{} {} exists already",
                self.name,
                entity.id()
            )));
        }
        LOADED.with(|l| l.borrow_mut().insert(key, None));
        self.save(entity)
    }

    /// Stores `entity` under its id, and moves its index entries where its fields now say.
    pub fn save<T: Entity>(&self, entity: &T) -> Result<(), Error> {
        let id = entity.id();
        let key = self.key(id);
        let known = LOADED.with(|l| l.borrow().get(&key).cloned());
        let before = match known {
            Some(terms) => terms,
            // Not loaded in this call: read what is stored.
            None => state::get::<T>(&key)?.map(|old| self.terms(&old)),
        };
        let after = self.terms(entity);
        state::put(&key, entity)?;
        if before.is_none() {
            state::index_put(self.name, &[], id);
        }
        for (i, field) in self.indexed.iter().enumerate() {
            let old = before.as_ref().map(|b| &b[i]);
            if old == Some(&after[i]) {
                continue;
            }
            let index = self.index(field);
            if let Some(old) = old {
                state::index_delete(&index, old, id);
            }
            state::index_put(&index, &after[i], id);
        }
        LOADED.with(|l| l.borrow_mut().insert(key, Some(after)));
        Ok(())
    }

    /// How many entities the collection holds: one read.
    pub fn count(&self) -> u64 {
        state::index_count(self.name, None)
    }

    /// The absolute URL of entity `id`.
    pub fn href(&self, request: &Request, id: u64) -> String {
        [
            &request.base_url,
            "/",
            self.name,
            "/",
            itoa::Buffer::new().format(id),
        ]
        .concat()
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
        let href = self.href(request, entity.id());
        Response::json(200, &self.hal(entity, &href))
    }

    /// 201 with `entity` and its `Location`; without the entity for a call from another
    /// context that asked for none ([`Request::wants_minimal`]).
    pub fn created<T: Entity>(&self, request: &Request, entity: &T) -> Response {
        let href = self.href(request, entity.id());
        if request.wants_minimal() {
            // No `Preference-Applied`: an empty 201 says so, and every string that crosses
            // into the caller is a call into its allocator.
            return Response {
                status: 201,
                headers: vec![("location".into(), href)],
                body: Vec::new(),
            };
        }
        Response::json(201, &self.hal(entity, &href)).with_header("location", &href)
    }

    /// What [`Collection::resource`] gives, written straight out: no `Value` tree is built for
    /// a response that holds one entity.
    fn hal<'a, T: Entity>(&'a self, entity: &'a T, href: &'a str) -> Hal<'a, T> {
        Hal {
            entity,
            links: Links { href, rel: self.rel },
        }
    }
}

/// An entity with its `_links`, serialized as one object.
#[derive(Serialize)]
struct Hal<'a, T: Serialize> {
    #[serde(flatten)]
    entity: &'a T,
    #[serde(rename = "_links")]
    links: Links<'a>,
}

/// `{"self": {"href": …}, "<rel>": {"href": …}}`.
struct Links<'a> {
    href: &'a str,
    rel: &'a str,
}

impl Serialize for Links<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct Href<'a> {
            href: &'a str,
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("self", &Href { href: self.href })?;
        map.serialize_entry(self.rel, &Href { href: self.href })?;
        map.end()
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

#[cfg(test)]
mod tests {
    use super::*;

    const THINGS: Collection = Collection::new("things", "thing", &["qty"], "Thing");

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
    fn keys_are_what_format_padding_gave_and_sort_by_id() {
        // Stored data is keyed this way: the format must never change.
        for id in [1, 9, 10, 12_345, u64::MAX / 3, u64::MAX] {
            assert_eq!(THINGS.key(id), format!("things/{id:020}"));
        }
        assert!(THINGS.key(99) < THINGS.key(100));
        assert_eq!(THINGS.index("qty"), "things/qty");
        let req = Request::new("GET", "/things/7", "http://h:1");
        assert_eq!(THINGS.href(&req, 7), "http://h:1/things/7");
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Thing {
        id: u64,
        qty: Option<i64>,
        model_name: String,
    }

    impl Entity for Thing {
        fn id(&self) -> u64 {
            self.id
        }

        fn key_of(&self, _field: &str) -> Key {
            Key::Null
        }
    }

    #[test]
    fn a_response_holds_exactly_what_the_resource_value_does() {
        let req = Request::new("GET", "/things/7", "http://h:1");
        let thing = Thing {
            id: 7,
            qty: None,
            model_name: "a \"quoted\" name".into(),
        };
        for r in [THINGS.ok(&req, &thing), THINGS.created(&req, &thing)] {
            // The same bytes: the fields in order, then the links.
            assert_eq!(
                r.body,
                serde_json::to_vec(&THINGS.resource(&req, &thing)).unwrap()
            );
        }
        let created = THINGS.created(&req, &thing);
        assert_eq!(created.status, 201);
        assert!(
            created
                .headers
                .contains(&("location".into(), "http://h:1/things/7".into()))
        );
        assert_eq!(
            String::from_utf8(created.body).unwrap(),
            r#"{"id":7,"qty":null,"modelName":"a \"quoted\" name","_links":{"self":{"href":"http://h:1/things/7"},"thing":{"href":"http://h:1/things/7"}}}"#
        );
    }

    /// A call that asks for a minimal answer gets the status and the location only; a client
    /// always gets the entity, whatever it sends.
    #[test]
    fn a_call_that_asks_for_a_minimal_answer_gets_no_entity() {
        let thing = Thing {
            id: 7,
            qty: None,
            model_name: "x".into(),
        };
        let mut call = Request::new("POST", "/things", "http://h:1").minimal();
        call.caller = Some("order".into());
        let r = THINGS.created(&call, &thing);
        assert_eq!(r.status, 201);
        assert!(r.body.is_empty());
        assert_eq!(r.headers, vec![("location".into(), "http://h:1/things/7".into())]);
        let client = Request::new("POST", "/things", "http://h:1").minimal();
        assert!(!THINGS.created(&client, &thing).body.is_empty());
    }

    #[test]
    fn terms_order_as_their_values_do() {
        let keys = [
            Key::Null,
            Key::Int(-5),
            Key::Int(0),
            Key::Int(3),
            Key::Int(1_000_000),
            Key::Text("".into()),
            Key::Text("Ordered".into()),
            Key::Text("Shipped".into()),
            Key::Text("ordered".into()),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0].term() < pair[1].term(), "{:?} < {:?}", pair[0], pair[1]);
        }
    }
}
