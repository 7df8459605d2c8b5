//! Pipelines: a named, sized, time-bounded share of one pool (`lua/rules/pipeline.lua`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::sizing::Demand;
use super::{in_range, invalid, valid_name, PoolConfig};
use crate::error::VaultError;

/// Longest a pipeline lives before it must be renewed.
pub const MAX_PIPELINE_DURATION_S: u64 = 31 * 86_400;
/// Most tokens one pipeline holds.
pub const MAX_PIPELINE_TOKENS: u64 = 1_000_000;
/// Pipelines one pool may have at once.
pub const MAX_PIPELINES: u64 = 100;

/// Pipeline names: `[A-Za-z0-9_.-]{1,64}`, like pool names.
pub fn check_pipeline_name(name: &str) -> Result<(), VaultError> {
    if valid_name(name, 64) {
        Ok(())
    } else {
        Err(invalid(
            "pipeline names are 1-64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// `PUT /v1/pools/{pool}/pipelines/{name}` (a wire type: the SDK sends it).
pub use vault_wire::{PipelineEnded, PipelineInput};

/// How a pipeline's size was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PipelineSize {
    /// Tokens it holds when whole.
    pub tokens: u64,
    /// For its quota (`rps × units × window / quota per token`, the window cut to the duration).
    pub tokens_for_quota: u64,
    /// For concurrency (`concurrency / max_leases_per_token`).
    pub tokens_for_concurrency: u64,
}

/// What the vault does with a pipeline's demand: checks it and sizes it.
pub trait PipelineDemand {
    fn validate(&self) -> Result<(), VaultError>;
    /// Units one request takes (default 1).
    fn units(&self) -> u64;
    /// Its size on `cfg`, by the one sizing rule (pool status and `vaultctl pool size` use it
    /// too), and the quota it is sized by.
    fn size(&self, cfg: &PoolConfig) -> Result<(PipelineSize, Option<String>), VaultError>;
}

impl PipelineDemand for PipelineInput {
    fn validate(&self) -> Result<(), VaultError> {
        in_range("duration_s", self.duration_s, 1, MAX_PIPELINE_DURATION_S)?;
        if let Some(r) = self.rps {
            if !r.is_finite() || r <= 0.0 || r > 1e7 {
                return Err(invalid("rps must be a number above 0 and at most 10000000"));
            }
        }
        if let Some(c) = self.concurrency {
            in_range("concurrency", c, 1, 1_000_000)?;
        }
        if let Some(u) = self.units_per_request {
            in_range("units_per_request", u, 1, 1_000_000_000)?;
        }
        if let Some(t) = self.min_token_ttl_s {
            in_range("min_token_ttl_s", t, 0, super::MAX_LEASE_TTL_S)?;
        }
        match self.tokens {
            Some(n) => {
                in_range("tokens", n, 1, MAX_PIPELINE_TOKENS)?;
                if self.rps.is_some() || self.concurrency.is_some() {
                    return Err(invalid(
                        "give either tokens, or the demand (rps, concurrency), not both",
                    ));
                }
            }
            None if self.rps.is_none() && self.concurrency.is_none() => {
                return Err(invalid(
                    "a pipeline needs its demand (rps and/or concurrency) or a tokens count",
                ))
            }
            None => {}
        }
        Ok(())
    }

    fn units(&self) -> u64 {
        self.units_per_request.unwrap_or(1)
    }

    fn size(&self, cfg: &PoolConfig) -> Result<(PipelineSize, Option<String>), VaultError> {
        if let Some(n) = self.tokens {
            return Ok((
                PipelineSize {
                    tokens: n,
                    tokens_for_quota: 0,
                    tokens_for_concurrency: 0,
                },
                None,
            ));
        }
        let rps = self.rps.unwrap_or(0.0);
        let (n, by) = cfg.tokens_needed(
            Demand {
                units_per_s: rps * self.units() as f64,
                concurrent: self.concurrency.unwrap_or(0) as f64,
                duration_s: Some(self.duration_s),
            },
            rps,
        );
        if n.tokens_needed > MAX_PIPELINE_TOKENS {
            return Err(invalid(format!(
                "this demand needs {} tokens, more than a pipeline may hold ({MAX_PIPELINE_TOKENS})",
                n.tokens_needed
            )));
        }
        Ok((
            PipelineSize {
                tokens: n.tokens_needed.max(1),
                tokens_for_quota: n.tokens_for_quota,
                tokens_for_concurrency: n.tokens_for_concurrency,
            },
            by,
        ))
    }
}

/// What a pipeline could not get: the answer of a 409 `insufficient_capacity` (and of a dry run).
pub use vault_wire::CapacityShort;

/// `GET /v1/pools/{pool}/pipelines/{name}` (vaultctl reads it back).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PipelineStatus {
    /// The pipeline's name, unique in its pool.
    pub name: String,
    /// The pool it draws on.
    pub pool: String,
    /// `assigning` (not leasable yet), `live`, `resizing`, `ending`.
    pub phase: String,
    /// Tokens it holds now.
    pub tokens: u64,
    /// Tokens it holds when whole.
    pub tokens_wanted: u64,
    /// It holds fewer than it wants and nothing free could replace the missing ones yet.
    pub under_strength: bool,
    /// Its tokens by view state (`active`, `leased`, `cooling`): exact up to 256 tokens,
    /// scaled from a random 256 above that.
    pub tokens_by_state: BTreeMap<String, u64>,
    /// Leases held on its tokens (counted like `tokens_by_state`).
    pub leases: u64,
    /// The demand it was sized from.
    pub demand: PipelineInput,
    /// Requests per second asked (`rps`), and leased since it went live.
    pub rate_asked: Option<f64>,
    /// Leases per second granted since it went live.
    pub rate_observed: f64,
    /// Leases granted since it went live.
    pub leases_granted: u64,
    /// Share of its tokens' quota used now (requests; 0..1; null when unlimited).
    pub quota_used_ratio: Option<f64>,
    /// When its share runs out of quota or of token life at the observed rate (null: not
    /// before its deadline), and which runs out.
    pub exhausts_at: Option<String>,
    /// What runs out first at `exhausts_at`: `quota`, or `life` (its tokens come too
    /// close to expiring).
    pub exhausts_by: Option<String>,
    /// Seconds between `exhausts_at` and the deadline.
    pub exhausts_before_deadline_s: Option<u64>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The client (`sub` of its token) that created it.
    pub created_by: String,
    /// The client that last resized it.
    pub updated_by: String,
    /// When it ends by itself unless put again (RFC 3339): its tokens go back to the pool.
    pub deadline: String,
    /// What the last resize could not get (it was given back), if it fell short.
    pub last_shortfall: Option<CapacityShort>,
}

/// A dry run's answer (`?dry_run=true`): what an assignment would get now; nothing is assigned.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PipelineDryRun {
    /// The size the demand asks for.
    pub size: PipelineSize,
    /// The quota the size comes from (null: concurrency or an explicit count).
    pub sized_by_quota: Option<String>,
    /// Tokens the pipeline holds already (a resize).
    pub tokens_held: u64,
    /// Tokens an assignment would add now.
    pub would_assign: u64,
    /// What it would miss (null: nothing).
    pub short: Option<CapacityShort>,
}
