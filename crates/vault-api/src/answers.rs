//! The bodies of the answers that are not a core type: one struct per answer, so the OpenAPI
//! document describes every body a client receives.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use vault_core::model::{AuditEntry, Binding};

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (the process is up) or `ready` (it can serve leases).
    pub status: &'static str,
    /// With the global plane (`/readyz` only): this region's lag behind the global
    /// revocations, and whether it is stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<vault_core::global::GlobalReport>,
}

/// A page of the audit trail, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEntry>,
    /// Pass as `after` for the next page; null when this page was the last.
    pub next: Option<String>,
}

/// A client token just minted (shown once; the vault keeps only its `jti`).
#[derive(Debug, Serialize, ToSchema)]
pub struct MintedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: String,
}

/// A client token revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientRevoked {
    pub jti: String,
    pub revoked: bool,
    /// With the global plane: the global entry that revokes it in every region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<vault_core::global::Written>,
}

/// `POST /v1/credentials/revoke`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialRevoked {
    /// The secret's fingerprint: the credential, wherever it is deposited.
    pub fingerprint: String,
    /// `global` (written to the global plane, applied by every region's follower, this one
    /// included) or `region` (no global plane: revoked in this region's pools now).
    pub scope: &'static str,
    /// With `scope: global`: the entry, its global time, and the region replicas that had it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<vault_core::global::Written>,
    /// With `scope: region`: the tokens revoked, by pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<RevokedToken>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedToken {
    pub pool: String,
    pub token_id: String,
    pub leases_ended: usize,
}

/// Token introspection (RFC 7662): `active` false, or the token's claims.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The pools the token may use; absent = every pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
}

/// A refresh job claimed by an external login worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedJob {
    pub job_id: String,
    pub token_id: String,
    /// The token's binding in full (the proxy with its credentials): the login goes through it.
    pub binding: Binding,
    pub labels: BTreeMap<String, String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Hidden from other workers until then.
    pub visible_until: String,
}

/// What a completed or failed refresh job did to its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobResult {
    pub job_id: String,
    pub token_id: String,
    /// The token's generation when a new secret was stored.
    pub generation: Option<u64>,
    pub state: String,
    /// Why the token is not back in rotation; null when it is.
    pub error: Option<String>,
}

/// A lease released.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    pub lease_id: String,
    pub token_id: String,
    /// The token's state after the report.
    pub token_state: String,
    pub released: bool,
}

/// A lease ended by a transition (freeze, revoke).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndedLease {
    pub lease_id: String,
    pub token_id: String,
}

/// A pool frozen or unfrozen.
#[derive(Debug, Serialize, ToSchema)]
pub struct Frozen {
    pub pool: String,
    pub frozen: bool,
    /// The leases the freeze ended (with `revoke_leases`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_ended: Option<Vec<EndedLease>>,
    /// `"scope": "global"`: the global entry that freezes (or unfreezes) the pool of this name
    /// in every region, this one included (through its follower, within milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<vault_core::global::Written>,
}

/// An emergency rotation started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotationStarted {
    pub pool: String,
    pub rotation_id: String,
    /// Tokens deprecated.
    pub tokens: u64,
    pub sunset_at: String,
}

/// An emergency rotation rolled back.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotationCancelled {
    pub pool: String,
    /// Deprecated tokens made current again.
    pub restored: u64,
}

/// A token's state after a transition.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenState {
    pub token_id: String,
    pub state: String,
    /// The leases a revoke ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_ended: Option<Vec<String>>,
}
