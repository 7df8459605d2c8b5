//! The vault-api binary's settings.

use std::net::SocketAddr;

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
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-s",
        env = "TV_SHUTDOWN_GRACE_S",
        default_value_t = 30
    )]
    pub shutdown_grace_s: u64,
    /// Log format: text or json.
    #[arg(long = "log-format", env = "TV_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}
