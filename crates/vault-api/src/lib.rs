//! vault-api: the REST server workers and operators talk to. Stateless: every decision is a Lua
//! script in Redis, so any number of replicas serve the same pools.
//!
//! # Layout
//! - [`config`]: `ApiConfig`, the binary's settings (clap + env).
//! - [`app`]: `AppState` and [`app::router`], the whole HTTP surface (also used by tests).
//! - [`auth`]: client-token middleware (scopes, pools), the revocation deny set.
//! - [`routes`]: one module per API section (pools, tokens, leases, refresh jobs, clients, health).
//! - [`events`]: server-sent events fed by one Redis subscription per replica.
//! - [`error`]: `ApiError`, problem+json for every failure.
//! - [`extract`]: path/query/body extractors that reject in the same format.
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations.
//! - [`server`]: bind, serve, graceful shutdown on SIGTERM/ctrl-c.
//! - [`background`]: what a replica does besides answering: lease counts to Redis, pool gauges.

// The lease future (its wait loop over the store) is deep; gRPC's boxed trait methods need
// the compiler to look further than the default.
#![recursion_limit = "256"]

pub mod answers;
pub mod app;
pub mod auth;
pub mod background;
pub mod config;
mod conn;
pub mod error;
pub mod events;
pub mod extract;
pub mod grpc;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod trace;

pub use app::{router, AppState};
pub use config::ApiConfig;
