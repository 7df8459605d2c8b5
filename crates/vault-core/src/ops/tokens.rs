//! Operations on tokens: deposit, revoke (one token, or a credential by fingerprint), sunset,
//! delete, deprecate, restore, ask for a refresh.

use super::*;
use crate::model::{AuditEntry, VaultEvent};
use crate::store::SealedToken;
use crate::{Result, Store};

impl Store {
    /// Revoke a token: out of rotation for good, its leases end; `token.revoked` and a
    /// `lease.revoked` per ended lease are published, and the revocation is audited. Returns
    /// the ids of the leases it ended.
    #[tracing::instrument(name = "ops.revoke_token", skip_all, fields(pool = %pool))]
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
    #[tracing::instrument(name = "ops.sunset_due", skip_all, fields(pool = %pool))]
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
    #[tracing::instrument(name = "ops.revoke_credential", skip_all)]
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
    pub(super) async fn revoke_credential_in(
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
    pub(super) async fn revoked(
        &self,
        actor: &Actor,
        pool: &str,
        id: &str,
        reason: &str,
        ended: &[String],
    ) {
        tracing::warn!(pool, token_id = %id, reason, leases_ended = ended.len(), actor = %actor.name, "token revoked");
        // Each revocation is made (and counted) by one process: the sum over processes is
        // the revocation rate the mass-invalidation alert watches.
        metrics::counter!("tv_token_revocations_total", "pool" => pool.to_string()).increment(1);
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

    /// Deposit sealed tokens, all or nothing (tokens already in with the same secret are left
    /// as they were, and not audited again). With the global plane, a credential revoked
    /// everywhere is refused (`credential_revoked`); one revoked while this deposit ran is
    /// revoked here right after it landed, so a race with the region's follower loses nothing.
    #[tracing::instrument(name = "ops.deposit_tokens", skip_all, fields(pool = %pool))]
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

    #[tracing::instrument(name = "ops.delete_token", skip_all, fields(pool = %pool))]
    pub async fn delete_token(&self, actor: &Actor, pool: &str, id: &str) -> Result<()> {
        self.token_delete(pool, id).await?;
        self.token_audit(actor, pool, id, "token.delete").await;
        tracing::info!(pool, token_id = %id, "token deleted");
        Ok(())
    }

    /// Staged rotation of one token: leased only when nothing else is, revoked at the sunset.
    /// Returns its state.
    #[tracing::instrument(name = "ops.deprecate_token", skip_all, fields(pool = %pool))]
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
    #[tracing::instrument(name = "ops.restore_token", skip_all, fields(pool = %pool))]
    pub async fn restore_token(&self, actor: &Actor, pool: &str, id: &str) -> Result<String> {
        let state = self.restore(pool, id).await?;
        self.token_audit(actor, pool, id, "token.restore").await;
        Ok(state)
    }

    /// Queue a refresh now. Returns the token's state.
    #[tracing::instrument(name = "ops.request_refresh", skip_all, fields(pool = %pool))]
    pub async fn request_refresh(&self, actor: &Actor, pool: &str, id: &str) -> Result<String> {
        let state = self.refresh_enqueue(pool, id).await?;
        self.token_audit(actor, pool, id, "token.refresh_requested")
            .await;
        Ok(state)
    }

    /// An audit entry about token `id`.
    pub(super) async fn token_audit(&self, actor: &Actor, pool: &str, id: &str, action: &str) {
        self.record(&AuditEntry {
            token_id: Some(id.into()),
            ..actor.entry(Some(pool), action)
        })
        .await;
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
