//! Client tokens (minted, revoked) and the record of a refresh job's result.

use super::*;
use crate::model::{AuditEntry, VaultEvent};
use crate::refresh::RefreshResult;
use crate::{Result, Store};

impl Store {
    /// Record a client token minted by `actor`: its pools (None = every pool, which decides who
    /// may revoke it later) until it expires in `ttl_s`, and the audit entry (`detail` names it:
    /// subject, scopes, jti; never the token).
    #[tracing::instrument(name = "ops.record_minted_client", skip_all)]
    pub async fn record_minted_client(
        &self,
        actor: &Actor,
        jti: &str,
        pools: Option<&[String]>,
        ttl_s: i64,
        detail: String,
    ) -> Result<()> {
        self.client_record(jti, pools, ttl_s).await?;
        self.record(&AuditEntry {
            detail: Some(detail),
            ..actor.entry(None, "client.mint")
        })
        .await;
        Ok(())
    }

    /// Refuse client token `jti` until `until_s` (unix s): stored, told to every replica of
    /// the region, audited. A revocation already in force is left as it is, unaudited (a global
    /// one applied again).
    #[tracing::instrument(name = "ops.revoke_client_token", skip_all)]
    pub async fn revoke_client_token(&self, actor: &Actor, jti: &str, until_s: i64) -> Result<()> {
        if self.client_revoked_until(jti).await? >= Some(until_s) {
            return Ok(());
        }
        self.revoke_client(jti, until_s).await?;
        tracing::warn!(actor = %actor.name, jti = %jti, "client token revoked");
        self.record(&AuditEntry {
            detail: Some(format!("jti={jti}")),
            ..actor.entry(None, "client.revoke")
        })
        .await;
        Ok(())
    }

    /// The one record of a refresh job's result, whoever ran the job (the refresher, an
    /// external login worker): its audit entry, its event, its metric.
    pub async fn record_refresh(&self, actor: &Actor, pool: &str, r: &RefreshResult) {
        metrics::counter!("tv_refresh_results_total", "outcome" => r.outcome()).increment(1);
        self.record(&AuditEntry {
            token_id: Some(r.token_id.clone()),
            outcome: Some(r.outcome().into()),
            detail: r.error.clone().or_else(|| r.fingerprint.clone()),
            ..actor.entry(
                Some(pool),
                if r.error.is_none() {
                    "token.refresh"
                } else {
                    "token.refresh_failed"
                },
            )
        })
        .await;
        if r.rotated {
            self.record(&AuditEntry {
                token_id: Some(r.token_id.clone()),
                detail: r.fingerprint.clone(),
                ..actor.entry(Some(pool), "token.rotated")
            })
            .await;
            let ev = VaultEvent {
                kind: "token.rotated".into(),
                pool: pool.into(),
                token_id: Some(r.token_id.clone()),
                at: self.event_time().await,
                reason: Some("scheduled rotation: replaced".into()),
                ..Default::default()
            };
            self.announce(ev, &[]).await;
        }
        let kind = match r.outcome() {
            "refreshed" => "token.refreshed",
            "quarantined" => "token.quarantined",
            _ => return,
        };
        let ev = VaultEvent {
            kind: kind.into(),
            pool: pool.into(),
            token_id: Some(r.token_id.clone()),
            at: self.event_time().await,
            reason: r.error.as_ref().map(|e| format!("refresh failed: {e}")),
            ..Default::default()
        };
        self.announce(ev, &[]).await;
    }
}
