//! What a replica does besides answering requests: it adds its lease counts to the pools' rate
//! hashes (for sizing), and computes the per-pool gauges of `/metrics`.

use std::collections::BTreeSet;
use std::time::Duration;

use vault_core::model::PoolStatus;
use vault_core::Store;

/// Tokens a gauge refresh samples per pool for the quota ratio: a fifth of what status reads
/// (the gauges are read every interval by every replica; a ratio over 200 tokens is close enough).
const GAUGE_SAMPLE: usize = 200;

/// How often this replica's lease counts go to Redis.
pub const TALLY_FLUSH: Duration = Duration::from_secs(5);

/// Flush the lease counts every [`TALLY_FLUSH`] (counts not written are kept for the next try).
pub fn spawn_tally_flush(store: Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TALLY_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = store.flush_lease_tally().await {
                tracing::debug!(error = %e, "lease counts not flushed; kept for the next try");
            }
        }
    });
}

/// Every `interval`, read the status of up to `max_pools` pools and set the `tv_pool_*` gauges.
/// Pools that are gone get their gauges zeroed (the exporter cannot drop a series).
pub fn spawn_pool_gauges(store: Store, interval: Duration, max_pools: usize) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shown = BTreeSet::new();
        loop {
            tick.tick().await;
            match pool_gauges(&store, max_pools, &shown).await {
                Ok(now) => shown = now,
                Err(e) => tracing::debug!(error = %e, "pool gauges not refreshed"),
            }
        }
    });
}

async fn pool_gauges(
    store: &Store,
    max_pools: usize,
    shown: &BTreeSet<String>,
) -> vault_core::Result<BTreeSet<String>> {
    let names = store.pool_names().await?;
    let mut now = BTreeSet::new();
    for name in names.into_iter().take(max_pools) {
        match store.pool_status_sampled(&name, GAUGE_SAMPLE).await {
            Ok(st) => {
                pool_gauges_of(&name, Some(&st));
                for p in &st.pipelines {
                    pipeline_gauges_of(&name, &p.name, Some(p));
                    now.insert(format!("{name}/{}", p.name));
                }
                for q in &st.quotas {
                    now.insert(format!("{name}#{}", q.name));
                }
                now.insert(name);
            }
            Err(vault_core::VaultError::PoolNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    // Pool names hold neither `/` nor `#`: `pool/pipeline` names a pipeline's series,
    // `pool#quota` a quota's.
    for gone in shown.difference(&now) {
        if let Some((pool, pipeline)) = gone.split_once('/') {
            pipeline_gauges_of(pool, pipeline, None);
        } else if let Some((pool, quota)) = gone.split_once('#') {
            quota_gauges_of(pool, quota, None);
        } else {
            pool_gauges_of(gone, None);
        }
    }
    Ok(now)
}

/// Set the `tv_pipeline_*` gauges of a pipeline; all to 0 when it is gone (`None`).
fn pipeline_gauges_of(pool: &str, pipeline: &str, p: Option<&vault_core::model::PipelineStatus>) {
    let v = |f: fn(&vault_core::model::PipelineStatus) -> f64| p.map_or(0.0, f);
    for (name, value) in [
        ("tv_pipeline_tokens", v(|p| p.tokens as f64)),
        ("tv_pipeline_tokens_wanted", v(|p| p.tokens_wanted as f64)),
        (
            "tv_pipeline_under_strength",
            v(|p| u8::from(p.under_strength) as f64),
        ),
    ] {
        metrics::gauge!(name, "pool" => pool.to_string(), "pipeline" => pipeline.to_string())
            .set(value);
    }
}

/// Set the `tv_pool_*` gauges of `pool` from its status; all to 0 when the pool is gone (`None`).
fn pool_gauges_of(pool: &str, st: Option<&PoolStatus>) {
    for state in vault_core::model::VIEW_STATES {
        let n = st.and_then(|s| s.tokens.get(state)).copied().unwrap_or(0);
        metrics::gauge!("tv_pool_tokens", "pool" => pool.to_string(), "state" => state)
            .set(n as f64);
    }
    let v = |f: fn(&PoolStatus) -> f64| st.map_or(0.0, f);
    for (name, value) in [
        ("tv_pool_leases_active", v(|s| s.leases_active as f64)),
        ("tv_pool_utilization", v(|s| s.utilization)),
        (
            "tv_pool_quota_used_ratio",
            v(|s| s.quota_used_ratio.unwrap_or(0.0)),
        ),
        ("tv_pool_frozen", v(|s| u8::from(s.frozen) as f64)),
        ("tv_pool_lease_rate", v(|s| s.sizing.lease_rate_per_s)),
        (
            "tv_pool_tokens_needed",
            v(|s| s.sizing.needed.tokens_needed as f64),
        ),
        (
            "tv_pool_headroom_tokens",
            v(|s| s.sizing.headroom_tokens as f64),
        ),
        // Tokens past their maximum age not replaced yet: waiting their turn or being rotated.
        (
            "tv_tokens_rotation_due",
            v(|s| {
                s.rotation_schedule
                    .as_ref()
                    .map_or(0.0, |c| (c.overdue + c.in_flight) as f64)
            }),
        ),
        // The last full minute's busiest and median token (the lease-skew alert).
        (
            "tv_pool_token_leases_per_minute_max",
            v(|s| {
                s.lease_skew
                    .as_ref()
                    .map_or(0.0, |k| k.busiest_leases as f64)
            }),
        ),
        (
            "tv_pool_token_leases_per_minute_median",
            v(|s| {
                s.lease_skew
                    .as_ref()
                    .map_or(0.0, |k| k.median_leases as f64)
            }),
        ),
    ] {
        metrics::gauge!(name, "pool" => pool.to_string()).set(value);
    }
    for q in st.map(|s| s.quotas.as_slice()).unwrap_or_default() {
        quota_gauges_of(pool, &q.name, Some(q));
    }
}

/// Set the `tv_pool_quota_*` gauges of one quota; to 0 when it is gone (`None`: the pool was
/// deleted, or its config no longer has the quota).
fn quota_gauges_of(pool: &str, quota: &str, q: Option<&vault_core::model::QuotaStatus>) {
    metrics::gauge!("tv_pool_quota_ratio", "pool" => pool.to_string(), "quota" => quota.to_string())
        .set(q.and_then(|q| q.used_ratio).unwrap_or(0.0));
    metrics::gauge!("tv_pool_quota_binds", "pool" => pool.to_string(), "quota" => quota.to_string())
        .set(q.map_or(0.0, |q| q.binds as f64));
}
