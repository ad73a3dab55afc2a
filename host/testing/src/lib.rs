//! carshare-testing: a harness for context authors. From a plain `cargo test` in a context's
//! own crate, it builds that crate as a component, loads it with whichever built-in contexts
//! or other components the test names into a carshare of its own (a temporary data directory,
//! one partition, the real units of work, dispatcher, catalog checks and HTTP edge), and lets
//! the test send requests, inject events as another context would publish them, run every
//! subscriber until nothing more happens, and look at the events, the dead letters and the
//! state.
//!
//! ```no_run
//! use carshare_testing::Harness;
//! use serde_json::json;
//!
//! let h = Harness::builder()
//!     .builtin(&["order", "payment", "product", "delivery"])
//!     .context_crate("rating", env!("CARGO_MANIFEST_DIR"))
//!     .start()
//!     .unwrap();
//! let product = h.post("/products", &json!({"modelname": "e-car", "qty": 5}));
//! assert_eq!(product.status, 201);
//! h.post("/orders", &json!({"productId": 1, "qty": 1}));
//! h.settle().unwrap(); // paid, shipped, and the rating context has seen `Shipped`
//! let rated = h.post("/ratings", &json!({"orderId": 1, "stars": 5}));
//! assert_eq!((rated.status, rated.context()), (201, Some("rating/0.1.0")));
//! assert_eq!(h.events_of("Rated").len(), 1);
//! ```
//!
//! Only the five built-in contexts are compiled (by the host library's build script, or taken
//! from `CARSHARE_PREBUILT_CONTEXTS`), never this repository's test components, and nothing is
//! written into the carshare checkout. Time is the machine's: a fake clock is not built yet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carshare_host::carshare_core::{DeadLetter, Event};
use carshare_host::{App, Carshare, Config, Runtime, StartError};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// How long [`Harness::settle`] waits for the subscribers.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A context crate did not build.
    #[error("cannot build the context crate at {}: {reason}", dir.display())]
    Build {
        /// The crate's directory.
        dir: PathBuf,
        /// Why, with cargo's words.
        reason: String,
    },
    /// The system did not start (a component that will not load, a misspelled subscription).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The temporary data directory or the async runtime could not be made.
    #[error("cannot set up the harness: {0}")]
    Setup(#[source] std::io::Error),
    /// An injected event is not one its source may publish.
    #[error("{0}")]
    Inject(String),
    /// The log could not be read or written.
    #[error("the log failed: {0}")]
    Log(String),
    /// The subscribers were still busy when the harness stopped waiting.
    #[error("the subscribers did not settle within {0:?}: {1}")]
    NotSettled(Duration, String),
}

/// What a test gives a context as.
enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
    Crate(PathBuf),
}

/// Which contexts a [`Harness`] runs.
pub struct Builder {
    builtin: Vec<String>,
    contexts: Vec<(String, Source)>,
    attempts: u32,
    target_dir: Option<PathBuf>,
}

impl Builder {
    /// Runs these built-in contexts too (none by default): those the context under test talks
    /// to or hears from.
    pub fn builtin(mut self, names: &[&str]) -> Builder {
        self.builtin = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Runs context `name` from the component `bytes`.
    pub fn context_bytes(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Builder {
        self.contexts
            .push((name.to_string(), Source::Bytes(bytes.into())));
        self
    }

    /// Runs context `name` from the component file at `path`.
    pub fn context_file(mut self, name: &str, path: impl Into<PathBuf>) -> Builder {
        self.contexts.push((name.to_string(), Source::File(path.into())));
        self
    }

    /// Runs context `name` built from the crate in `dir` (`cargo build --release --target
    /// wasm32-wasip2`, into `dir/target/carshare-testing`, so that it never waits for the
    /// `cargo test` that runs the harness): `env!("CARGO_MANIFEST_DIR")` for the crate under
    /// test.
    pub fn context_crate(mut self, name: &str, dir: impl Into<PathBuf>) -> Builder {
        self.contexts.push((name.to_string(), Source::Crate(dir.into())));
        self
    }

    /// Where [`Builder::context_crate`] builds (by default `target/carshare-testing` in each
    /// crate's directory).
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.target_dir = Some(dir.into());
        self
    }

    /// Attempts at a failing event before it is parked as a dead letter (3 by default, a
    /// millisecond apart, so that a test sees dead letters at once).
    pub fn attempts(mut self, n: u32) -> Builder {
        self.attempts = n.max(1);
        self
    }

    /// Builds what must be built and starts the system.
    pub fn start(self) -> Result<Harness, HarnessError> {
        let dir = tempfile::tempdir().map_err(HarnessError::Setup)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(HarnessError::Setup)?;
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.retry.max_attempts = self.attempts;
        config.retry.first_backoff = Duration::from_millis(1);
        config.retry.max_backoff = Duration::from_millis(1);
        let mut builder = Carshare::builder()
            .config(config)
            .builtin_contexts(self.builtin.iter().map(String::as_str));
        for (name, source) in self.contexts {
            builder = match source {
                Source::Bytes(bytes) => builder.context_bytes(name, bytes),
                Source::File(path) => builder.context_file(name, path),
                Source::Crate(dir) => {
                    let target = self
                        .target_dir
                        .clone()
                        .unwrap_or_else(|| dir.join("target").join("carshare-testing"));
                    let wasm =
                        carshare_host::build_context(&dir, &target).map_err(|e| HarnessError::Build {
                            dir: dir.clone(),
                            reason: e.reason,
                        })?;
                    builder.context_file(name, wasm)
                }
            };
        }
        let carshare = rt.block_on(builder.build())?;
        let app = carshare.app();
        Ok(Harness {
            rt,
            carshare: Some(carshare),
            app,
            _dir: dir,
        })
    }
}

/// A carshare of the test's own. Dropped, it shuts down and its data is deleted.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    carshare: Option<Carshare>,
    app: App,
    _dir: tempfile::TempDir,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The context (and version) that caused it: `rating/0.1.0`.
    pub fn context(&self) -> Option<&str> {
        self.header("x-carshare-context")
    }
}

impl Harness {
    /// Which contexts to run: none until named.
    pub fn builder() -> Builder {
        Builder {
            builtin: Vec::new(),
            contexts: Vec::new(),
            attempts: 3,
            target_dir: None,
        }
    }

    /// The runtime, for what the harness does not wrap (swaps, cursors, the catalog).
    pub fn runtime(&self) -> &Runtime {
        self.carshare.as_ref().expect("running until dropped").runtime()
    }

    /// Sends a request through the HTTP edge (the statuses, error bodies and headers a client
    /// gets), with `body` as JSON if given.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://carshare.test{path}"))
            .header("host", "carshare.test");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .expect("a method and a path make a request");
        self.rt.block_on(async {
            let resp = self.app.serve(req).await;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Reply {
                status,
                headers,
                body,
            }
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// `POST path` with `body`.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body))
    }

    /// Commits an event as context `source` would publish it (a scripted event from a context
    /// the test does not run, or one of a running context's): the subscribers get it like any
    /// other. A running `source` must declare the type; the payload must be a JSON object.
    /// Returns its position in the log.
    pub fn inject(
        &self,
        source: &str,
        event_type: &str,
        key: Option<&str>,
        payload: Value,
    ) -> Result<u64, HarnessError> {
        if !payload.is_object() {
            return Err(HarnessError::Inject(format!(
                "the payload of {event_type} must be a JSON object"
            )));
        }
        let catalog = self
            .runtime()
            .catalog()
            .map_err(|e| HarnessError::Inject(e.to_string()))?;
        let declared = catalog.events.iter().find(|e| e.event_type == event_type);
        if let Some(e) = declared.filter(|e| e.publisher != source) {
            return Err(HarnessError::Inject(format!(
                "{event_type} is published by {}, not {source}",
                e.publisher
            )));
        }
        if declared.is_none() && self.runtime().has_context(source) {
            return Err(HarnessError::Inject(format!(
                "{source} does not declare {event_type}: it may not publish it"
            )));
        }
        let log = self.runtime().log();
        let mut unit = log.begin().map_err(|e| HarnessError::Log(e.to_string()))?;
        unit.publish(source, event_type, key.map(str::to_string), payload);
        let committed = self
            .rt
            .block_on(log.commit(unit))
            .map_err(|e| HarnessError::Log(e.to_string()))?;
        Ok(committed.seqs.start)
    }

    /// Runs every subscriber until each has gone through every event and nothing more is
    /// committed (an event that keeps failing is parked after [`Builder::attempts`], and then
    /// counts as gone through: see [`Harness::dead_letters`]).
    pub fn settle(&self) -> Result<(), HarnessError> {
        let runtime = self.runtime();
        let started = Instant::now();
        let mut quiet_since: Option<(u64, Instant)> = None;
        loop {
            let contexts = runtime.contexts().map_err(|e| HarnessError::Log(e.to_string()))?;
            let busy: Vec<String> = contexts
                .iter()
                .filter_map(|c| {
                    let s = c.subscriber.as_ref()?;
                    (s.lag > 0 || s.failing.is_some()).then(|| format!("{} (lag {})", c.name, s.lag))
                })
                .collect();
            let head = runtime.log().head();
            match quiet_since {
                // Idle, and no commit since: nothing more is coming.
                Some((at, since)) if busy.is_empty() && at == head => {
                    if since.elapsed() >= Duration::from_millis(20) {
                        return Ok(());
                    }
                }
                _ if busy.is_empty() => quiet_since = Some((head, Instant::now())),
                _ => quiet_since = None,
            }
            if started.elapsed() > SETTLE_WITHIN {
                return Err(HarnessError::NotSettled(SETTLE_WITHIN, busy.join(", ")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every committed event, in log order.
    pub fn events(&self) -> Vec<Event> {
        let log = self.runtime().log();
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |e: &Event| e.seq);
            let page = log.events_after(after, 1000).unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// The committed events of type `event_type`, in log order.
    pub fn events_of(&self, event_type: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .collect()
    }

    /// The events parked after failing every attempt, with the subscriber and the error.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.runtime()
            .dead_letters()
            .unwrap_or_default()
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    /// The committed value of `key` in `context`'s state, as JSON.
    pub fn state(&self, context: &str, key: &str) -> Option<Value> {
        let mut snapshot = self.runtime().log().snapshot().ok()?;
        let bytes = snapshot.get(context, key).ok()??;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(carshare) = self.carshare.take() {
            self.rt.block_on(carshare.shutdown());
        }
    }
}
