//! Operations: a transition together with its side effects — the audit entry, the events, the
//! metric — made in one place, whoever triggers it (an API client, the janitor, the refresher),
//! so the same transition looks the same in the audit trail and on the event stream wherever it
//! came from.
//!
//! These are the only way to change state from outside this crate: the raw transitions on
//! [`Store`] (one per Lua function) are `pub(crate)`. A binary that changes a pool does it
//! through its operation, audited:
//!
//! ```no_run
//! # #![recursion_limit = "256"]
//! # async fn f(store: vault_core::Store, cfg: vault_core::model::PoolConfig) -> vault_core::Result<()> {
//! let actor = vault_core::ops::Actor::process("example");
//! store.upsert_pool(&actor, "p", &cfg).await?;
//! # Ok(()) }
//! ```
//!
//! and cannot call the raw transition beneath it:
//!
//! ```compile_fail,E0624
//! # #![recursion_limit = "256"]
//! # async fn f(store: vault_core::Store, cfg: vault_core::model::PoolConfig) -> vault_core::Result<()> {
//! store.pool_upsert("p", &cfg).await?;
//! # Ok(()) }
//! ```

mod clients;
mod jobs;
mod leases;
mod pipelines;
mod pools;
mod schedule;
mod tokens;
mod upkeep;

use crate::auth::Principal;
use crate::model::{AuditEntry, VaultEvent};
use crate::Store;

/// Who acts: a client token (its `sub` and `jti`) or one of the vault's own processes.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub jti: Option<String>,
}

impl Actor {
    /// One of the vault's own processes (`janitor`, `refresher`).
    pub fn process(name: &str) -> Self {
        Actor {
            name: name.into(),
            jti: None,
        }
    }

    /// An audit entry by this actor (fill the rest with struct update syntax).
    pub fn entry(&self, pool: Option<&str>, action: &str) -> AuditEntry {
        AuditEntry {
            actor: self.name.clone(),
            actor_jti: self.jti.clone(),
            action: action.into(),
            pool: pool.map(String::from),
            trace_id: crate::telemetry::current_trace_id(),
            ..Default::default()
        }
    }
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Self {
        Actor {
            name: p.sub.clone(),
            jti: Some(p.jti.clone()),
        }
    }
}

impl Store {
    /// Write an audit entry after its transition happened: a failure is logged loudly, never
    /// turned into an error (the transition stands).
    pub async fn record(&self, e: &AuditEntry) {
        if let Err(err) = self.audit(e.pool.as_deref(), e).await {
            tracing::error!(error = %err, action = %e.action, "audit entry could not be written");
        }
    }

    /// Publish `first`, then a `lease.revoked` for each `(token id, lease id)` it ended, so
    /// every holder learns at once. Failures are logged (the transition stands).
    pub async fn announce(&self, mut first: VaultEvent, leases: &[(Option<String>, String)]) {
        if first.trace_id.is_none() {
            first.trace_id = crate::telemetry::current_trace_id();
        }
        let ended = leases.iter().map(|(token_id, lease_id)| VaultEvent {
            kind: "lease.revoked".into(),
            token_id: token_id.clone().or_else(|| first.token_id.clone()),
            lease_id: Some(lease_id.clone()),
            ..first.clone()
        });
        let events: Vec<_> = std::iter::once(first.clone()).chain(ended).collect();
        if let Err(err) = self.publish_events(&events).await {
            tracing::error!(error = %err, kind = %events[0].kind, count = events.len(), "events could not be published");
        }
    }

    /// Unix ms by the one clock (Redis `TIME`; local time if Redis cannot say).
    pub async fn event_time(&self) -> i64 {
        self.now_ms()
            .await
            .unwrap_or_else(|_| crate::time::now_ms())
    }
}

/// What a pipeline `PUT` did.
#[derive(Debug, Clone)]
pub enum PipelinePut {
    /// Created (true) or resized, and where it stands now.
    Done(bool, Box<crate::model::PipelineStatus>),
    /// A dry run: what an assignment would get now.
    DryRun(crate::model::PipelineDryRun),
}
