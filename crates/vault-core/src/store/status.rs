//! A pool's status: token counts by view state, leases, quota use, sizing, rotation.

use super::*;

/// The status pipeline's answer: live leases, tokens with an expiry, stats hash, Redis TIME,
/// sampled token ids.
type StatusRow = (
    u64,
    u64,
    HashMap<String, i64>,
    (i64, i64),
    Vec<String>,
    Vec<Option<String>>,
    HashMap<String, u64>,
);

/// Tokens pool status reads to estimate how much of the quota is used.
const STATUS_SAMPLE: usize = 1000;

/// The rotation fields of the pool config, as status shows them.
fn rotation_status(f: &[Option<String>], deprecated: u64, now_ms: i64) -> Option<RotationStatus> {
    let get = |i: usize| f.get(i).cloned().flatten().unwrap_or_default();
    let id = get(0);
    if id.is_empty() {
        return None;
    }
    let ms = |i: usize| get(i).parse::<i64>().unwrap_or(0);
    Some(RotationStatus {
        id,
        started_at: crate::time::rfc3339(ms(1)),
        sunset_at: crate::time::rfc3339(ms(2)),
        reason: get(3),
        tokens: ms(4).max(0) as u64,
        refreshed: ms(5).max(0) as u64,
        deprecated_remaining: deprecated,
        done: ms(2) <= now_ms,
    })
}

/// Token counts by view state from the sizes of the view sets (`SCARD`, in `VIEW_STATES`
/// order). `v:active` holds every token whose state is active, `leased` and `cooling` included
/// (so a lease moves a token in one set, not two: `move_view` in lua/rules/placement.lua); the
/// `active` view is what is left of it.
pub(super) fn view_counts(cards: &[u64]) -> BTreeMap<String, u64> {
    let card = |state: &str| {
        VIEW_STATES
            .iter()
            .position(|s| *s == state)
            .and_then(|i| cards.get(i).copied())
            .unwrap_or(0)
    };
    VIEW_STATES
        .iter()
        .map(|s| {
            let n = match *s {
                "active" => card("active").saturating_sub(card("leased") + card("cooling")),
                other => card(other),
            };
            (s.to_string(), n)
        })
        .collect()
}

impl Store {
    /// Token counts by view state.
    pub async fn token_counts(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        for s in VIEW_STATES {
            p.cmd("SCARD").arg(pk.view(s));
        }
        let cards: Vec<u64> = self.pipe(p).await?;
        Ok(view_counts(&cards))
    }

    pub async fn pool_status(&self, name: &str) -> Result<PoolStatus> {
        self.pool_status_sampled(name, STATUS_SAMPLE).await
    }

    /// Status with the quota ratio estimated from `sample` random tokens (the Redis time of a
    /// status grows with it: about 6 ms at 1,000 tokens).
    pub async fn pool_status_sampled(&self, name: &str, sample: usize) -> Result<PoolStatus> {
        let view = self.pool_get(name).await?;
        let tokens = self.token_counts(name).await?;
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        p.cmd("ZCARD").arg(pk.leases());
        p.cmd("ZCARD").arg(pk.exp());
        p.cmd("HGETALL").arg(pk.stats());
        p.cmd("TIME");
        p.cmd("HRANDFIELD").arg(pk.ids()).arg(sample.max(1));
        p.cmd("HMGET").arg(pk.cfg()).arg(&[
            "rotation_id",
            "rotation_started_at",
            "rotation_sunset_at",
            "rotation_reason",
            "rotation_total",
            "rotation_refreshed",
            "op",
            "op_started_at",
            "op_affected",
        ]);
        p.cmd("HGETALL").arg(pk.rate());
        let (leases, exp_n, stats, time, sample, rot, rate): StatusRow = self.pipe(p).await?;
        let now_ms = match &self.clock {
            Some(c) => c.load(Ordering::SeqCst),
            None => time.0 * 1000 + time.1 / 1000,
        };
        let avg_ttl_remaining_s = (exp_n > 0).then(|| {
            let sum = *stats.get("exp_sum_s").unwrap_or(&0) as f64;
            (sum / exp_n as f64 - now_ms as f64 / 1000.0).max(0.0)
        });
        let tokens_deprecated = tokens["deprecated"];
        let leasable: u64 = crate::model::in_rotation_views().map(|s| tokens[s]).sum();
        let capacity = leasable * view.config.max_leases_per_token as u64;
        let rate = super::LeaseRate::from_hash(&rate, now_ms);
        let cfg = &view.config;
        let (needed, sized_by_quota) = cfg.tokens_needed(
            crate::model::Demand {
                units_per_s: rate.units_per_s,
                concurrent: leases as f64,
                duration_s: None,
            },
            rate.leases_per_s,
        );
        let sizing = crate::model::PoolSizing {
            lease_rate_per_s: rate.leases_per_s,
            units_rate_per_s: rate.units_per_s,
            observed_s: rate.observed_s,
            needed,
            sized_by_quota,
            tokens_in_rotation: leasable,
            headroom_tokens: (leasable as i64)
                .saturating_sub(needed.tokens_needed.min(i64::MAX as u64) as i64),
        };
        let utilization = if capacity == 0 {
            0.0
        } else {
            leases as f64 / capacity as f64
        };
        let ok = *stats.get("refresh_ok").unwrap_or(&0) as f64;
        let failed = *stats.get("refresh_fail").unwrap_or(&0) as f64;
        let refresh_success_rate = (ok + failed > 0.0).then(|| ok / (ok + failed));
        let ratios = self.quota_ratios(name, &sample).await?;
        let quotas: Vec<crate::model::QuotaStatus> =
            std::iter::once((crate::model::DEFAULT_QUOTA, crate::model::REQUESTS))
                .chain(
                    cfg.quotas
                        .iter()
                        .map(|q| (q.name.as_str(), q.cost.as_str())),
                )
                .enumerate()
                .map(|(i, (name, cost))| crate::model::QuotaStatus {
                    name: name.to_string(),
                    cost: cost.to_string(),
                    used_ratio: ratios.get(i).copied().flatten(),
                    binds: stats
                        .get(&format!("binds:{name}"))
                        .copied()
                        .unwrap_or(0)
                        .max(0) as u64,
                })
                // `default` only when something limits it.
                .filter(|q| {
                    q.name != crate::model::DEFAULT_QUOTA
                        || cfg.quota_limit.is_some()
                        || q.used_ratio.is_some()
                })
                .collect();
        let quota_used_ratio = quotas
            .iter()
            .filter_map(|q| q.used_ratio)
            .max_by(f64::total_cmp);
        let binding_quota = quotas
            .iter()
            .filter(|q| q.binds > 0)
            .max_by_key(|q| q.binds)
            .map(|q| q.name.clone());
        let janitor = self.janitor_beat().await?.map(|b| b.status(now_ms));
        // Pipelines by size only (their own status reads their tokens).
        let pipelines = self.pipeline_status_sampled(name, cfg, &[], 0).await?;
        let field = |i: usize| rot.get(i).cloned().flatten().unwrap_or_default();
        let operation = (!field(6).is_empty()).then(|| crate::model::OperationStatus {
            kind: field(6),
            started_at: crate::time::rfc3339(field(7).parse().unwrap_or(0)),
            tokens_done: field(8).parse().unwrap_or(0),
        });
        let lease_skew = self.lease_skew(name, now_ms).await?;
        let rotation_schedule = match &view.config.rotation {
            Some(s) => Some(self.calendar_of(name, Some(s.clone()), 7, now_ms).await?),
            None => None,
        };
        Ok(PoolStatus {
            rotation_schedule,
            lease_skew,
            janitor,
            operation,
            pipelines,
            pool: name.to_string(),
            tokens,
            leases_active: leases,
            avg_ttl_remaining_s,
            utilization,
            refresh_success_rate,
            quota_used_ratio,
            quotas,
            binding_quota,
            frozen: view.frozen,
            refresh_failures: failed as u64,
            refresh_short_lived: *stats.get("refresh_short_lived").unwrap_or(&0) as u64,
            warnings: view.warnings,
            rotation: rotation_status(&rot, tokens_deprecated, now_ms),
            sizing,
            global: None,
        })
    }

    /// Used share of each quota (`default` first, then the pool's others in order) over limited
    /// tokens in rotation: exact up to 1,000 tokens, a random sample of 1,000 above that (status
    /// must not walk a 100k-token pool).
    async fn quota_ratios(&self, name: &str, ids: &[String]) -> Result<Vec<Option<f64>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let rows = self.token_rows(name, &["state"], ids).await?;
        // (used, limit) per quota.
        let mut sums: Vec<(f64, f64)> = vec![];
        for (values, quotas) in rows.into_iter().flatten() {
            let state = values.first().cloned().flatten().unwrap_or_default();
            if !matches!(state.as_str(), "active" | "deprecated") {
                continue;
            }
            sums.resize(sums.len().max(quotas.len()), (0.0, 0.0));
            for (i, q) in quotas.iter().enumerate() {
                let Some(lim) = q.limit else {
                    continue;
                };
                sums[i].0 += (q.used.max(0) + q.reserved.max(0)) as f64;
                sums[i].1 += lim as f64;
            }
        }
        Ok(sums
            .into_iter()
            .map(|(used, limit)| (limit > 0.0).then(|| (used / limit).min(1.0)))
            .collect())
    }
}
