//! The global Redis as a vault uses it: appending an action (and waiting for regions), reading
//! the global state, the log and the beat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::*;
use crate::error::VaultError;
use crate::ops::Actor;
use crate::{Result, Store};

/// Writes an entry and the state it sets in one step, on the primary: the log and the state
/// can never disagree.
const APPEND: &str = include_str!("../../../../lua/global/append.lua");
/// The primary's clock into the beat key.
const BEAT: &str = include_str!("../../../../lua/global/beat.lua");

/// The follower's connection for its blocking read of the log: one of its own (a blocking
/// `XREAD` holds its connection while it waits, so it cannot share the store's multiplexed
/// ones), made on first use and made again after it fails.
pub(super) struct Link {
    url: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    pub(super) fn new(url: &str) -> Self {
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
    pub(super) args: Arc<GlobalArgs>,
    pub(super) keys: GlobalKeys,
    /// The global primary, through the same connection layer as the region's Redis: a
    /// `redis+sentinel://` URL follows the primary Sentinel names, as `TV_REDIS_URL` does.
    write: Box<Store>,
    /// The region's replica, through the same layer.
    pub(super) read: Box<Store>,
    /// Its URL, for the follower's blocking reads.
    pub(super) read_url: String,
    timeout: Duration,
}

/// A failure of the global primary, said as such (not as the region's Redis being down).
pub(super) fn on_primary(e: VaultError) -> VaultError {
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
    pub(super) async fn read_beat(&self) -> Result<Option<i64>> {
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
    pub(super) async fn read_log(&self, after: &str, count: usize) -> Result<Vec<LogEntry>> {
        let v = self
            .read
            .cmd(self.xread(after, count, None))
            .await
            .map_err(on_primary)?;
        Ok(log_entries(v))
    }

    /// As [`Global::read_log`], waiting up to `block` for an entry, on the follower's own
    /// connection.
    pub(super) async fn wait_log(
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
    pub(super) async fn log_start_if_trimmed(&self) -> Result<Option<String>> {
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
