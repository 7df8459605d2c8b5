//! The function library: loading it (and refusing a Redis that cannot run it), and calling its
//! functions — typed answers, a reload when Redis lost the library, `WAIT` for replicas.

use serde_json::Value;
use tracing::Instrument as _;

use super::reply::typed;
use super::*;

/// Refuse a Redis without Functions, naming the version found (`INFO server` text).
pub(super) fn check_redis_version(info: &str) -> Result<()> {
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

/// An error while loading or probing scripts: an outage or a slow answer stays what it is;
/// anything else means Redis refuses scripting.
fn scripts_refused(e: &redis::RedisError, what: &str) -> VaultError {
    match VaultError::from_redis(e) {
        e @ (VaultError::RedisUnavailable(_) | VaultError::RedisBusy(_)) => e,
        _ => VaultError::ScriptsUnavailable(what.to_string()),
    }
}

impl Store {
    /// Call a transition on `pool`'s keys: an `{"err": code}` answer becomes its
    /// `VaultError`, any other is read as `R`, strictly.
    pub(super) async fn call<F: scripts::Function, R: serde::de::DeserializeOwned>(
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
    pub(super) async fn call_raw<F: scripts::Function>(
        &self,
        pool: &str,
        call: &F,
    ) -> Result<Value> {
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
        // The call's span: the function and the pool, never an argument (they hold sealed
        // secrets and ids only, but the span has no need of them).
        let span = tracing::info_span!(
            "redis.function",
            otel.name = %format!("FCALL {}", F::transition()),
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "FCALL",
            tv.function = F::transition(),
            tv.pool = pool,
        );
        let (raw, secret): (Vec<u8>, Option<Vec<u8>>) = match self
            .fcall_waiting::<redis::Value>(&cmd, waits)
            .instrument(span)
            .await?
        {
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
    pub(super) async fn fcall<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.fcall_waiting(cmd, false).await
    }

    /// Whether a call of `function` waits for replicas to acknowledge it (`TV_REDIS_WAIT_*`):
    /// with `safety`, the transitions that take something out of use or put something in the
    /// vault; with `all`, every one that writes.
    pub(super) fn waits(&self, function: &str) -> bool {
        if self.wait.replicas == 0 {
            return false;
        }
        if self.wait.scope == crate::config::WaitFor::All {
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
    pub(super) fn wait_cmd(&self) -> redis::Cmd {
        redis::cmd("WAIT")
            .arg(self.wait.replicas)
            .arg(self.wait.timeout_ms)
            .clone()
    }

    pub(super) fn check_acks(&self, acks: i64) -> Result<()> {
        if acks < self.wait.replicas as i64 {
            return Err(VaultError::NotReplicated(format!(
                "{acks} of {} replicas within {} ms",
                self.wait.replicas, self.wait.timeout_ms
            )));
        }
        Ok(())
    }

    pub(super) async fn fcall_waiting<T: redis::FromRedisValue>(
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
