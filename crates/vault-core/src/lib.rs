//! vault-core: everything about tokenvault that is not HTTP or a process.
//!
//! # Layout
//! - [`auth`]: client tokens (EdDSA JWTs): key ring, minting, verification, scopes, JWKS.
//! - [`keys`]: the one Redis key builder (`tv:{pool}:...`, hash tag kept for Redis Cluster).
//! - [`scripts`]: the Lua function library (`lua/rules/`, `lua/`), assembled at build time.
//! - [`store`]: typed transitions, one Rust function per Lua function, plus plain reads.
//! - [`ops`]: transitions with their audit entry and events, the same whoever triggers them.
//! - [`model`]: domain types by aggregate (pool, token, lease, refresh settings, status), with validation.
//! - [`refresh`]: unsealing a claimed refresh job's credentials, sealing refreshed tokens.
//! - [`crypto`]: AES-256-GCM for secrets at rest, fingerprints, the redacting [`crypto::Secret`].
//! - [`error`]: [`VaultError`], the one error type of the request path.
//! - [`config`]: the settings every binary shares (`TV_REDIS_URL`, `TV_PREFIX`, ...).
//! - [`time`]: RFC 3339 / unix-ms conversions (the clock itself is Redis `TIME`).

pub mod auth;
pub mod config;
pub mod crypto;
pub mod error;
pub mod global;
pub mod keys;
pub mod model;
pub mod ops;
pub mod refresh;
pub mod scripts;
pub mod store;
pub mod telemetry;
pub mod time;

pub use error::VaultError;
pub use store::Store;

/// Result type of the request path.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
