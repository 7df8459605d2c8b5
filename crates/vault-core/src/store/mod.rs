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

/// A list in a function's answer. Lua's cjson writes an empty table as `{}`, so that is an empty
/// list; anything else that is not a list is an error.
fn lua_list<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List<T> {
        Items(Vec<T>),
        Table(HashMap<String, Value>),
    }
    match List::deserialize(d)? {
        List::Items(v) => Ok(v),
        List::Table(t) if t.is_empty() => Ok(vec![]),
        List::Table(_) => Err(serde::de::Error::custom("expected a list, found an object")),
    }
}

/// The typed answers of the functions: every field the function always sends is required, so a
/// changed or broken function is an error here, never a silent default.
mod reply {
    use super::{lua_list, EndedLease};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct OpStarted {
        pub(super) op_id: String,
    }
    #[derive(Deserialize)]
    pub(super) struct Upserted {
        pub(super) created: bool,
        pub(super) op_id: String,
    }
    #[derive(Deserialize)]
    pub(super) struct Completed {
        pub(super) completed: bool,
    }
    #[derive(Deserialize)]
    pub(super) struct Migrated {
        pub(super) converted: u64,
        pub(super) left: u64,
        pub(super) done: bool,
    }
    #[derive(Deserialize)]
    pub(super) struct Deleting {
        pub(super) tokens: u64,
        pub(super) op_id: String,
    }
    #[derive(Deserialize)]
    pub(super) struct Batch {
        pub(super) op: String,
        pub(super) done: bool,
        pub(super) affected: u64,
    }
    #[derive(Deserialize)]
    pub(super) struct LeasesEnded {
        #[serde(deserialize_with = "lua_list")]
        pub(super) leases_ended: Vec<EndedLease>,
    }
    #[derive(Deserialize)]
    pub(super) struct LeaseIdsEnded {
        #[serde(deserialize_with = "lua_list")]
        pub(super) leases_ended: Vec<String>,
    }
    #[derive(Deserialize)]
    pub(super) struct TokenRows {
        #[serde(deserialize_with = "lua_list")]
        pub(super) rows: Vec<TokenRow>,
    }
    /// Both present, or both absent for a token that does not exist.
    #[derive(Deserialize)]
    pub(super) struct TokenRow {
        pub(super) fields: Option<Vec<Option<String>>>,
        pub(super) quota: Option<crate::model::QuotaNow>,
        /// The pool's other quotas (absent when it has none).
        #[serde(default)]
        pub(super) quotas: Vec<crate::model::QuotaNow>,
    }
    #[derive(Deserialize)]
    pub(super) struct Deposited {
        #[serde(deserialize_with = "lua_list")]
        pub(super) ids: Vec<String>,
        #[serde(deserialize_with = "lua_list")]
        pub(super) unchanged: Vec<String>,
    }
    #[derive(Deserialize)]
    pub(super) struct State {
        pub(super) state: String,
    }
    #[derive(Deserialize)]
    pub(super) struct Reaped {
        #[serde(deserialize_with = "lua_list")]
        pub(super) reaped: Vec<EndedLease>,
    }
    #[derive(Deserialize)]
    pub(super) struct Returned {
        pub(super) returned: u64,
    }
    #[derive(Deserialize)]
    pub(super) struct Moved {
        pub(super) moved: u64,
    }
    #[derive(Deserialize)]
    pub(super) struct Enqueued {
        pub(super) enqueued: u64,
    }
    #[derive(Deserialize)]
    pub(super) struct Claimed {
        pub(super) job: Option<crate::store::ClaimedJob>,
    }
    #[derive(Deserialize)]
    pub(super) struct Resealed {
        pub(super) resealed: bool,
    }
    #[derive(Deserialize)]
    pub(super) struct RevokedToken {
        pub(super) token_id: String,
        #[serde(deserialize_with = "lua_list")]
        pub(super) leases_ended: Vec<String>,
    }
    /// Tokens a call revoked (sunset, fingerprint), each with the leases it ended.
    #[derive(Deserialize)]
    pub(super) struct RevokedNow {
        #[serde(deserialize_with = "lua_list")]
        pub(super) revoked: Vec<RevokedToken>,
        /// More to revoke (a batch of a fingerprint revocation).
        #[serde(default)]
        pub(super) more: bool,
    }
    #[derive(Deserialize)]
    pub(super) struct Lease {
        pub(super) lease: crate::model::LeaseGrant,
    }
}

/// Read a function's answer as `R`; a missing or mistyped field is an error that names it.
fn typed<R: serde::de::DeserializeOwned>(function: &str, v: Value) -> Result<R> {
    serde_json::from_value(v)
        .map_err(|e| VaultError::Internal(format!("{function} answered unexpectedly: {e}")))
}

/// An error while loading or probing scripts: an outage or a slow answer stays what it is;
/// anything else means Redis refuses scripting.
/// Refuse a Redis without Functions, naming the version found (`INFO server` text).
fn check_redis_version(info: &str) -> Result<()> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let found = field("redis_version:").unwrap_or_default();
    let mut parts = found.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < scripts::MIN_REDIS {
        let server = match field("valkey_version:") {
            Some(v) => format!("Valkey {v}"),
            None => format!("Redis {found}"),
        };
        return Err(VaultError::ScriptsUnavailable(format!(
            "{server} found; tokenvault needs Redis {}.{} or later (or Valkey 7.2 or later) for Redis Functions",
            scripts::MIN_REDIS.0,
            scripts::MIN_REDIS.1
        )));
    }
    Ok(())
}

fn scripts_refused(e: &redis::RedisError, what: &str) -> VaultError {
    match VaultError::from_redis(e) {
        e @ (VaultError::RedisUnavailable(_) | VaultError::RedisBusy(_)) => e,
        _ => VaultError::ScriptsUnavailable(what.to_string()),
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

    /// Call a transition on `pool`'s keys: an `{"err": code}` answer becomes its
    /// `VaultError`, any other is read as `R`, strictly.
    async fn call<F: scripts::Function, R: serde::de::DeserializeOwned>(
        &self,
        pool: &str,
        call: &F,
    ) -> Result<R> {
        let v = self.call_raw(pool, call).await?;
        if let Some(code) = v.get("err").and_then(Value::as_str) {
            return Err(VaultError::from_script(code, &v));
        }
        typed(F::name(), v)
    }

    /// Call a transition and return its JSON answer as is. A function that hands out a sealed
    /// secret answers `[json, secret bytes]`: the bytes become the `secret_ct` (base64) of the
    /// answer's `lease`.
    async fn call_raw<F: scripts::Function>(&self, pool: &str, call: &F) -> Result<Value> {
        let function = F::name();
        let keys = self.keys.pool(pool).script_keys();
        let now = self.now_arg();
        let read_only = scripts::read_only(function);
        let mut cmd = redis::cmd(if read_only { "FCALL_RO" } else { "FCALL" });
        cmd.arg(function)
            .arg(keys.len())
            .arg(&keys)
            .arg(&now)
            .arg(call.argv());
        let waits = self.waits(function);
        let (raw, secret): (Vec<u8>, Option<Vec<u8>>) =
            match self.fcall_waiting::<redis::Value>(&cmd, waits).await? {
                redis::Value::Array(mut parts) if parts.len() == 2 => {
                    let secret = parts.pop().map(bytes_of);
                    (parts.pop().map(bytes_of).unwrap_or_default(), secret)
                }
                other => (bytes_of(other), None),
            };
        let mut v: Value = serde_json::from_slice(&raw)
            .map_err(|e| VaultError::Internal(format!("script answer is not JSON: {e}")))?;
        if let (Some(secret), Some(lease)) = (secret, v.get_mut("lease")) {
            lease["secret_ct"] = Value::String(STANDARD.encode(secret));
        }
        Ok(v)
    }

    /// Send an `FCALL`; when Redis does not have the library (it restarted empty, a failover to
    /// a replica that never got it, someone flushed functions), load it and call once more.
    async fn fcall<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.fcall_waiting(cmd, false).await
    }

    /// Whether a call of `function` waits for replicas to acknowledge it (`TV_REDIS_WAIT_*`):
    /// with `safety`, the transitions that take something out of use or put something in the
    /// vault; with `all`, every one that writes.
    fn waits(&self, function: &str) -> bool {
        if self.wait.replicas == 0 {
            return false;
        }
        if self.wait.scope == "all" {
            return !scripts::read_only(function);
        }
        [
            &scripts::REVOKE,
            &scripts::FREEZE,
            &scripts::DEPOSIT,
            &scripts::SUNSET_TOKENS,
            &scripts::POOL_ROTATE,
            &scripts::DEPRECATE,
            &scripts::TOKEN_DELETE,
            &scripts::POOL_DELETE,
        ]
        .iter()
        .any(|f| f.as_str() == function)
    }

    /// `WAIT` for the configured replicas after a write sent on the same connection: the
    /// answer is the count that acknowledged every write of that connection so far.
    fn wait_cmd(&self) -> redis::Cmd {
        redis::cmd("WAIT")
            .arg(self.wait.replicas)
            .arg(self.wait.timeout_ms)
            .clone()
    }

    fn check_acks(&self, acks: i64) -> Result<()> {
        if acks < self.wait.replicas as i64 {
            return Err(VaultError::NotReplicated(format!(
                "{acks} of {} replicas within {} ms",
                self.wait.replicas, self.wait.timeout_ms
            )));
        }
        Ok(())
    }

    async fn fcall_waiting<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        waits: bool,
    ) -> Result<T> {
        // `None`: Redis does not have the function. Errors are classified inside `timed`, so
        // they are counted like every other Redis call's.
        let not_found = |e: &redis::RedisError| e.to_string().contains("Function not found");
        let send = || {
            self.timed(async {
                if !waits {
                    let mut c = self.conn().await?;
                    return match cmd.query_async::<T>(&mut c).await {
                        Err(e) if not_found(&e) => Ok(None),
                        answer => answer.map(Some).map_err(|e| VaultError::from_redis(&e)),
                    };
                }
                let mut c = self.conns.next(true).await?;
                let mut p = redis::pipe();
                p.add_command(cmd.clone()).add_command(self.wait_cmd());
                match p.query_async::<(T, i64)>(&mut c).await {
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(VaultError::from_redis(&e)),
                    Ok((answer, acks)) => self.check_acks(acks).map(|_| Some(answer)),
                }
            })
        };
        if let Some(answer) = send().await? {
            return Ok(answer);
        }
        tracing::warn!(library = %scripts::LIBRARY.name, "redis lost the function library: loading it again");
        self.load_scripts().await?;
        send().await?.ok_or_else(|| {
            VaultError::ScriptsUnavailable(format!(
                "{} is missing right after it was loaded",
                scripts::LIBRARY.name
            ))
        })
    }

    /// Load the function library (`FUNCTION LOAD REPLACE`, the same code under the same name is
    /// a no-op). Refuses a Redis older than 7.0 with the version it found, and fails closed when
    /// Redis refuses functions.
    pub async fn load_scripts(&self) -> Result<()> {
        self.timed(async {
            let mut c = self.conn().await?;
            // A cluster answers INFO from every node (a map by node): each must be new enough.
            let info: redis::Value = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))?;
            let per_node: Vec<redis::Value> = match info {
                redis::Value::Map(nodes) => nodes.into_iter().map(|(_, v)| v).collect(),
                one => vec![one],
            };
            for v in per_node {
                let text: String = redis::from_redis_value(v)
                    .map_err(|e| VaultError::Internal(format!("INFO server: {e}")))?;
                check_redis_version(&text)?;
            }
            // On a cluster it goes to every primary.
            let _: redis::Value = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(&scripts::LIBRARY.code)
                .query_async(&mut c)
                .await
                .map_err(|e| {
                    scripts_refused(&e, &format!("loading {}: {e}", scripts::LIBRARY.name))
                })?;
            Ok(())
        })
        .await
    }

    /// What every process does at start-up: load the function library, then check that Redis
    /// holds nothing in a layout this version does not read. An error for which
    /// [`VaultError::refuses_start`] holds means the process must not run.
    pub async fn prepare(&self) -> Result<()> {
        self.load_scripts().await?;
        self.check_layout().await
    }

    /// Readiness: Redis answers, the function library is loaded (loaded again if Redis lost
    /// it) and `FCALL` is allowed.
    pub async fn check_ready(&self) -> Result<()> {
        let listed: Vec<redis::Value> = self
            .cmd(
                redis::cmd("FUNCTION")
                    .arg("LIST")
                    .arg("LIBRARYNAME")
                    .arg(&scripts::LIBRARY.name)
                    .clone(),
            )
            .await?;
        if listed.is_empty() {
            self.load_scripts().await?;
        }
        let _: String = self
            .timed(async {
                let mut c = self.conn().await?;
                redis::cmd("FCALL")
                    .arg(&*scripts::PING)
                    .arg(0)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| scripts_refused(&e, &e.to_string()))
            })
            .await?;
        Ok(())
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
mod jobs;
mod leases;
mod pipelines;
mod pools;
mod rate;
mod sweeps;
mod tokens;
mod upstream;

#[cfg(test)]
mod tests {
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
