//! Operations on pools: create or replace, delete, freeze and unfreeze, rotate.

use super::*;
use crate::model::PoolConfig;
use crate::model::{AuditEntry, VaultEvent};
use crate::store::EndedLease;
use crate::{Result, Store};

impl Store {
    /// Create or replace a pool's config. Returns whether it was created.
    #[tracing::instrument(name = "ops.upsert_pool", skip_all, fields(pool = %pool))]
    pub async fn upsert_pool(&self, actor: &Actor, pool: &str, cfg: &PoolConfig) -> Result<bool> {
        let created = self.pool_upsert(pool, cfg).await?;
        let action = if created {
            "pool.create"
        } else {
            "pool.update"
        };
        self.record(&actor.entry(Some(pool), action)).await;
        Ok(created)
    }

    /// Delete a pool (with its tokens when `force`). Returns how many tokens went with it.
    #[tracing::instrument(name = "ops.delete_pool", skip_all, fields(pool = %pool))]
    pub async fn delete_pool(&self, actor: &Actor, pool: &str, force: bool) -> Result<u64> {
        let deleted = self.pool_delete(pool, force).await?;
        self.record(&AuditEntry {
            detail: Some(format!("pool {pool} deleted with {deleted} tokens")),
            ..actor.entry(None, "pool.delete")
        })
        .await;
        Ok(deleted)
    }

    /// The kill switch: no lease is granted from now on; with `revoke_leases` the live ones
    /// end too, each announced.
    #[tracing::instrument(name = "ops.freeze_pool", skip_all, fields(pool = %pool))]
    pub async fn freeze_pool(
        &self,
        actor: &Actor,
        pool: &str,
        revoke_leases: bool,
        reason: &str,
    ) -> Result<Vec<EndedLease>> {
        let ended = self.freeze(pool, revoke_leases, reason).await?;
        tracing::warn!(pool, leases_ended = ended.len(), "pool frozen");
        let ev = VaultEvent {
            kind: "pool.frozen".into(),
            pool: pool.into(),
            at: self.event_time().await,
            reason: Some(reason.into()),
            ..Default::default()
        };
        let leases: Vec<_> = ended
            .iter()
            .map(|e| (Some(e.token_id.clone()), e.lease_id.clone()))
            .collect();
        self.announce(ev, &leases).await;
        self.record(&AuditEntry {
            detail: Some(format!("{reason} ({} leases ended)", ended.len())),
            ..actor.entry(Some(pool), "pool.freeze")
        })
        .await;
        Ok(ended)
    }

    #[tracing::instrument(name = "ops.unfreeze_pool", skip_all, fields(pool = %pool))]
    pub async fn unfreeze_pool(&self, actor: &Actor, pool: &str) -> Result<()> {
        self.unfreeze(pool).await?;
        self.record(&actor.entry(Some(pool), "pool.unfreeze")).await;
        let ev = VaultEvent {
            kind: "pool.unfrozen".into(),
            pool: pool.into(),
            at: self.event_time().await,
            ..Default::default()
        };
        self.announce(ev, &[]).await;
        Ok(())
    }

    /// Emergency rotation: every current token deprecated, refreshed in the background, revoked
    /// `sunset_s` from now unless refreshed. Returns the rotation id, how many tokens it covers
    /// and the sunset (unix ms).
    #[tracing::instrument(name = "ops.rotate_pool", skip_all, fields(pool = %pool))]
    pub async fn rotate_pool(
        &self,
        actor: &Actor,
        pool: &str,
        sunset_s: u64,
        reason: &str,
    ) -> Result<(String, u64, i64)> {
        let at = self.event_time().await;
        let sunset_ms = at + (sunset_s as i64) * 1000;
        let (rotation_id, tokens) = self.pool_rotate(pool, sunset_ms, reason).await?;
        tracing::warn!(pool, tokens, sunset_s, "emergency rotation started");
        self.record(&AuditEntry {
            detail: Some(format!(
                "{reason} ({tokens} tokens, sunset in {sunset_s} s)"
            )),
            ..actor.entry(Some(pool), "pool.rotate")
        })
        .await;
        let ev = VaultEvent {
            kind: "pool.rotating".into(),
            pool: pool.into(),
            at,
            reason: Some(reason.into()),
            ..Default::default()
        };
        self.announce(ev, &[]).await;
        Ok((rotation_id, tokens, sunset_ms))
    }

    /// Roll the running emergency rotation back. Returns how many tokens were restored.
    #[tracing::instrument(name = "ops.cancel_rotation", skip_all, fields(pool = %pool))]
    pub async fn cancel_rotation(&self, actor: &Actor, pool: &str) -> Result<u64> {
        let restored = self.pool_rotate_cancel(pool).await?;
        self.record(&AuditEntry {
            detail: Some(format!("{restored} tokens restored")),
            ..actor.entry(Some(pool), "pool.rotate_cancel")
        })
        .await;
        Ok(restored)
    }
}
