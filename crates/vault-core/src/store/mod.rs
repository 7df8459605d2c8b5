//! Typed store operations: one function per Lua script (each an atomic transition) plus plain
//! reads. Every call is bounded by the configured Redis timeout, so an unreachable or stalled
//! Redis becomes [`VaultError::RedisUnavailable`] instead of a hung request.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use redis::aio::ConnectionManagerConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::config::RedisArgs;
use crate::crypto::Sealed;
use crate::error::VaultError;
use crate::keys::Keys;
pub use crate::model::SealedToken;
use crate::model::{
    AuditEntry, LeaseGrant, PoolConfig, PoolRefresh, PoolStatus, PoolView, Report, RotationStatus,
    TokenMeta, VaultEvent, VIEW_STATES,
};
pub use crate::refresh::{ClaimedJob, RefreshedToken};
use crate::refresh::{RefreshResult, RetryPolicy};
use crate::scripts;
use crate::Result;
pub use pipelines::{PipelineNews, PipelineStep, ShortRaw, PIPELINE_BATCH};
pub use rate::{LeaseRate, RATE_MINUTES};
use reply::typed;
pub use schedule::RotationStart;

/// What an acquire asks for.
#[derive(Debug, Clone, Default)]
pub struct AcquireArgs {
    pub lease_id: String,
    pub worker: String,
    pub units: u64,
    /// Expected cost by dimension other than requests (empty: the pool's estimates).
    pub costs: BTreeMap<String, u64>,
    pub ttl_ms: Option<u64>,
    pub min_ttl_ms: Option<u64>,
    pub session: String,
    /// Already scoped to the calling client ("" = none).
    pub idempotency_key: String,
    /// Fingerprint of what was asked: a reused key with another request is refused.
    pub request_fp: String,
    /// "": the free part of the pool.
    pub pipeline: String,
}

/// The token a release or rotate gave back, and its state afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Released {
    pub token_id: String,
    pub state: String,
}

/// The storage layout this version reads and writes (`LAYOUT_VERSION` in lua/rules/base.lua,
/// which a unit test holds equal): 3 = internal token ids and the fingerprint index.
pub const LAYOUT_VERSION: &str = "3";

/// Tokens one batch of a whole-pool operation handles: a few milliseconds of Redis time.
pub const POOL_OP_BATCH: usize = 100;

/// Tokens one deposit call writes: about 35 µs of Redis time each, so ~2 ms a call (3.1 ms the
/// longest measured, `TV_BENCH_ONLY=deposit cargo bench --bench throughput`).
pub const DEPOSIT_BATCH: usize = 50;

/// Events one `publish_event` call appends and publishes: an `XADD` and a `PUBLISH` each, well
/// under a millisecond a call.
pub const EVENT_BATCH: usize = 100;

/// How long a deposit's ids stay reserved for it: far longer than a deposit takes (40 calls
/// for the largest), short enough that ids reserved by a vault that died midway are free again
/// soon.
pub const DEPOSIT_RESERVATION_MS: i64 = 60_000;

/// Who asks [`Store::pools_due`]: each reads only the indexes its own sweeps serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweeper {
    Janitor,
    Refresher,
}

/// Which sweeps have work in a pool now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolDue {
    /// A whole-pool operation is unfinished.
    pub operation: bool,
    /// A lease is past its deadline.
    pub leases: bool,
    /// A cooldown has ended.
    pub cooled: bool,
    /// A token's life fell below the pool's minimum.
    pub expiring: bool,
    /// A deprecated token's sunset has come.
    pub sunset: bool,
    /// A token reached the pool's maximum age (scheduled rotation).
    pub aged: bool,
    /// A pipeline needs work: its deadline passed, it is under strength or being assigned or
    /// given back, or what happened to shares waits to be announced.
    pub pipelines: bool,
    /// A preemptive refresh is due.
    pub refresh: bool,
    /// A refresh job for the refresher is visible (claimable).
    pub jobs: bool,
    /// The pool has health probes configured.
    pub probe: bool,
}

/// Where a whole-pool operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOp {
    /// `reconfigure`, `rotate`, `cancel`, `delete`; "" = none was running.
    pub op: String,
    pub done: bool,
    /// Tokens it changed so far.
    pub affected: u64,
}

/// A lease that some transition ended (revoke, freeze, reap).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EndedLease {
    pub lease_id: String,
    pub token_id: String,
}

#[derive(Clone)]
pub struct Store {
    /// Multiplexed connections, used round robin: each carries many calls at once, so there is
    /// nothing to check out or check back (no per-call PING or UNWATCH, as a checkout pool sends).
    /// They go to one Redis, or follow the primary Sentinel names.
    conns: Arc<upstream::Connections>,
    keys: Keys,
    timeout: Duration,
    audit_max: u64,
    events_max: u64,
    /// Tests pin "now" here; `None` means every script reads Redis `TIME`.
    clock: Option<Arc<AtomicI64>>,
    /// Replica-acknowledged writes (`TV_REDIS_WAIT_*`).
    wait: crate::config::WaitArgs,
    /// Leases this process granted since the last flush (the pools' observed rate).
    tally: Arc<rate::LeaseTally>,
    /// The global control plane, when this region is one of several (`TV_GLOBAL_REDIS_URL`).
    global: Option<crate::global::Global>,
    /// The counter of failed calls: `tv_redis_errors_total`, or the global primary's own (its
    /// partition is not this region's Redis failing).
    errors_metric: &'static str,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys.prefix())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A report as release and rotate receive it.
fn report_args(r: &Report) -> scripts::ReportArgs {
    scripts::ReportArgs {
        used: r.used,
        outcome: r.outcome.as_str().to_string(),
        retry_ms: r.retry_after_s.map(|s| (s * 1000.0).round() as i64),
        remaining: r.remaining,
        reset_at: r.reset_at.map(|t| t.0),
        costs: crate::model::map_arg(&r.costs),
        quotas: crate::model::map_arg(&r.quotas),
        rate_limit: crate::model::map_arg(&r.rate_limit),
    }
}

impl Store {
    /// Build the connection pool. Connections are made lazily; call [`Store::load_scripts`]
    /// at start-up to fail fast.
    pub fn connect(args: &RedisArgs) -> Result<Self> {
        // A broken connection is replaced in the background; a call waiting for it is bounded by
        // the one budget (`timed`), so reconnecting is tried once, briefly.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(args.timeout()))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        if args.wait.replicas > 0 && args.wait.timeout_ms >= args.redis_timeout_ms {
            return Err(VaultError::RedisUnavailable(format!(
                "invalid Redis configuration: TV_REDIS_WAIT_TIMEOUT_MS ({}) must be below TV_REDIS_TIMEOUT_MS ({}), the budget of the whole call",
                args.wait.timeout_ms, args.redis_timeout_ms
            )));
        }
        let conns =
            upstream::Connections::new(&args.redis_url, args.redis_pool_size, cfg, args.timeout())?;
        if conns.is_cluster() && args.wait.replicas > 0 {
            return Err(VaultError::RedisUnavailable(
                "invalid Redis configuration: TV_REDIS_WAIT_REPLICAS is not supported with Redis Cluster yet".into(),
            ));
        }
        args.log_effective();
        Ok(Self {
            conns: Arc::new(conns),
            keys: Keys::new(args.prefix.clone()),
            timeout: args.timeout(),
            audit_max: args.audit_max_entries.max(1),
            events_max: args.events_max_entries.max(1),
            clock: None,
            wait: args.wait.clone(),
            tally: Arc::default(),
            global: None,
            errors_metric: "tv_redis_errors_total",
        })
    }

    /// Count failed calls in `metric` instead of `tv_redis_errors_total`.
    pub(crate) fn with_errors_metric(mut self, metric: &'static str) -> Self {
        self.errors_metric = metric;
        self
    }

    /// Join the global control plane (see [`crate::global`]).
    pub fn with_global(mut self, global: Option<crate::global::Global>) -> Self {
        self.global = global;
        self
    }

    /// The global control plane, when configured.
    pub fn global(&self) -> Option<&crate::global::Global> {
        self.global.as_ref()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Pin the scripts' clock to `clock` (unix ms) — tests only.
    pub fn with_clock(mut self, clock: Arc<AtomicI64>) -> Self {
        self.clock = Some(clock);
        self
    }

    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| c.load(Ordering::SeqCst).to_string())
            .unwrap_or_default()
    }

    /// Bound a Redis call by the one budget, and count its failures by kind.
    async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(VaultError::RedisBusy(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        match &r {
            Err(VaultError::RedisBusy(_)) => {
                metrics::counter!(self.errors_metric, "kind" => "busy").increment(1)
            }
            Err(VaultError::RedisUnavailable(_)) => {
                metrics::counter!(self.errors_metric, "kind" => "unavailable").increment(1);
                // Behind Sentinel: the primary may have moved.
                self.conns.suspect();
            }
            _ => {}
        }
        r
    }

    async fn conn(&self) -> Result<upstream::Conn> {
        self.conns.next(false).await
    }

    /// A client for a connection of the caller's own (a pub/sub subscription), to the Redis the
    /// store's connections go to (behind Sentinel, the primary now).
    pub async fn dedicated_client(&self, url: &str) -> Result<redis::Client> {
        self.conns.client(url).await
    }

    /// Up to `limit` stream entries from `start` (inclusive, or exclusive with a `(` prefix),
    /// oldest first: the oldest such entries, or with `newest` the newest.
    async fn xrange(
        &self,
        key: &str,
        start: &str,
        limit: usize,
        newest: bool,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let (cmd, from, to) = match newest {
            false => ("XRANGE", start, "+"),
            true => ("XREVRANGE", "+", start),
        };
        let mut rows: Vec<(String, HashMap<String, String>)> = self
            .cmd(
                redis::cmd(cmd)
                    .arg(key)
                    .arg(from)
                    .arg(to)
                    .arg("COUNT")
                    .arg(limit)
                    .clone(),
            )
            .await?;
        if newest {
            rows.reverse();
        }
        Ok(rows)
    }

    /// About `limit` members of set `key` from `cursor`, and the next cursor (None at the
    /// end). SSCAN's COUNT is a hint: scan on until the page is full or the set is done.
    async fn sscan_page(
        &self,
        key: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        self.scan_page("SSCAN", key, cursor, limit).await
    }

    /// As [`Store::sscan_page`], for the fields of hash `key`.
    async fn hscan_page(
        &self,
        key: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        self.scan_page("HSCAN", key, cursor, limit).await
    }

    async fn scan_page(
        &self,
        scan: &str,
        key: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let mut members = Vec::new();
        let mut cur = cursor;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .cmd(
                    redis::cmd(scan)
                        .arg(key)
                        .arg(cur)
                        .arg("COUNT")
                        .arg(limit)
                        .clone(),
                )
                .await?;
            if scan == "HSCAN" {
                // Field, value, field, value...: the fields.
                members.extend(batch.into_iter().step_by(2));
            } else {
                members.extend(batch);
            }
            cur = next;
            if cur == 0 || members.len() >= limit {
                return Ok((members, (cur != 0).then_some(cur)));
            }
        }
    }

    /// A plain command (reads, the pool-name set).
    pub(crate) async fn cmd<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        self.timed(async {
            let mut c = self.conn().await?;
            cmd.query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))
        })
        .await
    }

    pub(crate) async fn pipe<T: redis::FromRedisValue>(&self, p: redis::Pipeline) -> Result<T> {
        self.timed(async {
            let mut c = self.conn().await?;
            p.query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))
        })
        .await
    }

    /// Pipelines whose commands each touch one pool (one hash slot), answered in order, as
    /// one list. On one Redis they go as one pipeline; on a cluster, where a pipeline may not
    /// cross slots, each goes on its own, all at once.
    async fn pipes(&self, groups: Vec<redis::Pipeline>) -> Result<Vec<redis::Value>> {
        if !self.conns.is_cluster() {
            let mut all = redis::pipe();
            for g in &groups {
                for c in g.cmd_iter() {
                    all.add_command(c.clone());
                }
            }
            return self.pipe(all).await;
        }
        let answers = futures::future::try_join_all(
            groups
                .into_iter()
                .map(|g| async move { self.pipe::<Vec<redis::Value>>(g).await }),
        )
        .await?;
        Ok(answers.into_iter().flatten().collect())
    }
}

/// A function's answer (a bulk or simple string) as bytes.
fn bytes_of(v: redis::Value) -> Vec<u8> {
    match v {
        redis::Value::BulkString(b) => b,
        redis::Value::SimpleString(s) => s.into_bytes(),
        redis::Value::VerbatimString { text, .. } => text.into_bytes(),
        _ => Vec::new(),
    }
}

mod audit;
mod clients;
mod events;
mod functions;
mod jobs;
mod leases;
mod pipelines;
mod pools;
mod rate;
mod reply;
mod schedule;
mod status;
mod sweeps;
mod tokens;
mod upstream;

#[cfg(test)]
mod tests {
    use super::functions::check_redis_version;
    use super::*;

    #[test]
    fn a_redis_without_functions_is_refused_by_name_and_version() {
        let err =
            check_redis_version("# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("Redis 6.2.14 found") && err.contains("needs Redis 7.0"),
            "{err}"
        );
        assert!(check_redis_version("redis_version:7.0.15\r\n").is_ok());
        assert!(check_redis_version("redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n").is_ok());
        assert!(check_redis_version("no version at all").is_err());
    }

    #[test]
    fn answers_are_read_strictly() {
        let err = typed::<reply::State>("tv_x_restore", serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("tv_x_restore") && err.contains("state"),
            "{err}"
        );
        // cjson writes an empty list as `{}`.
        let v: reply::Deposited =
            typed("f", serde_json::json!({"ids": {}, "unchanged": {}})).unwrap();
        assert!(v.ids.is_empty() && v.unchanged.is_empty());
        let v: reply::Deposited =
            typed("f", serde_json::json!({"ids": ["a"], "unchanged": ["a"]})).unwrap();
        assert_eq!(
            (v.ids, v.unchanged),
            (vec!["a".to_string()], vec!["a".to_string()])
        );
        assert!(
            typed::<reply::Deposited>("f", serde_json::json!({"ids": 3, "unchanged": {}})).is_err()
        );
        assert!(typed::<reply::Deposited>("f", serde_json::json!({"ids": ["a"]})).is_err());
    }
}

#[cfg(test)]
mod script_tests;
