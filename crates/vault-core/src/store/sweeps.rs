//! The janitor's sweeps: each one bounded, idempotent transition.

use super::*;

impl Store {
    pub async fn reap_leases(&self, pool: &str, max: usize) -> Result<Vec<EndedLease>> {
        let v: reply::Reaped = self
            .eval(&scripts::REAP_LEASES, pool, &[max.to_string()])
            .await?;
        Ok(v.reaped)
    }

    pub async fn return_cooled(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Returned = self
            .eval(&scripts::RETURN_COOLED, pool, &[max.to_string()])
            .await?;
        Ok(v.returned)
    }

    pub async fn expire_tokens(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Moved = self
            .eval(&scripts::EXPIRE_TOKENS, pool, &[max.to_string()])
            .await?;
        Ok(v.moved)
    }

    /// Queue the refresh of tokens whose preemptive refresh is due; returns how many.
    pub async fn enqueue_due(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Enqueued = self
            .eval(&scripts::ENQUEUE_DUE, pool, &[max.to_string()])
            .await?;
        Ok(v.enqueued)
    }
}
