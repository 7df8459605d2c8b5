//! `vaultctl audit`: the audit trail, latest entries or followed.

use std::time::Duration;

use clap::Subcommand;
use vault_core::model::{AuditEntry, AuditPage};

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

fn audit_row(t: &mut Table, e: &AuditEntry) {
    let outcome = [&e.outcome, &e.detail]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    t.add_row(vec![
        e.at.clone(),
        e.actor.clone(),
        e.action.clone(),
        e.pool.clone().unwrap_or_default(),
        e.token_id.clone().unwrap_or_default(),
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
    let page: AuditPage = typed(&r.get(&format!("{base}newest=true&limit={lines}")).await?)?;
    let latest = page.events;
    let mut after: Option<String> = latest.last().map(|e| e.id.clone());
    let print = |entries: &[AuditEntry]| {
        if a.json {
            for e in entries {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
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
        let page: AuditPage = typed(&r.get(&q).await?)?;
        if let Some(last) = page.events.last() {
            after = Some(last.id.clone());
        }
        print(&page.events);
    }
}
