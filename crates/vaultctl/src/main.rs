//! vaultctl: operator CLI. Offline commands need no server: generating a signing key and
//! minting a client token with it (the bootstrap: the first admin token comes from here).
//! `keys reencrypt` talks to Redis directly (it needs the master keys, which the API never
//! hands out), and so does `migrate` (it converts what an older version stored). `check` is the invariant checker: it drives a running vault and proves its rules
//! held (see `check/`).

mod check;
mod operator;
mod pipeline;
mod remote;
mod sizing;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::config::{MasterKeyArgs, RedisArgs};
use vault_core::crypto::{proxy_aad_id, refresh_aad_id, Cipher, Sealed};
use vault_core::model::PoolRefresh;
use vault_core::Store;

#[derive(Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "tokenvault operator CLI",
    after_help = "Server commands talk to TV_URL (default http://127.0.0.1:8080) with the client token in TV_TOKEN (or --url, --token). Tables by default, --json for scripts."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    remote: remote::RemoteArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pools: create, list, status, freeze, unfreeze, rotate, size.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Tokens (the credentials in a pool): deposit, list, get, revoke, restore.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Pipelines (a job's sized, time-bounded share of a pool): create, status, end.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineOp),
    /// The audit trail.
    #[command(subcommand)]
    Audit(operator::AuditOp),
    /// The events stream.
    #[command(subcommand)]
    Events(operator::EventsOp),
    /// Client tokens (who may call the vault): mint, revoke, introspect.
    #[command(subcommand)]
    Client(operator::ClientOp),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Drive a running vault with workers, an operator and a login worker, then prove from the
    /// log and a final read that no rule was broken. Exit status 2 on any violation.
    Check(check::CheckArgs),
    /// Convert every pool stored by a tokenvault before internal token ids to this version's
    /// layout, in short batches (talks to Redis directly). Stop every vault process of the old
    /// version first; safe to run again after a stop, a no-op on converted pools.
    Migrate {
        /// Tokens converted per call (a call of 50 holds Redis for about 2.5 ms).
        #[arg(long, default_value_t = 50)]
        batch: u64,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Print shell completions: `vaultctl completions bash > /etc/bash_completion.d/vaultctl`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum PoolCmd {
    /// How many tokens a job needs: N = rps × min(duration, window) / (quota − reserve), and
    /// enough for the leases held at once. The same rule as `sizing` in pool status.
    Size(sizing::SizeArgs),
    #[command(flatten)]
    Remote(operator::PoolOp),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a client token offline (kept for scripts; `vaultctl client mint --signing-key`).
    #[command(hide = true)]
    Mint(MintArgs),
    #[command(flatten)]
    Remote(operator::TokenOp),
}

/// A client token to mint: through the vault, or offline with a private signing key.
#[derive(Debug, clap::Args)]
pub(crate) struct MintArgs {
    /// The private key (`<kid>.pem`; the kid is the file name): mint offline, no server needed
    /// (the bootstrap: the first admin token comes from here).
    #[arg(long = "signing-key")]
    signing_key: Option<PathBuf>,
    #[arg(long)]
    sub: String,
    /// Comma-separated: lease, deposit, admin, audit.
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Limit the token to these pools (comma-separated); all pools when absent.
    #[arg(long, value_delimiter = ',')]
    pools: Option<Vec<String>>,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[arg(long, env = "TV_JWT_ISSUER", default_value = "tokenvault")]
    issuer: String,
    #[arg(long, env = "TV_JWT_AUDIENCE", default_value = "tokenvault")]
    audience: String,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600). Name it `<kid>.pem`.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-seal every secret and refresh credential still encrypted with an old master key under
    /// the current one (TV_MASTER_KEY; old keys in TV_MASTER_KEYS_OLD). Safe while the vault
    /// runs: a record that changes meanwhile is left alone (run again to pick it up).
    Reencrypt {
        /// The pool to re-seal.
        #[arg(long, required_unless_present = "all_pools")]
        pool: Option<String>,
        /// Every pool.
        #[arg(long)]
        all_pools: bool,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        master: MasterKeyArgs,
    },
}

/// A duration in whole seconds: plain seconds (`3600`) or humantime's notation (`90s`, `30m`,
/// `12h`, `7d`, `1h 30m`).
pub(crate) fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let secs = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().ok()
    } else {
        humantime::parse_duration(s).ok().map(|d| d.as_secs())
    };
    secs.and_then(|n| i64::try_from(n).ok())
        .with_context(|| format!("bad duration {s:?}: use e.g. 3600, 90s, 30m, 12h, 7d"))
}

/// What a re-encryption pass did.
#[derive(Debug, Default)]
struct Resealed {
    resealed: u64,
    current: u64,
    changed: u64,
    unreadable: u64,
}

async fn reencrypt(store: &Store, cipher: &Cipher, pool: &str) -> anyhow::Result<Resealed> {
    let mut r = Resealed::default();
    let current = cipher.current_key_id().to_string();
    // The pool's own secret: the client secret of its default refresh settings.
    let (json, sealed) = store.pool_refresh_raw(pool).await?;
    match PoolRefresh::resealed(&json, &sealed, cipher, pool) {
        Err(e) => {
            eprintln!("pool {pool}: its client secret: {e}");
            r.unreadable += 1;
        }
        Ok(None) if !sealed.data.is_empty() => r.current += 1,
        Ok(None) => {}
        Ok(Some(new)) => {
            if store
                .reseal_pool_refresh(pool, (&json, &sealed.data), &new)
                .await?
            {
                r.resealed += 1;
            } else {
                r.changed += 1;
            }
        }
    }
    let mut cursor = 0;
    loop {
        let (ids, next) = store.token_ids_page(pool, cursor, 500).await?;
        for id in ids {
            let Ok(f) = store.token_fields(pool, &id).await else {
                continue;
            };
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            let (ct, rct, pct) = (get("secret_ct"), get("refresh_ct"), get("proxy_ct"));
            let stale_secret = get("key_id") != current;
            let stale_refresh = !rct.is_empty() && get("refresh_key_id") != current;
            let stale_proxy = !pct.is_empty() && get("proxy_key_id") != current;
            if !stale_secret && !stale_refresh && !stale_proxy {
                r.current += 1;
                continue;
            }
            let opened = cipher
                .open(
                    pool,
                    &id,
                    &Sealed {
                        key_id: get("key_id"),
                        data: ct.clone(),
                    },
                )
                .and_then(|plain| {
                    let secret = cipher.seal(pool, &id, &plain);
                    // Re-seal one more ciphertext of the token under its own associated data.
                    let again = |ct: &str, key_field: &str, aad: String| {
                        if ct.is_empty() {
                            return Ok(None);
                        }
                        let plain = cipher.open(
                            pool,
                            &aad,
                            &Sealed {
                                key_id: get(key_field),
                                data: ct.to_string(),
                            },
                        )?;
                        Ok::<_, vault_core::VaultError>(Some(cipher.seal(pool, &aad, &plain)))
                    };
                    let refresh = again(&rct, "refresh_key_id", refresh_aad_id(&id))?;
                    let proxy = again(&pct, "proxy_key_id", proxy_aad_id(&id))?;
                    Ok((secret, refresh, proxy))
                });
            match opened {
                Err(e) => {
                    eprintln!("pool {pool}: {e}");
                    r.unreadable += 1;
                }
                Ok((secret, refresh, proxy)) => {
                    if store
                        .reseal_token(
                            pool,
                            &id,
                            (&ct, &rct, &pct),
                            &secret,
                            refresh.as_ref(),
                            proxy.as_ref(),
                        )
                        .await?
                    {
                        r.resealed += 1;
                    } else {
                        r.changed += 1;
                    }
                }
            }
        }
        match next {
            Some(c) => cursor = c,
            None => return Ok(r),
        }
    }
}

/// Mint a client token with a private signing key, no server needed.
pub(crate) fn mint_offline(m: MintArgs) -> anyhow::Result<()> {
    let signing_key = m
        .signing_key
        .context("--signing-key names the private key to mint with")?;
    let ttl = parse_ttl(&m.ttl)?;
    let mut ring = KeyRing::empty(&m.issuer, &m.audience, ttl.max(1));
    ring.load(&signing_key).map_err(anyhow::Error::msg)?;
    let scopes = m
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s)
                .with_context(|| format!("unknown scope {s}: use lease, deposit, admin, audit"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if scopes.is_empty() {
        bail!("--scopes names at least one scope");
    }
    let now = vault_core::time::now_ms() / 1000;
    let (token, jti, exp) = ring
        .mint(&m.sub, &scopes, m.pools, ttl, now)
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "jti {jti}, expires {}",
        vault_core::time::rfc3339(exp * 1000)
    );
    println!("{token}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Keys(KeysCmd::Reencrypt {
            pool,
            all_pools,
            redis,
            master,
        }) => {
            let cipher = master.cipher().map_err(anyhow::Error::msg)?;
            let store = Store::connect(&redis)?;
            store.prepare().await?;
            let pools = if all_pools {
                store.pool_names().await?
            } else {
                pool.into_iter().collect()
            };
            let mut failed = false;
            for p in pools {
                let r = reencrypt(&store, &cipher, &p).await?;
                println!(
                    "pool {p}: {} re-sealed with {}, {} already current, {} changed meanwhile (run again), {} unreadable",
                    r.resealed,
                    cipher.current_key_id(),
                    r.current,
                    r.changed,
                    r.unreadable
                );
                failed |= r.unreadable > 0;
            }
            if failed {
                bail!("some records are sealed with a key that is neither TV_MASTER_KEY nor in TV_MASTER_KEYS_OLD");
            }
        }
        Cmd::Migrate { batch, redis } => {
            let store = Store::connect(&redis)?;
            store.load_scripts().await?;
            let pools = store.pool_names().await?;
            let mut total = 0;
            for p in &pools {
                let started = std::time::Instant::now();
                let n = store
                    .migrate_pool_layout(p, batch.clamp(1, 1000), |done, left| {
                        if left > 0 {
                            eprint!("\rpool {p}: {done} tokens converted, {left} left   ");
                        }
                    })
                    .await
                    .with_context(|| format!("converting pool {p} (run again to go on)"))?;
                if n > 0 {
                    eprintln!(
                        "\rpool {p}: {n} tokens converted in {:.1} s          ",
                        started.elapsed().as_secs_f64()
                    );
                }
                total += n;
            }
            store.check_layout().await?;
            println!(
                "{} pools in this version's layout ({total} tokens converted)",
                pools.len()
            );
        }
        Cmd::Keys(KeysCmd::Generate { out }) => {
            if out.exists() {
                bail!("{} exists; refusing to overwrite a key", out.display());
            }
            let pem = generate_key_pem();
            write_private(&out, &pem)?;
            eprintln!(
                "wrote {} (kid {:?})",
                out.display(),
                out.file_stem().unwrap_or_default()
            );
        }
        Cmd::Token(TokenCmd::Mint(m)) => mint_offline(m)?,
        Cmd::Token(TokenCmd::Remote(op)) => operator::token(op, &cli.remote).await?,
        Cmd::Pool(PoolCmd::Remote(op)) => operator::pool(op, &cli.remote).await?,
        Cmd::Audit(op) => operator::audit(op, &cli.remote).await?,
        Cmd::Events(op) => operator::events(op, &cli.remote).await?,
        Cmd::Client(op) => operator::client(op, &cli.remote).await?,
        Cmd::Pipeline(op) => pipeline::pipeline(op, &cli.remote).await?,
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "vaultctl",
                &mut std::io::stdout(),
            );
        }
        Cmd::Pool(PoolCmd::Size(a)) => sizing::run(&a, parse_ttl)?,
        Cmd::Check(_) => unreachable!("main runs check itself (it has an exit status of its own)"),
    }
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Cmd::Check(args) = cli.cmd {
        return match check::run(args, parse_ttl).await {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::from(2),
            Err(e) => {
                eprintln!("vaultctl check: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vaultctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttl_units() {
        assert_eq!(super::parse_ttl("3600").unwrap(), 3600);
        assert_eq!(super::parse_ttl("30m").unwrap(), 1800);
        assert_eq!(super::parse_ttl("1h").unwrap(), 3600);
        assert_eq!(super::parse_ttl("7d").unwrap(), 604_800);
        assert_eq!(super::parse_ttl("1h 30m").unwrap(), 5400);
        assert!(super::parse_ttl("h").is_err());
        assert!(super::parse_ttl("3x").is_err());
        assert!(super::parse_ttl("").is_err());
        // Too large for the seconds the vault takes: refused, not wrapped.
        assert!(super::parse_ttl("99999999999999999999").is_err());
        assert!(super::parse_ttl("10000000000000000000s").is_err());
    }
}
