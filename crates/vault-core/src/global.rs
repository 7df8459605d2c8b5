//! The global control plane: what must be the same in every region (credentials revoked
//! everywhere, revoked client tokens, global pool kill switches), held in a small global Redis
//! — a primary in one region, a plain `replicaof` replica in every region — and applied in each
//! region by one follower, through the same operations a local call uses.
//!
//! # Layout (global Redis, under the deployment prefix)
//! - `<p>:global:log` — the stream of global actions, in order; an entry is one field `e`, the
//!   JSON of a [`GlobalEntry`]. Its id (the primary's clock) is the global time of the action.
//!   Capped (`TV_GLOBAL_LOG_MAX_ENTRIES`); a region that fell behind the cap resyncs from:
//! - `<p>:global:credentials` (hash fingerprint → entry id), `<p>:global:clients` (zset jti →
//!   unix s it may be forgotten), `<p>:global:frozen` (hash pool → entry id): the state the log
//!   built, written with each entry in the same script.
//! - `<p>:global:beat` — the primary's clock (ms), written every second by every janitor that
//!   reaches the primary: a region's replica holding beat `B` holds every entry made before `B`.
//!
//! # Layout (each region's Redis)
//! - `<p>:global:applied` — the id of the last entry applied here (the resume point).
//! - `<p>:global:fresh` — `"<beat ms> <applied id>"`: this region has applied everything the
//!   primary had at global time `<beat ms>`. Its age is the region's lag.
//! - `<p>:global:follower` — the lock that makes one janitor of the region the follower.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::VaultError;
use crate::ops::Actor;
use crate::{Result, Store};

/// What the vault does when its region's copy of the global state is older than
/// `TV_GLOBAL_STALE_AFTER_S`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WhenStale {
    /// Keep leasing with what the region has (availability first).
    #[default]
    Serve,
    /// Refuse new leases with 503 `global_state_stale` (revocation first).
    Refuse,
}

/// The global plane's settings. Without `TV_GLOBAL_REDIS_URL` the vault runs in one region,
/// exactly as without them. `Debug` shows the URLs without credentials.
#[derive(Clone, Args, Default)]
pub struct GlobalArgs {
    /// The global Redis primary, where global actions are written (redis://host:port).
    #[arg(
        long = "global-redis-url",
        env = "TV_GLOBAL_REDIS_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// This region's replica of the global Redis, which every check and the follower read
    /// (default: the primary itself, for the primary's own region).
    #[arg(
        long = "global-redis-read-url",
        env = "TV_GLOBAL_REDIS_READ_URL",
        hide_env_values = true
    )]
    pub read_url: Option<String>,
    /// This region's name, in audit entries and status.
    #[arg(long = "region", env = "TV_REGION", default_value = "default")]
    pub region: String,
    /// Region replicas of the global Redis that must have a global action before it is
    /// answered (`WAIT`); 0 = answered once the global primary has it.
    #[arg(
        long = "global-wait-regions",
        env = "TV_GLOBAL_WAIT_REGIONS",
        default_value_t = 0
    )]
    pub wait_regions: u32,
    /// How long a global action waits for them; past it the answer is 503 `not_replicated`
    /// (the action is made and will be applied everywhere; repeating it is harmless).
    #[arg(
        long = "global-wait-timeout-ms",
        env = "TV_GLOBAL_WAIT_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub wait_timeout_ms: u64,
    /// Past this age of the region's copy of the global state, it is stale (status, metric,
    /// alert; and with `--global-when-stale refuse`, new leases are refused).
    #[arg(
        long = "global-stale-after-s",
        env = "TV_GLOBAL_STALE_AFTER_S",
        default_value_t = 30
    )]
    pub stale_after_s: u64,
    /// What leasing does while the global state is stale.
    #[arg(
        long = "global-when-stale",
        env = "TV_GLOBAL_WHEN_STALE",
        value_enum,
        default_value = "serve"
    )]
    pub when_stale: WhenStale,
    /// Global actions kept in the log (approximately); a region further behind resyncs from
    /// the global state instead.
    #[arg(
        long = "global-log-max-entries",
        env = "TV_GLOBAL_LOG_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub log_max_entries: u64,
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |u: &Option<String>| u.as_deref().map(redacted);
        f.debug_struct("GlobalArgs")
            .field("url", &redact(&self.url))
            .field("read_url", &redact(&self.read_url))
            .field("region", &self.region)
            .field("wait_regions", &self.wait_regions)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("stale_after_s", &self.stale_after_s)
            .field("when_stale", &self.when_stale)
            .field("log_max_entries", &self.log_max_entries)
            .finish()
    }
}

fn redacted(url: &str) -> String {
    crate::crypto::redacted_url(url).unwrap_or_else(|| "(unparsable URL)".into())
}

/// A global action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum GlobalAction {
    /// Revoke the credential of this secret fingerprint in every pool of every region.
    #[serde(rename = "credential.revoke")]
    CredentialRevoke { fingerprint: String },
    /// Refuse this client token everywhere until `until_s` (unix s).
    #[serde(rename = "client.revoke")]
    ClientRevoke { jti: String, until_s: i64 },
    /// Freeze the pool of this name in every region.
    #[serde(rename = "pool.freeze")]
    PoolFreeze { pool: String, revoke_leases: bool },
    /// Lift a global freeze in every region.
    #[serde(rename = "pool.unfreeze")]
    PoolUnfreeze { pool: String },
}

impl GlobalAction {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CredentialRevoke { .. } => "credential.revoke",
            Self::ClientRevoke { .. } => "client.revoke",
            Self::PoolFreeze { .. } => "pool.freeze",
            Self::PoolUnfreeze { .. } => "pool.unfreeze",
        }
    }

    /// The key of the global state it sets and its field ("" = none).
    fn state(&self, k: &GlobalKeys) -> (String, String, String) {
        match self {
            Self::CredentialRevoke { fingerprint } => {
                (k.credentials(), fingerprint.clone(), String::new())
            }
            Self::ClientRevoke { jti, until_s } => (k.clients(), jti.clone(), until_s.to_string()),
            Self::PoolFreeze { pool, .. } | Self::PoolUnfreeze { pool } => {
                (k.frozen(), pool.clone(), String::new())
            }
        }
    }
}

/// One entry of the global log: the action, who made it, where, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalEntry {
    #[serde(flatten)]
    pub action: GlobalAction,
    pub reason: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_jti: Option<String>,
    /// The region it was made in.
    pub region: String,
}

/// A global action as written: its entry id (`<global ms>-<seq>`) and the region replicas that
/// had it when it was answered (when `TV_GLOBAL_WAIT_REGIONS` asks to wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Written {
    pub entry_id: String,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions_acked: Option<i64>,
}

/// The global plane's key names.
#[derive(Debug, Clone)]
pub struct GlobalKeys {
    prefix: String,
}

impl GlobalKeys {
    fn k(&self, s: &str) -> String {
        format!("{}:global:{s}", self.prefix)
    }
    pub fn log(&self) -> String {
        self.k("log")
    }
    pub fn credentials(&self) -> String {
        self.k("credentials")
    }
    pub fn clients(&self) -> String {
        self.k("clients")
    }
    pub fn frozen(&self) -> String {
        self.k("frozen")
    }
    pub fn beat(&self) -> String {
        self.k("beat")
    }
    /// Every region's client-token verification keys: kid → raw public key (base64url).
    pub fn verification_keys(&self) -> String {
        self.k("keys")
    }
    /// Region keys.
    pub fn applied(&self) -> String {
        self.k("applied")
    }
    pub fn fresh(&self) -> String {
        self.k("fresh")
    }
    pub fn follower(&self) -> String {
        self.k("follower")
    }
    /// Pools this region froze because of a global freeze (a set): what a resync unfreezes
    /// when the global state no longer has them frozen, the unfreeze itself trimmed away.
    pub fn frozen_here(&self) -> String {
        self.k("frozen_here")
    }
}

/// Writes an entry and the state it sets in one step, on the primary: the log and the state
/// can never disagree.
const APPEND: &str = include_str!("../../../lua/global/append.lua");
/// The primary's clock into the beat key.
const BEAT: &str = include_str!("../../../lua/global/beat.lua");

/// The follower's connection for its blocking read of the log: one of its own (a blocking
/// `XREAD` holds its connection while it waits, so it cannot share the store's multiplexed
/// ones), made on first use and made again after it fails.
struct Link {
    url: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    fn new(url: &str) -> Self {
        Link {
            url: url.to_string(),
            conn: Mutex::new(None),
        }
    }

    async fn get(&self, timeout: Duration) -> Result<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| VaultError::Invalid(format!("global Redis URL: {e}")))?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let c = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        .map_err(|_| global_down("connect timed out"))?
        .map_err(|e| global_down(&e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    /// Run `f` on the connection within `timeout`; a failure drops the connection.
    async fn run<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let c = self.get(timeout).await?;
        match tokio::time::timeout(timeout, f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.forget().await;
                }
                Err(global_down(&e.to_string()))
            }
            Err(_) => {
                self.forget().await;
                Err(global_down("no answer in time"))
            }
        }
    }
}

fn global_down(why: &str) -> VaultError {
    VaultError::GlobalUnavailable(why.to_string())
}

/// A handle on the global plane: the primary (writes) and the region's replica (reads).
#[derive(Clone)]
pub struct Global {
    args: Arc<GlobalArgs>,
    keys: GlobalKeys,
    /// The global primary, through the same connection layer as the region's Redis: a
    /// `redis+sentinel://` URL follows the primary Sentinel names, as `TV_REDIS_URL` does.
    write: Box<Store>,
    /// The region's replica, through the same layer.
    read: Box<Store>,
    /// Its URL, for the follower's blocking reads.
    read_url: String,
    timeout: Duration,
}

/// A failure of the global primary, said as such (not as the region's Redis being down).
fn on_primary(e: VaultError) -> VaultError {
    match e {
        VaultError::RedisUnavailable(m) | VaultError::RedisBusy(m) => {
            VaultError::GlobalUnavailable(m)
        }
        other => other,
    }
}

impl Global {
    /// The plane `args` configure (None when `TV_GLOBAL_REDIS_URL` is unset), with the region's
    /// Redis settings `redis` for its budget and prefix. An unparsable URL is an error.
    pub fn from_args(
        args: &GlobalArgs,
        redis: &crate::config::RedisArgs,
    ) -> Result<Option<Global>> {
        let Some(url) = args.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let read = args
            .read_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or(url);
        let connect = |setting: &str, url: &str, extra_ms: u64| {
            Store::connect(&crate::config::RedisArgs {
                redis_url: url.to_string(),
                redis_timeout_ms: redis.redis_timeout_ms + extra_ms,
                redis_pool_size: 2,
                wait: Default::default(),
                ..redis.clone()
            })
            .map(|s| Box::new(s.with_errors_metric("tv_global_redis_errors_total")))
            .map_err(|e| VaultError::Invalid(format!("{setting}: {e}")))
        };
        Ok(Some(Global {
            args: Arc::new(args.clone()),
            keys: GlobalKeys {
                prefix: redis.prefix.clone(),
            },
            // A global action may wait for region replicas (`WAIT`) within the same call.
            write: connect("TV_GLOBAL_REDIS_URL", url, args.wait_timeout_ms)?,
            read: connect("TV_GLOBAL_REDIS_READ_URL", read, 0)?,
            read_url: read.to_string(),
            timeout: redis.timeout(),
        }))
    }

    pub fn args(&self) -> &GlobalArgs {
        &self.args
    }

    pub fn keys(&self) -> &GlobalKeys {
        &self.keys
    }

    /// Write a global action to the primary (entry and state in one script), then, with
    /// `TV_GLOBAL_WAIT_REGIONS`, wait until that many replicas have it.
    pub async fn append(
        &self,
        action: GlobalAction,
        reason: &str,
        actor: &Actor,
    ) -> Result<Written> {
        let entry = GlobalEntry {
            action,
            reason: reason.to_string(),
            actor: actor.name.clone(),
            actor_jti: actor.jti.clone(),
            region: self.args.region.clone(),
        };
        let json =
            serde_json::to_string(&entry).map_err(|e| VaultError::Internal(e.to_string()))?;
        let (state_key, field, score) = entry.action.state(&self.keys);
        let kind = entry.action.kind();
        let wait = self.args.wait_regions;
        let wait_ms = self.args.wait_timeout_ms;
        // The script and WAIT on one connection (WAIT counts that connection's writes).
        let mut p = redis::pipe();
        p.cmd("EVAL")
            .arg(APPEND)
            .arg(2)
            .arg(self.keys.log())
            .arg(state_key)
            .arg(&json)
            .arg(kind)
            .arg(&field)
            .arg(&score)
            .arg(self.args.log_max_entries.max(1000));
        let (entry_id, acks): (String, Option<i64>) = if wait > 0 {
            p.cmd("WAIT").arg(wait).arg(wait_ms);
            let (id, acks): (String, i64) = self.write.pipe(p).await.map_err(on_primary)?;
            (id, Some(acks))
        } else {
            let (id,): (String,) = self.write.pipe(p).await.map_err(on_primary)?;
            (id, None)
        };
        tracing::warn!(kind, entry_id = %entry_id, actor = %actor.name, region = %self.args.region, "global action written");
        metrics::counter!("tv_global_actions_total", "kind" => kind).increment(1);
        if let Some(a) = acks {
            if a < wait as i64 {
                return Err(VaultError::NotReplicated(format!(
                    "global action {entry_id} reached {a} of {wait} region replicas within {wait_ms} ms; it is made and will be applied everywhere"
                )));
            }
        }
        Ok(Written {
            at: entry_ms(&entry_id),
            entry_id,
            regions_acked: acks,
        })
    }

    /// Which of `fingerprints` are revoked everywhere, read from the region's replica.
    pub async fn revoked_fingerprints(&self, fingerprints: &[String]) -> Result<Vec<String>> {
        if fingerprints.is_empty() {
            return Ok(vec![]);
        }
        let found: Vec<Option<String>> = self
            .read
            .cmd(
                redis::cmd("HMGET")
                    .arg(self.keys.credentials())
                    .arg(fingerprints)
                    .clone(),
            )
            .await
            .map_err(on_primary)?;
        Ok(fingerprints
            .iter()
            .zip(found)
            .filter(|(_, f)| f.is_some())
            .map(|(fp, _)| fp.clone())
            .collect())
    }

    /// Publish this region's verification keys (kid → raw public key) to the primary, so that
    /// a client token minted here verifies in every region. A kid another region published with
    /// a different key is left as it is and returned (a naming clash the operator must fix).
    pub async fn publish_keys(&self, keys: &[(String, String)]) -> Result<Vec<String>> {
        let key = self.keys.verification_keys();
        let mut p = redis::pipe();
        for (kid, x) in keys {
            p.cmd("HSETNX").arg(&key).arg(kid).arg(x).ignore();
            p.cmd("HGET").arg(&key).arg(kid);
        }
        let held: Vec<Option<String>> = self.write.pipe(p).await.map_err(on_primary)?;
        Ok(keys
            .iter()
            .zip(held)
            .filter(|((_, x), h)| h.as_deref() != Some(x.as_str()))
            .map(|((kid, _), _)| kid.clone())
            .collect())
    }

    /// Every region's verification keys, from the region's replica.
    pub async fn verification_keys(&self) -> Result<Vec<(String, String)>> {
        self.read
            .cmd(
                redis::cmd("HGETALL")
                    .arg(self.keys.verification_keys())
                    .clone(),
            )
            .await
            .map_err(on_primary)
    }

    /// Write the primary's clock into the beat (every janitor, every second).
    pub async fn beat(&self) -> Result<()> {
        self.write
            .cmd::<()>(
                redis::cmd("EVAL")
                    .arg(BEAT)
                    .arg(1)
                    .arg(self.keys.beat())
                    .clone(),
            )
            .await
            .map_err(on_primary)
    }

    /// The last beat the region's replica holds (ms), if any.
    async fn read_beat(&self) -> Result<Option<i64>> {
        self.read
            .cmd(redis::cmd("GET").arg(self.keys.beat()).clone())
            .await
            .map_err(on_primary)
    }

    /// The `XREAD` of up to `count` entries after `after` (waiting up to `block` for one).
    fn xread(&self, after: &str, count: usize, block: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(self.keys.log()).arg(after);
        cmd
    }

    /// Up to `count` entries after `after`, from the region's replica.
    async fn read_log(&self, after: &str, count: usize) -> Result<Vec<LogEntry>> {
        let v = self
            .read
            .cmd(self.xread(after, count, None))
            .await
            .map_err(on_primary)?;
        Ok(log_entries(v))
    }

    /// As [`Global::read_log`], waiting up to `block` for an entry, on the follower's own
    /// connection.
    async fn wait_log(
        &self,
        conn: &Link,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>> {
        let cmd = self.xread(after, count, Some(block));
        let v = conn
            .run(self.timeout + block, |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        Ok(log_entries(v))
    }

    /// The oldest entry left in the log when older ones were trimmed away (None: none were),
    /// from the replica. (`max-deleted-entry-id` would be exact, but only `XDEL` moves it, not
    /// the trimming `XADD MAXLEN` does; `entries-added` above the length says entries were
    /// trimmed, since nothing deletes them otherwise.)
    async fn log_start_if_trimmed(&self) -> Result<Option<String>> {
        let key = self.keys.log();
        let exists: bool = self
            .read
            .cmd(redis::cmd("EXISTS").arg(&key).clone())
            .await
            .map_err(on_primary)?;
        if !exists {
            return Ok(None);
        }
        let info: std::collections::HashMap<String, redis::Value> = self
            .read
            .cmd(redis::cmd("XINFO").arg("STREAM").arg(&key).clone())
            .await
            .map_err(on_primary)?;
        let number = |field: &str| {
            info.get(field)
                .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                .unwrap_or(0)
        };
        if number("entries-added") <= number("length") {
            return Ok(None);
        }
        let first: Option<(String, redis::Value)> = info
            .get("first-entry")
            .and_then(|v| redis::from_redis_value(v.clone()).ok());
        Ok(first.map(|(id, _)| id))
    }
}

/// An entry of the log: its id, and the entry (None: one this version cannot read).
type LogEntry = (String, Option<GlobalEntry>);

/// The entries of an `XREAD` answer, in order. An entry this version cannot read (a newer
/// vault's) is logged and kept as None, so the resume point still moves past it.
fn log_entries(v: Option<redis::streams::StreamReadReply>) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for k in v.into_iter().flat_map(|r| r.keys) {
        for id in k.ids {
            let text: String = id.get("e").unwrap_or_default();
            let e = serde_json::from_str::<GlobalEntry>(&text)
                .inspect_err(|err| tracing::error!(entry_id = %id.id, error = %err, "global entry not understood; skipped"))
                .ok();
            out.push((id.id, e));
        }
    }
    out
}

/// An entry id (`<ms>-<seq>`) as numbers, in the order Redis gives them.
fn entry_id(id: &str) -> (u64, u64) {
    let (m, q) = id.split_once('-').unwrap_or((id, "0"));
    (m.parse().unwrap_or(0), q.parse().unwrap_or(0))
}

/// The global time (ms) in an entry id.
pub fn entry_ms(id: &str) -> i64 {
    entry_id(id).0 as i64
}

/// Whether entry id `a` comes after `b`.
fn after(a: &str, b: &str) -> bool {
    entry_id(a) > entry_id(b)
}

/// Where a region stands with the global state, as its follower last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Global time (ms) up to which every action is applied here; None: never caught up.
    pub as_of_ms: Option<i64>,
    /// The last entry applied here.
    pub applied: Option<String>,
}

impl Store {
    /// This region's freshness (one GET on the region's Redis).
    pub async fn global_freshness(&self) -> Result<Freshness> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.global_keys().fresh()).clone())
            .await?;
        let Some(v) = v else {
            return Ok(Freshness::default());
        };
        let (ms, applied) = v.split_once(' ').unwrap_or((&v, ""));
        Ok(Freshness {
            as_of_ms: ms.parse().ok(),
            applied: (!applied.is_empty()).then(|| applied.to_string()),
        })
    }

    pub fn global_keys(&self) -> GlobalKeys {
        GlobalKeys {
            prefix: self.keys().prefix().to_string(),
        }
    }

    /// Apply one global action in this region, through the operations a local call uses.
    /// Idempotent: what is already in effect here is left as it is, unannounced.
    pub async fn apply_global(&self, id: &str, e: &GlobalEntry) -> Result<()> {
        let actor = Actor {
            name: format!("{} (global, from {})", e.actor, e.region),
            jti: e.actor_jti.clone(),
        };
        match &e.action {
            GlobalAction::CredentialRevoke { fingerprint } => {
                let done = self
                    .revoke_credential(&actor, fingerprint, &e.reason)
                    .await?;
                tracing::info!(entry_id = id, fingerprint = %fingerprint, tokens = done.len(), "global credential revocation applied");
            }
            GlobalAction::ClientRevoke { jti, until_s } => {
                self.revoke_client_token(&actor, jti, *until_s).await?;
            }
            GlobalAction::PoolFreeze {
                pool,
                revoke_leases,
            } => match self.pool_get(pool).await {
                Ok(v) => {
                    self.mark_frozen_here(pool, true).await?;
                    if !v.frozen {
                        self.freeze_pool(&actor, pool, *revoke_leases, &e.reason)
                            .await?;
                    }
                }
                Err(VaultError::PoolNotFound) => {}
                Err(err) => return Err(err),
            },
            GlobalAction::PoolUnfreeze { pool } => {
                match self.pool_get(pool).await {
                    Ok(v) if v.frozen => self.unfreeze_pool(&actor, pool).await?,
                    Ok(_) | Err(VaultError::PoolNotFound) => {}
                    Err(err) => return Err(err),
                }
                self.mark_frozen_here(pool, false).await?;
            }
        }
        Ok(())
    }

    /// Record (or forget) that this region's pool is frozen by a global freeze.
    async fn mark_frozen_here(&self, pool: &str, frozen: bool) -> Result<()> {
        let key = self.global_keys().frozen_here();
        let cmd = if frozen { "SADD" } else { "SREM" };
        self.cmd(redis::cmd(cmd).arg(key).arg(pool).clone()).await
    }

    /// Whether this process holds (or now takes) the region's follower lock for `ttl`.
    async fn hold_follower_lock(&self, me: &str, ttl: Duration) -> Result<bool> {
        const HOLD: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
            if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0";
        let held: i64 = self
            .cmd(
                redis::cmd("EVAL")
                    .arg(HOLD)
                    .arg(1)
                    .arg(self.global_keys().follower())
                    .arg(me)
                    .arg(ttl.as_millis() as u64)
                    .clone(),
            )
            .await?;
        Ok(held == 1)
    }
}

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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GlobalReport {
    pub region: String,
    /// How old this region's copy of the global state is (ms); None: never caught up yet.
    pub lag_ms: Option<i64>,
    pub stale: bool,
    /// `serve` or `refuse`: what leasing does while stale.
    pub when_stale: WhenStale,
    pub stale_after_s: i64,
}

impl GlobalWatch {
    /// Start watching the region's freshness (every [`WATCH_EVERY`]), with the gauges
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

/// Entries applied per read of the log.
const FOLLOW_BATCH: usize = 100;
/// How long one blocking read waits for a new entry; the loop re-reads the beat after it.
const FOLLOW_BLOCK: Duration = Duration::from_millis(500);
/// The follower lock's life: a follower that died is replaced within it.
const FOLLOWER_LOCK: Duration = Duration::from_secs(5);

/// Follow the global log on the region's replica and apply every entry here, in order, with
/// a persisted resume point, until `stop` resolves. Any number of janitors may run it: one
/// holds the region's lock and follows, the others wait to take over. Errors are logged and
/// retried with a backoff (the replica or the region's Redis may be down for a while).
pub async fn follow(store: Store, global: Global, stop: impl Future<Output = ()>) {
    let me = uuid::Uuid::new_v4().to_string();
    // The blocking read gets a connection of its own: it holds it while it waits.
    let blocking = Link::new(&global.read_url);
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let step = follow_step(&store, &global, &blocking, &me);
        tokio::select! {
            _ = &mut stop => return,
            r = step => match r {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "global follower: retrying");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// One round: take or keep the lock, catch up to the beat the replica holds, record how
/// fresh the region is, then wait briefly for the next entry and apply what came.
async fn follow_step(store: &Store, global: &Global, blocking: &Link, me: &str) -> Result<()> {
    if !store.hold_follower_lock(me, FOLLOWER_LOCK).await? {
        tokio::time::sleep(FOLLOWER_LOCK / 5).await;
        return Ok(());
    }
    let keys = store.global_keys();
    let mut applied: String = store
        .cmd::<Option<String>>(redis::cmd("GET").arg(keys.applied()).clone())
        .await?
        .unwrap_or_else(|| "0-0".into());
    // Read first: every entry made before this beat is on the replica already.
    let beat = global.read_beat().await?;
    // Entries older than the log's start were trimmed: if the resume point is among them,
    // some this region never applied may be too. (When it was the very last one trimmed, the
    // resync was not needed: harmless, it applies nothing new.)
    let start = global.log_start_if_trimmed().await?;
    if start.is_some_and(|start| after(&start, &applied)) {
        applied = resync(store, global, &applied).await?;
    }
    loop {
        let entries = global.read_log(&applied, FOLLOW_BATCH).await?;
        let full = entries.len() == FOLLOW_BATCH;
        applied = apply_entries(store, &applied, entries).await?;
        if !full {
            break;
        }
    }
    if let Some(b) = beat {
        store
            .cmd::<()>(
                redis::cmd("SET")
                    .arg(keys.fresh())
                    .arg(format!("{b} {applied}"))
                    .clone(),
            )
            .await?;
    }
    let next = global
        .wait_log(blocking, &applied, FOLLOW_BATCH, FOLLOW_BLOCK)
        .await?;
    apply_entries(store, &applied, next).await?;
    Ok(())
}

/// Apply entries in order, moving the resume point past each once it is applied. Returns the
/// new resume point.
async fn apply_entries(
    store: &Store,
    from: &str,
    entries: Vec<(String, Option<GlobalEntry>)>,
) -> Result<String> {
    let mut applied = from.to_string();
    for (id, e) in entries {
        if !after(&id, &applied) {
            continue;
        }
        // An entry this version could not read was logged as such: only the resume point moves.
        if let Some(e) = e {
            store.apply_global(&id, &e).await?;
        }
        set_applied(store, &id).await?;
        applied = id;
    }
    Ok(applied)
}

/// The log was trimmed past this region's resume point (a partition longer than the log
/// holds): apply the whole global state instead — every revoked credential, every revoked
/// client token, every global freeze, and the unfreeze of every pool frozen here by a global
/// freeze that is no longer in force — and resume after the newest entry. Returns it.
async fn resync(store: &Store, global: &Global, applied: &str) -> Result<String> {
    tracing::error!(applied, "the global log was trimmed past this region's resume point; resyncing from the global state");
    let k = &global.keys;
    // The newest entry first: everything up to it is in the state read with it.
    let mut p = redis::pipe();
    p.cmd("XREVRANGE")
        .arg(k.log())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    p.cmd("HKEYS").arg(k.credentials());
    p.cmd("ZRANGE")
        .arg(k.clients())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    p.cmd("HKEYS").arg(k.frozen());
    #[allow(clippy::type_complexity)]
    let (last, credentials, clients, frozen): (
        Vec<(String, Vec<(String, String)>)>,
        Vec<String>,
        Vec<(String, i64)>,
        Vec<String>,
    ) = global.read.pipe(p).await.map_err(on_primary)?;
    let Some((last_id, _)) = last.into_iter().next() else {
        return Ok(applied.to_string());
    };
    let e = |action| GlobalEntry {
        action,
        reason: "global resync".into(),
        // Who did it and where is in the trimmed entry, not in the state: said as such.
        actor: "resync".into(),
        actor_jti: None,
        region: "the global state".into(),
    };
    for fingerprint in credentials {
        store
            .apply_global(&last_id, &e(GlobalAction::CredentialRevoke { fingerprint }))
            .await?;
    }
    for (jti, until_s) in clients {
        store
            .apply_global(&last_id, &e(GlobalAction::ClientRevoke { jti, until_s }))
            .await?;
    }
    // Pools frozen here by a global freeze whose unfreeze was trimmed away: unfrozen.
    let here: Vec<String> = store
        .cmd(
            redis::cmd("SMEMBERS")
                .arg(store.global_keys().frozen_here())
                .clone(),
        )
        .await?;
    for pool in here.into_iter().filter(|p| !frozen.contains(p)) {
        store
            .apply_global(&last_id, &e(GlobalAction::PoolUnfreeze { pool }))
            .await?;
    }
    for pool in frozen {
        store
            .apply_global(
                &last_id,
                &e(GlobalAction::PoolFreeze {
                    pool,
                    revoke_leases: false,
                }),
            )
            .await?;
    }
    set_applied(store, &last_id).await?;
    Ok(last_id)
}

/// Move the region's resume point to entry `id`.
async fn set_applied(store: &Store, id: &str) -> Result<()> {
    store
        .cmd(
            redis::cmd("SET")
                .arg(store.global_keys().applied())
                .arg(id)
                .clone(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let e = GlobalEntry {
            action: GlobalAction::CredentialRevoke {
                fingerprint: "sha256:0123456789ab".into(),
            },
            reason: "leaked".into(),
            actor: "ops".into(),
            actor_jti: Some("j1".into()),
            region: "eu".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""kind":"credential.revoke""#), "{text}");
        assert_eq!(serde_json::from_str::<GlobalEntry>(&text).unwrap(), e);
    }

    #[test]
    fn entry_ids_order_by_time_then_sequence() {
        assert!(after("1700000000001-0", "1700000000000-5"));
        assert!(after("1700000000000-10", "1700000000000-9"));
        assert!(!after("0-0", "0-0"));
        assert_eq!(entry_ms("1700000000001-3"), 1_700_000_000_001);
    }

    #[test]
    fn debug_hides_credentials() {
        let a = GlobalArgs {
            url: Some("redis://:hunter2@g:6379".into()),
            ..Default::default()
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
