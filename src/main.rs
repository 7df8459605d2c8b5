//! `tokenvault`: the all-in-one development binary.
//!
//! `tokenvault dev` starts a private redis-server (unless `TV_REDIS_URL` is set), runs the API,
//! the janitor and the refresher in one process, seeds a demo pool and prints how to lease from it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vault_api::ApiConfig;
use vault_core::config::MasterKeyArgs;
use vault_core::crypto::MasterKey;
use vault_core::model::{PoolConfigInput, TokenInput};

#[derive(Parser)]
#[command(
    name = "tokenvault",
    version,
    about = "Distributed, Redis-backed coordinator for pools of API credentials"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything in one process for development: Redis (private), API, janitor, refresher, demo pool.
    Dev(DevArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Address the API listens on.
    #[arg(
        long = "listen-addr",
        env = "TV_LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    listen_addr: SocketAddr,
    /// Use this Redis instead of starting a private one.
    #[arg(long = "redis-url", env = "TV_REDIS_URL")]
    redis_url: Option<String>,
    /// Key prefix.
    #[arg(long, env = "TV_PREFIX", default_value = "tv")]
    prefix: String,
    /// Master key (base64, 32 bytes); a fresh one is generated for the session when absent.
    #[arg(long = "master-key", env = "TV_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// Client-token signing keys; a key is generated for the session when absent.
    #[arg(long = "signing-keys", env = "TV_SIGNING_KEYS")]
    signing_keys: Option<std::path::PathBuf>,
    /// Do not create the demo pool.
    #[arg(long)]
    no_seed: bool,
    #[command(flatten)]
    log: vault_core::config::LogArgs,
}

/// A private redis-server for the session (testkit's, the one the tests use): stopped, and its
/// directory removed, on exit.
fn start_private_redis() -> anyhow::Result<(testkit::RedisServer, String)> {
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if matches!(&installed, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        bail!(
            "redis-server is not installed. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`, \
             macOS: `brew install redis`) or point TV_REDIS_URL at a running Redis"
        );
    }
    let redis = testkit::RedisServer::try_start().map_err(anyhow::Error::msg)?;
    let url = redis.url();
    Ok((redis, url))
}

async fn seed(state: &vault_api::AppState) -> anyhow::Result<()> {
    let store = &state.store;
    if store.pool_get("demo").await.is_ok() {
        return Ok(());
    }
    let cfg: PoolConfigInput = serde_json::from_value(serde_json::json!({
        "quota_limit": 1000, "quota_reserve": 10, "max_leases_per_token": 2, "lease_ttl_s": 60
    }))?;
    // Through the operations, like any other change: audited as the dev command's.
    let dev = vault_core::ops::Actor::process("tokenvault dev");
    store
        .upsert_pool(&dev, "demo", &cfg.validate(&state.cipher, "demo")?)
        .await?;
    let tokens: Vec<TokenInput> = (1..=5)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("demo-{i}"),
                "secret": format!("demo-secret-{i}-{}", rand::random::<u32>()),
                "binding": {"proxy": format!("socks5://127.0.0.1:{}", 1080 + i), "fingerprint": "chrome-120-linux"},
                "labels": {"account": format!("acct-{i}")}
            }))
            .expect("demo token")
        })
        .collect();
    let sealed = tokens
        .iter()
        .map(|t| t.seal(&state.cipher, "demo", None))
        .collect::<Result<Vec<_>, _>>()?;
    store.deposit_tokens(&dev, "demo", &sealed).await?;
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let (private_redis, redis_url) = match args.redis_url {
        Some(u) => (None, u),
        None => {
            let (r, u) = start_private_redis()?;
            (Some(r), u)
        }
    };
    let master_key = match args.master_key {
        Some(k) => k,
        None => MasterKey::generate().to_base64(),
    };
    let key_dir = tempfile::tempdir()?;
    let signing_keys = match args.signing_keys {
        Some(p) => p,
        None => {
            let p = key_dir.path().join("dev.pem");
            std::fs::write(&p, vault_core::auth::generate_key_pem())?;
            p
        }
    };
    // The API's settings through its own parser, so every default is the binary's (and a TV_*
    // variable set for it applies here too); only what dev mode decides is given.
    let listen = args.listen_addr.to_string();
    let signing = signing_keys.display().to_string();
    let mut cfg = ApiConfig::try_parse_from([
        "vault-api",
        "--listen-addr",
        &listen,
        "--redis-url",
        &redis_url,
        "--prefix",
        &args.prefix,
        "--signing-keys",
        &signing,
    ])?;
    cfg.master_key = MasterKeyArgs {
        master_key: Some(master_key),
        old_master_keys: vec![],
    };
    cfg.log = args.log.clone();
    let state = vault_api::server::prepare(&cfg).await?;
    state
        .store
        .check_ready()
        .await
        .context("Redis is not usable")?;
    if !args.no_seed {
        seed(&state).await.context("seeding the demo pool")?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set TV_LISTEN_ADDR to another address)",
                cfg.listen_addr
            )
        })?;
    let base = format!("http://{}", listener.local_addr()?);
    let now_s = state.store.now_ms().await? / 1000;
    let (admin, _, _) = state
        .keys
        .mint(
            "dev-admin",
            &[vault_core::auth::Scope::Admin],
            None,
            24 * 3600,
            now_s,
        )
        .map_err(anyhow::Error::msg)?;
    let redis_note = if private_redis.is_some() {
        " (private, discarded on exit)"
    } else {
        ""
    };
    println!("tokenvault dev is running");
    println!("  API:    {base}");
    println!("  Dashboard: {base}/ui (sign in with the admin token below)");
    println!("  Redis:  {redis_url}{redis_note}");
    println!("  Pool:   demo (5 fake tokens, quota 1000/h, 2 leases per token)");
    println!("  Admin client token (24 h), for every /v1 call:\n\nexport TV_TOKEN={admin}\n");
    let auth = "-H \"authorization: Bearer $TV_TOKEN\"";
    let json = "-H 'content-type: application/json'";
    println!("Lease a token, then release it:");
    println!(
        "  curl -s -X POST {base}/v1/pools/demo/leases {auth} {json} -d '{{\"worker\":\"me\"}}'"
    );
    println!("  curl -s -X POST {base}/v1/pools/demo/leases/<lease_id>/release {auth} {json} -d '{{\"outcome\":\"ok\"}}'");
    println!("  curl -s {base}/v1/pools/demo/status {auth}\n");
    println!("Ctrl-C stops everything.");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut janitor_stop = stop_rx.clone();
    let janitor_cfg =
        janitor::JanitorConfig::try_parse_from(["janitor", "--redis-url", &redis_url])?;
    let janitor = tokio::spawn(janitor::run(
        state.store.clone(),
        Duration::from_millis(janitor_cfg.interval_ms),
        janitor_cfg.batch,
        async move {
            let _ = janitor_stop.changed().await;
        },
    ));
    let refresher_cfg =
        refresher::RefresherConfig::try_parse_from(["refresher", "--redis-url", &redis_url])?;
    let refresher =
        refresher::Refresher::new(state.store.clone(), state.cipher.clone(), refresher_cfg)?;
    let mut refresher_stop = stop_rx.clone();
    let refresher = tokio::spawn(refresher.run(async move {
        let _ = refresher_stop.changed().await;
    }));
    let mut api_stop = stop_rx;
    let api = tokio::spawn(vault_api::server::serve(
        state,
        listener,
        None,
        async move {
            let _ = api_stop.changed().await;
        },
        vault_api::server::Stopping {
            drain: Duration::from_millis(cfg.shutdown_drain_ms),
            grace: Duration::from_secs(cfg.shutdown_grace_s),
        },
        cfg.conn.clone(),
    ));
    vault_core::config::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = janitor.await;
    let _ = refresher.await;
    api.await??;
    drop(private_redis);
    drop(key_dir);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Dev(a) => {
            let telemetry = vault_core::config::init_tracing(a.log.log_format, "tokenvault-dev");
            let r = dev(a).await;
            telemetry.shutdown();
            r
        }
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenvault: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
