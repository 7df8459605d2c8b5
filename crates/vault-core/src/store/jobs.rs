//! Refresh jobs: queueing, claims, completion, failure, re-sealing.

use super::*;

impl Store {
    /// Claim the next visible job of `pool` (the external queue when `external`), hidden for
    /// `visibility_ms`. `None` when nothing is visible or `limit` jobs are already in flight.
    pub(crate) async fn job_claim(
        &self,
        pool: &str,
        external: bool,
        visibility_ms: u64,
        limit: Option<u32>,
    ) -> Result<Option<ClaimedJob>> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let v: reply::Claimed = self
            .call(
                pool,
                &scripts::JobClaim {
                    external,
                    job_id,
                    visibility_ms,
                    in_flight_limit: limit.map(u64::from),
                },
            )
            .await?;
        Ok(v.job)
    }

    /// One page of a pool's token ids (HSCAN of `tokens`); `None` cursor at the end.
    pub async fn token_ids_page(
        &self,
        pool: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        self.hscan_page(&self.keys.pool(pool).ids(), cursor, count)
            .await
    }

    /// Re-seal one token's ciphertexts under the current key (compare-and-set against what was
    /// read). Returns false when the token changed meanwhile (nothing written).
    pub(crate) async fn reseal(
        &self,
        pool: &str,
        id: &str,
        read: (&str, &str, &str),
        secret: &Sealed,
        refresh: Option<&Sealed>,
        proxy: Option<&Sealed>,
    ) -> Result<bool> {
        let v: reply::Resealed = self
            .call(
                pool,
                &scripts::Reseal {
                    token_id: id.to_string(),
                    secret_read: scripts::Blob(Sealed::from_base64(read.0)?),
                    secret: scripts::Blob(secret.bytes()?),
                    key_id: secret.key_id.clone(),
                    refresh_ct_read: read.1.to_string(),
                    refresh_ct: refresh.map(|r| r.data.clone()).unwrap_or_default(),
                    refresh_key_id: refresh.map(|r| r.key_id.clone()).unwrap_or_default(),
                    proxy_ct_read: read.2.to_string(),
                    proxy_ct: proxy.map(|r| r.data.clone()).unwrap_or_default(),
                    proxy_key_id: proxy.map(|r| r.key_id.clone()).unwrap_or_default(),
                },
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
    pub(crate) async fn pool_reseal(
        &self,
        pool: &str,
        read: (&str, &str),
        new: &PoolRefresh,
    ) -> Result<bool> {
        let sealed = new.client_secret.clone().unwrap_or_default();
        let v: reply::Resealed = self
            .call(
                pool,
                &scripts::PoolReseal {
                    refresh_read: read.0.to_string(),
                    refresh_ct_read: read.1.to_string(),
                    refresh: serde_json::to_string(new).expect("refresh settings serialize"),
                    refresh_ct: sealed.data,
                    refresh_key_id: sealed.key_id,
                },
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
                    .arg("token_id")
                    .arg("attempts")
                    .clone(),
            )
            .await?;
        Ok((token.ok_or(VaultError::JobGone)?, attempts.unwrap_or(0)))
    }

    /// Store a refreshed credential for a claimed job (sealed by the caller). A credential too
    /// short-lived for the pool's margin is stored but counts as a failed attempt (retried
    /// after `retry.backoff`, quarantined at `retry.max_attempts`): see the result's `error`.
    pub(crate) async fn job_complete(
        &self,
        pool: &str,
        job_id: &str,
        attempts_before: u32,
        done: &RefreshedToken,
        retry: &RetryPolicy,
    ) -> Result<RefreshResult> {
        let mut v: RefreshResult = self
            .call(
                pool,
                &scripts::JobComplete {
                    job_id: job_id.to_string(),
                    secret: scripts::Blob(Sealed::from_base64(&done.secret_ct)?),
                    key_id: done.key_id.clone(),
                    fingerprint: done.fingerprint.clone(),
                    expires_at: done.expires_at,
                    refresh_ct: done.refresh_ct.clone(),
                    refresh_key_id: done.refresh_key_id.clone(),
                    retry_in_ms: retry.backoff(attempts_before + 1).as_millis() as u64,
                    max_attempts: retry.max_attempts.into(),
                },
            )
            .await?;
        v.fingerprint = Some(done.fingerprint.clone());
        Ok(v)
    }

    /// Record a failed attempt: retry after `retry_after_ms`, or quarantine (`None`, or the
    /// `max_attempts`-th failure).
    pub(crate) async fn job_fail(
        &self,
        pool: &str,
        job_id: &str,
        error: &str,
        retry_after_ms: Option<u64>,
        max_attempts: u32,
    ) -> Result<RefreshResult> {
        let v: RefreshResult = self
            .call(
                pool,
                &scripts::JobFail {
                    job_id: job_id.to_string(),
                    error_text: error.to_string(),
                    retry_in_ms: retry_after_ms,
                    max_attempts: max_attempts.into(),
                },
            )
            .await?;
        Ok(v)
    }

    /// Emergency rotation: deprecate every active token, queue their refresh, revoke at
    /// `sunset_ms` what was not refreshed. Returns (rotation id, tokens deprecated).
    pub(crate) async fn pool_rotate(
        &self,
        pool: &str,
        sunset_ms: i64,
        reason: &str,
    ) -> Result<(String, u64)> {
        let rid = uuid::Uuid::new_v4().to_string();
        let v: reply::OpStarted = self
            .call(
                pool,
                &scripts::PoolRotate {
                    sunset_at: sunset_ms,
                    reason: reason.to_string(),
                    rotation_id: rid.clone(),
                },
            )
            .await?;
        let op = self.pool_op_finish(pool, &v.op_id).await?;
        Ok((rid, op.affected))
    }

    /// Roll an emergency rotation back; returns how many tokens are active again.
    pub(crate) async fn pool_rotate_cancel(&self, pool: &str) -> Result<u64> {
        let v: reply::OpStarted = self.call(pool, &scripts::PoolRotateCancel {}).await?;
        Ok(self.pool_op_finish(pool, &v.op_id).await?.affected)
    }

    /// Revoke deprecated tokens past their sunset; returns the token ids.
    /// Revoke up to `max` deprecated tokens whose sunset passed. Returns each token with the
    /// leases it ended (see [`Store::sunset_due`] for the version that announces them).
    pub(crate) async fn sunset_tokens(
        &self,
        pool: &str,
        max: usize,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let v: reply::RevokedNow = self
            .call(pool, &scripts::SunsetTokens { batch: max as u64 })
            .await?;
        Ok(v.revoked
            .into_iter()
            .map(|r| (r.token_id, r.leases_ended))
            .collect())
    }
}
