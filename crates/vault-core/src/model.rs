//! Domain types: what the API accepts (with validation), what the store keeps, what it answers.
//! Request types use `deny_unknown_fields` so a typo is a 400, not a silently ignored field.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::crypto::{Cipher, Secret};
use crate::error::VaultError;
use crate::time::{rfc3339, rfc3339_opt, TimeInput};

const MAX_QUOTA: u64 = 1_000_000_000_000;
const MAX_WINDOW_S: u64 = 31 * 86_400;
const MAX_LEASE_TTL_S: u64 = 7 * 86_400;
/// Largest secret accepted (JWTs with many claims fit easily).
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Most tokens in one deposit request.
pub const MAX_DEPOSIT: usize = 1000;

fn invalid(msg: impl Into<String>) -> VaultError {
    VaultError::Invalid(msg.into())
}

/// `[A-Za-z0-9_.-]{1,max}`: pool names, token ids. Anything else could break key parsing or logs.
pub fn valid_name(s: &str, max: usize) -> bool {
    // `.` and `..` would be path segments, not names.
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

pub fn check_pool_name(name: &str) -> Result<(), VaultError> {
    if valid_name(name, 64) {
        Ok(())
    } else {
        Err(invalid(
            "pool names are 1-64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

pub fn check_token_id(id: &str) -> Result<(), VaultError> {
    if valid_name(id, 128) {
        Ok(())
    } else {
        Err(invalid(
            "token ids are 1-128 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// Free-form identifiers chosen by clients (worker names, sessions, idempotency keys):
/// printable ASCII without spaces, bounded.
pub fn check_label(what: &str, s: &str, max: usize) -> Result<(), VaultError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{what} must be 1-{max} printable ASCII characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Least recently leased first: spreads load over every token.
    #[default]
    Lru,
    /// Fill the oldest token to its concurrency limit before using the next.
    Pack,
}

/// `PUT /v1/pools/{pool}` body. Every field optional; absent means the default (PUT replaces).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfigInput {
    pub quota_limit: Option<u64>,
    pub quota_window_s: Option<u64>,
    pub quota_reserve: Option<u64>,
    pub max_leases_per_token: Option<u32>,
    pub lease_ttl_s: Option<u64>,
    pub max_lease_ttl_s: Option<u64>,
    pub min_token_ttl_s: Option<u64>,
    pub strategy: Option<Strategy>,
    pub quarantine_after_strikes: Option<u32>,
    pub session_ttl_s: Option<u64>,
    pub refresh: Option<serde_json::Value>,
    pub refresh_margin_s: Option<u64>,
    pub refresh_concurrency: Option<u32>,
    pub probe: Option<ProbeConfig>,
}

/// Optional health probe: the refresher calls `url` with an idle token (through its bound
/// proxy) every `interval_s`; an answer other than `expect_status` is a strike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub url: String,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default = "default_probe_interval")]
    pub interval_s: u64,
}

fn default_expect_status() -> u16 {
    200
}

fn default_probe_interval() -> u64 {
    60
}

/// A pool's effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PoolConfig {
    pub quota_limit: Option<u64>,
    pub quota_window_s: u64,
    pub quota_reserve: u64,
    pub max_leases_per_token: u32,
    pub lease_ttl_s: u64,
    pub max_lease_ttl_s: u64,
    /// Life a token must have left to be leased (default `lease_ttl_s + 30`).
    pub min_token_ttl_s: u64,
    pub strategy: Strategy,
    pub quarantine_after_strikes: u32,
    pub session_ttl_s: u64,
    /// Default refresh settings of the pool's tokens.
    pub refresh: Option<PoolRefresh>,
    /// Refresh this long before expiry (default `min_token_ttl_s + 30`).
    pub refresh_margin_s: u64,
    /// Refresh jobs of this pool in flight at once, across every refresher.
    pub refresh_concurrency: u32,
    pub probe: Option<ProbeConfig>,
}

fn in_range(name: &str, v: u64, lo: u64, hi: u64) -> Result<u64, VaultError> {
    if v < lo || v > hi {
        return Err(invalid(format!(
            "{name} must be between {lo} and {hi}, got {v}"
        )));
    }
    Ok(v)
}

impl PoolConfigInput {
    /// Check every field, apply every default, and seal the pool's refresh client secret (bound
    /// to `pool`): the complete config the functions read (they never invent a value).
    pub fn validate(mut self, cipher: &Cipher, pool: &str) -> Result<PoolConfig, VaultError> {
        let refresh = self
            .refresh
            .take()
            .map(|r| {
                // The same shape as a token's own refresh settings (never quoted back: it may
                // hold a client secret).
                let r = serde_json::from_value::<RefreshInput>(r).map_err(|_| {
                    invalid("refresh must be {\"kind\": \"oauth2_refresh_token\"|\"oauth2_client_credentials\"|\"external\"|\"none\", \"token_url\"?, \"client_id\"?, \"client_secret\"?, \"scope\"?, \"client_auth\"?}")
                })?;
                PoolRefresh::seal(r, cipher, pool)
            })
            .transpose()?;
        Ok(PoolConfig {
            refresh,
            ..self.settings()?
        })
    }

    /// Every setting but `refresh`, checked, with its default where absent.
    fn settings(self) -> Result<PoolConfig, VaultError> {
        let quota_limit = self
            .quota_limit
            .map(|l| in_range("quota_limit", l, 1, MAX_QUOTA))
            .transpose()?;
        let quota_reserve = self.quota_reserve.unwrap_or(0);
        if let Some(l) = quota_limit {
            if quota_reserve >= l {
                return Err(invalid(format!(
                    "quota_reserve ({quota_reserve}) must be below quota_limit ({l})"
                )));
            }
        }
        in_range("quota_reserve", quota_reserve, 0, MAX_QUOTA)?;
        let max_lease_ttl_s = in_range(
            "max_lease_ttl_s",
            self.max_lease_ttl_s.unwrap_or(3600),
            1,
            MAX_LEASE_TTL_S,
        )?;
        let lease_ttl_s = in_range(
            "lease_ttl_s",
            self.lease_ttl_s.unwrap_or(60),
            1,
            max_lease_ttl_s,
        )?;
        let min_token_ttl_s = match self.min_token_ttl_s {
            Some(v) => in_range("min_token_ttl_s", v, 0, MAX_WINDOW_S)?,
            None => default_min_token_ttl_s(lease_ttl_s),
        };
        let refresh_margin_s = match self.refresh_margin_s {
            Some(v) => in_range("refresh_margin_s", v, 0, MAX_WINDOW_S)?,
            None => default_refresh_margin_s(min_token_ttl_s),
        };
        if let Some(p) = &self.probe {
            if !(p.url.starts_with("http://") || p.url.starts_with("https://"))
                || p.url.len() > 2048
            {
                return Err(invalid("probe.url must be an http(s) URL"));
            }
            in_range("probe.expect_status", p.expect_status.into(), 100, 599)?;
            in_range("probe.interval_s", p.interval_s, 1, 86_400)?;
        }
        Ok(PoolConfig {
            quota_limit,
            quota_window_s: in_range(
                "quota_window_s",
                self.quota_window_s.unwrap_or(3600),
                1,
                MAX_WINDOW_S,
            )?,
            quota_reserve,
            max_leases_per_token: in_range(
                "max_leases_per_token",
                self.max_leases_per_token.unwrap_or(1).into(),
                1,
                10_000,
            )? as u32,
            lease_ttl_s,
            max_lease_ttl_s,
            min_token_ttl_s,
            strategy: self.strategy.unwrap_or_default(),
            quarantine_after_strikes: in_range(
                "quarantine_after_strikes",
                self.quarantine_after_strikes.unwrap_or(3).into(),
                1,
                1000,
            )? as u32,
            session_ttl_s: in_range(
                "session_ttl_s",
                self.session_ttl_s.unwrap_or(600),
                1,
                86_400,
            )?,
            refresh: None,
            refresh_margin_s,
            refresh_concurrency: in_range(
                "refresh_concurrency",
                self.refresh_concurrency.unwrap_or(4).into(),
                1,
                1000,
            )? as u32,
            probe: self.probe,
        })
        .and_then(|c| {
            if c.refresh_margin_s < c.min_token_ttl_s {
                return Err(invalid(format!(
                    "refresh_margin_s ({}) must be at least min_token_ttl_s ({}): tokens would leave rotation before their refresh is due",
                    c.refresh_margin_s,
                    c.min_token_ttl_s
                )));
            }
            Ok(c)
        })
    }
}

/// `min_token_ttl_s` when a pool does not set it: a lease of the default length fits, with
/// 30 s to spare.
pub const fn default_min_token_ttl_s(lease_ttl_s: u64) -> u64 {
    lease_ttl_s + 30
}

/// `refresh_margin_s` when a pool does not set it: the refresh is due 30 s before the token
/// would leave rotation.
pub const fn default_refresh_margin_s(min_token_ttl_s: u64) -> u64 {
    min_token_ttl_s + 30
}

impl PoolConfig {
    /// The config of a pool that sets nothing.
    pub fn defaults() -> PoolConfig {
        PoolConfigInput::default()
            .settings()
            .expect("the defaults are valid")
    }

    /// The margin rule against what the provider issues: a token leaves rotation with less than
    /// `min_token_ttl_s` left and is refreshed `refresh_margin_s` before it expires, so tokens
    /// issued for `issued_ttl_s` must outlive both. Each broken margin is one warning.
    pub fn margin_warnings(&self, issued_ttl_s: Option<u64>) -> Vec<String> {
        let Some(issued) = issued_ttl_s else {
            return vec![];
        };
        let (min, margin) = (self.min_token_ttl_s, self.refresh_margin_s);
        if issued < min {
            return vec![format!(
                "refreshed tokens live {issued} s but the pool needs {min} s left to lease one \
                 (min_token_ttl_s, default lease_ttl_s + 30): every refresh fails and tokens end \
                 quarantined; lower lease_ttl_s and min_token_ttl_s below {issued} s"
            )];
        }
        if issued <= margin {
            return vec![format!(
                "refreshed tokens live {issued} s, within refresh_margin_s ({margin} s): each is \
                 refreshed again halfway through its usable life, every {} s; lower \
                 refresh_margin_s below {issued} s",
                ((issued - min) / 2).max(1)
            )];
        }
        vec![]
    }

    /// The hash fields stored in `tv:{pool}:cfg` (read by the scripts).
    pub fn to_fields(&self) -> BTreeMap<&'static str, String> {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let secret = self.refresh.as_ref().and_then(|r| r.client_secret.as_ref());
        let sealed = |f: fn(&crate::crypto::Sealed) -> &String| {
            secret.map(|s| f(s).clone()).unwrap_or_default()
        };
        BTreeMap::from([
            ("quota_limit", opt(self.quota_limit)),
            ("quota_window_s", self.quota_window_s.to_string()),
            ("quota_reserve", self.quota_reserve.to_string()),
            (
                "max_leases_per_token",
                self.max_leases_per_token.to_string(),
            ),
            ("lease_ttl_s", self.lease_ttl_s.to_string()),
            ("max_lease_ttl_s", self.max_lease_ttl_s.to_string()),
            ("min_token_ttl_s", self.min_token_ttl_s.to_string()),
            (
                "strategy",
                match self.strategy {
                    Strategy::Lru => "lru".into(),
                    Strategy::Pack => "pack".into(),
                },
            ),
            (
                "quarantine_after_strikes",
                self.quarantine_after_strikes.to_string(),
            ),
            ("session_ttl_s", self.session_ttl_s.to_string()),
            (
                "refresh",
                self.refresh
                    .as_ref()
                    .map(|r| serde_json::to_string(r).expect("refresh settings serialize"))
                    .unwrap_or_default(),
            ),
            ("refresh_ct", sealed(|s| &s.data)),
            ("refresh_key_id", sealed(|s| &s.key_id)),
            ("refresh_margin_s", self.refresh_margin_s.to_string()),
            ("refresh_concurrency", self.refresh_concurrency.to_string()),
            (
                "probe",
                self.probe
                    .as_ref()
                    .map(|p| serde_json::to_string(p).expect("probe serializes"))
                    .unwrap_or_default(),
            ),
        ])
    }

    /// Read a stored config back. Missing fields take the defaults; a pool written before every
    /// default was stored (`min_token_ttl_s` or `refresh_margin_s` empty) gets its derived values
    /// ([`Store::complete_pool_configs`](crate::Store::complete_pool_configs) writes them).
    pub fn from_fields(f: &HashMap<String, String>) -> Self {
        let d = PoolConfig::defaults();
        let num = |k: &str, d: u64| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let opt = |k: &str| f.get(k).and_then(|v| v.parse().ok());
        let lease_ttl_s = num("lease_ttl_s", d.lease_ttl_s);
        let min_token_ttl_s = num("min_token_ttl_s", default_min_token_ttl_s(lease_ttl_s));
        PoolConfig {
            quota_limit: opt("quota_limit"),
            quota_window_s: num("quota_window_s", d.quota_window_s),
            quota_reserve: num("quota_reserve", d.quota_reserve),
            max_leases_per_token: num("max_leases_per_token", d.max_leases_per_token.into()) as u32,
            lease_ttl_s,
            max_lease_ttl_s: num("max_lease_ttl_s", d.max_lease_ttl_s),
            min_token_ttl_s,
            strategy: if f.get("strategy").map(String::as_str) == Some("pack") {
                Strategy::Pack
            } else {
                Strategy::Lru
            },
            quarantine_after_strikes: num(
                "quarantine_after_strikes",
                d.quarantine_after_strikes.into(),
            ) as u32,
            session_ttl_s: num("session_ttl_s", d.session_ttl_s),
            refresh: f
                .get("refresh")
                .and_then(|r| serde_json::from_str::<PoolRefresh>(r).ok())
                .map(|r| PoolRefresh {
                    client_secret: f.get("refresh_ct").filter(|ct| !ct.is_empty()).map(|ct| {
                        crate::crypto::Sealed {
                            data: ct.clone(),
                            key_id: f.get("refresh_key_id").cloned().unwrap_or_default(),
                        }
                    }),
                    ..r
                }),
            refresh_margin_s: num(
                "refresh_margin_s",
                default_refresh_margin_s(min_token_ttl_s),
            ),
            refresh_concurrency: num("refresh_concurrency", d.refresh_concurrency.into()) as u32,
            probe: f.get("probe").and_then(|p| serde_json::from_str(p).ok()),
        }
    }
}

/// A pool as `GET /v1/pools/{pool}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub name: String,
    #[serde(flatten)]
    pub config: PoolConfig,
    pub frozen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<BTreeMap<String, u64>>,
    /// Lifetime of the last credential a refresh stored, in seconds (what the provider issues).
    pub issued_ttl_s: Option<u64>,
    /// Margins that what the provider issues cannot meet ([`PoolConfig::margin_warnings`]).
    pub warnings: Vec<String>,
}

pub use vault_wire::Binding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshKind {
    Oauth2RefreshToken,
    Oauth2ClientCredentials,
    External,
    #[default]
    None,
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oauth2RefreshToken => "oauth2_refresh_token",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
            Self::External => "external",
            Self::None => "none",
        }
    }
}

/// The secret half of a refresh method, as sealed at rest.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RefreshSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for RefreshSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshSecrets([redacted])")
    }
}

/// How a token is refreshed. `refresh_token` and `client_secret` are secrets: sealed at rest,
/// never answered.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshInput {
    /// The grant; a token may leave it out to use its pool's (see [`PoolRefresh`]).
    pub kind: Option<RefreshKind>,
    pub token_url: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub refresh_token: Option<Secret>,
    pub client_id: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<Secret>,
    pub scope: Option<String>,
    /// How the client authenticates at the token endpoint: `basic` (default) or `body`.
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client_id:client_secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// client_id and client_secret in the form body.
    Body,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// The public part of a refresh method (what metadata shows).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RefreshPublic {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// The token takes what it does not set itself from its pool's `refresh`, read at each
    /// refresh (so a new pool client secret applies to every token at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherits_pool: bool,
}

impl RefreshPublic {
    /// These settings, with what they leave out taken from `pool`.
    pub fn over(mut self, pool: &RefreshPublic) -> RefreshPublic {
        self.token_url = self.token_url.or_else(|| pool.token_url.clone());
        self.client_id = self.client_id.or_else(|| pool.client_id.clone());
        self.scope = self.scope.or_else(|| pool.scope.clone());
        self.client_auth = self.client_auth.or(pool.client_auth);
        self
    }

    /// The refresh rule: what each grant needs, on the settings a token is refreshed with.
    fn check(&self, client_secret: bool, refresh_token: bool) -> Result<(), VaultError> {
        let url_ok = self.token_url.as_deref().is_some_and(|u| {
            (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048
        });
        match self.kind.as_str() {
            "oauth2_refresh_token" if !url_ok || !refresh_token => Err(invalid(
                "refresh kind oauth2_refresh_token needs token_url (http/https) and refresh_token",
            )),
            "oauth2_client_credentials"
                if !url_ok || self.client_id.is_none() || !client_secret =>
            {
                Err(invalid("refresh kind oauth2_client_credentials needs token_url (http/https), client_id and client_secret"))
            }
            _ => Ok(()),
        }
    }
}

/// A pool's default refresh settings, as stored and shown: the public part, and the client
/// secret's fingerprint. The secret itself is sealed in the pool's config record and never
/// answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PoolRefresh {
    #[serde(flatten)]
    pub settings: RefreshPublic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_fingerprint: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub client_secret: Option<crate::crypto::Sealed>,
}

impl PoolRefresh {
    /// Validate a pool's `refresh` and seal its client secret.
    pub fn seal(input: RefreshInput, cipher: &Cipher, pool: &str) -> Result<Self, VaultError> {
        let Some(kind) = input.kind else {
            return Err(invalid("a pool's refresh needs its kind"));
        };
        if input.refresh_token.is_some() {
            return Err(invalid(
                "a pool's refresh cannot hold a refresh_token: each token brings its own",
            ));
        }
        let settings = input.public(kind);
        // Tokens bring their refresh tokens: only what the pool must supply is checked here.
        settings.check(input.client_secret.is_some(), true)?;
        Ok(PoolRefresh {
            settings,
            client_secret_fingerprint: input.client_secret.as_ref().map(Secret::fingerprint),
            client_secret: input
                .client_secret
                .as_ref()
                .map(|s| cipher.seal_secret(pool, crate::crypto::POOL_REFRESH_AAD_ID, s)),
        })
    }

    /// What a stored record (`json`, `sealed`) becomes under the current master key: `None`
    /// when it is current. A record from before pool secrets were sealed (the client secret in
    /// the JSON) is sealed now.
    pub fn resealed(
        json: &str,
        sealed: &crate::crypto::Sealed,
        cipher: &Cipher,
        pool: &str,
    ) -> Result<Option<PoolRefresh>, VaultError> {
        let legacy = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .filter(|v| v.get("client_secret").is_some());
        if let Some(v) = legacy {
            let input = serde_json::from_value::<RefreshInput>(v).map_err(|_| {
                VaultError::Crypto(format!("pool {pool}: its refresh settings do not decode"))
            })?;
            return PoolRefresh::seal(input, cipher, pool).map(Some);
        }
        if sealed.data.is_empty() || sealed.key_id == cipher.current_key_id() {
            return Ok(None);
        }
        let settings: PoolRefresh = serde_json::from_str(json).map_err(|_| {
            VaultError::Crypto(format!("pool {pool}: its refresh settings do not decode"))
        })?;
        let plain = cipher.open(pool, crate::crypto::POOL_REFRESH_AAD_ID, sealed)?;
        Ok(Some(PoolRefresh {
            client_secret: Some(cipher.seal(pool, crate::crypto::POOL_REFRESH_AAD_ID, &plain)),
            ..settings
        }))
    }

    /// The pool's client secret, unsealed for a refresh.
    pub fn open_client_secret(
        &self,
        cipher: &Cipher,
        pool: &str,
    ) -> Result<Option<Secret>, VaultError> {
        self.client_secret
            .as_ref()
            .map(|s| cipher.open_secret(pool, crate::crypto::POOL_REFRESH_AAD_ID, s))
            .transpose()
    }
}

impl RefreshInput {
    pub fn public(&self, kind: RefreshKind) -> RefreshPublic {
        RefreshPublic {
            kind: kind.as_str().into(),
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            client_auth: self.client_auth,
            inherits_pool: false,
        }
    }

    /// What a token is refreshed with: its own settings, and what it leaves out from its pool's
    /// when it uses the same grant (or names none). Checked as a whole; returns the kind and
    /// the token's own public settings, marked when they inherit.
    pub fn for_token(
        own: Option<&RefreshInput>,
        pool: Option<&PoolRefresh>,
    ) -> Result<RefreshPublic, VaultError> {
        let pool_kind = pool.map(|p| p.settings.kind.as_str());
        let kind = match (own.and_then(|r| r.kind), pool_kind) {
            (Some(k), _) => k.as_str(),
            (None, Some(k)) => k,
            (None, None) if own.is_some() => {
                return Err(invalid(
                    "refresh.kind is required: the pool has no refresh settings to inherit",
                ))
            }
            (None, None) => "none",
        };
        let mut public = match own {
            Some(r) => RefreshPublic {
                kind: kind.into(),
                ..r.public(RefreshKind::None)
            },
            None => RefreshPublic {
                kind: kind.into(),
                ..Default::default()
            },
        };
        let (mut client_secret, refresh_token) = (
            own.is_some_and(|r| r.client_secret.is_some()),
            own.is_some_and(|r| r.refresh_token.is_some()),
        );
        let effective = match pool {
            Some(p) if p.settings.kind == kind && kind != "none" => {
                public.inherits_pool = true;
                client_secret |= p.client_secret.is_some();
                public.clone().over(&p.settings)
            }
            _ => public.clone(),
        };
        effective.check(client_secret, refresh_token)?;
        Ok(public)
    }

    /// The secret part, as JSON to seal (None when there is nothing secret).
    pub fn secret_json(&self) -> Option<Secret> {
        if self.refresh_token.is_none() && self.client_secret.is_none() {
            return None;
        }
        let s = RefreshSecrets {
            refresh_token: self.refresh_token.as_ref().map(|s| s.expose().to_string()),
            client_secret: self.client_secret.as_ref().map(|s| s.expose().to_string()),
        };
        Some(Secret::new(
            serde_json::to_string(&s).expect("refresh secrets serialize"),
        ))
    }
}

/// A token ready for the deposit script: secret and refresh credentials already sealed.
#[derive(Debug, Clone, Serialize)]
pub struct SealedToken {
    pub id: String,
    pub secret_ct: String,
    pub key_id: String,
    pub fingerprint: String,
    /// Unix ms, 0 = never expires.
    pub expires_at: i64,
    /// Empty = the pool's limit.
    pub quota_limit: String,
    #[serde(flatten)]
    pub proxy: crate::crypto::SealedProxy,
    pub binding_fp: String,
    /// JSON text.
    pub labels: String,
    pub refresh_kind: String,
    pub refresh_ct: String,
    /// JSON text of the public refresh settings.
    pub refresh_pub: String,
}

/// One token in a deposit request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    #[schema(value_type = String, format = Password)]
    pub secret: Secret,
    pub id: Option<String>,
    /// RFC 3339 or unix milliseconds; a JWT's `exp` when absent.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<TimeInput>,
    pub quota_limit: Option<u64>,
    pub binding: Option<Binding>,
    pub labels: Option<BTreeMap<String, String>>,
    pub refresh: Option<RefreshInput>,
}

/// The rule for every credential that enters the vault (deposit, refresh): 1 to
/// `MAX_SECRET_BYTES` of printable ASCII, because it travels in an HTTP header (the lease's
/// ready-made `Authorization`). The error says what is wrong, never what the secret is.
pub fn check_secret(s: &str) -> Result<(), VaultError> {
    if s.is_empty() || s.len() > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "secret must be 1-{MAX_SECRET_BYTES} bytes"
        )));
    }
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid(
            "secret must be printable ASCII (it travels in an HTTP header): no control characters, line breaks or non-ASCII",
        ));
    }
    Ok(())
}

/// Proxy URL schemes a binding may name.
pub const PROXY_SCHEMES: [&str; 4] = ["http", "https", "socks5", "socks5h"];

/// The proxy rule: an `http`, `https`, `socks5` or `socks5h` URL with a host, at most 1,024
/// bytes of printable ASCII (no line breaks to smuggle into a header). Errors never quote it:
/// it may hold credentials.
pub fn check_proxy(p: &str) -> Result<(), VaultError> {
    if p.is_empty() || p.len() > 1024 || !p.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "binding.proxy must be 1-1024 printable ASCII characters without spaces",
        ));
    }
    let u = url::Url::parse(p).map_err(|_| invalid("binding.proxy is not a URL"))?;
    if !PROXY_SCHEMES.contains(&u.scheme()) || u.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "binding.proxy must be an http, https, socks5 or socks5h URL with a host",
        ));
    }
    Ok(())
}

impl TokenInput {
    pub fn validate(&self) -> Result<(), VaultError> {
        check_secret(self.secret.expose())?;
        if let Some(id) = &self.id {
            check_token_id(id)?;
        }
        if let Some(l) = self.quota_limit {
            in_range("quota_limit", l, 1, MAX_QUOTA)?;
        }
        if let Some(b) = &self.binding {
            if let Some(p) = &b.proxy {
                check_proxy(p)?;
            }
            if b.fingerprint.as_ref().is_some_and(|v| v.len() > 1024) {
                return Err(invalid("binding.fingerprint is longer than 1024 bytes"));
            }
        }
        if let Some(labels) = &self.labels {
            if labels.len() > 32
                || labels
                    .iter()
                    .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
            {
                return Err(invalid(
                    "labels: at most 32, keys 1-64 bytes, values up to 256 bytes",
                ));
            }
        }
        Ok(())
    }
}

pub use vault_wire::Outcome;

/// Release / rotate body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub used: Option<u64>,
    #[serde(default)]
    pub outcome: Outcome,
    pub retry_after_s: Option<f64>,
    pub remaining: Option<u64>,
    /// RFC 3339 or unix milliseconds.
    #[schema(value_type = Option<String>)]
    pub reset_at: Option<TimeInput>,
    pub detail: Option<String>,
}

impl Report {
    pub fn validate(&self) -> Result<(), VaultError> {
        if let Some(r) = self.retry_after_s {
            if !(0.0..=MAX_WINDOW_S as f64).contains(&r) {
                return Err(invalid("retry_after_s must be between 0 and 2678400"));
            }
        }
        // A cooldown is bounded like `retry_after_s`. (The local clock is good enough for a
        // 31-day sanity bound; the rules themselves compare against Redis time.)
        if let Some(r) = self.reset_at {
            if r.0 > crate::time::now_ms() + (MAX_WINDOW_S * 1000) as i64 {
                return Err(invalid("reset_at must lie within 31 days from now"));
            }
        }
        if self.detail.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err(invalid("detail is longer than 1024 bytes"));
        }
        Ok(())
    }
}

/// Acquire body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireInput {
    pub worker: Option<String>,
    pub units: Option<u64>,
    pub ttl_s: Option<u64>,
    pub min_token_ttl_s: Option<u64>,
    pub session: Option<String>,
    pub wait_ms: Option<u64>,
}

impl AcquireInput {
    /// What the request asks for (all but how long it may wait), hashed: a retry with the same
    /// Idempotency-Key must ask for the same thing.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let what = serde_json::json!([
            self.worker,
            self.units,
            self.ttl_s,
            self.min_token_ttl_s,
            self.session
        ]);
        hex::encode(&sha2::Sha256::digest(what.to_string().as_bytes())[..8])
    }
}

/// Longest a lease request may wait for a token.
pub const MAX_WAIT_MS: u64 = 30_000;

impl AcquireInput {
    pub fn validate(&self) -> Result<(), VaultError> {
        if let Some(w) = &self.worker {
            check_label("worker", w, 128)?;
        }
        if let Some(s) = &self.session {
            check_label("session", s, 128)?;
        }
        if let Some(u) = self.units {
            in_range("units", u, 1, 1_000_000)?;
        }
        if let Some(t) = self.ttl_s {
            in_range("ttl_s", t, 1, MAX_LEASE_TTL_S)?;
        }
        if let Some(t) = self.min_token_ttl_s {
            in_range("min_token_ttl_s", t, 0, MAX_WINDOW_S)?;
        }
        if let Some(w) = self.wait_ms {
            in_range("wait_ms", w, 0, MAX_WAIT_MS)?;
        }
        Ok(())
    }
}

/// Renew body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewInput {
    pub ttl_s: Option<u64>,
    pub units: Option<u64>,
}

impl RenewInput {
    pub fn validate(&self) -> Result<(), VaultError> {
        if let Some(t) = self.ttl_s {
            in_range("ttl_s", t, 1, MAX_LEASE_TTL_S)?;
        }
        if let Some(u) = self.units {
            in_range("units", u, 1, 1_000_000)?;
        }
        Ok(())
    }
}

/// A lease as a script answers it (secret still sealed).
#[derive(Debug, Clone, Deserialize)]
pub struct LeaseGrant {
    pub lease_id: String,
    pub token_id: String,
    pub worker: String,
    pub units: u64,
    pub granted_at: i64,
    pub deadline: i64,
    pub ttl_ms: i64,
    pub secret_ct: String,
    pub key_id: String,
    pub expires_at: i64,
    #[serde(flatten)]
    pub proxy: crate::crypto::SealedProxy,
    pub binding_fp: String,
    #[serde(default)]
    pub replayed: bool,
}

impl LeaseGrant {
    /// The binding as the lease holder needs it: the proxy with its credentials.
    pub fn binding(
        &self,
        cipher: &crate::crypto::Cipher,
        pool: &str,
    ) -> Result<Binding, VaultError> {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Ok(Binding {
            proxy: opt(self.proxy.open(cipher, pool, &self.token_id)?),
            fingerprint: opt(self.binding_fp.clone()),
        })
    }
}

/// Token metadata as the API shows it. Never carries a secret, only its fingerprint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenMeta {
    pub id: String,
    pub state: String,
    pub expires_at: Option<String>,
    pub quota: QuotaView,
    pub leases: u64,
    pub binding: Binding,
    pub labels: BTreeMap<String, String>,
    pub fingerprint: String,
    pub strikes: u64,
    pub last_error: Option<String>,
    pub created_at: Option<String>,
    pub last_leased_at: Option<String>,
    pub cooling_until: Option<String>,
    pub sunset_at: Option<String>,
    pub revoked_at: Option<String>,
    pub refresh: RefreshPublic,
    pub key_id: String,
    /// Bumped by every successful refresh (1 = the deposited secret).
    pub generation: u64,
    pub refreshed_at: Option<String>,
    pub refresh_attempts: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub used: u64,
    pub reserved: u64,
    pub limit: Option<u64>,
    pub window_resets_at: Option<String>,
}

impl TokenMeta {
    /// The token-hash fields metadata is made of: what `HMGET` reads, in this order. Reading
    /// only these (not the sealed secret and refresh credentials) keeps listings cheap.
    pub const FIELDS: [&'static str; 24] = [
        "id",
        "view",
        "expires_at",
        "cool_until",
        "win_end",
        "used",
        "reserved",
        "quota_limit",
        "leases",
        "proxy",
        "binding_fp",
        "labels",
        "fingerprint",
        "strikes",
        "last_error",
        "created_at",
        "last_leased_at",
        "sunset_at",
        "revoked_at",
        "refresh_pub",
        "key_id",
        "generation",
        "refreshed_at",
        "refresh_attempts",
    ];

    /// Build from an `HMGET` of [`TokenMeta::FIELDS`] and the pool config (for the effective
    /// quota limit). None when the token does not exist.
    pub fn from_row(row: &[Option<String>], cfg: &PoolConfig, now_ms: i64) -> Option<Self> {
        let get = |k: &str| {
            Self::FIELDS
                .iter()
                .position(|f| *f == k)
                .and_then(|i| row.get(i))
                .and_then(|v| v.as_deref())
        };
        get("id")?;
        let s = |k: &str| get(k).unwrap_or_default().to_string();
        let n = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as i64;
        let opt_s = |k: &str| get(k).filter(|v| !v.is_empty()).map(String::from);
        let cool = n("cool_until");
        let win_end = n("win_end");
        let window_live = win_end > now_ms;
        Some(TokenMeta {
            id: s("id"),
            state: s("view"),
            expires_at: rfc3339_opt(n("expires_at")),
            quota: QuotaView {
                used: if window_live || win_end == 0 {
                    n("used").max(0) as u64
                } else {
                    0
                },
                reserved: n("reserved").max(0) as u64,
                limit: get("quota_limit")
                    .and_then(|v| v.parse().ok())
                    .or(cfg.quota_limit),
                window_resets_at: window_live.then(|| rfc3339(win_end)),
            },
            leases: n("leases").max(0) as u64,
            binding: Binding {
                proxy: opt_s("proxy"),
                fingerprint: opt_s("binding_fp"),
            },
            labels: get("labels")
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default(),
            fingerprint: s("fingerprint"),
            strikes: n("strikes").max(0) as u64,
            last_error: opt_s("last_error"),
            created_at: rfc3339_opt(n("created_at")),
            last_leased_at: rfc3339_opt(n("last_leased_at")),
            cooling_until: (cool > now_ms).then(|| rfc3339(cool)),
            sunset_at: rfc3339_opt(n("sunset_at")),
            revoked_at: rfc3339_opt(n("revoked_at")),
            refresh: get("refresh_pub")
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_else(|| RefreshPublic {
                    kind: "none".into(),
                    ..Default::default()
                }),
            key_id: s("key_id"),
            generation: n("generation").max(1) as u64,
            refreshed_at: rfc3339_opt(n("refreshed_at")),
            refresh_attempts: n("refresh_attempts").max(0) as u64,
        })
    }
}

/// One audit event. Never carries a secret: tokens appear by id and `sha256:` fingerprint.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Stream id (`<ms>-<seq>`): the cursor for the next page.
    pub id: String,
    pub at: String,
    /// The client token's `sub` (or `refresher`, `janitor`). Any admin can choose a `sub`
    /// when minting, so `actor_jti` is what identifies the token that acted.
    pub actor: String,
    /// The `jti` of the client token that acted (absent for the vault's own processes).
    pub actor_jti: Option<String>,
    pub action: String,
    pub pool: Option<String>,
    pub token_id: Option<String>,
    pub lease_id: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// An event pushed to workers (`GET /v1/events`).
pub use vault_wire::Event as VaultEvent;

/// Every view state a token can be in, as counted by status.
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    pub pool: String,
    pub tokens: BTreeMap<String, u64>,
    pub leases_active: u64,
    pub avg_ttl_remaining_s: Option<f64>,
    pub utilization: f64,
    pub refresh_success_rate: Option<f64>,
    pub quota_used_ratio: Option<f64>,
    pub frozen: bool,
    /// Failed refresh attempts so far, and how many of them stored a credential too
    /// short-lived for the pool's margin.
    pub refresh_failures: u64,
    pub refresh_short_lived: u64,
    /// The pool's margin warnings (as `GET /v1/pools/{pool}` has them).
    pub warnings: Vec<String>,
    /// The emergency rotation running (or last run), if any.
    pub rotation: Option<RotationStatus>,
    /// When a janitor last finished a sweep; null when none has been seen for a while.
    pub janitor: Option<JanitorStatus>,
    /// A whole-pool operation still running (config change, rotation, cancel), if any.
    pub operation: Option<OperationStatus>,
}

/// A whole-pool operation in progress: it runs in batches of a few milliseconds each.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationStatus {
    /// `reconfigure`, `rotate` or `cancel`.
    pub kind: String,
    pub started_at: String,
    /// Tokens changed so far.
    pub tokens_done: u64,
}

/// The janitors' heartbeat as status shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JanitorStatus {
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RotationStatus {
    pub id: String,
    pub started_at: String,
    pub sunset_at: String,
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

impl TokenInput {
    /// Validate and seal for the deposit script: secret and refresh credentials encrypted with
    /// the pool and token id as associated data; a JWT without `expires_at` takes its `exp`.
    pub fn seal(
        &self,
        cipher: &crate::crypto::Cipher,
        pool: &str,
        pool_refresh: Option<&PoolRefresh>,
    ) -> Result<SealedToken, VaultError> {
        self.validate()?;
        let refresh = RefreshInput::for_token(self.refresh.as_ref(), pool_refresh)?;
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let expires_at = crate::time::expiry_ms(match self.expires_at {
            Some(t) => t.0,
            None => crate::crypto::jwt_exp_ms(&self.secret)
                .map_err(|e| {
                    invalid(format!(
                        "token {id}: {e}; pass expires_at explicitly or fix the secret"
                    ))
                })?
                .unwrap_or(0),
        });
        let sealed = cipher.seal_secret(pool, &id, &self.secret);
        let binding = self.binding.clone().unwrap_or_default();
        // A proxy with credentials is stored redacted, its full URL sealed like a secret.
        let proxy = match &binding.proxy {
            Some(p) => match crate::crypto::redacted_url(p) {
                Some(shown) => {
                    let sealed = cipher.seal(pool, &crate::crypto::proxy_aad_id(&id), p.as_bytes());
                    crate::crypto::SealedProxy {
                        shown,
                        ct: sealed.data,
                        key_id: sealed.key_id,
                    }
                }
                None => crate::crypto::SealedProxy {
                    shown: p.clone(),
                    ..Default::default()
                },
            },
            None => Default::default(),
        };
        let refresh_ct = self
            .refresh
            .as_ref()
            .and_then(RefreshInput::secret_json)
            .map(|s| {
                cipher
                    .seal_secret(pool, &crate::crypto::refresh_aad_id(&id), &s)
                    .data
            })
            .unwrap_or_default();
        let refresh_pub = if refresh.kind == "none" {
            String::new()
        } else {
            serde_json::to_string(&refresh).expect("refresh settings serialize")
        };
        let refresh_kind = refresh.kind;
        Ok(SealedToken {
            fingerprint: self.secret.fingerprint(),
            secret_ct: sealed.data,
            key_id: sealed.key_id,
            expires_at,
            quota_limit: self.quota_limit.map(|l| l.to_string()).unwrap_or_default(),
            proxy,
            binding_fp: binding.fingerprint.unwrap_or_default(),
            labels: serde_json::to_string(&self.labels.clone().unwrap_or_default())
                .expect("labels serialize"),
            refresh_kind,
            refresh_ct,
            refresh_pub,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&crate::crypto::MasterKey::generate())
    }

    #[test]
    fn pool_config_defaults_and_bounds() {
        let k = cipher();
        let c = PoolConfigInput::default().validate(&k, "p").unwrap();
        assert_eq!(
            (c.lease_ttl_s, c.min_token_ttl_s, c.max_leases_per_token),
            (60, 90, 1)
        );
        let bad = |j: &str| {
            serde_json::from_str::<PoolConfigInput>(j)
                .map_err(|e| e.to_string())
                .and_then(|i| i.validate(&k, "p").map_err(|e| e.to_string()))
        };
        assert!(bad(r#"{"quota_limit":10,"quota_reserve":10}"#).is_err());
        assert!(bad(r#"{"lease_ttl_s":100,"max_lease_ttl_s":50}"#).is_err());
        assert!(bad(r#"{"max_leases_per_token":0}"#).is_err());
        assert!(bad(r#"{"quota_limit":-1}"#).is_err());
        assert!(bad(r#"{"quota_limt":5}"#).is_err(), "typo must be refused");
        assert!(bad(r#"{"strategy":"random"}"#).is_err());
        assert!(
            bad(r#"{"refresh_margin_s":60}"#).is_err(),
            "margin below the default min TTL (90)"
        );
        assert!(bad(r#"{"refresh_margin_s":60,"min_token_ttl_s":60}"#).is_ok());
        let c2 = PoolConfig::from_fields(
            &c.to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(c, c2);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_pool_name("scrape.prod-1_a").is_ok());
        for bad in ["", "a b", "x}y", "{p}", "a:b", &"x".repeat(65), "ü"] {
            assert!(check_pool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refresh_needs_its_fields() {
        let r: RefreshInput = serde_json::from_str(
            r#"{"kind":"oauth2_refresh_token","token_url":"https://idp/token"}"#,
        )
        .unwrap();
        assert!(RefreshInput::for_token(Some(&r), None).is_err());
        let r: RefreshInput = serde_json::from_str(r#"{"kind":"oauth2_refresh_token","token_url":"https://idp/token","refresh_token":"rt"}"#).unwrap();
        assert!(RefreshInput::for_token(Some(&r), None).is_ok());
        assert!(!format!("{r:?}").contains("\"rt\""));
    }

    /// A token takes what it leaves out from its pool's settings of the same grant; the pool's
    /// client secret is sealed and only its fingerprint is shown or stored in clear.
    #[test]
    fn tokens_inherit_their_pool_refresh_settings() {
        let k = cipher();
        let pool: PoolConfigInput = serde_json::from_str(
            r#"{"refresh":{"kind":"oauth2_client_credentials","token_url":"https://idp/token","client_id":"c","client_secret":"pool-secret-1"}}"#,
        )
        .unwrap();
        let cfg = pool.validate(&k, "p").unwrap();
        let fields = format!("{:?}", cfg.to_fields());
        assert!(!fields.contains("pool-secret-1"), "{fields}");
        let back = PoolConfig::from_fields(
            &cfg.to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(back, cfg);
        let pr = back.refresh.as_ref().unwrap();
        assert_eq!(
            pr.open_client_secret(&k, "p").unwrap().unwrap().expose(),
            "pool-secret-1"
        );
        assert!(
            pr.open_client_secret(&k, "other").is_err(),
            "bound to its pool"
        );
        let shown = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            shown["refresh"]["client_secret_fingerprint"],
            Secret::new("pool-secret-1").fingerprint()
        );
        assert!(!shown.to_string().contains("pool-secret-1"));

        // No refresh of its own: the pool's, whole.
        let t = RefreshInput::for_token(None, Some(pr)).unwrap();
        assert_eq!(
            (t.kind.as_str(), t.inherits_pool, t.token_url),
            ("oauth2_client_credentials", true, None)
        );
        // A refresh_token grant in the pool: each token must bring its refresh token.
        let rt_pool: PoolConfigInput = serde_json::from_str(
            r#"{"refresh":{"kind":"oauth2_refresh_token","token_url":"https://idp/token"}}"#,
        )
        .unwrap();
        let rt_cfg = rt_pool.validate(&k, "p").unwrap();
        let rt = rt_cfg.refresh.as_ref();
        assert!(RefreshInput::for_token(None, rt).is_err());
        let own: RefreshInput = serde_json::from_str(r#"{"refresh_token":"r1"}"#).unwrap();
        let t = RefreshInput::for_token(Some(&own), rt).unwrap();
        assert_eq!(
            (t.kind.as_str(), t.inherits_pool),
            ("oauth2_refresh_token", true)
        );
        // Another grant of its own: nothing inherited.
        let ext: RefreshInput = serde_json::from_str(r#"{"kind":"external"}"#).unwrap();
        assert!(
            !RefreshInput::for_token(Some(&ext), rt)
                .unwrap()
                .inherits_pool
        );
        // Without a pool to inherit from, the kind is required.
        assert!(RefreshInput::for_token(Some(&own), None).is_err());

        let bad = |j: &str| {
            serde_json::from_str::<PoolConfigInput>(j)
                .unwrap()
                .validate(&k, "p")
                .is_err()
        };
        assert!(
            bad(r#"{"refresh":{"token_url":"https://idp/token"}}"#),
            "kind needed"
        );
        assert!(bad(
            r#"{"refresh":{"kind":"oauth2_refresh_token","token_url":"https://i/t","refresh_token":"x"}}"#
        ));
        assert!(bad(
            r#"{"refresh":{"kind":"oauth2_client_credentials","token_url":"https://i/t","client_id":"c"}}"#
        ));
    }
}
