//! The vault-api binary's settings.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vault_core::config::{MasterKeyArgs, RedisArgs};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "vault-api",
    version,
    about = "tokenvault REST server",
    after_help = "Logging: RUST_LOG (e.g. info, vault_api=debug), TV_LOG_FORMAT=json for JSON lines."
)]
pub struct ApiConfig {
    /// Address to listen on.
    #[arg(
        long = "listen-addr",
        env = "TV_LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: SocketAddr,
    /// Address of the gRPC listener (`proto/tokenvault/v1/vault.proto`, with the standard
    /// health and reflection services); unset: no gRPC.
    #[arg(long = "grpc-listen-addr", env = "TV_GRPC_LISTEN_ADDR")]
    pub grpc_listen_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub global: vault_core::global::GlobalArgs,
    #[command(flatten)]
    pub conn: ConnLimits,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-s",
        env = "TV_SHUTDOWN_GRACE_S",
        default_value_t = 30
    )]
    pub shutdown_grace_s: u64,
    /// Milliseconds between SIGTERM and closing the listener, during which `/readyz` answers
    /// 503 `draining` and requests are still served: set it above the load balancer's health
    /// check interval × fall count, so the balancer stops routing here before the port closes.
    #[arg(
        long = "shutdown-drain-ms",
        env = "TV_SHUTDOWN_DRAIN_MS",
        default_value_t = 0
    )]
    pub shutdown_drain_ms: u64,
    /// Seconds between two computations of the per-pool gauges (`tv_pool_*` on `/metrics`):
    /// every replica reads each pool's status once per interval. 0 turns them off.
    #[arg(
        long = "pool-metrics-interval-s",
        env = "TV_POOL_METRICS_INTERVAL_S",
        default_value_t = 60
    )]
    pub pool_metrics_interval_s: u64,
    /// Most pools the gauges cover (by name order): bounds the Redis reads of one interval.
    #[arg(
        long = "pool-metrics-max-pools",
        env = "TV_POOL_METRICS_MAX_POOLS",
        default_value_t = 500
    )]
    pub pool_metrics_max_pools: usize,
    #[command(flatten)]
    pub log: vault_core::config::LogArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Client authentication settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Ed25519 signing keys: a PEM file or a directory of `<kid>.pem` (private: signs and
    /// verifies; the id sorting last signs) and `<kid>.pub.pem` (verifies only).
    /// Generate one with `vaultctl keys generate --out keys/2026-11.pem`.
    #[arg(long = "signing-keys", env = "TV_SIGNING_KEYS")]
    pub signing_keys: Option<std::path::PathBuf>,
    /// `iss` of client tokens.
    #[arg(
        long = "jwt-issuer",
        env = "TV_JWT_ISSUER",
        default_value = "tokenvault"
    )]
    pub issuer: String,
    /// `aud` of client tokens.
    #[arg(
        long = "jwt-audience",
        env = "TV_JWT_AUDIENCE",
        default_value = "tokenvault"
    )]
    pub audience: String,
    /// Longest client-token lifetime accepted (and how long revocations are kept).
    #[arg(long = "client-token-max-ttl-s", env = "TV_CLIENT_TOKEN_MAX_TTL_S", default_value_t = 30 * 86_400)]
    pub max_ttl_s: i64,
    /// Failed authentications one client address may make per minute; past it, requests
    /// without a valid token get 429 (valid tokens still pass).
    #[arg(
        long = "auth-failure-limit",
        env = "TV_AUTH_FAILURE_LIMIT",
        default_value_t = 60
    )]
    pub failure_limit: u32,
}

impl AuthArgs {
    /// Load the key ring; a vault without keys cannot authenticate anyone, so that is an error.
    pub fn key_ring(&self) -> anyhow::Result<vault_core::auth::KeyRing> {
        let path = self.signing_keys.as_ref().ok_or_else(|| {
            anyhow::anyhow!("TV_SIGNING_KEYS is not set: point it at an Ed25519 PEM key or a directory of them (`vaultctl keys generate --out keys/k1.pem`)")
        })?;
        let mut ring =
            vault_core::auth::KeyRing::empty(&self.issuer, &self.audience, self.max_ttl_s);
        ring.load(path).map_err(anyhow::Error::msg)?;
        Ok(ring)
    }
}

/// Limits of client connections: everything a client can start is bounded.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnLimits {
    /// Milliseconds a client gets to send its request headers (slowloris protection). It also
    /// bounds how long a keep-alive connection may sit idle between requests: keep HTTP client
    /// pools' idle timeout below it (the vault-client SDK uses 20 s).
    #[arg(
        long = "header-read-timeout-ms",
        env = "TV_HEADER_READ_TIMEOUT_MS",
        default_value_t = ConnLimits::DEFAULT.header_read_timeout_ms
    )]
    pub header_read_timeout_ms: u64,
    /// Milliseconds from accepting a connection to its first byte; a connection that sends
    /// nothing is closed then.
    #[arg(
        long = "first-byte-timeout-ms",
        env = "TV_FIRST_BYTE_TIMEOUT_MS",
        default_value_t = ConnLimits::DEFAULT.first_byte_timeout_ms
    )]
    pub first_byte_timeout_ms: u64,
    /// Milliseconds a client gets to send a whole request body; past it: 408.
    #[arg(
        long = "body-read-timeout-ms",
        env = "TV_BODY_READ_TIMEOUT_MS",
        default_value_t = ConnLimits::DEFAULT.body_read_timeout_ms
    )]
    pub body_read_timeout_ms: u64,
    /// Open client connections one replica accepts; more are closed at once.
    #[arg(
        long = "max-connections",
        env = "TV_MAX_CONNECTIONS",
        default_value_t = ConnLimits::DEFAULT.max_connections
    )]
    pub max_connections: usize,
    /// Open client connections from one IP address; more are closed at once.
    #[arg(
        long = "max-connections-per-addr",
        env = "TV_MAX_CONNECTIONS_PER_ADDR",
        default_value_t = ConnLimits::DEFAULT.max_connections_per_addr
    )]
    pub max_connections_per_addr: usize,
    /// Milliseconds a connection may stay open with no call or stream in progress; then it is
    /// closed gracefully (GOAWAY for HTTP/2). HTTP/2 clients such as gRPC channels keep
    /// connections between calls and open a new one at their next call. HTTP/1.1 keep-alive
    /// connections are closed sooner, by the header read timeout.
    #[arg(
        long = "idle-timeout-ms",
        env = "TV_IDLE_TIMEOUT_MS",
        default_value_t = ConnLimits::DEFAULT.idle_timeout_ms
    )]
    pub idle_timeout_ms: u64,
    /// Largest header block accepted, in bytes.
    #[arg(long = "max-header-bytes", env = "TV_MAX_HEADER_BYTES", default_value_t = ConnLimits::DEFAULT.max_header_bytes)]
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ConnLimits {
    /// The defaults, written once for the settings and for `tokenvault dev`.
    pub const DEFAULT: Self = Self {
        header_read_timeout_ms: 30_000,
        first_byte_timeout_ms: 5_000,
        body_read_timeout_ms: 10_000,
        max_connections: 4096,
        max_connections_per_addr: 256,
        max_header_bytes: 64 * 1024,
        idle_timeout_ms: 300_000,
    };

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.max(1))
    }
}
