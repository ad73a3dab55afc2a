//! The HTTP edge: [`App`] is the whole service without a socket (`app`), reading each body
//! within its limit and handing the request to the host's own paths (`system`: the API root
//! and the probes), the operator API (`admin`, behind `auth`; its page `ui` needs no token
//! because it holds no data) or the contexts (`gateway`).
//! `server` accepts connections, admitted by `conns`. Errors become HTTP in `error` and
//! nowhere else.

mod admin;
mod app;
mod asyncapi;
mod auth;
mod conns;
mod error;
mod gateway;
mod openapi;
mod server;
mod system;
mod ui;

pub(crate) use app::check_base_path;
pub use app::{App, BasePathError};
pub use conns::ConnectionLimits;
pub use error::ApiError;
pub use server::serve;
