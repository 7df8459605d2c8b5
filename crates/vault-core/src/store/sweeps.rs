//! The janitor's sweeps: each one bounded, idempotent transition.

use super::*;

impl Store {
    pub(crate) async fn reap_leases(&self, pool: &str, max: usize) -> Result<Vec<EndedLease>> {
        let v: reply::Reaped = self
            .call(pool, &scripts::ReapLeases { batch: max as u64 })
            .await?;
        Ok(v.reaped)
    }

    pub(crate) async fn return_cooled(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Returned = self
            .call(pool, &scripts::ReturnCooled { batch: max as u64 })
            .await?;
        Ok(v.returned)
    }

    pub(crate) async fn expire_tokens(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Moved = self
            .call(pool, &scripts::ExpireTokens { batch: max as u64 })
            .await?;
        Ok(v.moved)
    }

    /// Queue the refresh of tokens whose preemptive refresh is due; returns how many.
    pub(crate) async fn enqueue_due(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Enqueued = self
            .call(pool, &scripts::EnqueueDue { batch: max as u64 })
            .await?;
        Ok(v.enqueued)
    }
}
