//! `vaultctl pool`: create, list, show, update, freeze, delete pools.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::*;
use crate::remote::{seg, Remote, RemoteArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum PoolOp {
    /// Create or replace a pool's config (PUT semantics; defaults fill what is not given).
    Create(PoolCreate),
    /// Every pool with its tokens by state.
    List,
    /// A pool's status: tokens by state, leases, utilization, quota, sizing.
    Status { pool: String },
    /// The rotation calendar: with a scheduled `rotation`, tokens reaching their maximum age
    /// on each day, past it, and being rotated now.
    Rotations {
        pool: String,
        /// Days from today (UTC), 1-366.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
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

/// An action's `scope` in its body.
fn scope(global: bool) -> ActionScope {
    if global {
        ActionScope::Global
    } else {
        ActionScope::Region
    }
}

use vault_core::model::{
    ActionScope, Frozen, PoolPage, RotationCalendar, RotationStarted, VIEW_STATES as STATES,
};

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
            let mut all = r.pages::<PoolPage>("/v1/pools", usize::MAX).await?;
            all.sort_by(|x, y| x.name.cmp(&y.name));
            show(a.json, &serde_json::to_value(&all)?, |_| {
                let mut header = vec!["pool"];
                header.extend(STATES);
                header.push("frozen");
                let mut t = table(&header);
                for p in &all {
                    let mut row = vec![p.name.clone()];
                    row.extend(
                        STATES
                            .iter()
                            .map(|s| cell(p.tokens.as_ref().and_then(|n| n.get(*s)))),
                    );
                    row.push(if p.frozen { "yes" } else { "" }.into());
                    t.add_row(row);
                }
                t.to_string()
            });
        }
        PoolOp::Status { pool } => {
            let v = r.get(&format!("/v1/pools/{}/status", seg(&pool))).await?;
            show(a.json, &v, |v| fields(v).to_string());
        }
        PoolOp::Rotations { pool, days } => {
            let v = r
                .get(&format!("/v1/pools/{}/rotations?days={days}", seg(&pool)))
                .await?;
            show_as(a.json, &v, |c: RotationCalendar| calendar(&c))?;
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
            show_as(a.json, &v, |f: Frozen| match f.global {
                Some(g) => format!(
                    "pool {pool} frozen in every region (global entry {})",
                    g.entry_id
                ),
                None => format!(
                    "pool {pool} frozen ({} leases ended)",
                    f.leases_ended.map_or(0, |l| l.len())
                ),
            })?;
        }
        PoolOp::Unfreeze { pool, global } => {
            let v = r
                .post(
                    &format!("/v1/pools/{}/unfreeze", seg(&pool)),
                    &json!({"scope": scope(global)}),
                )
                .await?;
            show_as(a.json, &v, |f: Frozen| match f.global {
                Some(g) => format!(
                    "pool {pool} unfrozen in every region (global entry {})",
                    g.entry_id
                ),
                None => format!("pool {pool} unfrozen"),
            })?;
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
            show_as(a.json, &v, |r: RotationStarted| {
                format!(
                    "rotation {} of pool {pool}: {} tokens deprecated, revoked at {} unless refreshed",
                    r.rotation_id, r.tokens, r.sunset_at
                )
            })?;
        }
    }
    Ok(())
}

/// A rotation calendar in words and a table of the days with tokens due.
fn calendar(c: &RotationCalendar) -> String {
    let Some(s) = &c.schedule else {
        return format!(
            "pool {} rotates nothing on schedule (set its `rotation`: {{\"max_age_s\": ...}})",
            c.pool
        );
    };
    let mut out = format!(
        "pool {}: each token rotated at {} s of age, kept {} s while replaced, at most {} at once
         being rotated: {}   past their age, waiting: {}   next due: {}
",
        c.pool,
        s.max_age_s,
        s.overlap_s,
        s.max_in_flight,
        c.in_flight,
        c.overdue,
        c.next_due_at.as_deref().unwrap_or("–"),
    );
    let mut t = table(&["day (UTC)", "tokens due"]);
    for d in c.days.iter().filter(|d| d.due > 0) {
        t.add_row(vec![d.date.clone(), d.due.to_string()]);
    }
    out.push_str(&t.to_string());
    out
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
