//! Operations on pipelines: create or resize, end, tend, and announce what changed.

use super::*;
use crate::model::{AuditEntry, VaultEvent};
use crate::{Result, Store};

impl Store {
    /// Create or resize pipeline `name` of `pool` from `input` (sized by the pool's one sizing
    /// rule) and assign its tokens in batches; with `dry`, only say what it would get. Audited
    /// and announced as `pipeline.created` / `pipeline.resized`. A pool short of eligible
    /// tokens: `InsufficientCapacity` (nothing stays assigned, unless `allow_partial`).
    #[tracing::instrument(name = "ops.put_pipeline", skip_all, fields(pool = %pool))]
    pub async fn put_pipeline(
        &self,
        actor: &Actor,
        pool: &str,
        name: &str,
        input: &crate::model::PipelineInput,
        dry: bool,
    ) -> Result<PipelinePut> {
        let cfg = self.pool_config(pool).await?;
        use crate::model::PipelineDemand;
        let (size, sized_by) = input.size(&cfg)?;
        if dry {
            let have = self
                .pipeline_status_sampled(pool, &cfg, &[name.to_string()], 0)
                .await?
                .first()
                .map_or(0, |p| p.tokens);
            let need = size.tokens.saturating_sub(have);
            let run = format!("~dry.{}", uuid::Uuid::new_v4());
            let asked = crate::model::PipelineSize {
                tokens: need,
                ..size
            };
            self.pipeline_put(pool, &run, input, &asked, &cfg, &actor.name, true)
                .await?;
            let step = self.pipeline_settle(pool, &run).await?;
            let short = step.short.map(|s| s.answer());
            return Ok(PipelinePut::DryRun(crate::model::PipelineDryRun {
                size,
                sized_by_quota: sized_by,
                tokens_held: have,
                would_assign: short.as_ref().map_or(need, |s| s.could),
                short,
            }));
        }
        let created = self
            .pipeline_put(pool, name, input, &size, &cfg, &actor.name, false)
            .await?;
        let step = self.pipeline_settle(pool, name).await?;
        if let Some(short) = step.short {
            return Err(crate::VaultError::InsufficientCapacity(short.answer()));
        }
        let action = if created {
            "pipeline.create"
        } else {
            "pipeline.resize"
        };
        let detail = format!(
            "{} of {} tokens{} for {} s",
            step.have,
            size.tokens,
            sized_by
                .map(|q| format!(" (sized by quota {q})"))
                .unwrap_or_default(),
            input.duration_s
        );
        self.pipeline_announced(actor, pool, name, action, &detail)
            .await;
        // An assignment that came out short (allow_partial) left `pipeline.under_strength`.
        self.pipeline_news_now(actor, pool).await;
        let status = self
            .pipeline_status(pool, &cfg, &[name.to_string()])
            .await?
            .pop()
            .ok_or_else(|| {
                crate::VaultError::PipelineNotFound(format!("pipeline {name} ended meanwhile"))
            })?;
        Ok(PipelinePut::Done(created, Box::new(status)))
    }

    /// End pipeline `name` now: its tokens go back to the pool (leases out keep their own
    /// deadlines). Audited and announced. Returns how many tokens it held.
    #[tracing::instrument(name = "ops.end_pipeline", skip_all, fields(pool = %pool))]
    pub async fn end_pipeline(&self, actor: &Actor, pool: &str, name: &str) -> Result<u64> {
        let held = self.pipeline_end(pool, name).await?;
        self.pipeline_settle(pool, name).await?;
        let detail = format!("{held} tokens back in the pool");
        self.pipeline_announced(actor, pool, name, "pipeline.end", &detail)
            .await;
        Ok(held)
    }

    /// What the janitor does for a pool's pipelines: each that needs a step (its deadline
    /// passed, under strength, being assigned or given back) is worked until it needs nothing
    /// more now, and what happened to shares is announced. Returns the pipelines worked.
    #[tracing::instrument(name = "ops.tend_pipelines", skip_all, fields(pool = %pool))]
    pub async fn tend_pipelines(&self, actor: &Actor, pool: &str) -> Result<usize> {
        let (names, news) = self.pipelines_due(pool).await?;
        for name in &names {
            self.pipeline_settle(pool, name).await?;
        }
        if news || !names.is_empty() {
            self.announce_pipeline_news(actor, pool).await?;
        }
        Ok(names.len())
    }

    /// Announce what happened to the pool's shares (tokens replaced, under strength, ended at
    /// the deadline): an event each, and an audit entry for each that changed a share.
    pub async fn announce_pipeline_news(&self, actor: &Actor, pool: &str) -> Result<()> {
        loop {
            let news = self.pipeline_news(pool, 100).await?;
            if news.is_empty() {
                return Ok(());
            }
            for n in news {
                metrics::counter!("tv_pipeline_events_total", "pool" => pool.to_string(), "type" => n.kind.clone())
                    .increment(1);
                let detail = match (&n.token_id, &n.replaced_by) {
                    (Some(t), Some(by)) => Some(format!("{t} replaced by {by}")),
                    (Some(t), None) => Some(format!("{t} left; nothing free to replace it")),
                    _ => n.reason.clone(),
                };
                if n.kind != "pipeline.at_strength" {
                    self.record(&AuditEntry {
                        token_id: n.token_id.clone(),
                        detail: Some(format!("{}: {}", n.pipeline, detail.unwrap_or_default())),
                        ..actor.entry(Some(pool), &n.kind)
                    })
                    .await;
                }
                let ev = VaultEvent {
                    kind: n.kind,
                    pool: pool.into(),
                    token_id: n.token_id,
                    at: n.at,
                    reason: n.reason,
                    pipeline: Some(n.pipeline),
                    replaced_by: n.replaced_by,
                    ..Default::default()
                };
                self.announce(ev, &[]).await;
            }
        }
    }

    /// Announce at once what a transition did to shares (a pipeline's token revoked or
    /// quarantined is replaced in the same call); a failure is logged, the janitor announces it.
    pub(super) async fn pipeline_news_now(&self, actor: &Actor, pool: &str) {
        if let Err(e) = self.announce_pipeline_news(actor, pool).await {
            tracing::warn!(pool, error = %e, "pipeline news not announced yet (the janitor will)");
        }
    }

    /// The audit entry and event of a pipeline change an actor made (`action` is
    /// `pipeline.create|resize|end`; the event names what it became).
    pub(super) async fn pipeline_announced(
        &self,
        actor: &Actor,
        pool: &str,
        name: &str,
        action: &str,
        detail: &str,
    ) {
        tracing::info!(pool, pipeline = name, action, detail, actor = %actor.name, "pipeline");
        self.record(&AuditEntry {
            detail: Some(format!("{name}: {detail}")),
            ..actor.entry(Some(pool), action)
        })
        .await;
        let kind = match action {
            "pipeline.create" => "pipeline.created",
            "pipeline.resize" => "pipeline.resized",
            _ => "pipeline.ended",
        };
        let ev = VaultEvent {
            kind: kind.into(),
            pool: pool.into(),
            at: self.event_time().await,
            reason: Some(detail.into()),
            pipeline: Some(name.into()),
            ..Default::default()
        };
        self.announce(ev, &[]).await;
    }
}
