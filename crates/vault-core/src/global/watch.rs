//! A replica's view of its region's freshness: the staleness rule for leases, the report in
//! status and `/readyz`, and the lag gauges.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::error::VaultError;
use crate::{Result, Store};

/// What a replica knows of its region's freshness: refreshed in the background from the
/// region's Redis (where the follower writes it), read by every lease without a Redis call.
pub struct GlobalWatch {
    /// Global time (ms) the region is current as of; -1: not known yet.
    as_of_ms: std::sync::atomic::AtomicI64,
    started_ms: i64,
    stale_after_ms: i64,
    when_stale: WhenStale,
    region: String,
}

/// How often a replica re-reads its region's freshness.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What status and `/readyz` say of the global plane.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct GlobalReport {
    /// This region's name (`TV_REGION`).
    pub region: String,
    /// How old this region's copy of the global state is (ms); None: never caught up yet.
    pub lag_ms: Option<i64>,
    /// Whether the lag is past `stale_after_s` (or it never caught up).
    pub stale: bool,
    /// `serve` or `refuse`: what leasing does while stale.
    pub when_stale: WhenStale,
    /// `TV_GLOBAL_STALE_AFTER_S`: the lag, seconds, past which the state counts as stale.
    pub stale_after_s: i64,
}

impl GlobalWatch {
    /// Start watching the region's freshness (every `WATCH_EVERY`, 250 ms), with the gauges
    /// `tv_global_lag_seconds` and `tv_global_stale`.
    pub fn spawn(store: Store, args: &GlobalArgs) -> Arc<GlobalWatch> {
        let w = Arc::new(GlobalWatch {
            as_of_ms: std::sync::atomic::AtomicI64::new(-1),
            started_ms: crate::time::now_ms(),
            stale_after_ms: (args.stale_after_s as i64).saturating_mul(1000),
            when_stale: args.when_stale,
            region: args.region.clone(),
        });
        let watch = w.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // A region Redis out of reach leaves the last value: the lag grows, as it should.
                if let Ok(Freshness {
                    as_of_ms: Some(ms), ..
                }) = store.global_freshness().await
                {
                    watch
                        .as_of_ms
                        .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
                }
                let r = watch.report();
                metrics::gauge!("tv_global_lag_seconds")
                    .set(r.lag_ms.map_or(f64::NAN, |l| l as f64 / 1000.0));
                metrics::gauge!("tv_global_stale").set(if r.stale { 1.0 } else { 0.0 });
            }
        });
        w
    }

    pub fn lag_ms(&self) -> Option<i64> {
        let at = self.as_of_ms.load(std::sync::atomic::Ordering::Relaxed);
        (at >= 0).then(|| (crate::time::now_ms() - at).max(0))
    }

    /// Stale: older than `TV_GLOBAL_STALE_AFTER_S`, or never caught up that long after start.
    pub fn stale(&self) -> bool {
        match self.lag_ms() {
            Some(lag) => lag > self.stale_after_ms,
            None => crate::time::now_ms() - self.started_ms > self.stale_after_ms,
        }
    }

    /// The staleness rule for new leases: refused with `global_state_stale` when stale and
    /// the operator chose `refuse`.
    pub fn check_lease(&self) -> Result<()> {
        if self.when_stale == WhenStale::Refuse && self.stale() {
            return Err(VaultError::GlobalStateStale(format!(
                "region {}'s copy of the global revocations is {} old (limit {} s), and this vault \
                 refuses new leases until it catches up (TV_GLOBAL_WHEN_STALE=refuse)",
                self.region,
                self.lag_ms()
                    .map_or("never caught up".into(), |l| format!("{:.1} s", l as f64 / 1000.0)),
                self.stale_after_ms / 1000
            )));
        }
        Ok(())
    }

    pub fn report(&self) -> GlobalReport {
        GlobalReport {
            region: self.region.clone(),
            lag_ms: self.lag_ms(),
            stale: self.stale(),
            when_stale: self.when_stale,
            stale_after_s: self.stale_after_ms / 1000,
        }
    }
}
