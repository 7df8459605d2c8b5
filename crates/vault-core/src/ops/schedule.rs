//! Scheduled rotation (`lua/rules/age.lua`): tokens past the pool's maximum age are rotated in
//! stages, each start announced (`token.rotation_due`) and audited here, whoever drives it;
//! each replacement is announced (`token.rotated`) with its refresh result
//! ([`Store::record_refresh`]).

use super::*;
use crate::Result;

impl Store {
    /// Start the scheduled rotation of up to `max` tokens of `pool` past its maximum age (the
    /// pool's `max_in_flight` bounds how many are in rotation at once). Returns how many started.
    #[tracing::instrument(name = "ops.rotate_aged_tokens", skip_all, fields(pool = %pool))]
    pub async fn rotate_aged_tokens(&self, actor: &Actor, pool: &str, max: usize) -> Result<u64> {
        let (started, _) = self.rotate_aged(pool, max).await?;
        for s in &started {
            let by = if s.login_workers {
                "the login workers"
            } else {
                "its grant"
            };
            let reason = format!(
                "aged since {}; replaced through {by}, revoked at {} unless replaced",
                crate::time::rfc3339(s.aged_from),
                crate::time::rfc3339(s.sunset_at)
            );
            tracing::info!(pool, token_id = %s.token_id, actor = %actor.name, "scheduled rotation started");
            let ev = VaultEvent {
                kind: "token.rotation_due".into(),
                pool: pool.into(),
                token_id: Some(s.token_id.clone()),
                at: self.event_time().await,
                reason: Some(reason.clone()),
                ..Default::default()
            };
            self.announce(ev, &[]).await;
            self.record(&AuditEntry {
                token_id: Some(s.token_id.clone()),
                detail: Some(reason),
                ..actor.entry(Some(pool), "token.rotation_due")
            })
            .await;
        }
        Ok(started.len() as u64)
    }
}
