//! `vaultctl events`: the events stream.

use clap::Subcommand;

use crate::remote::RemoteArgs;

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
            println!("{}", serde_json::to_string(&ev.data)?);
        } else {
            let d = &ev.data;
            let at = vault_core::time::rfc3339(d.at);
            let what = [Some(&d.pool), d.token_id.as_ref(), d.lease_id.as_ref()]
                .into_iter()
                .flatten()
                .filter(|v| !v.is_empty())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            let reason = d.reason.as_deref().unwrap_or("");
            println!("{at}  {:<18} {what}  {reason}", ev.kind);
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}
