//! Typed store operations: one function per Lua script (each an atomic transition) plus plain
//! reads. Every call is bounded by the configured Redis timeout, so an unreachable or stalled
//! Redis becomes [`VaultError::RedisUnavailable`] instead of a hung request.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

/// The status pipeline's answer: live leases, tokens with an expiry, stats hash, Redis TIME,
/// sampled token ids.
type StatusRow = (
    u64,
    u64,
    HashMap<String, i64>,
    (i64, i64),
    Vec<String>,
    Vec<Option<String>>,
);

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

/// What an acquire asks for.
#[derive(Debug, Clone, Default)]
pub struct AcquireArgs {
    pub lease_id: String,
    pub worker: String,
    pub units: u64,
    pub ttl_ms: Option<u64>,
    pub min_ttl_ms: Option<u64>,
    pub session: String,
    /// Already scoped to the calling client ("" = none).
    pub idempotency_key: String,
    /// Fingerprint of what was asked: a reused key with another request is refused.
    pub request_fp: String,
}

/// The token a release or rotate gave back, and its state afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Released {
    pub token_id: String,
    pub state: String,
}

/// Tokens one batch of a whole-pool operation handles: a few milliseconds of Redis time.
pub const POOL_OP_BATCH: usize = 100;

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
    conns: Arc<[ConnectionManager]>,
    next_conn: Arc<std::sync::atomic::AtomicUsize>,
    keys: Keys,
    timeout: Duration,
    audit_max: u64,
    events_max: u64,
    /// Tests pin "now" here; `None` means every script reads Redis `TIME`.
    clock: Option<Arc<AtomicI64>>,
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
    pub(super) struct Deposited {
        #[serde(deserialize_with = "lua_list")]
        pub(super) ids: Vec<String>,
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
    pub(super) struct SunsetToken {
        pub(super) token_id: String,
        #[serde(deserialize_with = "lua_list")]
        pub(super) leases_ended: Vec<String>,
    }
    #[derive(Deserialize)]
    pub(super) struct Sunset {
        #[serde(deserialize_with = "lua_list")]
        pub(super) revoked: Vec<SunsetToken>,
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

/// A pool's view from its config hash; None when the hash is empty (no such pool).
fn pool_view(name: &str, f: &HashMap<String, String>) -> Option<PoolView> {
    // A pool whose deletion has started is gone (as `load_cfg` has it in Lua).
    if f.is_empty() || f.get("op").map(String::as_str) == Some("delete") {
        return None;
    }
    let config = PoolConfig::from_fields(f);
    let issued_ttl_s = f.get("issued_ttl_s").and_then(|v| v.parse().ok());
    Some(PoolView {
        warnings: config.margin_warnings(issued_ttl_s),
        issued_ttl_s,
        name: name.to_string(),
        config,
        frozen: f.get("frozen").map(String::as_str) == Some("1"),
        frozen_reason: f.get("frozen_reason").filter(|r| !r.is_empty()).cloned(),
        tokens: None,
    })
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

fn opt_arg<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn report_args(r: &Report) -> Vec<String> {
    vec![
        opt_arg(r.used),
        r.outcome.as_str().to_string(),
        opt_arg(r.retry_after_s.map(|s| (s * 1000.0).round() as i64)),
        opt_arg(r.remaining),
        opt_arg(r.reset_at.map(|t| t.0)),
    ]
}

impl Store {
    /// Build the connection pool. Connections are made lazily; call [`Store::load_scripts`]
    /// at start-up to fail fast.
    pub fn connect(args: &RedisArgs) -> Result<Self> {
        let invalid =
            |e: String| VaultError::RedisUnavailable(format!("invalid Redis configuration: {e}"));
        // RESP3: a connection that closes (a Redis restart, a failover) tells its manager at once
        // through a disconnection notice, so it is replaced before the next call instead of
        // failing it.
        let info = redis::IntoConnectionInfo::into_connection_info(args.redis_url.as_str())
            .map_err(|e| invalid(e.to_string()))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| invalid(e.to_string()))?;
        // A broken connection is replaced in the background; a call waiting for it is bounded by
        // the one budget (`timed`), so reconnecting is tried once, briefly.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(args.timeout()))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conns = (0..args.redis_pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), cfg.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        args.log_effective();
        Ok(Self {
            conns: conns.into(),
            next_conn: Default::default(),
            keys: Keys::new(args.prefix.clone()),
            timeout: args.timeout(),
            audit_max: args.audit_max_entries.max(1),
            events_max: args.events_max_entries.max(1),
            clock: None,
        })
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
                metrics::counter!("tv_redis_errors_total", "kind" => "busy").increment(1)
            }
            Err(VaultError::RedisUnavailable(_)) => {
                metrics::counter!("tv_redis_errors_total", "kind" => "unavailable").increment(1)
            }
            _ => {}
        }
        r
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let i = self.next_conn.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        Ok(self.conns[i].clone())
    }

    /// Up to `limit` stream entries from `start` (inclusive, or exclusive with a `(` prefix).
    async fn xrange(
        &self,
        key: &str,
        start: &str,
        limit: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        self.cmd(
            redis::cmd("XRANGE")
                .arg(key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .clone(),
        )
        .await
    }

    /// About `limit` members of set `key` from `cursor`, and the next cursor (None at the
    /// end). SSCAN's COUNT is a hint: scan on until the page is full or the set is done.
    async fn sscan_page(
        &self,
        key: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let mut members = Vec::new();
        let mut cur = cursor;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .cmd(
                    redis::cmd("SSCAN")
                        .arg(key)
                        .arg(cur)
                        .arg("COUNT")
                        .arg(limit)
                        .clone(),
                )
                .await?;
            members.extend(batch);
            cur = next;
            if cur == 0 || members.len() >= limit {
                return Ok((members, (cur != 0).then_some(cur)));
            }
        }
    }

    /// A plain command (reads, the pool-name set).
    async fn cmd<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        self.timed(async {
            let mut c = self.conn().await?;
            cmd.query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))
        })
        .await
    }

    async fn pipe<T: redis::FromRedisValue>(&self, p: redis::Pipeline) -> Result<T> {
        self.timed(async {
            let mut c = self.conn().await?;
            p.query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))
        })
        .await
    }

    /// Run one transition script on `pool`'s keys; `{"err":...}` answers become errors.
    /// Call a transition: an `{"err": code}` answer becomes its `VaultError`, any other is read
    /// as `R`, strictly.
    async fn eval<R: serde::de::DeserializeOwned>(
        &self,
        function: &str,
        pool: &str,
        args: &[String],
    ) -> Result<R> {
        let v = self.eval_raw(function, pool, args).await?;
        if let Some(code) = v.get("err").and_then(Value::as_str) {
            return Err(VaultError::from_script(code, &v));
        }
        typed(function, v)
    }

    /// Run one transition and return its JSON answer as is.
    async fn eval_raw(&self, function: &str, pool: &str, args: &[String]) -> Result<Value> {
        let keys = self.keys.pool(pool).script_keys();
        let now = self.now_arg();
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function)
            .arg(keys.len())
            .arg(&keys)
            .arg(&now)
            .arg(args);
        let raw: String = self.fcall(&cmd).await?;
        serde_json::from_str(&raw)
            .map_err(|e| VaultError::Internal(format!("script answer is not JSON: {e}")))
    }

    /// Send an `FCALL`; when Redis does not have the library (it restarted empty, a failover to
    /// a replica that never got it, someone flushed functions), load it and call once more.
    async fn fcall<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let first = self
            .timed(async {
                let mut c = self.conn().await?;
                Ok(cmd.query_async::<T>(&mut c).await)
            })
            .await?;
        match first {
            Ok(v) => Ok(v),
            Err(e) if e.to_string().contains("Function not found") => {
                tracing::warn!(library = %scripts::LIBRARY.name, "redis lost the function library: loading it again");
                self.load_scripts().await?;
                self.timed(async {
                    let mut c = self.conn().await?;
                    cmd.query_async::<T>(&mut c)
                        .await
                        .map_err(|e| VaultError::from_redis(&e))
                })
                .await
            }
            Err(e) => Err(VaultError::from_redis(&e)),
        }
    }

    /// Load the function library (`FUNCTION LOAD REPLACE`, the same code under the same name is
    /// a no-op). Refuses a Redis older than 7.0 with the version it found, and fails closed when
    /// Redis refuses functions.
    pub async fn load_scripts(&self) -> Result<()> {
        self.timed(async {
            let mut c = self.conn().await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut c)
                .await
                .map_err(|e| VaultError::from_redis(&e))?;
            check_redis_version(&info)?;
            let _: String = redis::cmd("FUNCTION")
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

    // ---- audit -------------------------------------------------------------------------

    /// Append an audit entry to the pool's stream (or the global one), capped at about
    /// `TV_AUDIT_MAX_ENTRIES`. Redis assigns the id, so entries are ordered by Redis time.
    pub async fn audit(&self, pool: Option<&str>, e: &AuditEntry) -> Result<()> {
        let key = match pool {
            Some(p) => self.keys.pool(p).audit(),
            None => self.keys.audit(),
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.audit_max)
            .arg("*");
        cmd.arg("actor").arg(&e.actor).arg("action").arg(&e.action);
        let optional = [
            ("actor_jti", &e.actor_jti),
            ("pool", &e.pool),
            ("token_id", &e.token_id),
            ("lease_id", &e.lease_id),
            ("outcome", &e.outcome),
            ("detail", &e.detail),
        ];
        for (field, v) in optional {
            if let Some(v) = v {
                cmd.arg(field).arg(v);
            }
        }
        self.cmd::<String>(cmd).await.map(drop)
    }

    /// Read audit entries after `after` (a stream id, exclusive) or from `since_ms`.
    pub async fn audit_read(
        &self,
        pool: Option<&str>,
        since_ms: Option<i64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let key = match pool {
            Some(p) => self.keys.pool(p).audit(),
            None => self.keys.audit(),
        };
        let start = match (after, since_ms) {
            (Some(id), _) => format!("({id}"),
            (None, Some(ms)) => ms.to_string(),
            (None, None) => "-".to_string(),
        };
        let rows = self.xrange(&key, &start, limit).await?;
        Ok(rows
            .into_iter()
            .map(|(id, mut f)| {
                let ms: i64 = id
                    .split('-')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                AuditEntry {
                    at: crate::time::rfc3339(ms),
                    id,
                    actor: f.remove("actor").unwrap_or_default(),
                    actor_jti: f.remove("actor_jti"),
                    action: f.remove("action").unwrap_or_default(),
                    pool: f.remove("pool"),
                    token_id: f.remove("token_id"),
                    lease_id: f.remove("lease_id"),
                    outcome: f.remove("outcome"),
                    detail: f.remove("detail"),
                }
            })
            .collect())
    }

    // ---- events ------------------------------------------------------------------------

    /// Append `e` to the event stream and publish it; returns the event id.
    pub async fn publish_event(&self, e: &VaultEvent) -> Result<String> {
        let json = serde_json::to_string(e).expect("events serialize");
        let key = self.keys.events();
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&*scripts::PUBLISH_EVENT)
            .arg(2)
            .arg(&key)
            .arg(&key)
            .arg(self.events_max)
            .arg(&json);
        self.fcall(&cmd).await
    }

    /// The id of the newest event, if any.
    pub async fn newest_event_id(&self) -> Result<Option<String>> {
        let rows: Vec<(String, HashMap<String, String>)> = self
            .cmd(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.events())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .clone(),
            )
            .await?;
        Ok(rows.into_iter().next().map(|(id, _)| id))
    }

    /// The id of the oldest event still kept (older ones were trimmed by the cap).
    pub async fn oldest_event_id(&self) -> Result<Option<String>> {
        let rows = self.xrange(&self.keys.events(), "-", 1).await?;
        Ok(rows.into_iter().next().map(|(id, _)| id))
    }

    /// Events after `after` (exclusive), oldest first.
    pub async fn events_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, VaultEvent)>> {
        let rows = self
            .xrange(&self.keys.events(), &format!("({after}"), limit)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, f)| serde_json::from_str(f.get("data")?).ok().map(|e| (id, e)))
            .collect())
    }

    // ---- client revocations --------------------------------------------------------------

    /// Remember a minted client token's pools (None = every pool) until it expires.
    pub async fn client_record(
        &self,
        jti: &str,
        pools: Option<&[String]>,
        ttl_s: i64,
    ) -> Result<()> {
        let value = pools.map(|p| p.join(",")).unwrap_or_else(|| "*".into());
        self.cmd(
            redis::cmd("SET")
                .arg(self.keys.client(jti))
                .arg(value)
                .arg("EX")
                .arg(ttl_s.max(1))
                .clone(),
        )
        .await
    }

    /// The pools a client token was minted for: `None` when unknown (minted offline, or
    /// expired), `Some(None)` for every pool.
    pub async fn client_pools(&self, jti: &str) -> Result<Option<Option<Vec<String>>>> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.keys.client(jti)).clone())
            .await?;
        Ok(v.map(|v| {
            (v != "*").then(|| {
                v.split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
        }))
    }

    /// Store a revoked client-token id until `until_s` and tell every replica.
    pub async fn revoke_client(&self, jti: &str, until_s: i64) -> Result<()> {
        let mut p = redis::pipe();
        p.cmd("ZADD")
            .arg(self.keys.revoked_clients())
            .arg(until_s)
            .arg(jti)
            .ignore();
        p.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.revoked_clients())
            .arg("-inf")
            .arg(crate::time::now_ms() / 1000)
            .ignore();
        p.cmd("PUBLISH")
            .arg(self.keys.revocation_channel())
            .arg(format!("{jti} {until_s}"))
            .ignore();
        self.pipe::<()>(p).await
    }

    /// Every revoked client-token id still in force, with its expiry.
    pub async fn revoked_clients(&self) -> Result<Vec<(String, i64)>> {
        let now = crate::time::now_ms() / 1000;
        self.cmd(
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.revoked_clients())
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .clone(),
        )
        .await
    }

    // ---- pools -------------------------------------------------------------------------

    /// Create or replace a pool's config. Returns true when it was created.
    pub async fn pool_upsert(&self, name: &str, cfg: &PoolConfig) -> Result<bool> {
        let fields = serde_json::to_string(&cfg.to_fields()).expect("config serializes");
        let v: reply::Upserted = self.eval(&scripts::POOL_UPSERT, name, &[fields]).await?;
        // The name set is a separate slot; the cfg hash is the truth, this is the index.
        self.cmd::<()>(redis::cmd("SADD").arg(self.keys.pools()).arg(name).clone())
            .await?;
        if !v.created {
            self.pool_op_finish(name, &v.op_id).await?;
        }
        Ok(v.created)
    }

    /// What `who`'s sweeps would find in each of `pools`, read in one pipeline of cheap
    /// commands (the earliest entry of each time index it serves, a few config fields), so
    /// that a sweep runs a pool's scripts only where something is due. Fields of the other
    /// sweeper are left false.
    pub async fn pools_due(&self, pools: &[String], who: Sweeper) -> Result<Vec<PoolDue>> {
        if pools.is_empty() {
            return Ok(vec![]);
        }
        let janitor = who == Sweeper::Janitor;
        let mut p = redis::pipe();
        p.cmd("TIME");
        for name in pools {
            let pk = self.keys.pool(name);
            let indexes = if janitor {
                vec![pk.leases(), pk.cool(), pk.exp(), pk.sunset(), pk.due()]
            } else {
                vec![pk.due(), pk.jobs()]
            };
            for key in indexes {
                p.cmd("ZRANGE").arg(key).arg(0).arg(0).arg("WITHSCORES");
            }
            p.cmd("HMGET")
                .arg(pk.cfg())
                .arg(&["op", "lease_ttl_s", "min_token_ttl_s", "probe"]);
        }
        let mut rows: Vec<redis::Value> = self.pipe(p).await?;
        let time: (i64, i64) = redis::from_redis_value(rows.remove(0))
            .map_err(|e| VaultError::Internal(format!("TIME: {e}")))?;
        let now = match &self.clock {
            Some(c) => c.load(Ordering::SeqCst),
            None => time.0 * 1000 + time.1 / 1000,
        } as f64;
        let first = |v: &redis::Value| -> Option<f64> {
            let r: Vec<(String, f64)> = redis::from_redis_value(v.clone()).ok()?;
            r.first().map(|(_, s)| *s)
        };
        let due = |v: &redis::Value| first(v).is_some_and(|s| s <= now);
        let per = if janitor { 6 } else { 3 };
        Ok(rows
            .chunks(per)
            .map(|r| {
                let cfg: Vec<Option<String>> =
                    redis::from_redis_value(r[per - 1].clone()).unwrap_or_default();
                let field = |i: usize| cfg.get(i).cloned().flatten();
                if !janitor {
                    return PoolDue {
                        refresh: due(&r[0]),
                        jobs: due(&r[1]),
                        probe: field(3).is_some_and(|p| !p.is_empty() && p != "null"),
                        ..Default::default()
                    };
                }
                let fields: HashMap<String, String> = [("lease_ttl_s", 1), ("min_token_ttl_s", 2)]
                    .into_iter()
                    .filter_map(|(k, i)| field(i).map(|v| (k.to_string(), v)))
                    .collect();
                let min_ttl_ms = PoolConfig::from_fields(&fields).min_token_ttl_s as f64 * 1000.0;
                PoolDue {
                    operation: field(0).is_some_and(|o| !o.is_empty()),
                    leases: due(&r[0]),
                    cooled: due(&r[1]),
                    expiring: first(&r[2]).is_some_and(|s| s < now + min_ttl_ms),
                    sunset: due(&r[3]),
                    refresh: due(&r[4]),
                    ..Default::default()
                }
            })
            .collect())
    }

    /// One batch of the pool's running whole-pool operation (see `lua/pool_op.lua`).
    /// `op_id`: the operation the caller drives ("" = whichever runs).
    pub async fn pool_op_step(&self, pool: &str, op_id: &str) -> Result<PoolOp> {
        let v: reply::Batch = self
            .eval(
                &scripts::POOL_OP,
                pool,
                &[POOL_OP_BATCH.to_string(), op_id.to_string()],
            )
            .await?;
        let op = PoolOp {
            op: v.op,
            done: v.done,
            affected: v.affected,
        };
        if op.op == "delete" && op.done {
            // The name set is another slot: the index goes once the pool's keys are gone,
            // unless the pool was created again in between (then it stays listed).
            self.cmd::<()>(redis::cmd("SREM").arg(self.keys.pools()).arg(pool).clone())
                .await?;
            let again: bool = self
                .cmd(redis::cmd("EXISTS").arg(self.keys.pool(pool).cfg()).clone())
                .await?;
            if again {
                self.cmd::<()>(redis::cmd("SADD").arg(self.keys.pools()).arg(pool).clone())
                    .await?;
            }
        }
        Ok(op)
    }

    /// Run the pool's operation to its end, batch after batch, each a short script of its own
    /// (other pools' calls go between them). It runs in a task of its own, so a caller that
    /// goes away (a client hanging up) does not stop it half-way; a replica that dies leaves
    /// it to the janitors, who drive every unfinished operation on.
    pub async fn pool_op_finish(&self, pool: &str, op_id: &str) -> Result<PoolOp> {
        let (store, pool, op_id) = (self.clone(), pool.to_string(), op_id.to_string());
        tokio::spawn(async move {
            loop {
                let op = store.pool_op_step(&pool, &op_id).await?;
                if op.done {
                    return Ok(op);
                }
            }
        })
        .await
        .map_err(|e| VaultError::Internal(format!("pool operation task: {e}")))?
    }

    pub async fn pool_get(&self, name: &str) -> Result<PoolView> {
        let f: HashMap<String, String> = self
            .cmd(
                redis::cmd("HGETALL")
                    .arg(self.keys.pool(name).cfg())
                    .clone(),
            )
            .await?;
        pool_view(name, &f).ok_or(VaultError::PoolNotFound)
    }

    pub async fn pool_config(&self, name: &str) -> Result<PoolConfig> {
        Ok(self.pool_get(name).await?.config)
    }

    /// Write every setting a pool's config lacks (pools written before every default was
    /// stored): the functions read settings and never invent them. Returns how many pools were
    /// completed. Safe to run from several processes at once (each writes the same values).
    pub async fn complete_pool_configs(&self) -> Result<u64> {
        const DERIVED: [&str; 2] = ["min_token_ttl_s", "refresh_margin_s"];
        let mut done = 0;
        for chunk in self.pool_names().await?.chunks(500) {
            let mut p = redis::pipe();
            for pool in chunk {
                p.cmd("HMGET").arg(self.keys.pool(pool).cfg()).arg(&DERIVED);
            }
            let rows: Vec<Vec<Option<String>>> = self.pipe(p).await?;
            for (pool, row) in chunk.iter().zip(rows) {
                if row
                    .iter()
                    .all(|v| v.as_deref().is_some_and(|v| !v.is_empty()))
                {
                    continue;
                }
                let Ok(cfg) = self.pool_config(pool).await else {
                    continue;
                };
                // Settings only: the refresh record is the pool's own (a legacy one may still
                // hold its client secret for `vaultctl keys reencrypt` to seal).
                let fields: Vec<(&str, String)> = cfg
                    .to_fields()
                    .into_iter()
                    .filter(|(k, _)| {
                        !k.starts_with("refresh")
                            || *k == "refresh_margin_s"
                            || *k == "refresh_concurrency"
                    })
                    .filter(|(k, _)| *k != "probe")
                    .collect();
                let mut cmd = redis::cmd("HSET");
                cmd.arg(self.keys.pool(pool).cfg());
                for (k, v) in &fields {
                    cmd.arg(*k).arg(v);
                }
                let _: i64 = self.cmd(cmd).await?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Every pool name, sorted.
    pub async fn pool_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .cmd(redis::cmd("SMEMBERS").arg(self.keys.pools()).clone())
            .await?;
        names.sort();
        Ok(names)
    }

    /// Token counts by view state.
    pub async fn token_counts(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        for s in VIEW_STATES {
            p.cmd("SCARD").arg(pk.view(s));
        }
        let counts: Vec<u64> = self.pipe(p).await?;
        Ok(VIEW_STATES
            .iter()
            .map(|s| s.to_string())
            .zip(counts)
            .collect())
    }

    /// One page of pools with their token counts: up to `limit` names from `cursor` (SSCAN of
    /// the pool set), or, for a client limited to some pools, from its own list (the cursor is
    /// then an offset). Every pool of the page is read in one pipeline. Returns the page and
    /// the next cursor (None at the end).
    pub async fn pool_page(
        &self,
        only: Option<&[String]>,
        limit: usize,
        cursor: u64,
    ) -> Result<(Vec<PoolView>, Option<u64>)> {
        let (names, next) = match only {
            Some(own) => {
                let mut own = own.to_vec();
                own.sort();
                own.dedup();
                let from = (cursor as usize).min(own.len());
                let to = (from + limit).min(own.len());
                (
                    own[from..to].to_vec(),
                    (to < own.len()).then_some(to as u64),
                )
            }
            None => self.sscan_page(&self.keys.pools(), cursor, limit).await?,
        };
        if names.is_empty() {
            return Ok((vec![], next));
        }
        let mut p = redis::pipe();
        for name in &names {
            let pk = self.keys.pool(name);
            p.cmd("HGETALL").arg(pk.cfg());
            for st in VIEW_STATES {
                p.cmd("SCARD").arg(pk.view(st));
            }
        }
        let rows: Vec<redis::Value> = self.pipe(p).await?;
        let per = 1 + VIEW_STATES.len();
        let mut views = Vec::with_capacity(names.len());
        for (name, row) in names.iter().zip(rows.chunks(per)) {
            let f: HashMap<String, String> = redis::from_redis_value(row[0].clone())
                .map_err(|e| VaultError::Internal(format!("pool config: {e}")))?;
            // Deleted since it was listed (or a name without a config): skipped.
            let Some(mut view) = pool_view(name, &f) else {
                continue;
            };
            let mut counts = BTreeMap::new();
            for (st, v) in VIEW_STATES.iter().zip(&row[1..]) {
                let n: u64 = redis::from_redis_value(v.clone())
                    .map_err(|e| VaultError::Internal(format!("token count: {e}")))?;
                counts.insert(st.to_string(), n);
            }
            view.tokens = Some(counts);
            views.push(view);
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((views, next))
    }

    /// Delete a pool. Without `force` it must hold no tokens. Returns the tokens deleted.
    pub async fn pool_delete(&self, name: &str, force: bool) -> Result<u64> {
        let v: reply::Deleting = self
            .eval(
                &scripts::POOL_DELETE,
                name,
                &[if force { "1" } else { "0" }.into()],
            )
            .await?;
        self.pool_op_finish(name, &v.op_id).await?;
        Ok(v.tokens)
    }

    pub async fn pool_status(&self, name: &str) -> Result<PoolStatus> {
        let view = self.pool_get(name).await?;
        let tokens = self.token_counts(name).await?;
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        p.cmd("ZCARD").arg(pk.leases());
        p.cmd("ZCARD").arg(pk.exp());
        p.cmd("HGETALL").arg(pk.stats());
        p.cmd("TIME");
        p.cmd("SRANDMEMBER").arg(pk.ids()).arg(1000);
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
        let (leases, exp_n, stats, time, sample, rot): StatusRow = self.pipe(p).await?;
        let now_ms = match &self.clock {
            Some(c) => c.load(Ordering::SeqCst),
            None => time.0 * 1000 + time.1 / 1000,
        };
        let avg_ttl_remaining_s = (exp_n > 0).then(|| {
            let sum = *stats.get("exp_sum_s").unwrap_or(&0) as f64;
            (sum / exp_n as f64 - now_ms as f64 / 1000.0).max(0.0)
        });
        let tokens_deprecated = tokens["deprecated"];
        let leasable: u64 = ["active", "leased", "cooling", "deprecated"]
            .iter()
            .map(|s| tokens[*s])
            .sum();
        let capacity = leasable * view.config.max_leases_per_token as u64;
        let utilization = if capacity == 0 {
            0.0
        } else {
            leases as f64 / capacity as f64
        };
        let ok = *stats.get("refresh_ok").unwrap_or(&0) as f64;
        let failed = *stats.get("refresh_fail").unwrap_or(&0) as f64;
        let refresh_success_rate = (ok + failed > 0.0).then(|| ok / (ok + failed));
        let quota_used_ratio = self
            .quota_ratio(name, &view.config, &sample, now_ms)
            .await?;
        let janitor = self.janitor_beat().await?.map(|b| b.status(now_ms));
        let field = |i: usize| rot.get(i).cloned().flatten().unwrap_or_default();
        let operation = (!field(6).is_empty()).then(|| crate::model::OperationStatus {
            kind: field(6),
            started_at: crate::time::rfc3339(field(7).parse().unwrap_or(0)),
            tokens_done: field(8).parse().unwrap_or(0),
        });
        Ok(PoolStatus {
            janitor,
            operation,
            pool: name.to_string(),
            tokens,
            leases_active: leases,
            avg_ttl_remaining_s,
            utilization,
            refresh_success_rate,
            quota_used_ratio,
            frozen: view.frozen,
            refresh_failures: failed as u64,
            refresh_short_lived: *stats.get("refresh_short_lived").unwrap_or(&0) as u64,
            warnings: view.warnings,
            rotation: rotation_status(&rot, tokens_deprecated, now_ms),
        })
    }

    /// Record that a janitor finished a sweep. The record expires after ten intervals (at
    /// least a minute), so a janitor gone for long shows as none at all.
    pub async fn janitor_beat_write(&self, interval: Duration) -> Result<()> {
        let interval_ms = interval.as_millis() as u64;
        let now = self.now_ms().await?;
        self.cmd(
            redis::cmd("SET")
                .arg(self.keys.janitor())
                .arg(format!("{now} {interval_ms}"))
                .arg("PX")
                .arg((interval_ms * 10).max(60_000))
                .clone(),
        )
        .await
    }

    /// The last janitor heartbeat, if one is recent enough to be kept.
    pub async fn janitor_beat(&self) -> Result<Option<crate::model::JanitorBeat>> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.keys.janitor()).clone())
            .await?;
        Ok(v.and_then(|v| {
            let (at, iv) = v.split_once(' ')?;
            Some(crate::model::JanitorBeat {
                last_sweep_ms: at.parse().ok()?,
                interval_ms: iv.parse().ok()?,
            })
        }))
    }

    /// Used share of the quota over limited tokens in rotation: exact up to 1,000 tokens, a
    /// random sample of 1,000 above that (status must not walk a 100k-token pool).
    async fn quota_ratio(
        &self,
        name: &str,
        cfg: &PoolConfig,
        ids: &[String],
        now_ms: i64,
    ) -> Result<Option<f64>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        for id in ids {
            p.cmd("HMGET").arg(pk.token(id)).arg(&[
                "state",
                "used",
                "reserved",
                "quota_limit",
                "win_end",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = self.pipe(p).await?;
        let (mut used, mut limit) = (0f64, 0f64);
        for r in rows {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            if !matches!(get(0).as_str(), "active" | "deprecated") {
                continue;
            }
            let Some(lim) = get(3)
                .parse::<f64>()
                .ok()
                .or(cfg.quota_limit.map(|l| l as f64))
            else {
                continue;
            };
            let win_end: f64 = get(4).parse().unwrap_or(0.0);
            let u: f64 = if win_end > 0.0 && win_end <= now_ms as f64 {
                0.0
            } else {
                get(1).parse().unwrap_or(0.0)
            };
            used += u + get(2).parse::<f64>().unwrap_or(0.0);
            limit += lim;
        }
        Ok((limit > 0.0).then(|| (used / limit).min(1.0)))
    }

    pub async fn freeze(
        &self,
        pool: &str,
        revoke_leases: bool,
        reason: &str,
    ) -> Result<Vec<EndedLease>> {
        // Live leases end in batches (each a short script); the pool is frozen from the first.
        let mut all = vec![];
        loop {
            let v: reply::LeasesEnded = self
                .eval(
                    &scripts::FREEZE,
                    pool,
                    &[
                        if revoke_leases { "1" } else { "0" }.into(),
                        reason.into(),
                        POOL_OP_BATCH.to_string(),
                    ],
                )
                .await?;
            let ended = v.leases_ended;
            let full = ended.len() >= POOL_OP_BATCH;
            all.extend(ended);
            if !full {
                return Ok(all);
            }
        }
    }

    pub async fn unfreeze(&self, pool: &str) -> Result<()> {
        self.eval::<Value>(&scripts::UNFREEZE, pool, &[])
            .await
            .map(drop)
    }

    // ---- tokens ------------------------------------------------------------------------

    pub async fn deposit(&self, pool: &str, tokens: &[SealedToken]) -> Result<Vec<String>> {
        let v: reply::Deposited = self
            .eval(
                &scripts::DEPOSIT,
                pool,
                &[serde_json::to_string(tokens).expect("tokens serialize")],
            )
            .await?;
        Ok(v.ids)
    }

    /// The raw token hash (sealed secret included): for vault-api's own use, never answered.
    pub async fn token_fields(&self, pool: &str, id: &str) -> Result<HashMap<String, String>> {
        let f: HashMap<String, String> = self
            .cmd(
                redis::cmd("HGETALL")
                    .arg(self.keys.pool(pool).token(id))
                    .clone(),
            )
            .await?;
        if f.is_empty() {
            self.pool_get(pool).await?;
            return Err(VaultError::TokenNotFound);
        }
        Ok(f)
    }

    /// Now, by the one clock (Redis `TIME`, or the pinned test clock).
    pub async fn now_ms(&self) -> Result<i64> {
        if let Some(c) = &self.clock {
            return Ok(c.load(Ordering::SeqCst));
        }
        let (s, us): (i64, i64) = self.cmd(redis::cmd("TIME")).await?;
        Ok(s * 1000 + us / 1000)
    }

    pub async fn token_get(&self, pool: &str, id: &str) -> Result<TokenMeta> {
        let cfg = self.pool_config(pool).await?;
        let row: Vec<Option<String>> = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(self.keys.pool(pool).token(id))
                    .arg(&TokenMeta::FIELDS[..])
                    .clone(),
            )
            .await?;
        TokenMeta::from_row(&row, &cfg, self.now_ms().await?).ok_or(VaultError::TokenNotFound)
    }

    /// One page of token metadata, optionally only tokens in view state `state`.
    /// Returns the page and the cursor of the next one (None at the end).
    pub async fn token_list(
        &self,
        pool: &str,
        state: Option<&str>,
        limit: usize,
        cursor: u64,
    ) -> Result<(Vec<TokenMeta>, Option<u64>)> {
        let cfg = self.pool_config(pool).await?;
        let pk = self.keys.pool(pool);
        let set = match state {
            Some(s) => pk.view(s),
            None => pk.ids(),
        };
        let (ids, next) = self.sscan_page(&set, cursor, limit).await?;
        let mut p = redis::pipe();
        for id in &ids {
            p.cmd("HMGET").arg(pk.token(id)).arg(&TokenMeta::FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = if ids.is_empty() {
            vec![]
        } else {
            self.pipe(p).await?
        };
        let now = self.now_ms().await?;
        let mut metas: Vec<TokenMeta> = rows
            .iter()
            .filter_map(|row| TokenMeta::from_row(row, &cfg, now))
            .collect();
        metas.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((metas, next))
    }

    pub async fn token_delete(&self, pool: &str, id: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .eval(&scripts::TOKEN_DELETE, pool, &[id.into()])
            .await?;
        Ok(v.leases_ended)
    }

    /// Revoke at once; returns the leases that ended (empty when it was already revoked).
    /// The revocation transition alone; [`Store::revoke_token`] also announces and audits it.
    pub async fn revoke(&self, pool: &str, id: &str, reason: &str) -> Result<Vec<String>> {
        let v: reply::LeaseIdsEnded = self
            .eval(&scripts::REVOKE, pool, &[id.into(), reason.into()])
            .await?;
        Ok(v.leases_ended)
    }

    pub async fn restore(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self.eval(&scripts::RESTORE, pool, &[id.into()]).await?;
        Ok(v.state)
    }

    pub async fn deprecate(&self, pool: &str, id: &str, sunset_ms: Option<i64>) -> Result<String> {
        let v: reply::State = self
            .eval(&scripts::DEPRECATE, pool, &[id.into(), opt_arg(sunset_ms)])
            .await?;
        Ok(v.state)
    }

    pub async fn refresh_enqueue(&self, pool: &str, id: &str) -> Result<String> {
        let v: reply::State = self
            .eval(&scripts::REFRESH_ENQUEUE, pool, &[id.into()])
            .await?;
        Ok(v.state)
    }

    // ---- leases ------------------------------------------------------------------------

    pub async fn acquire(&self, pool: &str, a: &AcquireArgs) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .eval(
                &scripts::ACQUIRE,
                pool,
                &[
                    a.lease_id.clone(),
                    a.worker.clone(),
                    a.units.max(1).to_string(),
                    opt_arg(a.ttl_ms),
                    opt_arg(a.min_ttl_ms),
                    a.session.clone(),
                    a.idempotency_key.clone(),
                    a.request_fp.clone(),
                ],
            )
            .await?;
        Ok(v.lease)
    }

    pub async fn renew(
        &self,
        pool: &str,
        lease_id: &str,
        ttl_ms: Option<u64>,
        units: Option<u64>,
    ) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .eval(
                &scripts::RENEW,
                pool,
                &[lease_id.into(), opt_arg(ttl_ms), opt_arg(units)],
            )
            .await?;
        Ok(v.lease)
    }

    pub async fn release(&self, pool: &str, lease_id: &str, report: &Report) -> Result<Released> {
        let mut args = vec![lease_id.to_string()];
        args.extend(report_args(report));
        self.eval(&scripts::RELEASE, pool, &args).await
    }

    /// Release `lease_id` with `report` and lease another token in one step. When no other
    /// token is eligible the release still happened and the answer is `PoolExhausted`.
    pub async fn rotate(
        &self,
        pool: &str,
        lease_id: &str,
        report: &Report,
        new_lease_id: &str,
    ) -> Result<(Released, Result<LeaseGrant>)> {
        let mut args = vec![lease_id.to_string()];
        args.extend(report_args(report));
        args.push(new_lease_id.to_string());
        let v = self.eval_raw(&scripts::ROTATE, pool, &args).await?;
        let Some(rel) = v.get("released").cloned() else {
            // The release itself failed (lease gone, bad report): nothing changed.
            let code = v.get("err").and_then(Value::as_str).unwrap_or("internal");
            return Err(VaultError::from_script(code, &v));
        };
        let released: Released = typed(&scripts::ROTATE, rel)?;
        let lease = match v.get("err").and_then(Value::as_str) {
            Some(code) => Err(VaultError::from_script(code, &v)),
            None => typed::<reply::Lease>(&scripts::ROTATE, v).map(|l| l.lease),
        };
        Ok((released, lease))
    }

    // ---- janitor sweeps ----------------------------------------------------------------

    pub async fn reap_leases(&self, pool: &str, max: usize) -> Result<Vec<EndedLease>> {
        let v: reply::Reaped = self
            .eval(&scripts::REAP_LEASES, pool, &[max.to_string()])
            .await?;
        Ok(v.reaped)
    }

    pub async fn return_cooled(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Returned = self
            .eval(&scripts::RETURN_COOLED, pool, &[max.to_string()])
            .await?;
        Ok(v.returned)
    }

    pub async fn expire_tokens(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Moved = self
            .eval(&scripts::EXPIRE_TOKENS, pool, &[max.to_string()])
            .await?;
        Ok(v.moved)
    }

    /// Queue the refresh of tokens whose preemptive refresh is due; returns how many.
    pub async fn enqueue_due(&self, pool: &str, max: usize) -> Result<u64> {
        let v: reply::Enqueued = self
            .eval(&scripts::ENQUEUE_DUE, pool, &[max.to_string()])
            .await?;
        Ok(v.enqueued)
    }

    // ---- refresh jobs ------------------------------------------------------------------

    /// Claim the next visible job of `pool` (the external queue when `external`), hidden for
    /// `visibility_ms`. `None` when nothing is visible or `limit` jobs are already in flight.
    pub async fn job_claim(
        &self,
        pool: &str,
        external: bool,
        visibility_ms: u64,
        limit: Option<u32>,
    ) -> Result<Option<ClaimedJob>> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let v: reply::Claimed = self
            .eval(
                &scripts::JOB_CLAIM,
                pool,
                &[
                    if external { "1" } else { "0" }.into(),
                    job_id,
                    visibility_ms.to_string(),
                    opt_arg(limit),
                ],
            )
            .await?;
        Ok(v.job)
    }

    /// One page of a pool's token ids (SSCAN); `None` cursor at the end.
    pub async fn token_ids_page(
        &self,
        pool: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let (next, ids): (u64, Vec<String>) = self
            .cmd(
                redis::cmd("SSCAN")
                    .arg(self.keys.pool(pool).ids())
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .clone(),
            )
            .await?;
        Ok((ids, (next != 0).then_some(next)))
    }

    /// Re-seal one token's ciphertexts under the current key (compare-and-set against what was
    /// read). Returns false when the token changed meanwhile (nothing written).
    pub async fn reseal(
        &self,
        pool: &str,
        id: &str,
        read: (&str, &str, &str),
        secret: &Sealed,
        refresh: Option<&Sealed>,
        proxy: Option<&Sealed>,
    ) -> Result<bool> {
        let v: reply::Resealed = self
            .eval(
                &scripts::RESEAL,
                pool,
                &[
                    id.to_string(),
                    read.0.to_string(),
                    secret.data.clone(),
                    secret.key_id.clone(),
                    read.1.to_string(),
                    refresh.map(|r| r.data.clone()).unwrap_or_default(),
                    refresh.map(|r| r.key_id.clone()).unwrap_or_default(),
                    read.2.to_string(),
                    proxy.map(|r| r.data.clone()).unwrap_or_default(),
                    proxy.map(|r| r.key_id.clone()).unwrap_or_default(),
                ],
            )
            .await?;
        Ok(v.resealed)
    }

    /// The pool's default refresh settings as stored: the JSON and the sealed client secret.
    pub async fn pool_refresh_raw(&self, pool: &str) -> Result<(String, Sealed)> {
        let (json, data, key_id): (Option<String>, Option<String>, Option<String>) = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(self.keys.pool(pool).cfg())
                    .arg(&["refresh", "refresh_ct", "refresh_key_id"])
                    .clone(),
            )
            .await?;
        Ok((
            json.unwrap_or_default(),
            Sealed {
                data: data.unwrap_or_default(),
                key_id: key_id.unwrap_or_default(),
            },
        ))
    }

    /// Rewrite the pool's default refresh settings (JSON and sealed client secret), compare-and-
    /// set against what [`Store::pool_refresh_raw`] read. False when they changed meanwhile.
    pub async fn pool_reseal(
        &self,
        pool: &str,
        read: (&str, &str),
        new: &PoolRefresh,
    ) -> Result<bool> {
        let sealed = new.client_secret.clone().unwrap_or_default();
        let v: reply::Resealed = self
            .eval(
                &scripts::POOL_RESEAL,
                pool,
                &[
                    read.0.to_string(),
                    read.1.to_string(),
                    serde_json::to_string(new).expect("refresh settings serialize"),
                    sealed.data,
                    sealed.key_id,
                ],
            )
            .await?;
        Ok(v.resealed)
    }

    /// The job's token and the refresh attempts it had failed when it was claimed (`JobGone`
    /// when the job record is gone).
    pub async fn job_token(&self, pool: &str, job_id: &str) -> Result<(String, u32)> {
        let key = self.keys.pool(pool).job(job_id);
        let (token, attempts): (Option<String>, Option<u32>) = self
            .cmd(
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("token")
                    .arg("attempts")
                    .clone(),
            )
            .await?;
        Ok((token.ok_or(VaultError::JobGone)?, attempts.unwrap_or(0)))
    }

    /// Store a refreshed credential for a claimed job (sealed by the caller). A credential too
    /// short-lived for the pool's margin is stored but counts as a failed attempt (retried
    /// after `retry.backoff`, quarantined at `retry.max_attempts`): see the result's `error`.
    pub async fn job_complete(
        &self,
        pool: &str,
        job_id: &str,
        attempts_before: u32,
        done: &RefreshedToken,
        retry: &RetryPolicy,
    ) -> Result<RefreshResult> {
        let mut v: RefreshResult = self
            .eval(
                &scripts::JOB_COMPLETE,
                pool,
                &[
                    job_id.to_string(),
                    done.secret_ct.clone(),
                    done.key_id.clone(),
                    done.fingerprint.clone(),
                    done.expires_at.to_string(),
                    done.refresh_ct.clone(),
                    done.refresh_key_id.clone(),
                    (retry.backoff(attempts_before + 1).as_millis() as u64).to_string(),
                    retry.max_attempts.to_string(),
                ],
            )
            .await?;
        v.fingerprint = Some(done.fingerprint.clone());
        Ok(v)
    }

    /// Record a failed attempt: retry after `retry_after_ms`, or quarantine (`None`, or the
    /// `max_attempts`-th failure).
    pub async fn job_fail(
        &self,
        pool: &str,
        job_id: &str,
        error: &str,
        retry_after_ms: Option<u64>,
        max_attempts: u32,
    ) -> Result<RefreshResult> {
        let v: RefreshResult = self
            .eval(
                &scripts::JOB_FAIL,
                pool,
                &[
                    job_id.to_string(),
                    error.to_string(),
                    opt_arg(retry_after_ms),
                    max_attempts.to_string(),
                ],
            )
            .await?;
        Ok(v)
    }

    /// Emergency rotation: deprecate every active token, queue their refresh, revoke at
    /// `sunset_ms` what was not refreshed. Returns (rotation id, tokens deprecated).
    pub async fn pool_rotate(
        &self,
        pool: &str,
        sunset_ms: i64,
        reason: &str,
    ) -> Result<(String, u64)> {
        let rid = uuid::Uuid::new_v4().to_string();
        let v: reply::OpStarted = self
            .eval(
                &scripts::POOL_ROTATE,
                pool,
                &[sunset_ms.to_string(), reason.to_string(), rid.clone()],
            )
            .await?;
        let op = self.pool_op_finish(pool, &v.op_id).await?;
        Ok((rid, op.affected))
    }

    /// Roll an emergency rotation back; returns how many tokens are active again.
    pub async fn pool_rotate_cancel(&self, pool: &str) -> Result<u64> {
        let v: reply::OpStarted = self.eval(&scripts::POOL_ROTATE_CANCEL, pool, &[]).await?;
        Ok(self.pool_op_finish(pool, &v.op_id).await?.affected)
    }

    /// Revoke deprecated tokens past their sunset; returns the token ids.
    /// Revoke up to `max` deprecated tokens whose sunset passed. Returns each token with the
    /// leases it ended (see [`Store::sunset_due`] for the version that announces them).
    pub async fn sunset_tokens(
        &self,
        pool: &str,
        max: usize,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let v: reply::Sunset = self
            .eval(&scripts::SUNSET_TOKENS, pool, &[max.to_string()])
            .await?;
        Ok(v.revoked
            .into_iter()
            .map(|r| (r.token_id, r.leases_ended))
            .collect())
    }
}

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
        let v: reply::Deposited = typed("f", serde_json::json!({"ids": {}})).unwrap();
        assert!(v.ids.is_empty());
        let v: reply::Deposited = typed("f", serde_json::json!({"ids": ["a"]})).unwrap();
        assert_eq!(v.ids, ["a"]);
        assert!(typed::<reply::Deposited>("f", serde_json::json!({"ids": 3})).is_err());
    }
}
