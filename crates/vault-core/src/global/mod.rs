//! The global control plane: what must be the same in every region (credentials revoked
//! everywhere, revoked client tokens, global pool kill switches), held in a small global Redis
//! — a primary in one region, a plain `replicaof` replica in every region — and applied in each
//! region by one follower, through the same operations a local call uses.
//!
//! # Layout (global Redis, under the deployment prefix)
//! - `<p>:global:log` — the stream of global actions, in order; an entry is one field `e`, the
//!   JSON of a [`GlobalEntry`]. Its id (the primary's clock) is the global time of the action.
//!   Capped (`TV_GLOBAL_LOG_MAX_ENTRIES`); a region that fell behind the cap resyncs from:
//! - `<p>:global:credentials` (hash fingerprint → entry id), `<p>:global:clients` (zset jti →
//!   unix s it may be forgotten), `<p>:global:frozen` (hash pool → entry id): the state the log
//!   built, written with each entry in the same script.
//! - `<p>:global:beat` — the primary's clock (ms), written every second by every janitor that
//!   reaches the primary: a region's replica holding beat `B` holds every entry made before `B`.
//!
//! # Layout (each region's Redis)
//! - `<p>:global:applied` — the id of the last entry applied here (the resume point).
//! - `<p>:global:fresh` — `"<beat ms> <applied id>"`: this region has applied everything the
//!   primary had at global time `<beat ms>`. Its age is the region's lag.
//! - `<p>:global:follower` — the lock that makes one janitor of the region the follower.
//! - `<p>:global:frozen_here` — the pools this region froze for a global freeze.
//!
//! # Modules
//! - `client`: [`Global`], the global Redis as a vault uses it: appending actions (with
//!   `WAIT`), reading the state, the log and the beat.
//! - `follow`: the region's follower ([`follow`]), applying entries through the operations,
//!   and the resync from the state.
//! - `watch`: [`GlobalWatch`], a replica's view of its region's freshness (the staleness rule).

mod client;
mod follow;
mod watch;

pub use client::Global;
pub use follow::{follow, Freshness};
pub use watch::{GlobalReport, GlobalWatch};

use serde::{Deserialize, Serialize};

/// What the vault does when its region's copy of the global state is older than
/// `TV_GLOBAL_STALE_AFTER_S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WhenStale {
    /// Keep leasing with what the region has (availability first).
    #[default]
    Serve,
    /// Refuse new leases with 503 `global_state_stale` (revocation first).
    Refuse,
}

/// The global plane's settings. Without `TV_GLOBAL_REDIS_URL` the vault runs in one region,
/// exactly as without them. `Debug` shows the URLs without credentials.
#[derive(Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct GlobalArgs {
    /// The global Redis primary, where global actions are written (redis://host:port).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-redis-url",
            env = "TV_GLOBAL_REDIS_URL",
            hide_env_values = true
        )
    )]
    pub url: Option<String>,
    /// This region's replica of the global Redis, which every check and the follower read
    /// (default: the primary itself, for the primary's own region).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-redis-read-url",
            env = "TV_GLOBAL_REDIS_READ_URL",
            hide_env_values = true
        )
    )]
    pub read_url: Option<String>,
    /// This region's name, in audit entries and status.
    #[cfg_attr(
        feature = "cli",
        arg(long = "region", env = "TV_REGION", default_value = "default")
    )]
    pub region: String,
    /// Region replicas of the global Redis that must have a global action before it is
    /// answered (`WAIT`); 0 = answered once the global primary has it.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-wait-regions",
            env = "TV_GLOBAL_WAIT_REGIONS",
            default_value_t = 0
        )
    )]
    pub wait_regions: u32,
    /// How long a global action waits for them; past it the answer is 503 `not_replicated`
    /// (the action is made and will be applied everywhere; repeating it is harmless).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-wait-timeout-ms",
            env = "TV_GLOBAL_WAIT_TIMEOUT_MS",
            default_value_t = 2000
        )
    )]
    pub wait_timeout_ms: u64,
    /// Past this age of the region's copy of the global state, it is stale (status, metric,
    /// alert; and with `--global-when-stale refuse`, new leases are refused).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-stale-after-s",
            env = "TV_GLOBAL_STALE_AFTER_S",
            default_value_t = 30
        )
    )]
    pub stale_after_s: u64,
    /// What leasing does while the global state is stale.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-when-stale",
            env = "TV_GLOBAL_WHEN_STALE",
            value_enum,
            default_value = "serve"
        )
    )]
    pub when_stale: WhenStale,
    /// Global actions kept in the log (approximately); a region further behind resyncs from
    /// the global state instead.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "global-log-max-entries",
            env = "TV_GLOBAL_LOG_MAX_ENTRIES",
            default_value_t = 100_000
        )
    )]
    pub log_max_entries: u64,
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |u: &Option<String>| u.as_deref().map(redacted);
        f.debug_struct("GlobalArgs")
            .field("url", &redact(&self.url))
            .field("read_url", &redact(&self.read_url))
            .field("region", &self.region)
            .field("wait_regions", &self.wait_regions)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("stale_after_s", &self.stale_after_s)
            .field("when_stale", &self.when_stale)
            .field("log_max_entries", &self.log_max_entries)
            .finish()
    }
}

fn redacted(url: &str) -> String {
    crate::crypto::redacted_url(url).unwrap_or_else(|| "(unparsable URL)".into())
}

/// A global action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum GlobalAction {
    /// Revoke the credential of this secret fingerprint in every pool of every region.
    #[serde(rename = "credential.revoke")]
    CredentialRevoke { fingerprint: String },
    /// Refuse this client token everywhere until `until_s` (unix s).
    #[serde(rename = "client.revoke")]
    ClientRevoke { jti: String, until_s: i64 },
    /// Freeze the pool of this name in every region.
    #[serde(rename = "pool.freeze")]
    PoolFreeze { pool: String, revoke_leases: bool },
    /// Lift a global freeze in every region.
    #[serde(rename = "pool.unfreeze")]
    PoolUnfreeze { pool: String },
}

impl GlobalAction {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CredentialRevoke { .. } => "credential.revoke",
            Self::ClientRevoke { .. } => "client.revoke",
            Self::PoolFreeze { .. } => "pool.freeze",
            Self::PoolUnfreeze { .. } => "pool.unfreeze",
        }
    }

    /// The key of the global state it sets and its field ("" = none).
    fn state(&self, k: &GlobalKeys) -> (String, String, String) {
        match self {
            Self::CredentialRevoke { fingerprint } => {
                (k.credentials(), fingerprint.clone(), String::new())
            }
            Self::ClientRevoke { jti, until_s } => (k.clients(), jti.clone(), until_s.to_string()),
            Self::PoolFreeze { pool, .. } | Self::PoolUnfreeze { pool } => {
                (k.frozen(), pool.clone(), String::new())
            }
        }
    }
}

/// One entry of the global log: the action, who made it, where, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalEntry {
    #[serde(flatten)]
    pub action: GlobalAction,
    pub reason: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_jti: Option<String>,
    /// The region it was made in.
    pub region: String,
}

/// A global action as written: its entry id (`<global ms>-<seq>`) and the region replicas that
/// had it when it was answered (when `TV_GLOBAL_WAIT_REGIONS` asks to wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Written {
    /// The global log's entry id (`<global ms>-<seq>`): entries apply in this order.
    pub entry_id: String,
    /// When the global primary wrote it, unix ms (its clock).
    pub at: i64,
    /// Region replicas that had it when answered (only with `TV_GLOBAL_WAIT_REGIONS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions_acked: Option<i64>,
}

/// The global plane's key names.
#[derive(Debug, Clone)]
pub struct GlobalKeys {
    prefix: String,
}

impl GlobalKeys {
    fn k(&self, s: &str) -> String {
        format!("{}:global:{s}", self.prefix)
    }
    pub fn log(&self) -> String {
        self.k("log")
    }
    pub fn credentials(&self) -> String {
        self.k("credentials")
    }
    pub fn clients(&self) -> String {
        self.k("clients")
    }
    pub fn frozen(&self) -> String {
        self.k("frozen")
    }
    pub fn beat(&self) -> String {
        self.k("beat")
    }
    /// Every region's client-token verification keys: kid → raw public key (base64url).
    pub fn verification_keys(&self) -> String {
        self.k("keys")
    }
    /// Region keys.
    pub fn applied(&self) -> String {
        self.k("applied")
    }
    pub fn fresh(&self) -> String {
        self.k("fresh")
    }
    pub fn follower(&self) -> String {
        self.k("follower")
    }
    /// Pools this region froze because of a global freeze (a set): what a resync unfreezes
    /// when the global state no longer has them frozen, the unfreeze itself trimmed away.
    pub fn frozen_here(&self) -> String {
        self.k("frozen_here")
    }
}

/// An entry id (`<ms>-<seq>`) as numbers, in the order Redis gives them.
fn entry_id(id: &str) -> (u64, u64) {
    let (m, q) = id.split_once('-').unwrap_or((id, "0"));
    (m.parse().unwrap_or(0), q.parse().unwrap_or(0))
}

/// The global time (ms) in an entry id.
pub fn entry_ms(id: &str) -> i64 {
    entry_id(id).0 as i64
}

/// Whether entry id `a` comes after `b`.
fn after(a: &str, b: &str) -> bool {
    entry_id(a) > entry_id(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let e = GlobalEntry {
            action: GlobalAction::CredentialRevoke {
                fingerprint: "sha256:0123456789ab".into(),
            },
            reason: "leaked".into(),
            actor: "ops".into(),
            actor_jti: Some("j1".into()),
            region: "eu".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""kind":"credential.revoke""#), "{text}");
        assert_eq!(serde_json::from_str::<GlobalEntry>(&text).unwrap(), e);
    }

    #[test]
    fn entry_ids_order_by_time_then_sequence() {
        assert!(after("1700000000001-0", "1700000000000-5"));
        assert!(after("1700000000000-10", "1700000000000-9"));
        assert!(!after("0-0", "0-0"));
        assert_eq!(entry_ms("1700000000001-3"), 1_700_000_000_001);
    }

    #[test]
    fn debug_hides_credentials() {
        let a = GlobalArgs {
            url: Some("redis://:hunter2@g:6379".into()),
            ..Default::default()
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
