//! vaultctl: operator CLI. Offline commands need no server: generating a signing key and
//! minting a client token with it (the bootstrap: the first admin token comes from here).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "tokenvault operator CLI")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Client tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a client token offline with a private signing key (no server needed).
    Mint {
        /// The private key (`<kid>.pem`; the kid is the file name).
        #[arg(long = "signing-key")]
        signing_key: PathBuf,
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
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600). Name it `<kid>.pem`.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

/// "3600", "90s", "30m", "12h", "7d" → seconds.
fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: i64 = num
        .parse()
        .with_context(|| format!("bad ttl {s:?}: use e.g. 3600, 30m, 12h, 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad ttl unit in {s:?}: use s, m, h or d"),
    };
    Ok(n * mult)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
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
        Cmd::Token(TokenCmd::Mint {
            signing_key,
            sub,
            scopes,
            pools,
            ttl,
            issuer,
            audience,
        }) => {
            let ttl = parse_ttl(&ttl)?;
            let mut ring = KeyRing::empty(&issuer, &audience, ttl.max(1));
            ring.load(&signing_key).map_err(anyhow::Error::msg)?;
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).with_context(|| {
                        format!("unknown scope {s}: use lease, deposit, admin, audit")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if scopes.is_empty() {
                bail!("--scopes names at least one scope");
            }
            let now = vault_core::time::now_ms() / 1000;
            let (token, jti, exp) = ring
                .mint(&sub, &scopes, pools, ttl, now)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "jti {jti}, expires {}",
                vault_core::time::rfc3339(exp * 1000)
            );
            println!("{token}");
        }
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

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
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
        assert!(super::parse_ttl("1w").is_err());
        assert!(super::parse_ttl("h").is_err());
    }
}
