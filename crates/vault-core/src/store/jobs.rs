//! Refresh jobs: queueing, claims, completion, failure, re-sealing.

use super::*;

impl Store {
    /// Claim the next visible job of `pool` (the external queue when `external`), hidden for
    /// `visibility_ms`. `None` when nothing is visible or `limit` jobs are already in flight.
    pub async fn job_claim(
        &self,
        pool: &str,
        external: bool,
        visibility_ms: u64,
        limit: Option<u32>,
    ) -> Result<Option<ClaimedJob>> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let v: reply::Claimed = self
            .eval(
                &scripts::JOB_CLAIM,
                pool,
                &[
                    if external { "1" } else { "0" }.into(),
                    job_id,
                    visibility_ms.to_string(),
                    opt_arg(limit),
                ],
            )
            .await?;
        Ok(v.job)
    }

    /// One page of a pool's token ids (SSCAN); `None` cursor at the end.
    pub async fn token_ids_page(
        &self,
        pool: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let (next, ids): (u64, Vec<String>) = self
            .cmd(
                redis::cmd("SSCAN")
                    .arg(self.keys.pool(pool).ids())
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .clone(),
            )
            .await?;
        Ok((ids, (next != 0).then_some(next)))
    }

    /// Re-seal one token's ciphertexts under the current key (compare-and-set against what was
    /// read). Returns false when the token changed meanwhile (nothing written).
    pub async fn reseal(
        &self,
        pool: &str,
        id: &str,
        read: (&str, &str, &str),
        secret: &Sealed,
        refresh: Option<&Sealed>,
        proxy: Option<&Sealed>,
    ) -> Result<bool> {
        let v: reply::Resealed = self
            .eval(
                &scripts::RESEAL,
                pool,
                &[
                    id.to_string(),
                    read.0.to_string(),
                    secret.data.clone(),
                    secret.key_id.clone(),
                    read.1.to_string(),
                    refresh.map(|r| r.data.clone()).unwrap_or_default(),
                    refresh.map(|r| r.key_id.clone()).unwrap_or_default(),
                    read.2.to_string(),
                    proxy.map(|r| r.data.clone()).unwrap_or_default(),
                    proxy.map(|r| r.key_id.clone()).unwrap_or_default(),
                ],
            )
            .await?;
        Ok(v.resealed)
    }

    /// The pool's default refresh settings as stored: the JSON and the sealed client secret.
    pub async fn pool_refresh_raw(&self, pool: &str) -> Result<(String, Sealed)> {
        let (json, data, key_id): (Option<String>, Option<String>, Option<String>) = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(self.keys.pool(pool).cfg())
                    .arg(&["refresh", "refresh_ct", "refresh_key_id"])
                    .clone(),
            )
            .await?;
        Ok((
            json.unwrap_or_default(),
            Sealed {
                data: data.unwrap_or_default(),
                key_id: key_id.unwrap_or_default(),
            },
        ))
    }

    /// Rewrite the pool's default refresh settings (JSON and sealed client secret), compare-and-
    /// set against what [`Store::pool_refresh_raw`] read. False when they changed meanwhile.
    pub async fn pool_reseal(
        &self,
        pool: &str,
        read: (&str, &str),
        new: &PoolRefresh,
    ) -> Result<bool> {
        let sealed = new.client_secret.clone().unwrap_or_default();
        let v: reply::Resealed = self
            .eval(
                &scripts::POOL_RESEAL,
                pool,
                &[
                    read.0.to_string(),
                    read.1.to_string(),
                    serde_json::to_string(new).expect("refresh settings serialize"),
                    sealed.data,
                    sealed.key_id,
                ],
            )
            .await?;
        Ok(v.resealed)
    }

    /// The job's token and the refresh attempts it had failed when it was claimed (`JobGone`
    /// when the job record is gone).
    pub async fn job_token(&self, pool: &str, job_id: &str) -> Result<(String, u32)> {
        let key = self.keys.pool(pool).job(job_id);
        let (token, attempts): (Option<String>, Option<u32>) = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("token")
                    .arg("attempts")
                    .clone(),
            )
            .await?;
        Ok((token.ok_or(VaultError::JobGone)?, attempts.unwrap_or(0)))
    }

    /// Store a refreshed credential for a claimed job (sealed by the caller). A credential too
    /// short-lived for the pool's margin is stored but counts as a failed attempt (retried
    /// after `retry.backoff`, quarantined at `retry.max_attempts`): see the result's `error`.
    pub async fn job_complete(
        &self,
        pool: &str,
        job_id: &str,
        attempts_before: u32,
        done: &RefreshedToken,
        retry: &RetryPolicy,
    ) -> Result<RefreshResult> {
        let mut v: RefreshResult = self
            .eval(
                &scripts::JOB_COMPLETE,
                pool,
                &[
                    job_id.to_string(),
                    done.secret_ct.clone(),
                    done.key_id.clone(),
                    done.fingerprint.clone(),
                    done.expires_at.to_string(),
                    done.refresh_ct.clone(),
                    done.refresh_key_id.clone(),
                    (retry.backoff(attempts_before + 1).as_millis() as u64).to_string(),
                    retry.max_attempts.to_string(),
                ],
            )
            .await?;
        v.fingerprint = Some(done.fingerprint.clone());
        Ok(v)
    }

    /// Record a failed attempt: retry after `retry_after_ms`, or quarantine (`None`, or the
    /// `max_attempts`-th failure).
    pub async fn job_fail(
        &self,
        pool: &str,
        job_id: &str,
        error: &str,
        retry_after_ms: Option<u64>,
        max_attempts: u32,
    ) -> Result<RefreshResult> {
        let v: RefreshResult = self
            .eval(
                &scripts::JOB_FAIL,
                pool,
                &[
                    job_id.to_string(),
                    error.to_string(),
                    opt_arg(retry_after_ms),
                    max_attempts.to_string(),
                ],
            )
            .await?;
        Ok(v)
    }

    /// Emergency rotation: deprecate every active token, queue their refresh, revoke at
    /// `sunset_ms` what was not refreshed. Returns (rotation id, tokens deprecated).
    pub async fn pool_rotate(
        &self,
        pool: &str,
        sunset_ms: i64,
        reason: &str,
    ) -> Result<(String, u64)> {
        let rid = uuid::Uuid::new_v4().to_string();
        let v: reply::OpStarted = self
            .eval(
                &scripts::POOL_ROTATE,
                pool,
                &[sunset_ms.to_string(), reason.to_string(), rid.clone()],
            )
            .await?;
        let op = self.pool_op_finish(pool, &v.op_id).await?;
        Ok((rid, op.affected))
    }

    /// Roll an emergency rotation back; returns how many tokens are active again.
    pub async fn pool_rotate_cancel(&self, pool: &str) -> Result<u64> {
        let v: reply::OpStarted = self.eval(&scripts::POOL_ROTATE_CANCEL, pool, &[]).await?;
        Ok(self.pool_op_finish(pool, &v.op_id).await?.affected)
    }

    /// Revoke deprecated tokens past their sunset; returns the token ids.
    /// Revoke up to `max` deprecated tokens whose sunset passed. Returns each token with the
    /// leases it ended (see [`Store::sunset_due`] for the version that announces them).
    pub async fn sunset_tokens(
        &self,
        pool: &str,
        max: usize,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let v: reply::Sunset = self
            .eval(&scripts::SUNSET_TOKENS, pool, &[max.to_string()])
            .await?;
        Ok(v.revoked
            .into_iter()
            .map(|r| (r.token_id, r.leases_ended))
            .collect())
    }
}
