//! The vault's own upkeep, by the janitor and by `vaultctl`: sweeps (leases past their TTL,
//! tokens back from cooldown, tokens past their expiry), a pool operation's next batch, the
//! layout migration and re-sealing under a new key. None of these is an act of a client: they
//! publish what their scripts publish, and are not audited one by one.

use crate::crypto::Sealed;
use crate::model::PoolRefresh;
use crate::store::{EndedLease, PoolOp};
use crate::{Result, Store};

impl Store {
    /// End up to `max` leases of `pool` past their TTL.
    #[tracing::instrument(name = "ops.sweep_expired_leases", skip_all, fields(pool = %pool))]
    pub async fn sweep_expired_leases(&self, pool: &str, max: usize) -> Result<Vec<EndedLease>> {
        self.reap_leases(pool, max).await
    }

    /// Return up to `max` tokens of `pool` whose cooldown is over.
    #[tracing::instrument(name = "ops.sweep_cooled_tokens", skip_all, fields(pool = %pool))]
    pub async fn sweep_cooled_tokens(&self, pool: &str, max: usize) -> Result<u64> {
        self.return_cooled(pool, max).await
    }

    /// Move up to `max` tokens of `pool` past their expiry out of rotation.
    #[tracing::instrument(name = "ops.sweep_expired_tokens", skip_all, fields(pool = %pool))]
    pub async fn sweep_expired_tokens(&self, pool: &str, max: usize) -> Result<u64> {
        self.expire_tokens(pool, max).await
    }

    /// Work the next batch of `pool`'s running operation (a rotation, a delete).
    #[tracing::instrument(name = "ops.step_pool_operation", skip_all, fields(pool = %pool))]
    pub async fn step_pool_operation(&self, pool: &str, op_id: &str) -> Result<PoolOp> {
        self.pool_op_step(pool, op_id).await
    }

    /// Bring `pool` to the current layout, `batch` tokens a call; `progress(done, total)`.
    #[tracing::instrument(name = "ops.migrate_pool_layout", skip_all, fields(pool = %pool))]
    pub async fn migrate_pool_layout(
        &self,
        pool: &str,
        batch: u64,
        progress: impl FnMut(u64, u64),
    ) -> Result<u64> {
        self.migrate_layout(pool, batch, progress).await
    }

    /// Replace a token's sealed values with the same ones sealed under the current key, if
    /// they are still what was `read` (a concurrent change wins). Returns whether it did.
    #[tracing::instrument(name = "ops.reseal_token", skip_all, fields(pool = %pool))]
    pub async fn reseal_token(
        &self,
        pool: &str,
        id: &str,
        read: (&str, &str, &str),
        secret: &Sealed,
        refresh: Option<&Sealed>,
        proxy: Option<&Sealed>,
    ) -> Result<bool> {
        self.reseal(pool, id, read, secret, refresh, proxy).await
    }

    /// The same for a pool's refresh settings (its client secret).
    #[tracing::instrument(name = "ops.reseal_pool_refresh", skip_all, fields(pool = %pool))]
    pub async fn reseal_pool_refresh(
        &self,
        pool: &str,
        read: (&str, &str),
        new: &PoolRefresh,
    ) -> Result<bool> {
        self.pool_reseal(pool, read, new).await
    }
}
