//! One module per API section.

pub mod audit;
pub mod clients;
pub mod health;
pub mod jobs;
pub mod leases;
pub mod pools;
pub mod tokens;

use vault_core::auth::Principal;
use vault_core::model::{check_pool_name, AuditEntry};

use crate::error::ApiError;
use crate::AppState;

/// An audit entry by `who` (fill the rest with struct update syntax).
pub(crate) fn entry(who: &Principal, action: &str) -> AuditEntry {
    AuditEntry {
        actor: who.sub.clone(),
        actor_jti: Some(who.jti.clone()),
        action: action.to_string(),
        ..Default::default()
    }
}

/// Record an audit entry after a transition succeeded. The transition already happened, so a
/// failure to record it is logged loudly, not turned into an error answer.
pub(crate) async fn record(s: &AppState, pool: Option<&str>, mut e: AuditEntry) {
    e.pool = pool.map(String::from);
    if let Err(err) = s.store.audit(pool, &e).await {
        tracing::error!(error = %err, action = %e.action, "audit entry could not be written");
    }
}

/// Validate a pool name from the path before it reaches a Redis key.
pub(crate) fn pool_name(name: &str) -> Result<&str, ApiError> {
    check_pool_name(name)?;
    Ok(name)
}
