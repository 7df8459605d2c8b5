//! janitor: periodic, idempotent sweeps over every pool. Each sweep is one atomic script, so
//! any number of janitors can run side by side; a second janitor only finds less to do.
//!
//! # Layout
//! - [`JanitorConfig`]: settings (clap + env).
//! - [`sweep_once`]: one pass over every pool (reap leases, return cooled tokens, expire
//!   tokens whose life ran short, revoke deprecated tokens at sunset, queue due refreshes).
//! - [`run`]: the loop, with a shutdown signal.

use std::future::Future;
use std::time::Duration;

use clap::Parser;
use tokio::time::MissedTickBehavior;
use vault_core::config::RedisArgs;
use vault_core::ops::Actor;
use vault_core::store::{PoolDue, Sweeper};
use vault_core::Store;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "janitor",
    version,
    about = "tokenvault periodic sweeps",
    after_help = "Logging: RUST_LOG (e.g. info, janitor=debug), TV_LOG_FORMAT=json for JSON lines."
)]
pub struct JanitorConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Milliseconds between sweeps.
    #[arg(
        long = "interval-ms",
        env = "TV_JANITOR_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub interval_ms: u64,
    /// Most items one script handles per call; a sweep calls again while a batch comes back full.
    #[arg(long = "batch", env = "TV_JANITOR_BATCH", default_value_t = 500)]
    pub batch: usize,
    #[command(flatten)]
    pub global: vault_core::global::GlobalArgs,
    #[command(flatten)]
    pub log: vault_core::config::LogArgs,
}

/// How often a janitor writes the global beat (the primary's clock) when it can reach the
/// global primary: the resolution of every region's measured lag.
const GLOBAL_BEAT: Duration = Duration::from_secs(1);

/// With the global plane: write the beat every `GLOBAL_BEAT` (1 s) and follow the global log
/// (one janitor of the region follows; the others stand by). Both run until the process ends:
/// an entry stopped midway is applied again from the resume point, harmlessly.
pub fn spawn_global(store: &Store) {
    let Some(global) = store.global().cloned() else {
        return;
    };
    tracing::info!(region = %global.args().region, "following the global control plane");
    let g = global.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GLOBAL_BEAT);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = g.beat().await {
                tracing::debug!(error = %e, "global beat not written (primary out of reach?)");
            }
        }
    });
    tokio::spawn(vault_core::global::follow(
        store.clone(),
        global,
        std::future::pending(),
    ));
}

/// Batches of an unfinished pool operation one sweep runs per pool.
const OP_STEPS_PER_SWEEP: usize = 200;

/// What one sweep did, summed over pools.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    pub reaped: u64,
    pub returned: u64,
    pub expired: u64,
    pub sunset: u64,
    /// Tokens whose scheduled rotation started.
    pub rotated: u64,
    pub enqueued: u64,
    pub pipelines: u64,
}

/// Call `step` until it handles fewer than `batch` items; returns the total.
async fn drain<F, Fut>(batch: usize, mut step: F) -> vault_core::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = vault_core::Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}

/// Pools probed per pipeline of [`Store::pools_due`].
const PROBE_CHUNK: usize = 500;

/// One pass over every pool. What is due is read for many pools at once with cheap commands;
/// a pool's scripts run only where something is due, so a sweep's cost follows the work, not
/// the number of pools.
pub async fn sweep_once(store: &Store, batch: usize) -> vault_core::Result<SweepStats> {
    let mut st = SweepStats::default();
    for chunk in store.pool_names().await?.chunks(PROBE_CHUNK) {
        let due = store.pools_due(chunk, Sweeper::Janitor).await?;
        for (pool, due) in chunk.iter().zip(due) {
            sweep_pool(store, pool, due, batch, &mut st).await?;
        }
    }
    Ok(st)
}

/// The sweeps one pool needs now.
async fn sweep_pool(
    store: &Store,
    p: &str,
    due: PoolDue,
    batch: usize,
    st: &mut SweepStats,
) -> vault_core::Result<()> {
    // A whole-pool operation its starter did not finish (the replica died): drive it on,
    // a bounded number of batches per sweep.
    if due.operation {
        for _ in 0..OP_STEPS_PER_SWEEP {
            if store.step_pool_operation(p, "").await?.done {
                break;
            }
        }
    }
    if due.leases {
        st.reaped += drain(batch, || async {
            Ok(store.sweep_expired_leases(p, batch).await?.len() as u64)
        })
        .await?;
    }
    if due.cooled {
        st.returned += drain(batch, || store.sweep_cooled_tokens(p, batch)).await?;
    }
    if due.expiring {
        st.expired += drain(batch, || store.sweep_expired_tokens(p, batch)).await?;
    }
    if due.sunset {
        let janitor = Actor::process("janitor");
        st.sunset += drain(batch, || store.sunset_due(&janitor, p, batch)).await?;
    }
    if due.aged {
        let janitor = Actor::process("janitor");
        st.rotated += drain(batch, || store.rotate_aged_tokens(&janitor, p, batch)).await?;
    }
    if due.pipelines {
        st.pipelines += store.tend_pipelines(&Actor::process("janitor"), p).await? as u64;
    }
    Ok(())
}

/// Sweep every `interval` until `shutdown` resolves. Errors are logged, never fatal: the next
/// tick tries again (Redis may be back by then).
pub async fn run(
    store: Store,
    interval: Duration,
    batch: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("janitor stopping");
                return;
            }
            _ = tick.tick() => {
                let span = tracing::debug_span!("sweep");
                let _e = span.enter();
                match sweep_once(&store, batch).await {
                    Ok(st) => {
                        if st != SweepStats::default() {
                            tracing::info!(reaped = st.reaped, returned = st.returned, expired = st.expired,
                                sunset = st.sunset, rotated = st.rotated, enqueued = st.enqueued, "sweep");
                        }
                        if let Err(e) = store.janitor_beat_write(interval).await {
                            tracing::warn!(error = %e, "heartbeat not written");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        }
    }
}
