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
                set_pool_gauges(&st);
                now.insert(name);
            }
            Err(vault_core::VaultError::PoolNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    for gone in shown.difference(&now) {
        zero_pool_gauges(gone);
    }
    Ok(now)
}

fn set_pool_gauges(st: &PoolStatus) {
    let pool = st.pool.clone();
    for (state, n) in &st.tokens {
        metrics::gauge!("tv_pool_tokens", "pool" => pool.clone(), "state" => state.clone())
            .set(*n as f64);
    }
    metrics::gauge!("tv_pool_leases_active", "pool" => pool.clone()).set(st.leases_active as f64);
    metrics::gauge!("tv_pool_utilization", "pool" => pool.clone()).set(st.utilization);
    metrics::gauge!("tv_pool_quota_used_ratio", "pool" => pool.clone())
        .set(st.quota_used_ratio.unwrap_or(0.0));
    metrics::gauge!("tv_pool_frozen", "pool" => pool.clone()).set(u8::from(st.frozen) as f64);
    metrics::gauge!("tv_pool_lease_rate", "pool" => pool.clone()).set(st.sizing.lease_rate_per_s);
    metrics::gauge!("tv_pool_tokens_needed", "pool" => pool.clone())
        .set(st.sizing.needed.tokens_needed as f64);
    metrics::gauge!("tv_pool_headroom_tokens", "pool" => pool)
        .set(st.sizing.headroom_tokens as f64);
}

fn zero_pool_gauges(pool: &str) {
    for state in vault_core::model::VIEW_STATES {
        metrics::gauge!("tv_pool_tokens", "pool" => pool.to_string(), "state" => state).set(0.0);
    }
    for name in [
        "tv_pool_leases_active",
        "tv_pool_utilization",
        "tv_pool_quota_used_ratio",
        "tv_pool_frozen",
        "tv_pool_lease_rate",
        "tv_pool_tokens_needed",
        "tv_pool_headroom_tokens",
    ] {
        metrics::gauge!(name, "pool" => pool.to_string()).set(0.0);
    }
}
