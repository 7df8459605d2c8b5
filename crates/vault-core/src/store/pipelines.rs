//! Pipelines: a sized, time-bounded share of a pool (`lua/rules/pipeline.lua`), assigned and
//! given back in batches.

use super::*;
use crate::model::{
    CapacityShort, PipelineDemand, PipelineInput, PipelineSize, PipelineStatus, MAX_PIPELINES,
};

/// Tokens one pipeline batch scans, assigns or gives back: ~50 µs each (an assignment re-checks
/// and places each token), so about 1 ms a call
/// (`TV_BENCH_ONLY=pipelines cargo bench --bench pipelines` measures the longest).
pub const PIPELINE_BATCH: u64 = 20;

/// Tokens of a share pipeline status reads (a random sample above that): ~10 µs each.
const PIPELINE_SAMPLE: u64 = 256;

/// Where a pipeline stands after a step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PipelineStep {
    /// `scan`, `assign`, `live`, `shrink`; `gone` once ended, `failed` when a new pipeline
    /// could not be assigned, `dry_run` at the end of a dry run.
    pub phase: String,
    pub done: bool,
    pub want: u64,
    pub have: u64,
    /// What the last assignment could not get (it was given back).
    #[serde(default)]
    pub short: Option<ShortRaw>,
}

/// A shortfall as the function answers it (times in ms).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShortRaw {
    pub could: u64,
    pub missing: u64,
    #[serde(default)]
    pub next_free_at: Option<i64>,
}

impl ShortRaw {
    pub fn answer(&self) -> CapacityShort {
        CapacityShort {
            could: self.could,
            missing: self.missing,
            next_free_at: self.next_free_at.map(crate::time::rfc3339),
        }
    }
}

/// What happened to a share, for the events and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PipelineNews {
    #[serde(rename = "type")]
    pub kind: String,
    pub pipeline: String,
    pub at: i64,
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub replaced_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A pipeline as `pipeline_view` reads it.
#[derive(Debug, Clone, Deserialize)]
struct ViewRaw {
    name: String,
    record: HashMap<String, String>,
    have: u64,
    under_strength: bool,
    sampled: u64,
    #[serde(default)]
    states: HashMap<String, u64>,
    leases: u64,
    #[serde(default)]
    units_left: Option<f64>,
    life_end: i64,
}

#[derive(Deserialize)]
struct PutReply {
    created: bool,
}

impl Store {
    /// Record a pipeline's demand and size (or a dry run's); returns whether it was created.
    /// The tokens move in [`Store::pipeline_step`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn pipeline_put(
        &self,
        pool: &str,
        name: &str,
        input: &PipelineInput,
        size: &PipelineSize,
        cfg: &PoolConfig,
        actor: &str,
        dry: bool,
    ) -> Result<bool> {
        let min_ttl_s = input.min_token_ttl_s.unwrap_or(cfg.min_token_ttl_s);
        let v: PutReply = self
            .call(
                pool,
                &scripts::PipelinePut {
                    name: name.into(),
                    want: size.tokens,
                    units: input.units(),
                    min_life_ms: min_ttl_s * 1000,
                    allow_partial: input.allow_partial,
                    demand: serde_json::to_string(input).expect("demand serializes"),
                    actor: actor.into(),
                    duration_ms: input.duration_s * 1000,
                    dry,
                    max_pipelines: MAX_PIPELINES,
                },
            )
            .await?;
        Ok(v.created)
    }

    /// One batch of whatever pipeline `name` needs now.
    pub(crate) async fn pipeline_step(&self, pool: &str, name: &str) -> Result<PipelineStep> {
        self.call(
            pool,
            &scripts::PipelineStep {
                name: name.into(),
                batch: PIPELINE_BATCH,
            },
        )
        .await
    }

    /// Steps until pipeline `name` needs nothing more now (live, gone, failed).
    pub(crate) async fn pipeline_settle(&self, pool: &str, name: &str) -> Result<PipelineStep> {
        loop {
            let step = self.pipeline_step(pool, name).await?;
            if step.done {
                return Ok(step);
            }
        }
    }

    /// Start ending pipeline `name`; returns how many tokens it holds (they go back in steps).
    pub(crate) async fn pipeline_end(&self, pool: &str, name: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Ended {
            have: u64,
        }
        let v: Ended = self
            .call(pool, &scripts::PipelineEnd { name: name.into() })
            .await?;
        Ok(v.have)
    }

    /// Take up to `max` of what happened to the pool's shares (oldest first).
    pub async fn pipeline_news(&self, pool: &str, max: u64) -> Result<Vec<PipelineNews>> {
        self.call(pool, &scripts::PipelineNews { max }).await
    }

    /// The names of the pool's pipelines that need a step now: past their deadline, under
    /// strength, or being assigned or given back; and whether news waits.
    pub async fn pipelines_due(&self, pool: &str) -> Result<(Vec<String>, bool)> {
        let pk = self.keys.pool(pool);
        let now = self.now_ms().await?;
        let mut p = redis::pipe();
        p.cmd("ZRANGE")
            .arg(pk.pipelines())
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .cmd("SMEMBERS")
            .arg(pk.pipelines_short())
            .cmd("SMEMBERS")
            .arg(pk.pipelines_work())
            .cmd("LLEN")
            .arg(pk.pipeline_news());
        let (ended, short, work, news): (Vec<String>, Vec<String>, Vec<String>, u64) =
            self.pipe(p).await?;
        let mut names: Vec<String> = ended.into_iter().chain(short).chain(work).collect();
        names.sort();
        names.dedup();
        Ok((names, news > 0))
    }

    /// Pipelines of `pool` (`names` empty: every one), as operators see them.
    pub async fn pipeline_status(
        &self,
        pool: &str,
        cfg: &PoolConfig,
        names: &[String],
    ) -> Result<Vec<PipelineStatus>> {
        self.pipeline_status_sampled(pool, cfg, names, PIPELINE_SAMPLE)
            .await
    }

    /// As [`Store::pipeline_status`], reading up to `sample` tokens of each share (0: sizes
    /// only, no counts by state, leases or quota).
    pub async fn pipeline_status_sampled(
        &self,
        pool: &str,
        cfg: &PoolConfig,
        names: &[String],
        sample: u64,
    ) -> Result<Vec<PipelineStatus>> {
        let rows: Vec<ViewRaw> = self
            .call(
                pool,
                &scripts::PipelineView {
                    sample,
                    names: names.to_vec(),
                },
            )
            .await?;
        let now = self.now_ms().await?;
        Ok(rows
            .into_iter()
            .map(|r| pipeline_status(pool, cfg, r, now))
            .collect())
    }
}

/// A pipeline's status from what `pipeline_view` read: counts scaled from the sample, the
/// observed rate, and when the share runs out at that rate.
fn pipeline_status(pool: &str, cfg: &PoolConfig, r: ViewRaw, now: i64) -> PipelineStatus {
    let rec = |k: &str| r.record.get(k).cloned().unwrap_or_default();
    let ms = |k: &str| rec(k).parse::<i64>().unwrap_or(0);
    let scale = if r.sampled > 0 {
        r.have as f64 / r.sampled as f64
    } else {
        0.0
    };
    let scaled = |n: u64| (n as f64 * scale).round() as u64;
    let demand: PipelineInput = serde_json::from_str(&rec("demand")).unwrap_or_default();
    let phase = match rec("phase").as_str() {
        "live" => "live",
        "shrink" if rec("ending") == "1" => "ending",
        "scan" | "assign" | "shrink" if rec("live") == "1" => "resizing",
        _ => "assigning",
    }
    .to_string();
    let granted = ms("granted").max(0) as u64;
    let units_granted = ms("units_granted").max(0) as f64;
    let since = ms("live_since");
    let elapsed_s = if since > 0 {
        ((now - since) as f64 / 1000.0).max(1.0)
    } else {
        0.0
    };
    let rate_observed = if elapsed_s > 0.0 {
        granted as f64 / elapsed_s
    } else {
        0.0
    };
    let units_per_s = if elapsed_s > 0.0 {
        units_granted / elapsed_s
    } else {
        0.0
    };
    // Quota: what the share can serve per second for good (its tokens' default quota renewed
    // every window), and what is left of it now.
    let per_token = cfg
        .quota_limit
        .map(|l| l.saturating_sub(cfg.quota_reserve) as f64);
    let units_left = r.units_left.map(|u| u * scale);
    let quota_used_ratio = match (per_token, units_left) {
        (Some(p), Some(left)) if p > 0.0 && r.have > 0 => {
            Some((1.0 - left / (p * r.have as f64)).clamp(0.0, 1.0))
        }
        _ => None,
    };
    let deadline = ms("deadline");
    let quota_at = match (per_token, units_left) {
        (Some(p), Some(left)) if units_per_s > 0.0 => {
            let sustained = p * r.have as f64 / cfg.quota_window_s.max(1) as f64;
            (units_per_s > sustained)
                .then(|| now + (left / (units_per_s - sustained) * 1000.0) as i64)
        }
        _ => None,
    };
    let life_at = (r.life_end > 0).then(|| r.life_end - cfg.min_token_ttl_s as i64 * 1000);
    let (exhausts_at, exhausts_by) = match (quota_at, life_at) {
        (Some(q), Some(l)) if l < q => (Some(l), Some("life")),
        (Some(q), _) => (Some(q), Some("quota")),
        (None, Some(l)) => (Some(l), Some("life")),
        (None, None) => (None, None),
    };
    let (exhausts_at, exhausts_by) = match exhausts_at {
        Some(at) if at < deadline => (Some(at), exhausts_by),
        _ => (None, None),
    };
    let last_shortfall = (rec("result") == "insufficient").then(|| CapacityShort {
        could: ms("could").max(0) as u64,
        missing: ms("missing").max(0) as u64,
        next_free_at: None,
    });
    PipelineStatus {
        name: r.name,
        pool: pool.to_string(),
        phase,
        tokens: r.have,
        tokens_wanted: ms("want").max(0) as u64,
        under_strength: r.under_strength,
        tokens_by_state: r.states.into_iter().map(|(k, v)| (k, scaled(v))).collect(),
        leases: scaled(r.leases),
        rate_asked: demand.rps,
        demand,
        rate_observed,
        leases_granted: granted,
        quota_used_ratio,
        exhausts_before_deadline_s: exhausts_at.map(|at| ((deadline - at).max(0) / 1000) as u64),
        exhausts_at: exhausts_at.map(crate::time::rfc3339),
        exhausts_by: exhausts_by.map(String::from),
        created_at: crate::time::rfc3339(ms("created_at")),
        created_by: rec("created_by"),
        updated_by: rec("updated_by"),
        deadline: crate::time::rfc3339(deadline),
        last_shortfall,
    }
}
