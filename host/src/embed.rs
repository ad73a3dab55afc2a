//! [`Carshare`]: the one way in for an embedder. [`Carshare::builder`] says where the data
//! lives, which contexts run (the built-in ones or a subset, components from bytes or files;
//! swaps made earlier are restored), the embedder's own subscribers, the admin token and the
//! base path; [`Builder::build`] opens it all. Then serve it on a socket
//! ([`Carshare::serve`]) or hand its [`App`] (a tower and hyper `Service`) to a router, and
//! [`Carshare::shutdown`] at the end.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use carshare_core::EventHandler;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{App, check_base_path};
use crate::runtime::Runtime;
use crate::start::{StartError, serve_until};

/// A context's component, as the builder was given it.
pub(crate) enum Component {
    /// The bytes of a component.
    Bytes(Vec<u8>),
    /// A component file, read when the system is built.
    File(PathBuf),
}

/// Which contexts run: the built-in ones (all, or those named), and components given by name,
/// which take the place of a built-in one of the same name.
pub(crate) struct ContextPlan {
    /// `None`: every built-in context.
    pub(crate) builtin: Option<BTreeSet<String>>,
    pub(crate) given: Vec<(String, Component)>,
}

/// Sets up a [`Carshare`]; made by [`Carshare::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    config: Config,
    plan: ContextPlan,
    natives: Vec<(String, Arc<dyn EventHandler>)>,
    base_path: String,
}

impl Builder {
    /// Starts from a whole [`Config`] (what `carshare serve` takes): its data directory,
    /// limits, cluster and `contexts` files.
    pub fn config(mut self, config: Config) -> Builder {
        self.plan
            .given
            .retain(|(name, _)| !config.contexts.contains_key(name));
        for (name, path) in &config.contexts {
            self.plan
                .given
                .push((name.clone(), Component::File(path.clone())));
        }
        self.config = config;
        self
    }

    /// Where the database lives (made if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.config.data_dir = dir.into();
        self
    }

    /// Partitions of the log and state; fixed when the data directory is made.
    pub fn partitions(mut self, n: u32) -> Builder {
        self.config.partitions = n;
        self
    }

    /// Turns the admin API on, behind this bearer token.
    pub fn admin_token(mut self, token: impl Into<String>) -> Builder {
        self.config.admin_token = Some(token.into());
        self
    }

    /// Serves under `path` (e.g. `/carshare`): links, `Location`s, the OpenAPI server URL and
    /// the system page carry it. Checked by [`Builder::build`].
    pub fn base_path(mut self, path: impl Into<String>) -> Builder {
        self.base_path = path.into();
        self
    }

    /// Runs only these built-in contexts (see [`crate::DEFAULT_CONTEXTS`]); none with an
    /// empty list. An unknown name is refused by [`Builder::build`].
    pub fn builtin_contexts<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Builder {
        self.plan.builtin = Some(names.into_iter().map(str::to_string).collect());
        self
    }

    /// Runs context `name` from the bytes of a component (instead of a built-in one so named).
    pub fn context_bytes(mut self, name: impl Into<String>, component: impl Into<Vec<u8>>) -> Builder {
        let name = name.into();
        self.plan.given.retain(|(n, _)| *n != name);
        self.plan.given.push((name, Component::Bytes(component.into())));
        self
    }

    /// Runs context `name` from a component file (instead of a built-in one so named).
    pub fn context_file(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Builder {
        let name = name.into();
        self.plan.given.retain(|(n, _)| *n != name);
        self.plan.given.push((name, Component::File(path.into())));
        self
    }

    /// Subscribes a handler of the embedder's own under `name` (see [`Runtime::subscribe`]):
    /// the same cursors, retries, dead letters, admin API and metrics as a context's
    /// subscriber. A name a context has is refused by [`Builder::build`].
    pub fn subscriber(mut self, name: impl Into<String>, handler: Arc<dyn EventHandler>) -> Builder {
        self.natives.push((name.into(), handler));
        self
    }

    /// Opens the log, loads the contexts and subscribes the native subscribers. Must be
    /// called inside a tokio runtime.
    pub async fn build(self) -> Result<Carshare, StartError> {
        let base_path = check_base_path(&self.base_path)?;
        if let Some(names) = &self.plan.builtin
            && let Some(unknown) = names
                .iter()
                .find(|n| !crate::DEFAULT_CONTEXTS.iter().any(|(b, _)| b == n))
        {
            return Err(StartError::UnknownBuiltin {
                name: unknown.clone(),
                known: crate::DEFAULT_CONTEXTS.iter().map(|(n, _)| *n).collect(),
            });
        }
        let runtime = crate::start::open_with(&self.config, &self.plan).await?;
        for (name, handler) in self.natives {
            if let Err(source) = runtime.subscribe(&name, handler) {
                runtime.shutdown().await;
                return Err(StartError::Subscribe { name, source });
            }
        }
        let app = App::new(runtime.clone())
            .with_admin_token(self.config.admin_token.clone())
            .with_max_body(self.config.max_body)
            .with_base_path(&base_path)?;
        Ok(Carshare {
            runtime,
            app,
            config: self.config,
        })
    }
}

/// A carshare system, opened: its runtime and its HTTP service.
pub struct Carshare {
    runtime: Runtime,
    app: App,
    config: Config,
}

impl Carshare {
    /// A builder with the defaults of [`Config`] and every built-in context.
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            plan: ContextPlan {
                builtin: None,
                given: Vec::new(),
            },
            natives: Vec::new(),
            base_path: String::new(),
        }
    }

    /// The runtime: handle requests without HTTP, swap contexts, read status.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The HTTP service (a tower and hyper `Service`; cheap to clone): mount it in a router.
    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serves on `listener` until `shutdown` resolves (or, in a cluster, until this process
    /// must stop serving), then shuts down: readiness fails, connections finish, the runtime
    /// stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        serve_until(self.runtime, self.app, &self.config, listener, shutdown).await
    }

    /// Stops the subscribers and closes the log (for a system served through [`Carshare::app`]).
    pub async fn shutdown(self) {
        self.runtime.begin_shutdown();
        self.runtime.shutdown().await;
    }
}
