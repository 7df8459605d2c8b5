//! Settings every binary shares, with the same names everywhere (clap + env).

use std::time::Duration;

use crate::crypto::MasterKey;

/// Redis connection and key layout. `Debug` shows the URL without its credentials.
#[derive(Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RedisArgs {
    /// Redis URL (redis://host:port/db or rediss:// for TLS).
    #[cfg_attr(feature = "cli", arg(
        long = "redis-url",
        env = "TV_REDIS_URL",
        hide_env_values = true,
        default_value = RedisArgs::DEFAULT_URL
    ))]
    pub redis_url: String,
    /// Prefix of every Redis key.
    #[cfg_attr(feature = "cli", arg(long, env = "TV_PREFIX", default_value = RedisArgs::DEFAULT_PREFIX))]
    pub prefix: String,
    /// Budget for one Redis operation (connect and answer together). It is the only
    /// Redis timeout: past it a request answers 503 `redis_busy`; a Redis that cannot be reached
    /// or refuses answers 503 `redis_unavailable` as soon as that is known.
    #[cfg_attr(feature = "cli", arg(
        long = "redis-timeout-ms",
        env = "TV_REDIS_TIMEOUT_MS",
        default_value_t = RedisArgs::DEFAULT_TIMEOUT_MS
    ))]
    pub redis_timeout_ms: u64,
    /// Audit entries kept per stream (approximately; older ones are trimmed).
    #[cfg_attr(feature = "cli", arg(
        long = "audit-max-entries",
        env = "TV_AUDIT_MAX_ENTRIES",
        default_value_t = RedisArgs::DEFAULT_KEPT_ENTRIES
    ))]
    pub audit_max_entries: u64,
    /// Events kept for replay by `Last-Event-ID` (approximately).
    #[cfg_attr(feature = "cli", arg(
        long = "events-max-entries",
        env = "TV_EVENTS_MAX_ENTRIES",
        default_value_t = RedisArgs::DEFAULT_KEPT_ENTRIES
    ))]
    pub events_max_entries: u64,
    /// Redis connections per process, used round robin (each carries many calls at once and is
    /// replaced in the background when it breaks).
    #[cfg_attr(feature = "cli", arg(
        long = "redis-pool-size",
        env = "TV_REDIS_POOL_SIZE",
        default_value_t = RedisArgs::DEFAULT_POOL_SIZE
    ))]
    pub redis_pool_size: usize,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub wait: WaitArgs,
}

/// Replica-acknowledged writes (`WAIT`): with Sentinel (or any replica), a write the primary
/// acknowledged can be lost when the primary fails before a replica has it. These settings make
/// the vault answer such writes only once `replicas` replicas have them.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct WaitArgs {
    /// Replicas that must acknowledge a write before the vault answers it; 0 = do not wait.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "redis-wait-replicas",
            env = "TV_REDIS_WAIT_REPLICAS",
            default_value_t = 0
        )
    )]
    pub replicas: u32,
    /// How long to wait for them; past it the answer is 503 `not_replicated` (the write is made
    /// on the primary; the call is safe to repeat).
    #[cfg_attr(feature = "cli", arg(
        long = "redis-wait-timeout-ms",
        env = "TV_REDIS_WAIT_TIMEOUT_MS",
        default_value_t = WaitArgs::DEFAULT_TIMEOUT_MS
    ))]
    pub timeout_ms: u64,
    /// Which writes wait: `safety` (revocations, freezes, deposits, rotations and client-token
    /// revocations) or `all` (leases and reports too).
    #[cfg_attr(feature = "cli", arg(
        long = "redis-wait-for",
        env = "TV_REDIS_WAIT_FOR",
        value_enum,
        default_value_t = WaitFor::Safety
    ))]
    pub scope: WaitFor,
}

/// Which writes wait for replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum WaitFor {
    /// Revocations, freezes, deposits, rotations and client-token revocations.
    #[default]
    Safety,
    /// Every write, leases and reports too.
    All,
}

impl WaitArgs {
    pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
}

impl Default for WaitArgs {
    /// The defaults `--help` shows (waiting for no replica).
    fn default() -> Self {
        WaitArgs {
            replicas: 0,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            scope: WaitFor::default(),
        }
    }
}

impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("audit_max_entries", &self.audit_max_entries)
            .field("events_max_entries", &self.events_max_entries)
            .field("redis_pool_size", &self.redis_pool_size)
            .field("wait", &self.wait)
            .finish()
    }
}

impl RedisArgs {
    pub const DEFAULT_URL: &'static str = "redis://127.0.0.1:6379";
    pub const DEFAULT_PREFIX: &'static str = "tv";
    pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
    pub const DEFAULT_KEPT_ENTRIES: u64 = 100_000;
    pub const DEFAULT_POOL_SIZE: usize = 16;

    /// Settings for the Redis at `redis_url` under `prefix`, everything else at the defaults
    /// `--help` shows (the same constants). Change a field with `RedisArgs { .., ..new(..) }`.
    pub fn new(redis_url: impl Into<String>, prefix: impl Into<String>) -> Self {
        RedisArgs {
            redis_url: redis_url.into(),
            prefix: prefix.into(),
            redis_timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            audit_max_entries: Self::DEFAULT_KEPT_ENTRIES,
            events_max_entries: Self::DEFAULT_KEPT_ENTRIES,
            redis_pool_size: Self::DEFAULT_POOL_SIZE,
            wait: WaitArgs::default(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(1))
    }

    /// Settings for every async Redis connection the vault opens. The redis crate gives async
    /// connections a 500 ms response timeout of its own; a busy Redis crosses it long before
    /// our budget and the command fails as if Redis were gone. So: connecting is bounded by the
    /// budget, and no response timeout sits below it (the caller bounds the whole call with
    /// [`RedisArgs::timeout`]).
    pub fn connection_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(None)
    }

    /// The URL with its credentials replaced, for logs.
    pub fn redacted_url(&self) -> String {
        if !self.redis_url.contains("://") {
            return "(unparsable URL)".to_string();
        }
        crate::crypto::redacted_url(&self.redis_url).unwrap_or_else(|| self.redis_url.clone())
    }

    /// Log the effective Redis settings once at start-up (never the password).
    pub fn log_effective(&self) {
        tracing::info!(
            url = %self.redacted_url(),
            prefix = %self.prefix,
            timeout_ms = self.timeout().as_millis() as u64,
            pool_size = self.redis_pool_size.max(1),
            "redis settings"
        );
    }
}

/// The master key for secrets at rest.
#[derive(Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct MasterKeyArgs {
    /// AES-256 master key, base64 of 32 bytes (generate: `openssl rand -base64 32`).
    #[cfg_attr(
        feature = "cli",
        arg(long = "master-key", env = "TV_MASTER_KEY", hide_env_values = true)
    )]
    pub master_key: Option<String>,
    /// Previous master keys (comma-separated base64), still accepted for decryption until
    /// `vaultctl keys reencrypt` has re-sealed every record with the current one.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "master-keys-old",
            env = "TV_MASTER_KEYS_OLD",
            hide_env_values = true,
            value_delimiter = ','
        )
    )]
    pub old_master_keys: Vec<String>,
}

impl std::fmt::Debug for MasterKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeyArgs")
            .field("master_key", &"[redacted]")
            .field("old_master_keys", &"[redacted]")
            .finish()
    }
}

impl MasterKeyArgs {
    pub fn load(&self) -> Result<MasterKey, String> {
        let text = self.master_key.as_deref().ok_or_else(|| {
            "TV_MASTER_KEY is not set; generate one with `openssl rand -base64 32`".to_string()
        })?;
        MasterKey::from_base64(text)
    }

    /// The cipher: seals with the current key, opens with it and every old key.
    pub fn cipher(&self) -> Result<crate::crypto::Cipher, String> {
        let current = self.load()?;
        let old = self
            .old_master_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| MasterKey::from_base64(k).map_err(|e| format!("TV_MASTER_KEYS_OLD: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::crypto::Cipher::new(&current).with_old_keys(&old))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging settings every binary shares.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LogArgs {
    /// Log format: text or json (filter with RUST_LOG).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "log-format",
            env = "TV_LOG_FORMAT",
            value_enum,
            default_value_t
        )
    )]
    pub log_format: LogFormat,
}

pub use crate::telemetry::init_tracing;

/// Resolves on SIGTERM or ctrl-c: every binary's graceful-shutdown trigger.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(all(test, feature = "cli"))]
mod redis_args_tests {
    use super::*;
    use clap::Parser;

    #[cfg_attr(feature = "cli", derive(clap::Parser))]
    struct Cli {
        #[cfg_attr(feature = "cli", command(flatten))]
        redis: RedisArgs,
    }

    /// Neither `Debug` nor `--help` shows a Redis password.
    #[test]
    fn a_redis_urls_password_stays_out_of_debug_and_help() {
        let cli =
            Cli::try_parse_from(["x", "--redis-url", "redis://app:s3cret@redis:6379/0"]).unwrap();
        let shown = format!("{:?}", cli.redis);
        assert!(
            !shown.contains("s3cret") && shown.contains("redis:6379"),
            "{shown}"
        );
        // `--help` names TV_REDIS_URL without printing its value.
        let cmd = <Cli as clap::CommandFactory>::command();
        let url = cmd
            .get_arguments()
            .find(|a| a.get_id() == "redis_url")
            .unwrap();
        assert!(url.is_hide_env_values_set());
    }
}
