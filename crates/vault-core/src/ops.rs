//! Operations: a transition together with its side effects — the audit entry, the events, the
//! metric — made in one place, whoever triggers it (an API client, the janitor, the refresher),
//! so the same transition looks the same in the audit trail and on the event stream wherever it
//! came from.

use crate::auth::Principal;
use crate::model::PoolConfig;
use crate::model::{AuditEntry, Outcome, Report, VaultEvent};
use crate::refresh::RefreshResult;
use crate::store::{EndedLease, Released, SealedToken};
use crate::{Result, Store};

/// Who acts: a client token (its `sub` and `jti`) or one of the vault's own processes.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub jti: Option<String>,
}

impl Actor {
    /// One of the vault's own processes (`janitor`, `refresher`).
    pub fn process(name: &str) -> Self {
        Actor {
            name: name.into(),
            jti: None,
        }
    }

    /// An audit entry by this actor (fill the rest with struct update syntax).
    pub fn entry(&self, pool: Option<&str>, action: &str) -> AuditEntry {
        AuditEntry {
            actor: self.name.clone(),
            actor_jti: self.jti.clone(),
            action: action.into(),
            pool: pool.map(String::from),
            ..Default::default()
        }
    }
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Self {
        Actor {
            name: p.sub.clone(),
            jti: Some(p.jti.clone()),
        }
    }
}

impl Store {
    /// Write an audit entry after its transition happened: a failure is logged loudly, never
    /// turned into an error (the transition stands).
    pub async fn record(&self, e: &AuditEntry) {
        if let Err(err) = self.audit(e.pool.as_deref(), e).await {
            tracing::error!(error = %err, action = %e.action, "audit entry could not be written");
        }
    }

    /// Publish `first`, then a `lease.revoked` for each `(token id, lease id)` it ended, so
    /// every holder learns at once. Failures are logged (the transition stands).
    pub async fn announce(&self, first: VaultEvent, leases: &[(Option<String>, String)]) {
        let ended = leases.iter().map(|(token_id, lease_id)| VaultEvent {
            kind: "lease.revoked".into(),
            token_id: token_id.clone().or_else(|| first.token_id.clone()),
            lease_id: Some(lease_id.clone()),
            ..first.clone()
        });
        let events: Vec<_> = std::iter::once(first.clone()).chain(ended).collect();
        if let Err(err) = self.publish_events(&events).await {
            tracing::error!(error = %err, kind = %events[0].kind, count = events.len(), "events could not be published");
        }
    }

    /// Unix ms by the one clock (Redis `TIME`; local time if Redis cannot say).
    pub async fn event_time(&self) -> i64 {
        self.now_ms()
            .await
            .unwrap_or_else(|_| crate::time::now_ms())
    }

    /// Revoke a token: out of rotation for good, its leases end; `token.revoked` and a
    /// `lease.revoked` per ended lease are published, and the revocation is audited. Returns
    /// the ids of the leases it ended.
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        pool: &str,
        id: &str,
        reason: &str,
    ) -> Result<Vec<String>> {
        let ended = self.revoke(pool, id, reason).await?;
        self.revoked(actor, pool, id, reason, &ended).await;
        Ok(ended)
    }

    /// Revoke up to `max` deprecated tokens whose sunset passed, each announced and audited
    /// like [`Store::revoke_token`]. Returns how many were revoked.
    pub async fn sunset_due(&self, actor: &Actor, pool: &str, max: usize) -> Result<u64> {
        let revoked = self.sunset_tokens(pool, max).await?;
        for (id, ended) in &revoked {
            self.revoked(actor, pool, id, "sunset", ended).await;
        }
        Ok(revoked.len() as u64)
    }

    /// Revoke, in every pool of this region, the tokens holding the credential of
    /// `fingerprint` (a global revocation applied here), each announced and audited like
    /// [`Store::revoke_token`]. Tokens already revoked are left as they are, so applying the
    /// same revocation again announces nothing. Returns `(pool, token id, leases ended)` for
    /// each token revoked now.
    pub async fn revoke_credential(
        &self,
        actor: &Actor,
        fingerprint: &str,
        reason: &str,
    ) -> Result<Vec<(String, String, usize)>> {
        let mut out = Vec::new();
        for pool in self.pool_names().await? {
            for (id, ended) in self
                .revoke_credential_in(actor, &pool, fingerprint, reason)
                .await?
            {
                out.push((pool.clone(), id, ended));
            }
        }
        Ok(out)
    }

    /// [`Store::revoke_credential`] in one pool. Returns `(token id, leases ended)` for each
    /// token revoked now.
    async fn revoke_credential_in(
        &self,
        actor: &Actor,
        pool: &str,
        fingerprint: &str,
        reason: &str,
    ) -> Result<Vec<(String, usize)>> {
        let mut out = Vec::new();
        for (id, ended) in self.revoke_fingerprint(pool, fingerprint, reason).await? {
            self.revoked(actor, pool, &id, reason, &ended).await;
            out.push((id, ended.len()));
        }
        Ok(out)
    }

    /// The side effects of one revocation.
    async fn revoked(&self, actor: &Actor, pool: &str, id: &str, reason: &str, ended: &[String]) {
        tracing::warn!(pool, token_id = %id, reason, leases_ended = ended.len(), actor = %actor.name, "token revoked");
        let ev = VaultEvent {
            kind: "token.revoked".into(),
            pool: pool.into(),
            token_id: Some(id.into()),
            at: self.event_time().await,
            reason: Some(reason.into()),
            ..Default::default()
        };
        let leases: Vec<_> = ended.iter().map(|l| (None, l.clone())).collect();
        self.announce(ev, &leases).await;
        self.pipeline_news_now(actor, pool).await;
        self.record(&AuditEntry {
            token_id: Some(id.into()),
            detail: Some(format!("{reason} ({} leases ended)", ended.len())),
            ..actor.entry(Some(pool), "token.revoke")
        })
        .await;
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

    /// An audit entry about token `id`.
    async fn token_audit(&self, actor: &Actor, pool: &str, id: &str, action: &str) {
        self.record(&AuditEntry {
            token_id: Some(id.into()),
            ..actor.entry(Some(pool), action)
        })
        .await;
    }

    /// Create or replace a pool's config. Returns whether it was created.
    pub async fn upsert_pool(&self, actor: &Actor, pool: &str, cfg: &PoolConfig) -> Result<bool> {
        let created = self.pool_upsert(pool, cfg).await?;
        let action = if created {
            "pool.create"
        } else {
            "pool.update"
        };
        self.record(&actor.entry(Some(pool), action)).await;
        Ok(created)
    }

    /// Delete a pool (with its tokens when `force`). Returns how many tokens went with it.
    pub async fn delete_pool(&self, actor: &Actor, pool: &str, force: bool) -> Result<u64> {
        let deleted = self.pool_delete(pool, force).await?;
        self.record(&AuditEntry {
            detail: Some(format!("pool {pool} deleted with {deleted} tokens")),
            ..actor.entry(None, "pool.delete")
        })
        .await;
        Ok(deleted)
    }

    /// The kill switch: no lease is granted from now on; with `revoke_leases` the live ones
    /// end too, each announced.
    pub async fn freeze_pool(
        &self,
        actor: &Actor,
        pool: &str,
        revoke_leases: bool,
        reason: &str,
    ) -> Result<Vec<EndedLease>> {
        let ended = self.freeze(pool, revoke_leases, reason).await?;
        tracing::warn!(pool, leases_ended = ended.len(), "pool frozen");
        let ev = VaultEvent {
            kind: "pool.frozen".into(),
            pool: pool.into(),
            at: self.event_time().await,
            reason: Some(reason.into()),
            ..Default::default()
        };
        let leases: Vec<_> = ended
            .iter()
            .map(|e| (Some(e.token_id.clone()), e.lease_id.clone()))
            .collect();
        self.announce(ev, &leases).await;
        self.record(&AuditEntry {
            detail: Some(format!("{reason} ({} leases ended)", ended.len())),
            ..actor.entry(Some(pool), "pool.freeze")
        })
        .await;
        Ok(ended)
    }

    pub async fn unfreeze_pool(&self, actor: &Actor, pool: &str) -> Result<()> {
        self.unfreeze(pool).await?;
        self.record(&actor.entry(Some(pool), "pool.unfreeze")).await;
        let ev = VaultEvent {
            kind: "pool.unfrozen".into(),
            pool: pool.into(),
            at: self.event_time().await,
            ..Default::default()
        };
        self.announce(ev, &[]).await;
        Ok(())
    }

    /// Emergency rotation: every current token deprecated, refreshed in the background, revoked
    /// `sunset_s` from now unless refreshed. Returns the rotation id, how many tokens it covers
    /// and the sunset (unix ms).
    pub async fn rotate_pool(
        &self,
        actor: &Actor,
        pool: &str,
        sunset_s: u64,
        reason: &str,
    ) -> Result<(String, u64, i64)> {
        let at = self.event_time().await;
        let sunset_ms = at + (sunset_s as i64) * 1000;
        let (rotation_id, tokens) = self.pool_rotate(pool, sunset_ms, reason).await?;
        tracing::warn!(pool, tokens, sunset_s, "emergency rotation started");
        self.record(&AuditEntry {
            detail: Some(format!(
                "{reason} ({tokens} tokens, sunset in {sunset_s} s)"
            )),
            ..actor.entry(Some(pool), "pool.rotate")
        })
        .await;
        let ev = VaultEvent {
            kind: "pool.rotating".into(),
            pool: pool.into(),
            at,
            reason: Some(reason.into()),
            ..Default::default()
        };
        self.announce(ev, &[]).await;
        Ok((rotation_id, tokens, sunset_ms))
    }

    /// Roll the running emergency rotation back. Returns how many tokens were restored.
    pub async fn cancel_rotation(&self, actor: &Actor, pool: &str) -> Result<u64> {
        let restored = self.pool_rotate_cancel(pool).await?;
        self.record(&AuditEntry {
            detail: Some(format!("{restored} tokens restored")),
            ..actor.entry(Some(pool), "pool.rotate_cancel")
        })
        .await;
        Ok(restored)
    }

    /// Refuse client token `jti` until `until_s` (unix s): stored, told to every replica of
    /// the region, audited. A revocation already in force is left as it is, unaudited (a global
    /// one applied again).
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

    /// Deposit sealed tokens, all or nothing (tokens already in with the same secret are left
    /// as they were, and not audited again). With the global plane, a credential revoked
    /// everywhere is refused (`credential_revoked`); one revoked while this deposit ran is
    /// revoked here right after it landed, so a race with the region's follower loses nothing.
    pub async fn deposit_tokens(
        &self,
        actor: &Actor,
        pool: &str,
        tokens: &[SealedToken],
    ) -> Result<crate::model::Deposited> {
        let fingerprints: Vec<String> = tokens.iter().map(|t| t.fingerprint.clone()).collect();
        if let Some(g) = self.global() {
            let revoked = g.revoked_fingerprints(&fingerprints).await?;
            if !revoked.is_empty() {
                return Err(crate::VaultError::CredentialRevoked(format!(
                    "credential {} was revoked in every region; it cannot be deposited again",
                    revoked.join(", ")
                )));
            }
        }
        let done = self.deposit(pool, tokens).await?;
        if let Some(g) = self.global() {
            // The follower looks for the tokens of a revoked credential when it applies the
            // revocation; a deposit that landed after that look is caught by this one (in the
            // pool it landed in: the follower saw every other).
            for fp in g.revoked_fingerprints(&fingerprints).await? {
                let reason = "revoked globally while being deposited";
                self.revoke_credential_in(actor, pool, &fp, reason).await?;
            }
        }
        let unchanged: std::collections::HashSet<&str> =
            done.unchanged.iter().map(String::as_str).collect();
        let new: Vec<&SealedToken> = tokens
            .iter()
            .filter(|t| !unchanged.contains(t.id.as_str()))
            .collect();
        for t in &new {
            tracing::info!(pool, token_id = %t.id, fingerprint = %t.fingerprint, "token deposited");
        }
        if let Some(entry) = deposit_entry(actor, pool, &new) {
            self.record(&entry).await;
        }
        Ok(done)
    }

    pub async fn delete_token(&self, actor: &Actor, pool: &str, id: &str) -> Result<()> {
        self.token_delete(pool, id).await?;
        self.token_audit(actor, pool, id, "token.delete").await;
        tracing::info!(pool, token_id = %id, "token deleted");
        Ok(())
    }

    /// Staged rotation of one token: leased only when nothing else is, revoked at the sunset.
    /// Returns its state.
    pub async fn deprecate_token(
        &self,
        actor: &Actor,
        pool: &str,
        id: &str,
        sunset_ms: Option<i64>,
    ) -> Result<String> {
        let state = self.deprecate(pool, id, sunset_ms).await?;
        self.token_audit(actor, pool, id, "token.deprecate").await;
        Ok(state)
    }

    /// Back into rotation (a quarantined or cooling token). Returns its state.
    pub async fn restore_token(&self, actor: &Actor, pool: &str, id: &str) -> Result<String> {
        let state = self.restore(pool, id).await?;
        self.token_audit(actor, pool, id, "token.restore").await;
        Ok(state)
    }

    /// Queue a refresh now. Returns the token's state.
    pub async fn request_refresh(&self, actor: &Actor, pool: &str, id: &str) -> Result<String> {
        let state = self.refresh_enqueue(pool, id).await?;
        self.token_audit(actor, pool, id, "token.refresh_requested")
            .await;
        Ok(state)
    }
}

/// Token ids a deposit's audit entry lists by name; the rest are counted.
const DEPOSIT_AUDIT_LISTED: usize = 20;

/// One audit entry per deposit, not one per token (an entry each cost Redis about 150 bytes a
/// token): a single token is named with its fingerprint, as before; a batch lists its first
/// tokens (fingerprint and id) and counts the rest. None when nothing new was deposited.
fn deposit_entry(actor: &Actor, pool: &str, new: &[&SealedToken]) -> Option<AuditEntry> {
    let entry = actor.entry(Some(pool), "token.deposit");
    match new {
        [] => None,
        [one] => Some(AuditEntry {
            token_id: Some(one.id.clone()),
            detail: Some(one.fingerprint.clone()),
            ..entry
        }),
        many => {
            let listed: Vec<String> = many
                .iter()
                .take(DEPOSIT_AUDIT_LISTED)
                .map(|t| format!("{} {}", t.fingerprint, t.id))
                .collect();
            let more = many.len() - listed.len();
            let rest = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Some(AuditEntry {
                detail: Some(format!(
                    "{}{rest} ({} tokens)",
                    listed.join(", "),
                    many.len()
                )),
                ..entry
            })
        }
    }
}

/// What a pipeline `PUT` did.
#[derive(Debug, Clone)]
pub enum PipelinePut {
    /// Created (true) or resized, and where it stands now.
    Done(bool, Box<crate::model::PipelineStatus>),
    /// A dry run: what an assignment would get now.
    DryRun(crate::model::PipelineDryRun),
}

impl Store {
    /// Create or resize pipeline `name` of `pool` from `input` (sized by the pool's one sizing
    /// rule) and assign its tokens in batches; with `dry`, only say what it would get. Audited
    /// and announced as `pipeline.created` / `pipeline.resized`. A pool short of eligible
    /// tokens: `InsufficientCapacity` (nothing stays assigned, unless `allow_partial`).
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
    async fn pipeline_news_now(&self, actor: &Actor, pool: &str) {
        if let Err(e) = self.announce_pipeline_news(actor, pool).await {
            tracing::warn!(pool, error = %e, "pipeline news not announced yet (the janitor will)");
        }
    }

    /// The audit entry and event of a pipeline change an actor made (`action` is
    /// `pipeline.create|resize|end`; the event names what it became).
    async fn pipeline_announced(
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
