//! Synchronous calls into another context, inside the caller's unit of work.

use crate::bindings::carshare::context::calls as host;
use crate::{Error, Request, Response};

/// Calls `context` with `request`. A callee's error comes back as `Err` with its writes and
/// events already undone; if the caller returns an error too, the whole unit is aborted.
pub fn call(context: &str, request: Request) -> Result<Response, Error> {
    host::call(context, &request.into())
        .map(Into::into)
        .map_err(Into::into)
}
