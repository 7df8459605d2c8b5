//! `vaultctl audit`: the audit trail, latest entries or followed.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::*;
use crate::remote::{seg, Remote, RemoteArgs};

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
