//! One module per API section.

pub mod audit;
pub mod clients;
pub mod credentials;
pub mod docs;
pub mod health;
pub mod jobs;
pub mod leases;
pub mod pipelines;
pub mod pools;
pub mod tokens;
pub mod ui;

use vault_core::model::check_pool_name;

use crate::error::ApiError;

/// Validate a pool name from the path before it reaches a Redis key.
pub(crate) fn pool_name(name: &str) -> Result<&str, ApiError> {
    check_pool_name(name)?;
    Ok(name)
}
