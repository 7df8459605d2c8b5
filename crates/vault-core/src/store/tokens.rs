//! Tokens: deposit, metadata, and the per-token transitions.

use super::*;
use crate::model::{Deposited, QuotaNow};

/// Tokens one call of `revoke_fingerprint.lua` revokes (a secret held by many tokens of a
/// pool is revoked in several short calls).
pub(super) const FINGERPRINT_BATCH: u64 = 100;

impl Store {
    /// Deposit tokens, all or nothing, in calls of at most `DEPOSIT_BATCH` tokens so that no
    /// call holds Redis long (a call of 1,000 tokens ran for 35 ms): first every id is checked
    /// and reserved, then the tokens are written. A deposit that fails while reserving gives its
    /// reservations back; one stopped for good (the process died) lets go at their deadline.
    /// Tokens already in the pool with the same secret are left as they are, so a deposit that
    /// stopped while writing (Redis failing midway) completes when it is tried again.
    pub(crate) async fn deposit(&self, pool: &str, tokens: &[SealedToken]) -> Result<Deposited> {
        let reserved_until = self.now_ms().await? + DEPOSIT_RESERVATION_MS;
        let batches: Vec<&[SealedToken]> = tokens.chunks(DEPOSIT_BATCH).collect();
        for (n, batch) in batches.iter().enumerate() {
            let checks: Vec<serde_json::Value> = batch
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "id": t.id, "fingerprint": t.fingerprint,
                        "expires_at": t.expires_at, "quota_limit": t.quota_limit,
                    })
                })
                .collect();
            let reserve = scripts::DepositReserve {
                tokens: serde_json::Value::from(checks).to_string(),
                reserved_until,
            };
            if let Err(e) = self.call::<_, Value>(pool, &reserve).await {
                self.deposit_release(pool, &batches[..n], reserved_until)
                    .await;
                return Err(e);
            }
        }
        let mut done = Deposited::default();
        for (n, batch) in batches.iter().enumerate() {
            // The secrets go as bytes beside the JSON (which cannot carry them).
            let mut secrets = Vec::with_capacity(batch.len());
            let mut described = Vec::with_capacity(batch.len());
            for t in batch.iter() {
                secrets.push(scripts::Blob(Sealed::from_base64(&t.secret_ct)?));
                let mut v = serde_json::to_value(t).expect("tokens serialize");
                v.as_object_mut().map(|o| o.remove("secret_ct"));
                described.push(v);
            }
            let write = scripts::Deposit {
                tokens: Value::from(described).to_string(),
                reserved_until,
                secrets,
            };
            match self.call::<_, reply::Deposited>(pool, &write).await {
                Ok(v) => {
                    done.ids.extend(v.ids);
                    done.unchanged.extend(v.unchanged);
                }
                Err(e) => {
                    // Only a pool deleted meanwhile, a deposit slower than its reservations or
                    // Redis failing midway gets here; the batches written stay.
                    tracing::error!(pool, written = done.ids.len(), of = tokens.len(), error = %e, "deposit stopped midway");
                    self.deposit_release(pool, &batches[n..], reserved_until)
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Give back the reservations of `batches` (best effort: what is not given back lapses).
    async fn deposit_release(&self, pool: &str, batches: &[&[SealedToken]], reserved_until: i64) {
        for batch in batches {
            let release = scripts::DepositRelease {
                reserved_until,
                ids: batch.iter().map(|t| t.id.clone()).collect(),
            };
            if let Err(e) = self.call::<_, Value>(pool, &release).await {
                tracing::warn!(pool, error = %e, "deposit reservations not given back; they lapse by themselves");
                return;
            }
        }
    }

    /// The raw token hash and its sealed secret (base64, as `secret_ct`): for the vault's own
    /// use (`vaultctl keys reencrypt`), never answered.
    pub async fn token_fields(&self, pool: &str, id: &str) -> Result<HashMap<String, String>> {
        let pk = self.keys.pool(pool);
        let internal: Option<String> = self
            .cmd(redis::cmd("HGET").arg(pk.ids()).arg(id).clone())
            .await?;
        let Some(internal) = internal else {
            self.pool_get(pool).await?;
            return Err(VaultError::TokenNotFound);
        };
        let mut p = redis::pipe();
        p.cmd("HGETALL").arg(pk.token(&internal));
        p.cmd("GET").arg(pk.secret(&internal));
        let (mut f, secret): (HashMap<String, String>, Option<Vec<u8>>) = self.pipe(p).await?;
        if f.is_empty() {
            return Err(VaultError::TokenNotFound);
        }
        f.insert(
            "secret_ct".into(),
            Sealed::from_bytes("", &secret.unwrap_or_default()).data,
        );
        Ok(f)
    }

    /// Now, by the one clock (Redis `TIME`, or the pinned test clock).
    pub async fn now_ms(&self) -> Result<i64> {
        if let Some(c) = &self.clock {
            return Ok(c.load(Ordering::SeqCst));
        }
        let (s, us): (i64, i64) = self.cmd(redis::cmd("TIME")).await?;
        Ok(s * 1000 + us / 1000)
    }

    pub async fn token_get(&self, pool: &str, id: &str) -> Result<TokenMeta> {
        let now = self.now_ms().await?;
        let row = self
            .token_rows(
                pool,
                &TokenMeta::FIELDS,
                std::slice::from_ref(&id.to_string()),
            )
            .await?
            .pop()
            .flatten();
        row.and_then(|(values, quota)| TokenMeta::from_row(&values, quota, now))
            .ok_or(VaultError::TokenNotFound)
    }

    /// Tokens' stored `fields` (in that order) and their quotas as the quota rule reads them now
    /// (`token_rows.lua`; `default` first, then the pool's others), one entry per id: None for a
    /// token that does not exist.
    pub(super) async fn token_rows(
        &self,
        pool: &str,
        fields: &[&str],
        ids: &[String],
    ) -> Result<Vec<Option<(Vec<Option<String>>, Vec<QuotaNow>)>>> {
        let call = scripts::TokenRows {
            fields: serde_json::to_string(fields).expect("field names serialize"),
            ids: ids.to_vec(),
        };
        let v: reply::TokenRows = self.call(pool, &call).await?;
        Ok(v.rows
            .into_iter()
            .map(|r| {
                let others = r.quotas;
                r.fields.zip(r.quota.map(|q| {
                    let mut all = vec![q];
                    all.extend(others);
                    all
                }))
            })
            .collect())
    }

    /// One page of token metadata, optionally only tokens in view state `state`.
    /// Returns the page and the cursor of the next one (None at the end).
    pub async fn token_list(
        &self,
        pool: &str,
        state: Option<&str>,
        limit: usize,
        cursor: u64,
    ) -> Result<(Vec<TokenMeta>, Option<u64>)> {
        let pk = self.keys.pool(pool);
        // Internal ids from a view set, the user's ids from `tokens`: token_rows reads both.
        let (ids, next) = match state {
            Some(s) => self.sscan_page(&pk.view(s), cursor, limit).await?,
            None => self.hscan_page(&pk.ids(), cursor, limit).await?,
        };
        // Called even for an empty page: it answers pool_not_found for an unknown pool.
        let rows = self.token_rows(pool, &TokenMeta::FIELDS, &ids).await?;
        let now = self.now_ms().await?;
        // `v:active` also holds the leased and cooling tokens (`view_counts`): a page of
        // `?state=active` leaves them out, and may come out shorter than `limit`.
        let mut metas: Vec<TokenMeta> = rows
            .into_iter()
            .flatten()
            .filter_map(|(values, quota)| TokenMeta::from_row(&values, quota, now))
            .filter(|m| state.is_none_or(|s| m.state == s))
            .collect();
        metas.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((metas, next))
    }

    pub(crate) async fn token_delete(&self, pool: &str, id: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .call(
                pool,
                &scripts::TokenDelete {
                    token_id: id.into(),
                },
            )
            .await?;
        Ok(v.leases_ended)
    }

    /// Revoke at once; returns the leases that ended (empty when it was already revoked).
    /// The revocation transition alone; [`Store::revoke_token`] also announces and audits it.
    /// Revoke every token of `pool` whose secret has `fingerprint`, [`FINGERPRINT_BATCH`] a call and is not revoked yet.
    /// Returns each token revoked now with the leases it ended (see
    /// [`Store::revoke_credential`] for the version that announces them).
    pub(crate) async fn revoke_fingerprint(
        &self,
        pool: &str,
        fingerprint: &str,
        reason: &str,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        loop {
            let v: reply::RevokedNow = self
                .call(
                    pool,
                    &scripts::RevokeFingerprint {
                        fingerprint: fingerprint.into(),
                        reason: reason.into(),
                        batch: FINGERPRINT_BATCH,
                    },
                )
                .await?;
            out.extend(v.revoked.into_iter().map(|r| (r.token_id, r.leases_ended)));
            if !v.more {
                return Ok(out);
            }
        }
    }

    pub(crate) async fn revoke(&self, pool: &str, id: &str, reason: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .call(
                pool,
                &scripts::Revoke {
                    token_id: id.into(),
                    reason: reason.into(),
                },
            )
            .await?;
        Ok(v.leases_ended)
    }

    pub(crate) async fn restore(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self
            .call(
                pool,
                &scripts::Restore {
                    token_id: id.into(),
                },
            )
            .await?;
        Ok(v.state)
    }

    pub(crate) async fn deprecate(
        &self,
        pool: &str,
        id: &str,
        sunset_ms: Option<i64>,
    ) -> Result<String> {
        let v: reply::State = self
            .call(
                pool,
                &scripts::Deprecate {
                    token_id: id.into(),
                    sunset_at: sunset_ms,
                },
            )
            .await?;
        Ok(v.state)
    }

    pub(crate) async fn refresh_enqueue(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self
            .call(
                pool,
                &scripts::RefreshEnqueue {
                    token_id: id.into(),
                },
            )
            .await?;
        Ok(v.state)
    }
}
