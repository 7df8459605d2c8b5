//! `vaultctl check`: the invariant checker. It creates pools of its own on a running vault (one
//! or several URLs: replicas, or a load balancer), drives workers, an operator and an external
//! login worker against them for a while, logs every request with its timing and answer, reads
//! the vault's final state, and proves from both that no rule was broken (see [`verify`]).
//! Exits non-zero on any violation.

mod drive;
mod operator;
mod regions;
mod transport;
mod vault;
pub(crate) mod verify;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::Method;
use serde_json::json;

use verify::Rules;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Vault base URLs, comma-separated (replicas, or one load balancer). Requests go round robin.
    #[arg(long, value_delimiter = ',', env = "TV_CHECK_URLS", required = true)]
    pub(crate) urls: Vec<String>,
    /// How the workers lease, renew, report and rotate: `rest` (the URLs above) or `grpc` (the
    /// gRPC URLs). The operator and the final read use REST either way.
    #[arg(long, value_enum, default_value = "rest")]
    pub(crate) transport: transport::Transport,
    /// gRPC URLs (`http://host:port`, comma-separated: replicas' `TV_GRPC_LISTEN_ADDR`, or a
    /// balancer), for `--transport grpc`.
    #[arg(long, value_delimiter = ',', env = "TV_CHECK_GRPC_URLS")]
    pub(crate) grpc_urls: Vec<String>,
    /// Another region's vault URL (with the global control plane on): the checker also proves
    /// that credentials revoked through `--urls` are not granted there once that region could
    /// have applied the revocation (its global time plus the region's measured lag). The token
    /// must work in both regions.
    #[arg(long, value_delimiter = ',', env = "TV_CHECK_REGION_URLS")]
    pub(crate) region_urls: Vec<String>,
    /// An admin client token (it creates, and at the end deletes, pools named `check-<run>-<n>`).
    #[arg(long, env = "TV_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// How long to drive the load at most: seconds, or with a unit: 90s, 30m, 1h. SIGINT or
    /// SIGTERM (Ctrl-C) ends the load earlier; the run is then read and judged as usual.
    #[arg(long, default_value = "20s")]
    pub(crate) duration: String,
    /// Pools to create (each third one has a tight quota, so quota exhaustion is exercised).
    #[arg(long, default_value_t = 3)]
    pub(crate) pools: usize,
    /// Tokens deposited per pool at the start (the operator deposits more as it goes).
    #[arg(long, default_value_t = 6)]
    pub(crate) tokens: usize,
    /// Seed of the random choices (the timing still varies from run to run).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Per-request timeout.
    #[arg(long, default_value = "5s")]
    pub(crate) request_timeout: String,
    /// How long the final read may wait for the vault to answer (after a scenario broke it).
    #[arg(long, default_value = "60s")]
    pub(crate) final_patience: String,
    /// Write the operation log and the final read (JSON lines) here.
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// Keep the check's pools afterwards (to inspect them).
    #[arg(long)]
    pub(crate) keep: bool,
}

/// The pipeline the checker creates on its first pool.
const PIPELINE: &str = "check-share";

/// The checker pools' settings: two quotas, requests (`quota_limit`) and the cost dimension
/// `work` (a quota of its own, with an estimate per lease settled by the release). Their windows
/// outlast any run, so each token has one window per quota and consumption can be added up;
/// tight pools run out and are refilled by deposits.
fn pool_config(n: usize) -> (serde_json::Value, Rules) {
    let quota_limit = [40, 400, 4000][n % 3];
    let rules = Rules {
        max_leases_per_token: 1 + (n % 2) as u64,
        quota_limit,
        quota_reserve: 2,
        // Tighter than requests: most tokens run out of `work` first.
        work_limit: quota_limit / 2,
        work_reserve: 1,
        min_token_ttl_ms: 10_000,
    };
    let cfg = json!({
        "quota_limit": quota_limit,
        "quota_reserve": rules.quota_reserve,
        "quota_window_s": 31 * 86_400,
        "quotas": [{"name": drive::WORK, "limit": rules.work_limit, "reserve": rules.work_reserve,
                    "window_s": 31 * 86_400, "cost": drive::WORK}],
        "cost_estimates": { drive::WORK: drive::WORK_ESTIMATE },
        "max_leases_per_token": rules.max_leases_per_token,
        "lease_ttl_s": 5,
        "max_lease_ttl_s": 30,
        "min_token_ttl_s": rules.min_token_ttl_ms / 1000,
        "refresh_margin_s": 15,
        "refresh": {"kind": "external"},
    });
    (cfg, rules)
}

pub(crate) async fn run(
    args: CheckArgs,
    parse_secs: fn(&str) -> anyhow::Result<i64>,
) -> anyhow::Result<bool> {
    let secs = |s: &str| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(parse_secs(s)?.max(1) as u64))
    };
    let duration = secs(&args.duration)?;
    // Listening for an interrupt from the start: one during the set-up ends the load at once.
    let interrupted = drive::Interrupted::listen();
    let seed = args.seed.unwrap_or_else(rand::random);
    let grpc = match args.transport {
        transport::Transport::Rest => None,
        transport::Transport::Grpc => Some(transport::GrpcWorkers::new(
            &args.grpc_urls,
            secs(&args.request_timeout)?,
        )?),
    };
    let v = Arc::new(drive::Vault::new(
        args.urls.clone(),
        args.token.clone(),
        secs(&args.request_timeout)?,
        grpc,
    )?);
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let plan = drive::Plan {
        pools: (0..args.pools.max(1))
            .map(|n| format!("check-{run_id}-{n}"))
            .collect(),
        workers: args.workers.max(1),
        duration,
        seed,
        min_token_ttl_s: 10,
        pipeline: Some(PIPELINE.to_string()),
    };
    let workers_at = match args.transport {
        transport::Transport::Rest => String::new(),
        transport::Transport::Grpc => {
            format!(", workers over gRPC to {}", args.grpc_urls.join(", "))
        }
    };
    println!(
        "tokenvault check: {} pools, {} workers, {:?} against {}{workers_at} (seed {seed})",
        plan.pools.len(),
        plan.workers,
        duration,
        args.urls.join(", ")
    );
    let mut rules = HashMap::new();
    let mut rng = StdRng::seed_from_u64(seed);
    for (n, pool) in plan.pools.iter().enumerate() {
        let (cfg, r) = pool_config(n);
        let a = v
            .call(
                Method::PUT,
                &format!("/v1/pools/{pool}"),
                Some(&cfg),
                None,
                None,
            )
            .await;
        anyhow::ensure!(
            a.status == 201 || a.status == 200,
            "creating pool {pool}: HTTP {} {}",
            a.status,
            a.body
        );
        rules.insert(pool.clone(), r);
        anyhow::ensure!(
            operator::deposit(&v, &plan, &mut rng, pool, args.tokens).await,
            "depositing tokens into {pool} failed"
        );
    }

    // A pipeline on the first pool, kept whole as tokens leave it: tokens of its own that
    // outlast the run (the pool's other deposits may all expire within its first minute).
    let share_tokens = (args.tokens / 3).max(1);
    anyhow::ensure!(
        operator::deposit_lives(&v, &plan.pools[0], &vec![3 * 3600; share_tokens]).await,
        "depositing the pipeline's tokens into {} failed",
        plan.pools[0]
    );
    let share = serde_json::to_value(vault_core::model::PipelineInput {
        tokens: Some(share_tokens as u64),
        duration_s: duration.as_secs() + 3600,
        min_token_ttl_s: Some(300),
        allow_partial: true,
        ..Default::default()
    })?;
    let a = v
        .call(
            Method::PUT,
            &format!("/v1/pools/{}/pipelines/{PIPELINE}", plan.pools[0]),
            Some(&share),
            None,
            None,
        )
        .await;
    anyhow::ensure!(
        a.status == 201,
        "creating pipeline {PIPELINE}: HTTP {} {}",
        a.status,
        a.body
    );

    let across = args.region_urls.first().map(|other| {
        let (home, other, token) = (args.urls[0].clone(), other.clone(), args.token.clone());
        let pool = format!("check-{run_id}-global");
        let timeout = secs(&args.request_timeout);
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            regions::run(
                &home,
                &other,
                &token,
                &pool,
                duration,
                timeout?,
                interrupted,
            )
            .await
        })
    });
    let revoked = drive::run(v.clone(), &plan, interrupted).await;
    let across = match across {
        Some(t) => Some(t.await.context("the cross-region check stopped")??),
        None => None,
    };
    let fin = drive::final_read(&v, &plan.pools, &revoked, secs(&args.final_patience)?).await?;
    let log = v.take_log();
    let mut violations = verify::verify(&rules, &log, &fin);
    if let Some((summary, v)) = across {
        println!(
            "across regions ({}): {} credentials revoked globally, {} grants in the other region, its largest lag {} ms",
            args.region_urls[0], summary.revoked, summary.grants, summary.max_lag_ms
        );
        violations.extend(v);
    }

    if let Some(path) = &args.log {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
        );
        for r in &log {
            serde_json::to_writer(&mut f, r)?;
            writeln!(f)?;
        }
        serde_json::to_writer(&mut f, &json!({"final": fin}))?;
        writeln!(f)?;
    }
    // operations by kind and answer
    let mut counts: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for r in &log {
        let answer = match r.status {
            0 => "no answer".to_string(),
            s if r.code.is_empty() => s.to_string(),
            s => format!("{s} {}", r.code),
        };
        *counts
            .entry(r.op.name())
            .or_default()
            .entry(answer)
            .or_default() += 1;
    }
    println!("operations: {}", log.len());
    for (kind, answers) in &counts {
        let parts: Vec<String> = answers.iter().map(|(a, n)| format!("{a}: {n}")).collect();
        println!("  {kind:<14} {}", parts.join(", "));
    }
    let through_pipeline = log
        .iter()
        .filter(
            |r| matches!(&r.op, verify::Op::Lease { grant: Some(g), .. } if g.pipeline.is_some()),
        )
        .count();
    println!("leases through pipeline {PIPELINE}: {through_pipeline}");
    let tokens: usize = fin.pools.values().map(|p| p.tokens.len()).sum();
    println!(
        "final read: {} pools, {tokens} tokens, {} revoked client tokens probed",
        fin.pools.len(),
        fin.clients_refused.len()
    );
    println!(
        "lost answers: {} retried, {} lost again after the retry",
        v.retried.load(std::sync::atomic::Ordering::Relaxed),
        v.gave_up.load(std::sync::atomic::Ordering::Relaxed)
    );
    // What each lost answer was, so a run that lost too many explains itself.
    for r in log.iter().filter(|r| r.ambiguous()).take(20) {
        let what = if r.status == 0 {
            r.error.clone()
        } else {
            format!("HTTP {} {}", r.status, r.code)
        };
        println!("  {} at {:.3} s: {what}", r.op.name(), r.sent as f64 / 1e6);
    }
    println!("violations: {}", violations.len());
    for x in violations.iter().take(50) {
        println!("  {}: {}", x.invariant, x.detail);
    }
    if !args.keep {
        for pool in &plan.pools {
            v.call(
                Method::DELETE,
                &format!("/v1/pools/{pool}?force=true"),
                None,
                None,
                None,
            )
            .await;
        }
    }
    Ok(violations.is_empty())
}
