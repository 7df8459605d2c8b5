//! `vaultctl pipeline`: a job's sized, time-bounded share of a pool.

use clap::Subcommand;
use vault_core::model::{PipelineEnded, PipelineInput, PipelineStatus};

use crate::operator::{cell, fields, show, show_as, table, typed};
use crate::remote::{seg, Remote, RemoteArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum PipelineOp {
    /// Create (or resize, restarting its deadline) a pipeline sized for a demand: `--rps` for
    /// `--duration` (and `--concurrency`), or `--tokens`. Its tokens are assigned before this
    /// returns; a pool short of eligible tokens fails (409) and says by how much.
    Create {
        pool: String,
        name: String,
        /// Requests per second the job makes.
        #[arg(long)]
        rps: Option<f64>,
        /// How long the job runs: 3600, 90m, 2h.
        #[arg(long)]
        duration: String,
        /// Requests held at once.
        #[arg(long)]
        concurrency: Option<u64>,
        /// Quota units one request takes.
        #[arg(long)]
        units_per_request: Option<u64>,
        /// Life a token must have left to join (seconds).
        #[arg(long)]
        min_token_ttl_s: Option<u64>,
        /// Hold this many tokens instead of sizing from the demand.
        #[arg(long)]
        tokens: Option<u64>,
        /// Take what is there when the pool is short (the pipeline is then under strength).
        #[arg(long)]
        allow_partial: bool,
        /// Say what it would get now; assign nothing (admin).
        #[arg(long)]
        dry_run: bool,
    },
    /// A pipeline's status (every pipeline of the pool without a name).
    Status { pool: String, name: Option<String> },
    /// End a pipeline now: its tokens go back to the pool.
    End { pool: String, name: String },
}

pub(crate) async fn pipeline(op: PipelineOp, a: &RemoteArgs) -> anyhow::Result<()> {
    let r = Remote::new(a)?;
    let path = |pool: &str, name: &str| format!("/v1/pools/{}/pipelines/{}", seg(pool), seg(name));
    match op {
        PipelineOp::Create {
            pool,
            name,
            rps,
            duration,
            concurrency,
            units_per_request,
            min_token_ttl_s,
            tokens,
            allow_partial,
            dry_run,
        } => {
            let body = PipelineInput {
                rps,
                duration_s: u64::try_from(crate::parse_ttl(&duration)?)?,
                concurrency,
                units_per_request,
                min_token_ttl_s,
                tokens,
                allow_partial,
            };
            let url = path(&pool, &name) + if dry_run { "?dry_run=true" } else { "" };
            let v = r.put(&url, &serde_json::to_value(&body)?).await?;
            let human = if dry_run {
                format!("dry run: pipeline {name} of {pool}\n{}", fields(&v))
            } else {
                summary(&typed(&v)?)
            };
            show(a.json, &v, |_| human);
        }
        PipelineOp::Status {
            pool,
            name: Some(name),
        } => {
            let v = r.get(&path(&pool, &name)).await?;
            let human = format!("{}\n{}", summary(&typed(&v)?), fields(&v));
            show(a.json, &v, |_| human);
        }
        PipelineOp::Status { pool, name: None } => {
            let v = r
                .get(&format!("/v1/pools/{}/pipelines", seg(&pool)))
                .await?;
            let pipelines: Vec<PipelineStatus> = typed(&v)?;
            show(a.json, &v, |_| {
                let mut t = table(&[
                    "pipeline",
                    "phase",
                    "tokens",
                    "wanted",
                    "under strength",
                    "rate asked",
                    "rate observed",
                    "exhausts at",
                    "deadline",
                ]);
                for p in &pipelines {
                    t.add_row(vec![
                        p.name.clone(),
                        p.phase.clone(),
                        p.tokens.to_string(),
                        p.tokens_wanted.to_string(),
                        if p.under_strength { "yes" } else { "" }.into(),
                        cell(p.rate_asked),
                        format!("{:.2}", p.rate_observed),
                        cell(p.exhausts_at.as_ref()),
                        p.deadline.clone(),
                    ]);
                }
                t.to_string()
            });
        }
        PipelineOp::End { pool, name } => {
            let v = r
                .call(reqwest::Method::DELETE, &path(&pool, &name), None)
                .await?;
            show_as(a.json, &v, |e: PipelineEnded| {
                format!(
                    "pipeline {name} ended: {} tokens back in pool {pool}",
                    e.tokens_returned
                )
            })?;
        }
    }
    Ok(())
}

/// One line on a pipeline: its size, state and deadline, and when its share runs out.
fn summary(p: &PipelineStatus) -> String {
    let mut s = format!(
        "pipeline {} of {}: {} ({} of {} tokens{}), until {}",
        p.name,
        p.pool,
        p.phase,
        p.tokens,
        p.tokens_wanted,
        if p.under_strength {
            ", under strength"
        } else {
            ""
        },
        p.deadline,
    );
    if let (Some(at), Some(by)) = (&p.exhausts_at, &p.exhausts_by) {
        s.push_str(&format!(
            "\nexhausts its {by} at {at}, {} s before its deadline",
            cell(p.exhausts_before_deadline_s)
        ));
    }
    s
}
