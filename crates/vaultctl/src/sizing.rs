//! `vaultctl pool size`: how many tokens a job needs, before it starts — the same rule pool
//! status applies to the observed rate (`vault_core::model::tokens_needed`).

use clap::Args;
use vault_core::model::{tokens_needed, Demand, TokenCapacity};

#[derive(Debug, Args)]
pub(crate) struct SizeArgs {
    /// Requests per second the job makes (each takes one unit of a token's quota).
    #[arg(long)]
    pub(crate) rps: f64,
    /// How long the job runs: 3600, 90s, 30m, 12h, 7d. Absent: it runs on (steady state).
    #[arg(long)]
    pub(crate) duration: Option<String>,
    /// Units one token may take per quota window (the target's limit per token).
    #[arg(long)]
    pub(crate) quota: Option<u64>,
    /// The quota window: 3600, 30m, 1h, 1d.
    #[arg(long, default_value = "1h")]
    pub(crate) window: String,
    /// Units kept back per token (the pool's quota_reserve).
    #[arg(long, default_value_t = 0)]
    pub(crate) reserve: u64,
    /// Leases held at once (workers holding a token at the same moment).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) concurrent: f64,
    /// The pool's max_leases_per_token.
    #[arg(long, default_value_t = 1)]
    pub(crate) max_leases_per_token: u64,
    /// Another quota of the pool (repeatable): `LIMIT/WINDOW` for one counting requests
    /// (`60/1m`, `1000/1d`), `LIMIT/WINDOW@COST` for one counting a cost that each request
    /// takes `COST` of (`90000/1m@1500`). N is the largest over every quota.
    #[arg(long = "also", value_name = "LIMIT/WINDOW[@COST]")]
    pub(crate) also: Vec<String>,
    /// Answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(
    a: &SizeArgs,
    parse_duration: fn(&str) -> anyhow::Result<i64>,
) -> anyhow::Result<()> {
    let non_negative = |x: f64| x.is_finite() && x >= 0.0;
    if !non_negative(a.rps) || !non_negative(a.concurrent) {
        anyhow::bail!("--rps and --concurrent must be non-negative numbers");
    }
    let window_s = parse_duration(&a.window)?;
    anyhow::ensure!(window_s > 0, "--window must be positive");
    let duration_s = a
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| d.max(0) as u64);
    if let Some(q) = a.quota {
        anyhow::ensure!(
            q > a.reserve,
            "--quota ({q}) must exceed --reserve ({})",
            a.reserve
        );
    }
    let demand = |units_per_s: f64| Demand {
        units_per_s,
        concurrent: a.concurrent,
        duration_s,
    };
    let capacity = |quota_per_window: Option<u64>, window_s: u64| TokenCapacity {
        quota_per_window,
        window_s,
        max_leases_per_token: a.max_leases_per_token.max(1),
    };
    let mut n = tokens_needed(
        demand(a.rps),
        capacity(a.quota.map(|q| q - a.reserve), window_s as u64),
    );
    let mut by = a.quota.map(|q| format!("{q}/{}", a.window));
    for also in &a.also {
        let (limit, window, cost) = parse_also(also, parse_duration)?;
        let m = tokens_needed(demand(a.rps * cost as f64), capacity(Some(limit), window));
        if m.tokens_for_quota > n.tokens_for_quota {
            (n, by) = (m, Some(also.clone()));
        }
    }
    if a.json {
        let mut v = serde_json::to_value(n)?;
        v["sized_by_quota"] = serde_json::json!(by);
        println!("{v}");
    } else {
        println!(
            "tokens needed: {} (for the quota{}: {}, for concurrency: {})",
            n.tokens_needed,
            // Which quota, when there are several.
            by.filter(|_| !a.also.is_empty())
                .map(|q| format!(" {q}"))
                .unwrap_or_default(),
            n.tokens_for_quota,
            n.tokens_for_concurrency
        );
    }
    Ok(())
}

/// `LIMIT/WINDOW[@COST]`: the limit, the window in seconds, and what a request takes of it.
fn parse_also(
    s: &str,
    parse_duration: fn(&str) -> anyhow::Result<i64>,
) -> anyhow::Result<(u64, u64, u64)> {
    let bad = || anyhow::anyhow!("--also {s}: expected LIMIT/WINDOW or LIMIT/WINDOW@COST");
    let (quota, cost) = match s.split_once('@') {
        Some((q, c)) => (q, c.parse::<u64>().map_err(|_| bad())?),
        None => (s, 1),
    };
    let (limit, window) = quota.split_once('/').ok_or_else(bad)?;
    let limit: u64 = limit.parse().map_err(|_| bad())?;
    let window = parse_duration(window)?;
    anyhow::ensure!(
        limit > 0 && window > 0,
        "--also {s}: limit and window must be positive"
    );
    Ok((limit, window as u64, cost))
}
