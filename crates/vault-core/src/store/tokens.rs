//! Tokens: deposit, metadata, and the per-token transitions.

use super::*;

impl Store {
    pub async fn deposit(&self, pool: &str, tokens: &[SealedToken]) -> Result<Vec<String>> {
        let v: reply::Deposited = self
            .eval(
                &scripts::DEPOSIT,
                pool,
                &[serde_json::to_string(tokens).expect("tokens serialize")],
            )
            .await?;
        Ok(v.ids)
    }

    /// The raw token hash (sealed secret included): for vault-api's own use, never answered.
    pub async fn token_fields(&self, pool: &str, id: &str) -> Result<HashMap<String, String>> {
        let f: HashMap<String, String> = self
            .cmd(
                redis::cmd("HGETALL")
                    .arg(self.keys.pool(pool).token(id))
                    .clone(),
            )
            .await?;
        if f.is_empty() {
            self.pool_get(pool).await?;
            return Err(VaultError::TokenNotFound);
        }
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
        let cfg = self.pool_config(pool).await?;
        let row: Vec<Option<String>> = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(self.keys.pool(pool).token(id))
                    .arg(&TokenMeta::FIELDS[..])
                    .clone(),
            )
            .await?;
        TokenMeta::from_row(&row, &cfg, self.now_ms().await?).ok_or(VaultError::TokenNotFound)
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
        let cfg = self.pool_config(pool).await?;
        let pk = self.keys.pool(pool);
        let set = match state {
            Some(s) => pk.view(s),
            None => pk.ids(),
        };
        let (ids, next) = self.sscan_page(&set, cursor, limit).await?;
        let mut p = redis::pipe();
        for id in &ids {
            p.cmd("HMGET").arg(pk.token(id)).arg(&TokenMeta::FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = if ids.is_empty() {
            vec![]
        } else {
            self.pipe(p).await?
        };
        let now = self.now_ms().await?;
        let mut metas: Vec<TokenMeta> = rows
            .iter()
            .filter_map(|row| TokenMeta::from_row(row, &cfg, now))
            .collect();
        metas.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((metas, next))
    }

    pub async fn token_delete(&self, pool: &str, id: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .eval(&scripts::TOKEN_DELETE, pool, &[id.into()])
            .await?;
        Ok(v.leases_ended)
    }

    /// Revoke at once; returns the leases that ended (empty when it was already revoked).
    /// The revocation transition alone; [`Store::revoke_token`] also announces and audits it.
    pub async fn revoke(&self, pool: &str, id: &str, reason: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .eval(&scripts::REVOKE, pool, &[id.into(), reason.into()])
            .await?;
        Ok(v.leases_ended)
    }

    pub async fn restore(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self.eval(&scripts::RESTORE, pool, &[id.into()]).await?;
        Ok(v.state)
    }

    pub async fn deprecate(&self, pool: &str, id: &str, sunset_ms: Option<i64>) -> Result<String> {
        let v: reply::State = self
            .eval(&scripts::DEPRECATE, pool, &[id.into(), opt_arg(sunset_ms)])
            .await?;
        Ok(v.state)
    }

    pub async fn refresh_enqueue(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self
            .eval(&scripts::REFRESH_ENQUEUE, pool, &[id.into()])
            .await?;
        Ok(v.state)
    }
}
