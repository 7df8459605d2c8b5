//! Operations on refresh jobs, whoever runs them (the refresher, an external login worker):
//! queueing what is due, claiming, and completing or failing a job, each result recorded once
//! (audit entry, event, metric) by [`Store::record_refresh`].

use super::*;
use crate::refresh::{ClaimedJob, RefreshResult, RefreshedToken, RetryPolicy};
use crate::{Result, Store};

impl Store {
    /// Queue refresh jobs for up to `max` tokens of `pool` that are due (near expiry, burned).
    #[tracing::instrument(name = "ops.enqueue_due_refreshes", skip_all, fields(pool = %pool))]
    pub async fn enqueue_due_refreshes(&self, pool: &str, max: usize) -> Result<u64> {
        self.enqueue_due(pool, max).await
    }

    /// Claim the next job of `pool` for `visibility_ms` (external: one meant for login
    /// workers), at most `limit` attempts in flight; None when there is none.
    #[tracing::instrument(name = "ops.claim_refresh_job", skip_all, fields(pool = %pool))]
    pub async fn claim_refresh_job(
        &self,
        pool: &str,
        external: bool,
        visibility_ms: u64,
        limit: Option<u32>,
    ) -> Result<Option<ClaimedJob>> {
        self.job_claim(pool, external, visibility_ms, limit).await
    }

    /// Complete a claimed job with the new secret, and record the result.
    #[tracing::instrument(name = "ops.complete_refresh_job", skip_all, fields(pool = %pool))]
    pub async fn complete_refresh_job(
        &self,
        actor: &Actor,
        pool: &str,
        job_id: &str,
        attempts_before: u32,
        done: &RefreshedToken,
        retry: &RetryPolicy,
    ) -> Result<RefreshResult> {
        let r = self
            .job_complete(pool, job_id, attempts_before, done, retry)
            .await?;
        self.record_refresh(actor, pool, &r).await;
        Ok(r)
    }

    /// Fail a claimed job (retried after `retry_after_ms`, or quarantined when None or at
    /// `max_attempts`), and record the result.
    #[tracing::instrument(name = "ops.fail_refresh_job", skip_all, fields(pool = %pool))]
    pub async fn fail_refresh_job(
        &self,
        actor: &Actor,
        pool: &str,
        job_id: &str,
        error: &str,
        retry_after_ms: Option<u64>,
        max_attempts: u32,
    ) -> Result<RefreshResult> {
        let r = self
            .job_fail(pool, job_id, error, retry_after_ms, max_attempts)
            .await?;
        self.record_refresh(actor, pool, &r).await;
        Ok(r)
    }
}
