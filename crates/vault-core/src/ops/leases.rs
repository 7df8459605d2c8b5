//! Operations on leases: ending one with the worker's report, and recording the outcome.

use super::*;
use crate::model::{AuditEntry, Outcome, Report, VaultEvent};
use crate::store::Released;
use crate::{Result, Store};

impl Store {
    /// End a lease with the worker's report (the outcome applied to its token), and record it:
    /// every outcome is counted, every one other than a plain `ok` is audited, and a token it
    /// quarantined is announced and audited — whoever reports (a worker, the refresher's probe).
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
