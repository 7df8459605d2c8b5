//! `vaultctl token`: deposit (resumable, idempotent), list, show, revoke tokens and credentials.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;
use crate::remote::{seg, Problem, Remote, RemoteArgs};
use vault_core::model::{CredentialRevoked, QuotaView, TokenPage, TokenState};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenOp {
    /// Deposit tokens from JSON lines (one token object per line: {"secret", "id"?,
    /// "expires_at"?, "binding"?, "labels"?, "refresh"?}), in batches. A line without an id gets
    /// one from its secret's hash, so running the same file again skips what is already in and
    /// deposits the rest.
    Deposit {
        pool: String,
        /// The file; `-` or absent for stdin.
        file: Option<std::path::PathBuf>,
        /// Tokens per request (the API takes up to 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch: u64,
        /// Skip this many lines first (resume where a run stopped).
        #[arg(long, default_value_t = 0)]
        skip: u64,
    },
    /// Token metadata (never a secret).
    List {
        pool: String,
        #[arg(long)]
        state: Option<String>,
        /// Most tokens to show.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    Get {
        pool: String,
        id: String,
    },
    /// Revoke at once: its leases end and workers are told.
    Revoke {
        pool: String,
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke a credential wherever it is deposited: every pool holding its secret (and, with
    /// the global control plane, every region). Name it by `--fingerprint`, or by a token of
    /// this vault (`<pool> <id>`), which stands for its secret.
    RevokeCredential {
        pool: Option<String>,
        id: Option<String>,
        /// `sha256:` + 12 hex, as token metadata and the audit trail show it.
        #[arg(long, conflicts_with_all = ["pool", "id"])]
        fingerprint: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Quarantined → active.
    Restore {
        pool: String,
        id: String,
    },
}

/// The id a token line without one gets: from its secret, so a second run finds it deposited.
fn derived_id(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    format!(
        "t-{}",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// What a deposit run did.
#[derive(Debug, Default, serde::Serialize)]
struct Deposited {
    deposited: u64,
    already_there: u64,
    lines: u64,
}

impl Deposited {
    /// Count a deposit answer for `sent` tokens: those it names `unchanged` were already in.
    fn tally(&mut self, answer: &vault_core::model::Deposited, sent: u64) {
        let unchanged = answer.unchanged.len() as u64;
        self.deposited += sent.saturating_sub(unchanged);
        self.already_there += unchanged.min(sent);
    }
}

pub(crate) async fn token(op: TokenOp, a: &RemoteArgs) -> anyhow::Result<()> {
    let r = Remote::new(a)?;
    match op {
        TokenOp::Deposit {
            pool,
            file,
            batch,
            skip,
        } => {
            let (reader, total): (Box<dyn BufRead>, Option<u64>) = match &file {
                Some(p) if p.as_os_str() != "-" => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?;
                    let lines = std::io::BufReader::new(&f).lines().count() as u64;
                    let f = std::fs::File::open(p)?;
                    (Box::new(std::io::BufReader::new(f)), Some(lines))
                }
                _ => (Box::new(std::io::stdin().lock()), None),
            };
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n.saturating_sub(skip)),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:40} {pos}/{len} tokens  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut done = Deposited::default();
            let mut pending: Vec<(u64, Value)> = Vec::new();
            for (i, line) in reader.lines().enumerate() {
                let n = i as u64 + 1;
                let line = line.with_context(|| format!("reading line {n}"))?;
                if n <= skip {
                    continue;
                }
                done.lines = n;
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    bar.inc(1);
                    continue;
                }
                let parsed: Option<Value> = serde_json::from_str(t).ok();
                let secret = parsed
                    .as_ref()
                    .and_then(|v| v.get("secret"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let (Some(mut tok), Some(secret)) = (parsed, secret) else {
                    // What came before the bad line goes in; the run stops there.
                    deposit_batch(&r, &pool, &mut pending, &mut done, &bar).await?;
                    bar.abandon();
                    bail!(
                        "line {n} is not a JSON token object with a \"secret\"; {} tokens \
                         deposited from the lines before it: fix it and run again with --skip {} \
                         (or from the start: tokens already in are skipped)",
                        done.deposited,
                        n - 1
                    );
                };
                let Some(obj) = tok.as_object_mut() else {
                    unreachable!("an object has a secret");
                };
                if !obj.contains_key("id") {
                    let id = derived_id(&secret);
                    obj.insert("id".into(), Value::String(id));
                }
                pending.push((n, tok));
                if pending.len() as u64 >= batch {
                    deposit_batch(&r, &pool, &mut pending, &mut done, &bar).await?;
                }
            }
            deposit_batch(&r, &pool, &mut pending, &mut done, &bar).await?;
            bar.finish_and_clear();
            let v = serde_json::to_value(&done)?;
            show(a.json, &v, |_| {
                format!(
                    "pool {pool}: {} tokens deposited, {} already there ({} lines read)",
                    done.deposited, done.already_there, done.lines
                )
            });
        }
        TokenOp::List { pool, state, limit } => {
            let mut path = format!("/v1/pools/{}/tokens", seg(&pool));
            if let Some(s) = &state {
                path.push_str(&format!("?state={}", seg(s)));
            }
            let tokens = r.pages::<TokenPage>(&path, limit).await?;
            let v = serde_json::to_value(&tokens)?;
            show(a.json, &v, |_| {
                let mut t = table(&[
                    "id",
                    "state",
                    "quota used",
                    "leases",
                    "expires",
                    "fingerprint",
                ]);
                for x in &tokens {
                    let count = |q: &QuotaView| match q.limit {
                        Some(l) => format!("{} / {l}", q.used),
                        None => q.used.to_string(),
                    };
                    // The default quota, then each other one by name.
                    let mut used = vec![count(&x.quota)];
                    for q in &x.quotas {
                        used.push(format!("{} {}", cell(q.name.as_ref()), count(q)));
                    }
                    t.add_row(vec![
                        x.id.clone(),
                        x.state.clone(),
                        used.join(", "),
                        x.leases.to_string(),
                        x.expires_at.clone().unwrap_or_else(|| "never".into()),
                        x.fingerprint.clone(),
                    ]);
                }
                t.to_string()
            });
        }
        TokenOp::Get { pool, id } => {
            let v = r
                .get(&format!("/v1/pools/{}/tokens/{}", seg(&pool), seg(&id)))
                .await?;
            show(a.json, &v, |v| fields(v).to_string());
        }
        TokenOp::Revoke { pool, id, reason } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/tokens/{}/revoke", seg(&pool), seg(&id)),
                    &json!({ "reason": reason }),
                )
                .await?;
            show_as(a.json, &v, |t: TokenState| {
                format!(
                    "token {} of pool {pool} revoked ({} leases ended)",
                    t.token_id,
                    t.leases_ended.map_or(0, |l| l.len())
                )
            })?;
        }
        TokenOp::RevokeCredential {
            pool,
            id,
            fingerprint,
            reason,
        } => {
            let body = match (fingerprint, pool, id) {
                (Some(fp), None, None) => json!({"fingerprint": fp, "reason": reason}),
                (None, Some(pool), Some(id)) => {
                    json!({"pool": pool, "token_id": id, "reason": reason})
                }
                _ => bail!("name the credential by --fingerprint, or by <pool> <id>"),
            };
            let v = r.post("/v1/credentials/revoke", &body).await?;
            show_as(a.json, &v, |c: CredentialRevoked| {
                let fp = c.fingerprint;
                match c.global {
                    Some(g) => format!(
                        "credential {fp} revoked in every region (global entry {}; each region's follower applies it)",
                        g.entry_id
                    ),
                    None => {
                        let names: Vec<String> = c
                            .tokens
                            .unwrap_or_default()
                            .iter()
                            .map(|t| format!("{}/{}", t.pool, t.token_id))
                            .collect();
                        format!("credential {fp} revoked: {} tokens ({})", names.len(), names.join(", "))
                    }
                }
            })?;
        }
        TokenOp::Restore { pool, id } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/tokens/{}/restore", seg(&pool), seg(&id)),
                    &json!({}),
                )
                .await?;
            show_as(a.json, &v, |t: TokenState| {
                format!("token {id} of pool {pool}: {}", t.state)
            })?;
        }
    }
    Ok(())
}

/// Deposit `pending` in one request. Tokens already in with the same secret (a run that stopped
/// after its answer was lost, or a file run twice) are left as they were, and the vault says
/// which; a batch refused because an id is taken by another secret goes one by one, skipping
/// those. On any other error, says where to resume.
async fn deposit_batch(
    r: &Remote,
    pool: &str,
    pending: &mut Vec<(u64, Value)>,
    done: &mut Deposited,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let first_line = pending[0].0;
    let resume = |e: anyhow::Error, deposited: u64| {
        e.context(format!(
            "{deposited} tokens deposited so far; run again with --skip {} to resume (or \
             again as it was: tokens already in are skipped)",
            first_line - 1
        ))
    };
    let path = format!("/v1/pools/{}/tokens", seg(pool));
    let tokens: Vec<Value> = pending.iter().map(|(_, t)| t.clone()).collect();
    match r.post_as(&path, &json!({ "tokens": tokens })).await {
        Ok(answer) => done.tally(&answer, tokens.len() as u64),
        Err(e) if e.downcast_ref::<Problem>().is_some_and(|p| p.status == 409) => {
            for (_, t) in pending.iter() {
                match r.post_as(&path, &json!({ "tokens": [t] })).await {
                    Ok(answer) => done.tally(&answer, 1),
                    Err(e) if e.downcast_ref::<Problem>().is_some_and(|p| p.status == 409) => {
                        done.already_there += 1
                    }
                    Err(e) => return Err(resume(e, done.deposited)),
                }
            }
        }
        Err(e) => return Err(resume(e, done.deposited)),
    }
    bar.inc(pending.len() as u64);
    pending.clear();
    Ok(())
}
