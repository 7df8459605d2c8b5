//! Operations on leases: granting, renewing, rotating and ending one with the worker's report,
//! and recording the outcome. Granting and renewing are the hot path: no audit entry, no event
//! (a lease is not an administrative act); their metrics are the caller's.

use super::*;
use crate::model::LeaseGrant;
use crate::model::{AuditEntry, Outcome, Report, VaultEvent};
use crate::store::{AcquireArgs, Released};
use crate::{Result, Store};

impl Store {
    /// Lease a token of `pool` under every rule (quota, concurrency, TTL margin, revocation,
    /// binding), or say why none is eligible.
    #[tracing::instrument(name = "ops.lease_token", skip_all, fields(pool = %pool))]
    pub async fn lease_token(&self, pool: &str, args: &AcquireArgs) -> Result<LeaseGrant> {
        self.acquire(pool, args).await
    }

    /// Extend a live lease (`ttl_ms`), optionally taking `units` more of its quotas.
    #[tracing::instrument(name = "ops.renew_lease", skip_all, fields(pool = %pool))]
    pub async fn renew_lease(
        &self,
        pool: &str,
        lease_id: &str,
        ttl_ms: Option<u64>,
        units: Option<u64>,
    ) -> Result<LeaseGrant> {
        self.renew(pool, lease_id, ttl_ms, units).await
    }

    /// Apply the worker's report and lease another token in one step, recording the report as
    /// [`Store::release_lease`] does. Returns what was released and the new lease, or why there
    /// is none (the report stands either way).
    #[tracing::instrument(name = "ops.rotate_lease", skip_all, fields(pool = %pool))]
    pub async fn rotate_lease(
        &self,
        actor: &Actor,
        pool: &str,
        lease_id: &str,
        report: &Report,
        new_lease_id: &str,
    ) -> Result<(Released, Result<LeaseGrant>)> {
        let (released, next) = self.rotate(pool, lease_id, report, new_lease_id).await?;
        self.record_outcome(actor, pool, lease_id, &released, report)
            .await;
        Ok((released, next))
    }

    /// End a lease with the worker's report (the outcome applied to its token), and record it:
    /// every outcome is counted, every one other than a plain `ok` is audited, and a token it
    /// quarantined is announced and audited — whoever reports (a worker, the refresher's probe).
    #[tracing::instrument(name = "ops.release_lease", skip_all, fields(pool = %pool))]
    pub async fn release_lease(
        &self,
        actor: &Actor,
        pool: &str,
        lease_id: &str,
        report: &Report,
    ) -> Result<Released> {
        let r = self.release(pool, lease_id, report).await?;
        self.record_outcome(actor, pool, lease_id, &r, report).await;
        Ok(r)
    }

    /// The record of a report (release, or the release half of a rotate).
    #[tracing::instrument(name = "ops.record_outcome", skip_all, fields(pool = %pool))]
    pub async fn record_outcome(
        &self,
        actor: &Actor,
        pool: &str,
        lease_id: &str,
        r: &Released,
        report: &Report,
    ) {
        metrics::counter!("tv_lease_outcomes_total", "pool" => pool.to_string(), "outcome" => report.outcome.as_str())
            .increment(1);
        if report.outcome == Outcome::Ok {
            return;
        }
        tracing::info!(pool, token_id = %r.token_id, outcome = report.outcome.as_str(), state = %r.state, "lease outcome");
        self.record(&AuditEntry {
            token_id: Some(r.token_id.clone()),
            lease_id: Some(lease_id.to_string()),
            outcome: Some(report.outcome.as_str().to_string()),
            detail: report.detail.clone(),
            ..actor.entry(Some(pool), "lease.outcome")
        })
        .await;
        // An outcome that took a pipeline's token out of rotation replaced it in its share.
        self.pipeline_news_now(actor, pool).await;
        if r.state == "quarantined" {
            let ev = VaultEvent {
                kind: "token.quarantined".into(),
                pool: pool.into(),
                token_id: Some(r.token_id.clone()),
                at: self.event_time().await,
                reason: Some(report.outcome.as_str().into()),
                ..Default::default()
            };
            self.announce(ev, &[]).await;
            self.record(&AuditEntry {
                token_id: Some(r.token_id.clone()),
                outcome: Some("quarantined".into()),
                ..actor.entry(Some(pool), "token.quarantine")
            })
            .await;
        }
    }
}
