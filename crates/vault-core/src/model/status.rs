//! What operators read: audit entries, pool status, rotation and janitor progress.

use super::*;

/// A page of the audit trail, oldest first (`GET /v1/audit`; vaultctl reads it back).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// The entries, oldest first.
    pub events: Vec<AuditEntry>,
    /// Pass as `after` for the next page; null when this page was the last.
    pub next: Option<String>,
}

/// One audit event. Never carries a secret: tokens appear by id and `sha256:` fingerprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Stream id (`<ms>-<seq>`): the cursor for the next page.
    pub id: String,
    /// When it happened (RFC 3339, milliseconds).
    pub at: String,
    /// The client token's `sub` (or `refresher`, `janitor`). Any admin can choose a `sub`
    /// when minting, so `actor_jti` is what identifies the token that acted.
    pub actor: String,
    /// The `jti` of the client token that acted (absent for the vault's own processes).
    pub actor_jti: Option<String>,
    /// What was done: `token.deposit`, `token.revoke`, `lease.outcome`, `pool.freeze`,
    /// `client.mint`, ...
    pub action: String,
    /// The pool it was done to, if any.
    pub pool: Option<String>,
    /// The token it was done to, if any (never its secret).
    pub token_id: Option<String>,
    /// The lease it concerns, if any.
    pub lease_id: Option<String>,
    /// How it went, where that varies (a release's outcome, a refresh's result, ...).
    pub outcome: Option<String>,
    /// More: a reason given, a fingerprint, counts (never a secret).
    pub detail: Option<String>,
    /// The W3C trace id (32 hex digits) of the request or job that did it: its `traceparent`'s,
    /// or the one the vault started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// An event pushed to workers (`GET /v1/events`).
pub use vault_wire::Event as VaultEvent;

/// The states a token is leased from (Lua's `in_rotation`, lua/rules/placement.lua; held
/// equal by a test).
pub const ROTATION_STATES: [&str; 2] = ["active", "deprecated"];

/// The view states that refine `active`: an active token leased, or cooling down.
pub const ACTIVE_REFINEMENTS: [&str; 2] = ["leased", "cooling"];

/// The view states of tokens in rotation: [`ROTATION_STATES`] and the refinements of `active`.
pub fn in_rotation_views() -> impl Iterator<Item = &'static str> {
    ROTATION_STATES.into_iter().chain(ACTIVE_REFINEMENTS)
}

/// Every view state a token can be in, as counted by status (Lua's `VIEW_STATES`,
/// lua/rules/placement.lua; held equal by a test).
pub const VIEW_STATES: [&str; 8] = [
    "active",
    "leased",
    "cooling",
    "refreshing",
    "quarantined",
    "deprecated",
    "revoked",
    "expired",
];

/// `GET /v1/pools/{pool}/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolStatus {
    /// The pool's name.
    pub pool: String,
    /// Tokens by view state (`active`, `leased`, `cooling`, `refreshing`, `quarantined`,
    /// `deprecated`, `revoked`, `expired`); `active` counts the idle ones.
    pub tokens: BTreeMap<String, u64>,
    /// Leases live now.
    pub leases_active: u64,
    /// Average life left of the tokens that expire, seconds; null when none does.
    pub avg_ttl_remaining_s: Option<f64>,
    /// Live leases over what the tokens in rotation may hold at once (0 to 1).
    pub utilization: f64,
    /// Share of refresh attempts that stored a new credential (0 to 1); null before the first.
    pub refresh_success_rate: Option<f64>,
    /// The highest `used_ratio` of the pool's quotas (the one closest to spent).
    pub quota_used_ratio: Option<f64>,
    /// Every quota of the pool (`default` when the pool or a token sets `quota_limit`).
    pub quotas: Vec<QuotaStatus>,
    /// The quota that kept tokens from leases most often; null until one has.
    pub binding_quota: Option<String>,
    /// The kill switch is on: no lease is granted until the pool is unfrozen.
    pub frozen: bool,
    /// Failed refresh attempts so far, and how many of them stored a credential too
    /// short-lived for the pool's margin.
    pub refresh_failures: u64,
    /// Refreshes whose new credential was too short-lived for the pool's margin.
    pub refresh_short_lived: u64,
    /// The pool's margin warnings (as `GET /v1/pools/{pool}` has them).
    pub warnings: Vec<String>,
    /// The emergency rotation running (or last run), if any.
    pub rotation: Option<RotationStatus>,
    /// When a janitor last finished a sweep; null when none has been seen for a while.
    pub janitor: Option<JanitorStatus>,
    /// A whole-pool operation still running (config change, rotation, cancel), if any.
    pub operation: Option<OperationStatus>,
    /// The observed lease rate and the tokens it needs.
    pub sizing: PoolSizing,
    /// How unevenly the last full minute's leases fell on the tokens; null when none was
    /// leased in it.
    pub lease_skew: Option<LeaseSkew>,
    /// With a scheduled `rotation`: tokens being rotated, past their age, and due in each of
    /// the next 7 days (`GET /v1/pools/{pool}/rotations` shows more days); null without.
    pub rotation_schedule: Option<RotationCalendar>,
    /// The pool's pipelines: their phase, size and deadline (counts by state, leases and
    /// projections are in `GET /v1/pools/{pool}/pipelines`).
    pub pipelines: Vec<super::PipelineStatus>,
    /// With the global plane: this region's lag behind the global revocations, and whether it
    /// is stale (what the replica answering saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<crate::global::GlobalReport>,
}

/// How unevenly one minute's leases fell on a pool's tokens (counted by every replica, flushed
/// every few seconds): one token leased far more than the median one may be used by something
/// that should not have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LeaseSkew {
    /// The start of the minute counted (the last full one), RFC 3339.
    pub minute_at: String,
    /// Tokens leased at least once in it.
    pub tokens_leased: u64,
    /// The token leased most.
    pub busiest_token: String,
    /// Its leases in the minute.
    pub busiest_leases: u64,
    /// Leases of the median token among those leased in the minute.
    pub median_leases: u64,
}

/// One quota of a pool, as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct QuotaStatus {
    /// The quota's name (`default` for the shorthand's).
    pub name: String,
    /// The cost dimension it counts.
    pub cost: String,
    /// Used and reserved share of the limit over limited tokens in rotation: exact up to 1,000
    /// tokens, a random sample of 1,000 above that.
    pub used_ratio: Option<f64>,
    /// How often it kept a token from a lease: a lease refused for it, or a token it sent
    /// cooling until its window allows.
    pub binds: u64,
}

/// How many tokens the pool's observed demand needs (`N = rate × window / quota per token`, and
/// enough for the leases held at once), against how many it has.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolSizing {
    /// Leases granted per second by every replica over the last minutes (`observed_s`).
    pub lease_rate_per_s: f64,
    /// Quota units those leases reserved per second.
    pub units_rate_per_s: f64,
    /// How long the rates were observed, seconds (up to the last few minutes).
    pub observed_s: f64,
    /// The tokens that demand needs, for its quota and its concurrency.
    #[serde(flatten)]
    pub needed: TokensNeeded,
    /// The quota `tokens_for_quota` comes from (the one that needs the most tokens).
    pub sized_by_quota: Option<String>,
    /// Tokens that serve leases over a window: active, leased, cooling and deprecated.
    pub tokens_in_rotation: u64,
    /// `tokens_in_rotation − tokens_needed`: negative when the pool is too small for its demand.
    pub headroom_tokens: i64,
}

/// A whole-pool operation in progress: it runs in batches of a few milliseconds each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct OperationStatus {
    /// `reconfigure`, `rotate` or `cancel`.
    pub kind: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Tokens changed so far.
    pub tokens_done: u64,
}

/// The janitors' heartbeat as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct JanitorStatus {
    /// When a janitor last finished a sweep, RFC 3339.
    pub last_sweep_at: String,
    /// The last sweep is recent (within three sweep intervals, plus 2 s of slack). Leases of
    /// dead workers are also reclaimed by the next acquire without a janitor; cooled tokens,
    /// expiries, sunsets and due refreshes wait for one.
    pub healthy: bool,
}

/// One janitor heartbeat: when the last sweep ended and the sweep interval then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorBeat {
    pub last_sweep_ms: i64,
    pub interval_ms: u64,
}

impl JanitorBeat {
    pub fn status(&self, now_ms: i64) -> JanitorStatus {
        JanitorStatus {
            last_sweep_at: rfc3339(self.last_sweep_ms),
            healthy: now_ms - self.last_sweep_ms <= 3 * self.interval_ms as i64 + 2000,
        }
    }
}

/// Progress of an emergency rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RotationStatus {
    /// The rotation's id.
    pub id: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// When the tokens it deprecated and nobody refreshed are revoked, RFC 3339.
    pub sunset_at: String,
    /// Why, as its author gave it.
    pub reason: String,
    /// Tokens it deprecated.
    pub tokens: u64,
    /// Of those, refreshed since (current again).
    pub refreshed: u64,
    /// Tokens still deprecated in the pool (waiting for a refresh or the sunset).
    pub deprecated_remaining: u64,
    /// The sunset has passed: whatever was not refreshed has been (or is being) revoked.
    pub done: bool,
}
