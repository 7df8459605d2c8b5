//! Client tokens: revocations and the pools each token was minted for.

use super::*;

impl Store {
    /// Remember a minted client token's pools (None = every pool) until it expires.
    pub(crate) async fn client_record(
        &self,
        jti: &str,
        pools: Option<&[String]>,
        ttl_s: i64,
    ) -> Result<()> {
        let value = pools.map(|p| p.join(",")).unwrap_or_else(|| "*".into());
        self.cmd(
            redis::cmd("SET")
                .arg(self.keys.client(jti))
                .arg(value)
                .arg("EX")
                .arg(ttl_s.max(1))
                .clone(),
        )
        .await
    }

    /// The pools a client token was minted for: `None` when unknown (minted offline, or
    /// expired), `Some(None)` for every pool.
    pub async fn client_pools(&self, jti: &str) -> Result<Option<Option<Vec<String>>>> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.keys.client(jti)).clone())
            .await?;
        Ok(v.map(|v| {
            (v != "*").then(|| {
                v.split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
        }))
    }

    /// Store a revoked client-token id until `until_s` and tell every replica.
    pub(crate) async fn revoke_client(&self, jti: &str, until_s: i64) -> Result<()> {
        let mut p = redis::pipe();
        p.cmd("ZADD")
            .arg(self.keys.revoked_clients())
            .arg(until_s)
            .arg(jti)
            .ignore();
        p.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.revoked_clients())
            .arg("-inf")
            .arg(crate::time::now_ms() / 1000)
            .ignore();
        if self.wait.replicas == 0 {
            self.pipe::<()>(p).await?;
        } else {
            // A client-token revocation is a safety write: acknowledged by replicas when
            // configured.
            p.add_command(self.wait_cmd());
            let (acks,): (i64,) = self
                .timed(async {
                    let mut c = self.conns.next(true).await?;
                    p.query_async(&mut c)
                        .await
                        .map_err(|e| VaultError::from_redis(&e))
                })
                .await?;
            self.check_acks(acks)?;
        }
        // Stored first, then told: a replica that misses the message finds it at its next
        // re-read. (A command of its own: on a cluster the channel hashes to another slot.)
        self.cmd::<()>(
            redis::cmd("PUBLISH")
                .arg(self.keys.revocation_channel())
                .arg(format!("{jti} {until_s}"))
                .clone(),
        )
        .await
    }

    /// Until when client token `jti` is revoked (unix s), if it is.
    pub async fn client_revoked_until(&self, jti: &str) -> Result<Option<i64>> {
        let v: Option<f64> = self
            .cmd(
                redis::cmd("ZSCORE")
                    .arg(self.keys.revoked_clients())
                    .arg(jti)
                    .clone(),
            )
            .await?;
        Ok(v.map(|v| v as i64))
    }

    /// Every revoked client-token id still in force, with its expiry.
    pub async fn revoked_clients(&self) -> Result<Vec<(String, i64)>> {
        let now = crate::time::now_ms() / 1000;
        self.cmd(
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.revoked_clients())
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .clone(),
        )
        .await
    }
}
