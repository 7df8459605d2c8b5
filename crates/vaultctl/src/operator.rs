//! vaultctl's operator commands over the REST API: pools, tokens (credentials), the audit trail,
//! the events stream and client tokens. Human tables by default, `--json` for scripts.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::remote::{seg, Problem, Remote, RemoteArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum PoolOp {
    /// Create or replace a pool's config (PUT semantics; defaults fill what is not given).
    Create(PoolCreate),
    /// Every pool with its tokens by state.
    List,
    /// A pool's status: tokens by state, leases, utilization, quota, sizing.
    Status { pool: String },
    /// Kill switch: no new leases.
    Freeze {
        pool: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// End the pool's live leases too.
        #[arg(long)]
        revoke_leases: bool,
        /// The pool of this name in every region (needs the global control plane).
        #[arg(long)]
        global: bool,
    },
    Unfreeze {
        pool: String,
        /// Lift a global freeze in every region.
        #[arg(long)]
        global: bool,
    },
    /// Emergency rotation: every current token deprecated and refreshed, revoked at the sunset.
    Rotate {
        pool: String,
        /// How long deprecated tokens stay leasable: 3600, 30m, 1h.
        #[arg(long, default_value = "1h")]
        sunset: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PoolCreate {
    pub(crate) pool: String,
    /// The config as JSON (`{"quota_limit": 5000, ...}`), `@file` or `@-` for stdin; the
    /// flags below override its fields.
    #[arg(long)]
    pub(crate) config: Option<String>,
    #[arg(long)]
    pub(crate) quota_limit: Option<u64>,
    #[arg(long)]
    pub(crate) quota_window_s: Option<u64>,
    #[arg(long)]
    pub(crate) quota_reserve: Option<u64>,
    #[arg(long)]
    pub(crate) max_leases_per_token: Option<u32>,
    #[arg(long)]
    pub(crate) lease_ttl_s: Option<u64>,
    /// lru or pack.
    #[arg(long)]
    pub(crate) strategy: Option<String>,
}

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

#[derive(Debug, Subcommand)]
pub(crate) enum AuditOp {
    /// The latest entries of a pool's trail (or the vault-wide one); `-f` follows new ones.
    Tail {
        #[arg(long)]
        pool: Option<String>,
        /// How many of the latest entries (1-1000).
        #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        lines: u16,
        /// Only entries this recent: 900, 15m, 24h (default: the whole trail).
        #[arg(long)]
        since: Option<String>,
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsOp {
    /// Print events as they happen (reconnecting with Last-Event-ID).
    Tail {
        /// Only these pools (comma-separated).
        #[arg(long, value_delimiter = ',')]
        pools: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientOp {
    /// Mint a client token through the vault (admin), or offline with `--signing-key`.
    Mint(crate::MintArgs),
    /// Revoke a client token by its jti: every replica refuses it within a second.
    Revoke { jti: String },
    /// What the vault says of a client token (RFC 7662); `-` reads it from stdin.
    Introspect {
        /// The token to inspect (not the one vaultctl calls with: that is TV_TOKEN).
        #[arg(value_name = "TOKEN")]
        subject: String,
    },
}

/// An action's `scope` in its body.
fn scope(global: bool) -> &'static str {
    if global {
        "global"
    } else {
        "region"
    }
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON object as a two-column table (nested objects flattened with dots).
pub(crate) fn fields(v: &Value) -> Table {
    fn walk(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, rows);
                }
            }
            // A list of named things (a pool's or a token's quotas): a row group per name.
            Value::Array(items)
                if !items.is_empty() && items.iter().all(|i| i["name"].is_string()) =>
            {
                for i in items {
                    let key = format!("{prefix}.{}", text(&i["name"]));
                    let mut rest = i.clone();
                    rest.as_object_mut().map(|m| m.remove("name"));
                    walk(&key, &rest, rows);
                }
            }
            other => rows.push((prefix.to_string(), text(other))),
        }
    }
    let mut rows = Vec::new();
    walk("", v, &mut rows);
    let mut t = table(&["field", "value"]);
    for (k, x) in rows {
        t.add_row(vec![k, x]);
    }
    t
}

pub(crate) fn show(json_out: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", human(v));
    }
}

use vault_core::model::VIEW_STATES as STATES;

pub(crate) async fn pool(op: PoolOp, a: &RemoteArgs) -> anyhow::Result<()> {
    let r = Remote::new(a)?;
    match op {
        PoolOp::Create(c) => {
            let mut cfg = match c.config.as_deref() {
                Some(src) => read_json_arg(src)?,
                None => Map::new(),
            };
            let flags = [
                ("quota_limit", c.quota_limit.map(Value::from)),
                ("quota_window_s", c.quota_window_s.map(Value::from)),
                ("quota_reserve", c.quota_reserve.map(Value::from)),
                (
                    "max_leases_per_token",
                    c.max_leases_per_token.map(Value::from),
                ),
                ("lease_ttl_s", c.lease_ttl_s.map(Value::from)),
                ("strategy", c.strategy.map(Value::from)),
            ];
            for (k, v) in flags {
                if let Some(v) = v {
                    cfg.insert(k.into(), v);
                }
            }
            let v = r
                .put(&format!("/v1/pools/{}", seg(&c.pool)), &Value::Object(cfg))
                .await?;
            show(a.json, &v, |v| format!("pool {}\n{}", c.pool, fields(v)));
        }
        PoolOp::List => {
            let mut all = r.pages("/v1/pools", "pools", usize::MAX).await?;
            all.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
            let v = Value::Array(all);
            show(a.json, &v, |v| {
                let mut header = vec!["pool"];
                header.extend(STATES);
                header.push("frozen");
                let mut t = table(&header);
                for p in v.as_array().into_iter().flatten() {
                    let mut row = vec![text(&p["name"])];
                    row.extend(STATES.iter().map(|s| text(&p["tokens"][*s])));
                    row.push(if p["frozen"] == true { "yes" } else { "" }.into());
                    t.add_row(row);
                }
                t.to_string()
            });
        }
        PoolOp::Status { pool } => {
            let v = r.get(&format!("/v1/pools/{}/status", seg(&pool))).await?;
            show(a.json, &v, |v| fields(v).to_string());
        }
        PoolOp::Freeze {
            pool,
            reason,
            revoke_leases,
            global,
        } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/freeze", seg(&pool)),
                    &json!({"reason": reason, "revoke_leases": revoke_leases, "scope": scope(global)}),
                )
                .await?;
            show(a.json, &v, |v| match v["global"]["entry_id"].as_str() {
                Some(e) => format!("pool {pool} frozen in every region (global entry {e})"),
                None => format!("pool {pool} frozen"),
            });
        }
        PoolOp::Unfreeze { pool, global } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/unfreeze", seg(&pool)),
                    &json!({"scope": scope(global)}),
                )
                .await?;
            show(a.json, &v, |v| match v["global"]["entry_id"].as_str() {
                Some(e) => format!("pool {pool} unfrozen in every region (global entry {e})"),
                None => format!("pool {pool} unfrozen"),
            });
        }
        PoolOp::Rotate {
            pool,
            sunset,
            reason,
        } => {
            let sunset_s = crate::parse_ttl(&sunset)?;
            let v = r
                .post(
                    &format!("/v1/pools/{}/rotate", seg(&pool)),
                    &json!({"sunset_s": sunset_s, "reason": reason}),
                )
                .await?;
            show(a.json, &v, |v| {
                format!(
                    "rotation {} of pool {pool}: {} tokens deprecated, revoked at {} unless refreshed",
                    text(&v["rotation_id"]),
                    text(&v["tokens"]),
                    text(&v["sunset_at"])
                )
            });
        }
    }
    Ok(())
}

/// `{...}` as given, or the JSON of `@file` / `@-`.
fn read_json_arg(src: &str) -> anyhow::Result<Map<String, Value>> {
    let text = match src.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())?,
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => src.to_string(),
    };
    match serde_json::from_str(&text).context("--config is not JSON")? {
        Value::Object(m) => Ok(m),
        _ => bail!("--config must be a JSON object"),
    }
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
    fn tally(&mut self, answer: &Value, sent: u64) {
        let unchanged = answer["unchanged"].as_array().map_or(0, Vec::len) as u64;
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
            let all = r.pages(&path, "tokens", limit).await?;
            let v = Value::Array(all);
            show(a.json, &v, |v| {
                let mut t = table(&[
                    "id",
                    "state",
                    "quota used",
                    "leases",
                    "expires",
                    "fingerprint",
                ]);
                for x in v.as_array().into_iter().flatten() {
                    let count = |q: &Value| match q["limit"].as_u64() {
                        Some(l) => format!("{} / {l}", text(&q["used"])),
                        None => text(&q["used"]),
                    };
                    // The default quota, then each other one by name.
                    let mut used = vec![count(&x["quota"])];
                    for q in x["quotas"].as_array().into_iter().flatten() {
                        used.push(format!("{} {}", text(&q["name"]), count(q)));
                    }
                    let used = used.join(", ");
                    t.add_row(vec![
                        text(&x["id"]),
                        text(&x["state"]),
                        used,
                        text(&x["leases"]),
                        x["expires_at"].as_str().unwrap_or("never").to_string(),
                        text(&x["fingerprint"]),
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
            show(a.json, &v, |_| format!("token {id} of pool {pool} revoked"));
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
            show(a.json, &v, |v| {
                let fp = v["fingerprint"].as_str().unwrap_or_default();
                match v["global"]["entry_id"].as_str() {
                    Some(e) => format!(
                        "credential {fp} revoked in every region (global entry {e}; each region's follower applies it)"
                    ),
                    None => {
                        let tokens = v["tokens"].as_array().cloned().unwrap_or_default();
                        let names: Vec<String> = tokens
                            .iter()
                            .map(|t| format!("{}/{}", t["pool"].as_str().unwrap_or(""), t["token_id"].as_str().unwrap_or("")))
                            .collect();
                        format!("credential {fp} revoked: {} tokens ({})", names.len(), names.join(", "))
                    }
                }
            });
        }
        TokenOp::Restore { pool, id } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/tokens/{}/restore", seg(&pool), seg(&id)),
                    &json!({}),
                )
                .await?;
            show(a.json, &v, |v| {
                format!("token {id} of pool {pool}: {}", text(&v["state"]))
            });
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
    match r.post(&path, &json!({ "tokens": tokens })).await {
        Ok(answer) => done.tally(&answer, tokens.len() as u64),
        Err(e) if e.downcast_ref::<Problem>().is_some_and(|p| p.status == 409) => {
            for (_, t) in pending.iter() {
                match r.post(&path, &json!({ "tokens": [t] })).await {
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

fn audit_row(t: &mut Table, e: &Value) {
    let outcome = [&e["outcome"], &e["detail"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    t.add_row(vec![
        text(&e["at"]),
        text(&e["actor"]),
        text(&e["action"]),
        e["pool"].as_str().unwrap_or("").to_string(),
        e["token_id"].as_str().unwrap_or("").to_string(),
        outcome,
    ]);
}

pub(crate) async fn audit(op: AuditOp, a: &RemoteArgs) -> anyhow::Result<()> {
    let r = Remote::new(a)?;
    let AuditOp::Tail {
        pool,
        lines,
        since,
        follow,
    } = op;
    let mut base = match &pool {
        Some(p) => format!("/v1/audit?pool={}&", seg(p)),
        None => "/v1/audit?".to_string(),
    };
    if let Some(since) = since {
        let since_ms = vault_core::time::now_ms() - crate::parse_ttl(&since)? * 1000;
        base.push_str(&format!("since={since_ms}&"));
    }
    // The latest `lines` entries since then, in one read; -f follows on from the newest.
    let page = r.get(&format!("{base}newest=true&limit={lines}")).await?;
    let latest = page["events"].as_array().cloned().unwrap_or_default();
    let mut after: Option<String> = latest
        .last()
        .and_then(|e| e["id"].as_str())
        .map(str::to_string);
    let print = |entries: &[Value]| {
        if a.json {
            for e in entries {
                println!("{e}");
            }
        } else if !entries.is_empty() {
            let mut t = table(&["at", "actor", "action", "pool", "token", "outcome / detail"]);
            for e in entries {
                audit_row(&mut t, e);
            }
            println!("{t}");
        }
    };
    print(&latest);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let q = match &after {
            Some(id) => format!("{base}after={id}&limit=1000"),
            None => format!("{base}limit=1000"),
        };
        let page = r.get(&q).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if let Some(last) = events.last() {
            after = last["id"].as_str().map(str::to_string).or(after);
        }
        print(&events);
    }
}

pub(crate) async fn events(op: EventsOp, a: &RemoteArgs) -> anyhow::Result<()> {
    let EventsOp::Tail { pools, count } = op;
    let client = vault_client::Client::new(&a.url, &a.token()?);
    let pools: Vec<&str> = pools.iter().map(String::as_str).collect();
    let refused = |e: vault_client::Error| match e {
        vault_client::Error::Api {
            status,
            code,
            detail,
        } => anyhow::anyhow!("{code} ({status}): {detail}"),
        e => anyhow::anyhow!("{e}"),
    };
    // Subscribes at the first read; reopens the stream with Last-Event-ID, backing off, whenever
    // it ends or the vault cannot be reached.
    let mut feed = client.feed(&pools);
    let mut seen = 0u64;
    loop {
        let ev = feed.next().await.map_err(refused)?;
        if a.json {
            println!("{}", ev.data);
        } else {
            let d = &ev.data;
            let at = d["at"]
                .as_i64()
                .map(vault_core::time::rfc3339)
                .unwrap_or_default();
            let what = [&d["pool"], &d["token_id"], &d["lease_id"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let reason = d["reason"].as_str().unwrap_or("");
            println!("{at}  {:<18} {what}  {reason}", ev.kind);
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}

pub(crate) async fn client(op: ClientOp, a: &RemoteArgs) -> anyhow::Result<()> {
    match op {
        ClientOp::Mint(m) if m.signing_key.is_some() => crate::mint_offline(m),
        ClientOp::Mint(m) => {
            let r = Remote::new(a)?;
            let ttl_s = crate::parse_ttl(&m.ttl)?;
            let mut body = json!({"sub": m.sub, "scopes": m.scopes, "ttl_s": ttl_s});
            if let Some(p) = m.pools {
                body["pools"] = json!(p);
            }
            let v = r.post("/v1/clients", &body).await?;
            if a.json {
                println!("{v}");
            } else {
                eprintln!(
                    "jti {}, expires {}",
                    text(&v["jti"]),
                    text(&v["expires_at"])
                );
                println!("{}", text(&v["token"]));
            }
            Ok(())
        }
        ClientOp::Revoke { jti } => {
            let r = Remote::new(a)?;
            let v = r.post("/v1/clients/revoke", &json!({ "jti": jti })).await?;
            show(a.json, &v, |_| {
                format!("client token {jti} revoked: every replica refuses it within a second")
            });
            Ok(())
        }
        ClientOp::Introspect { subject } => {
            let r = Remote::new(a)?;
            let token = if subject == "-" {
                std::io::read_to_string(std::io::stdin())?
                    .trim()
                    .to_string()
            } else {
                subject
            };
            let v = r.post("/v1/introspect", &json!({ "token": token })).await?;
            show(a.json, &v, |v| fields(v).to_string());
            Ok(())
        }
    }
}
