//! The bodies of the vault's answers that are not a model type of their own: one struct per
//! answer. The server writes them and clients (vaultctl) read them back as the same types, so
//! the two cannot drift apart; the OpenAPI document describes each from here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Binding, PoolView, TokenMeta};
use crate::global::{GlobalReport, Written};

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` (the process is up) or `ready` (it can serve leases).
    pub status: String,
    /// With the global plane (`/readyz` only): this region's lag behind the global
    /// revocations, and whether it is stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalReport>,
}

/// A client token just minted (shown once; the vault keeps only its `jti`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MintedToken {
    /// The client token (a JWT): send it as `Authorization: Bearer`. Shown only now.
    pub token: String,
    /// Its id: what revocation names.
    pub jti: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// A client token revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ClientRevoked {
    /// The revoked token's id.
    pub jti: String,
    /// Always true: the token is refused from now on (revoking twice is no error).
    pub revoked: bool,
    /// With the global plane: the global entry that revokes it in every region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Written>,
}

/// `POST /v1/credentials/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CredentialRevoked {
    /// The secret's fingerprint: the credential, wherever it is deposited.
    pub fingerprint: String,
    /// `global` (written to the global plane, applied by every region's follower, this one
    /// included) or `region` (no global plane: revoked in this region's pools now).
    pub scope: ActionScope,
    /// With `scope: global`: the entry, its global time, and the region replicas that had it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Written>,
    /// With `scope: region`: the tokens revoked, by pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<RevokedToken>>,
}

/// A token a credential revocation revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RevokedToken {
    /// The pool the token is in.
    pub pool: String,
    /// The token's id.
    pub token_id: String,
    /// Leases the revocation ended.
    pub leases_ended: usize,
}

/// Token introspection (RFC 7662): `active` false, or the token's claims.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Introspection {
    /// Whether the token is valid now: signed by this vault, not expired, not revoked.
    pub active: bool,
    /// Who it was minted for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Its scopes, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When it expires, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// When it was minted, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Its issuer (`TV_JWT_ISSUER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Its audience (`TV_JWT_AUDIENCE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The pools the token may use; absent = every pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
    /// `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

/// A refresh job claimed by an external login worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ClaimedJob {
    /// The job's id: complete or fail it by this id.
    pub job_id: String,
    /// The token to log in again.
    pub token_id: String,
    /// The token's binding in full (the proxy with its credentials): the login goes through it.
    pub binding: Binding,
    /// The token's labels (an account name, say: what the login needs).
    pub labels: BTreeMap<String, String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Hidden from other workers until then.
    pub visible_until: String,
}

/// What a completed or failed refresh job did to its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// The job's id.
    pub job_id: String,
    /// The token it refreshed.
    pub token_id: String,
    /// The token's generation when a new secret was stored.
    pub generation: Option<u64>,
    /// The token's state now (`active` when back in rotation).
    pub state: String,
    /// Why the token is not back in rotation; null when it is.
    pub error: Option<String>,
}

/// A lease released.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Released {
    /// The lease's id.
    pub lease_id: String,
    /// The token it held.
    pub token_id: String,
    /// The token's state after the report.
    pub token_state: String,
    /// Always true: the lease is over.
    pub released: bool,
}

/// A lease ended by a transition (freeze, revoke).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EndedLease {
    /// The lease's id.
    pub lease_id: String,
    /// The token it held.
    pub token_id: String,
}

/// A pool frozen or unfrozen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Frozen {
    /// The pool's name.
    pub pool: String,
    /// Whether it is frozen now.
    pub frozen: bool,
    /// The leases the freeze ended (with `revoke_leases`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_ended: Option<Vec<EndedLease>>,
    /// `"scope": "global"`: the global entry that freezes (or unfreezes) the pool of this name
    /// in every region, this one included (through its follower, within milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Written>,
}

/// An emergency rotation started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RotationStarted {
    /// The pool's name.
    pub pool: String,
    /// The rotation's id (in the audit trail and pool status).
    pub rotation_id: String,
    /// Tokens deprecated.
    pub tokens: u64,
    /// When tokens still deprecated are revoked (RFC 3339).
    pub sunset_at: String,
}

/// An emergency rotation rolled back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RotationCancelled {
    /// The pool's name.
    pub pool: String,
    /// Deprecated tokens made current again.
    pub restored: u64,
}

/// A token's state after a transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokenState {
    /// The token's id.
    pub token_id: String,
    /// Its state now.
    pub state: String,
    /// The leases a revoke ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_ended: Option<Vec<String>>,
}

/// Where an action applies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ActionScope {
    /// This region's pools, now.
    #[default]
    Region,
    /// Every region, through the global log (needs the global plane).
    Global,
}

/// One page of pools.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolPage {
    /// The pools, each with its token counts by state.
    pub pools: Vec<PoolView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// One page of token metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokenPage {
    /// The tokens' metadata.
    pub tokens: Vec<TokenMeta>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// An answer that is one page of a listing: its items and the cursor to the next page.
pub trait Paged: serde::de::DeserializeOwned {
    /// What the page lists.
    type Item;
    /// The page's items and the next page's cursor (None at the end).
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Paged for PoolPage {
    type Item = PoolView;
    fn into_parts(self) -> (Vec<PoolView>, Option<String>) {
        (self.pools, self.next_cursor)
    }
}

impl Paged for TokenPage {
    type Item = TokenMeta;
    fn into_parts(self) -> (Vec<TokenMeta>, Option<String>) {
        (self.tokens, self.next_cursor)
    }
}
