//! Pages of a collection, as Spring Data REST serves them: `?page=&size=&sort=field,asc|desc`
//! in, `_embedded`, `_links` (self, first, last, prev, next) and `page` out. A page is read
//! from an index (by id, or by the one field it is sorted by) and costs the page, whatever the
//! collection holds; a sort by a field without an index is a 400 naming those that have one.

use serde_json::{Map, Value, json};

use super::{Collection, Entity, Key};
use crate::{Error, Request, Response, state};

/// Spring Data REST's default page size.
const DEFAULT_SIZE: usize = 20;
/// Spring Data REST's default maximum page size; larger requests are clamped to it.
const MAX_SIZE: usize = 1000;

/// Paging and sorting parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Zero-based page number.
    pub page: usize,
    /// Page size, 1 to 1000.
    pub size: usize,
    /// The sort: a field and whether ascending. None: by id, ascending.
    pub sort: Option<(String, bool)>,
}

impl PageRequest {
    /// Reads `page`, `size` and `sort` from the query; 400 for values that make no sense, for
    /// a field not in `sortable`, and for more than one sort field.
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
        let mut sort = None;
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
            if sort.replace((field.to_string(), asc)).is_some() {
                return Err(Error::BadRequest("sort by one field at a time".into()));
            }
        }
        Ok(PageRequest {
            page,
            size: size.min(MAX_SIZE),
            sort,
        })
    }

    fn offset(&self) -> u64 {
        (self.page as u64).saturating_mul(self.size as u64)
    }
}

impl Collection {
    /// The fields a listing may be sorted by: `id` and every indexed field.
    pub fn sortable(&self) -> Vec<&'static str> {
        std::iter::once("id")
            .chain(self.indexed.iter().copied())
            .collect()
    }

    /// The page of the collection `request` asks for, sorted as it asks.
    pub fn list<T: Entity>(&self, request: &Request) -> Result<Response, Error> {
        let pr = PageRequest::parse(request, &self.sortable())?;
        let (index, descending) = match &pr.sort {
            None => (self.name.to_string(), false),
            Some((f, asc)) if f == "id" => (self.name.to_string(), !asc),
            Some((f, asc)) => (self.index(f), !asc),
        };
        let ids = state::index_page(&index, None, pr.offset(), pr.size as u32, descending);
        let total = self.count();
        self.page_of::<T>(request, &pr, &ids, total)
    }

    /// The page of the entities whose indexed `field` equals `value`, in id order (a `sort` by
    /// `id` may reverse it).
    pub fn search<T: Entity>(&self, request: &Request, field: &str, value: Key) -> Result<Response, Error> {
        let pr = PageRequest::parse(request, &["id"])?;
        let descending = matches!(&pr.sort, Some((_, false)));
        let index = self.index(field);
        let term = value.term();
        let ids = state::index_page(&index, Some(&term), pr.offset(), pr.size as u32, descending);
        let total = state::index_count(&index, Some(&term));
        self.page_of::<T>(request, &pr, &ids, total)
    }

    /// The page holding entity `id` if it exists (a search by id).
    pub fn find<T: Entity>(&self, request: &Request, id: u64) -> Result<Response, Error> {
        let pr = PageRequest::parse(request, &["id"])?;
        let found: Option<T> = self.load(id)?;
        let total = u64::from(found.is_some());
        let content = match found {
            Some(e) if pr.page == 0 => vec![self.resource(request, &e)],
            _ => Vec::new(),
        };
        Ok(Response::json(
            200,
            &page_body(self.name, request, &pr, content, total),
        ))
    }

    /// The page holding the entities `ids`, out of `total`.
    fn page_of<T: Entity>(
        &self,
        request: &Request,
        pr: &PageRequest,
        ids: &[u64],
        total: u64,
    ) -> Result<Response, Error> {
        let mut content = Vec::with_capacity(ids.len());
        for id in ids {
            // An id the index names is stored: they commit together.
            let entity: T = self.require(*id)?;
            content.push(self.resource(request, &entity));
        }
        Ok(Response::json(
            200,
            &page_body(self.name, request, pr, content, total),
        ))
    }
}

/// A page's body: `_embedded.<name>` with `content`, `_links`, and `page`.
pub(crate) fn page_body(
    name: &str,
    request: &Request,
    pr: &PageRequest,
    content: Vec<Value>,
    total: u64,
) -> Value {
    let pages = total.div_ceil(pr.size as u64);
    let base = format!("{}{}", request.base_url, request.path);
    let self_href = if request.query.is_empty() {
        base.clone()
    } else {
        format!("{base}?{}", request.query)
    };
    let mut links = Map::new();
    links.insert("self".into(), json!({ "href": self_href }));
    let page_href = |n: u64| {
        let mut q = format!("page={n}&size={}", pr.size);
        if let Some((f, asc)) = &pr.sort {
            q.push_str(&format!("&sort={f},{}", if *asc { "asc" } else { "desc" }));
        }
        json!({ "href": format!("{base}?{q}") })
    };
    let page = pr.page as u64;
    if pages > 1 {
        links.insert("first".into(), page_href(0));
        links.insert("last".into(), page_href(pages - 1));
    }
    if page > 0 && page < pages {
        links.insert("prev".into(), page_href(page - 1));
    }
    if page + 1 < pages {
        links.insert("next".into(), page_href(page + 1));
    }
    let mut embedded = Map::new();
    embedded.insert(name.to_string(), Value::Array(content));
    json!({
        "_embedded": embedded,
        "_links": links,
        "page": { "size": pr.size, "totalElements": total, "totalPages": pages, "number": pr.page },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str) -> Request {
        let mut r = Request::new("GET", "/things", "http://h");
        r.query = query.into();
        r
    }

    #[test]
    fn pages_link_as_spring_data_rest_does() {
        let pr = PageRequest::parse(&req("page=1&size=2&sort=qty,desc"), &["id", "qty"]).unwrap();
        let b = page_body(
            "things",
            &req("page=1&size=2&sort=qty,desc"),
            &pr,
            vec![json!({"id": 1})],
            5,
        );
        assert_eq!(
            b["page"],
            json!({"size": 2, "totalElements": 5, "totalPages": 3, "number": 1})
        );
        assert_eq!(
            b["_links"]["next"]["href"],
            "http://h/things?page=2&size=2&sort=qty,desc"
        );
        assert_eq!(
            b["_links"]["prev"]["href"],
            "http://h/things?page=0&size=2&sort=qty,desc"
        );
        assert_eq!(b["_embedded"]["things"][0]["id"], 1);
    }

    #[test]
    fn bad_paging_is_a_400() {
        for q in [
            "page=-1",
            "size=abc",
            "size=0",
            "sort=nope",
            "sort=qty,sideways",
            "sort=qty&sort=id",
        ] {
            assert!(
                matches!(
                    PageRequest::parse(&req(q), &["id", "qty"]),
                    Err(Error::BadRequest(_))
                ),
                "{q}"
            );
        }
        assert_eq!(PageRequest::parse(&req("size=5000"), &[]).unwrap().size, 1000);
        let e = PageRequest::parse(&req("sort=status"), &["id", "qty"]).unwrap_err();
        assert!(e.message().contains("sortable fields: id, qty"), "{e:?}");
    }
}
