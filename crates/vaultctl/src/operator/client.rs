//! `vaultctl client`: client tokens, minted or revoked.

use clap::Subcommand;
use serde_json::json;
use vault_core::model::{ClientRevoked, MintedToken};

use super::*;
use crate::remote::{Remote, RemoteArgs};

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
                let minted: MintedToken = typed(&v)?;
                eprintln!("jti {}, expires {}", minted.jti, minted.expires_at);
                println!("{}", minted.token);
            }
            Ok(())
        }
        ClientOp::Revoke { jti } => {
            let r = Remote::new(a)?;
            let v = r.post("/v1/clients/revoke", &json!({ "jti": jti })).await?;
            show_as(a.json, &v, |c: ClientRevoked| match c.global {
                Some(g) => format!(
                    "client token {} revoked in every region (global entry {})",
                    c.jti, g.entry_id
                ),
                None => format!(
                    "client token {} revoked: every replica refuses it within a second",
                    c.jti
                ),
            })
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
