//! Every integration test of the host, as one test binary (one link of wasmtime instead of
//! one per file): each module but `embedded` starts the real `carshare` binary through the
//! shared fixture in `common` and talks to it over HTTP; `embedded` uses the library in process.
//!
//! - `foundation`: atomic units, durability across kills and restarts, 4xx errors, the admin
//!   token, configuration.
//! - `author`: a new context author's path: `carshare new context`, the harness test, build,
//!   add, walk, swap a v2, restart.
//! - `backup`: `carshare backup` while orders commit, `carshare restore`, and what they refuse.
//! - `business`: the rent and cancel flows, stock, sagas, dead letters, the breaker.
//! - `cli`: help, version, completions, config errors, `carshare events tail`.
//! - `swap`: hot swap and rollback under load, the sandbox limits.
//! - `newcomer`: the reference clients' walk, the API root, probes, the compile cache.
//! - `observe`: metrics, request and correlation ids, log lines.
//! - `openapi`: the OpenAPI document, and schemathesis against the real server.
//! - `ui`: the live system page in Chromium, driven by Playwright.
//! - `events`: the event catalog: declared events, misspelled subscriptions refused, an
//!   undeclared event never published, `/asyncapi.json` checked by the AsyncAPI parser.
//! - `steps`: a subscriber's step as one call, and an event failing in it undone alone.
//! - `cluster`: several hosts on real NATS servers: what a cluster was built for, and faults.
//! - `embedded`: in process, as an embedder uses the library: a native Rust subscriber beside
//!   the contexts, and the names they may not share.
//! - `abuse`: connection floods, errors on keep-alive connections, a misbehaving context.
//! - `volume`: a million orders, every listing and search at its first, middle and last page
//!   (ignored in the default run; `.ci/run` runs it).

mod common;

mod abuse;
mod author;
mod backup;
mod business;
mod cli;
mod cluster;
mod embedded;
mod events;
mod foundation;
mod newcomer;
mod observe;
mod openapi;
mod partitions;
mod steps;
mod swap;
mod ui;
mod volume;
