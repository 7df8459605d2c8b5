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
    let n = tokens_needed(
        Demand {
            units_per_s: a.rps,
            concurrent: a.concurrent,
            duration_s,
        },
        TokenCapacity {
            quota_per_window: a.quota.map(|q| q - a.reserve),
            window_s: window_s as u64,
            max_leases_per_token: a.max_leases_per_token.max(1),
        },
    );
    if a.json {
        println!("{}", serde_json::to_string(&n)?);
    } else {
        println!(
            "tokens needed: {} (for the quota: {}, for concurrency: {})",
            n.tokens_needed, n.tokens_for_quota, n.tokens_for_concurrency
        );
    }
    Ok(())
}
