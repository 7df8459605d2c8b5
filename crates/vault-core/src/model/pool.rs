//! Pools: the config a pool is given, the config it has (every default applied), and how it is shown.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Least recently leased first: spreads load over every token.
    #[default]
    Lru,
    /// Fill the oldest token to its concurrency limit before using the next.
    Pack,
}

/// `PUT /v1/pools/{pool}` body. Every field optional; absent means the default (PUT replaces).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolConfigInput {
    /// Units each token may use per quota window (the `default` quota). Absent: no such quota.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 1_000_000_000_000_u64)
    )]
    pub quota_limit: Option<u64>,
    /// The `default` quota's window, seconds. Default 3600.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_678_400))]
    pub quota_window_s: Option<u64>,
    /// Units of the `default` quota kept back: a token leaves rotation at `quota_limit −
    /// quota_reserve`. Default 0; below `quota_limit`.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub quota_reserve: Option<u64>,
    /// Leases one token may hold at once (its concurrency limit). Default 1.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 10_000))]
    pub max_leases_per_token: Option<u32>,
    /// A lease's life when the lease does not ask for one, seconds. Default 60; at most
    /// `max_lease_ttl_s`.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub lease_ttl_s: Option<u64>,
    /// The longest lease (asked for or renewed to; a longer one is cut to it), seconds.
    /// Default 3600.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub max_lease_ttl_s: Option<u64>,
    /// Life a token must have left to be leased, seconds (the TTL margin). Default
    /// `lease_ttl_s + 30`.
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 2_678_400))]
    pub min_token_ttl_s: Option<u64>,
    /// Which eligible token a lease gets: `lru` (least recently leased; default) or `pack`.
    pub strategy: Option<Strategy>,
    /// Strikes (`suspect` outcomes, failed probes) after which a token is quarantined.
    /// Default 3.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1000))]
    pub quarantine_after_strikes: Option<u32>,
    /// How long a sticky session keeps its token after its last lease, seconds. Default 600.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 86_400))]
    pub session_ttl_s: Option<u64>,
    /// Default refresh settings of the pool's tokens: `{"kind", "token_url"?, "client_id"?,
    /// "client_secret"?, "scope"?, "client_auth"?}` as a token's own `refresh`. The client
    /// secret is sealed and never answered (only its fingerprint).
    #[cfg_attr(feature = "schema", schema(value_type = Option<PoolRefreshInput>))]
    pub refresh: Option<serde_json::Value>,
    /// Refresh a token this long before it expires, seconds: at least `min_token_ttl_s`.
    /// Default `min_token_ttl_s + 30`.
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 2_678_400))]
    pub refresh_margin_s: Option<u64>,
    /// Refresh jobs of this pool in flight at once, across every refresher. Default 4.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1000))]
    pub refresh_concurrency: Option<u32>,
    /// A health probe the refresher runs with idle tokens. Absent: none.
    pub probe: Option<ProbeConfig>,
    /// Quotas besides the shorthand's (`quota_limit`, named `default`): each its own limit,
    /// window and cost dimension. A token is leased only when every quota has room. At most
    /// 8, names unique.
    #[cfg_attr(feature = "schema", schema(max_items = 8))]
    pub quotas: Option<Vec<QuotaInput>>,
    #[cfg_attr(feature = "schema", schema(schema_with = super::quota::cost_estimates_schema))]
    pub cost_estimates: Option<BTreeMap<String, u64>>,
    /// Scheduled rotation: each token is rotated in stages when its age reaches `max_age_s`.
    /// Absent: tokens are rotated only when they expire, fail or an operator rotates the pool.
    pub rotation: Option<RotationSchedule>,
}

/// Optional health probe: the refresher calls `url` with an idle token (through its bound
/// proxy) every `interval_s`; an answer other than `expect_status` is a strike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// The URL called (GET, with the token as a bearer credential, through its bound proxy);
    /// http or https, at most 2048 bytes.
    #[cfg_attr(feature = "schema", schema(max_length = 2048, pattern = "^https?://"))]
    pub url: String,
    /// The status a healthy token gets. Default 200.
    #[serde(default = "default_expect_status")]
    #[cfg_attr(feature = "schema", schema(minimum = 100, maximum = 599))]
    pub expect_status: u16,
    /// Seconds between probes of the pool. Default 60.
    #[serde(default = "default_probe_interval")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 86_400))]
    pub interval_s: u64,
}

fn default_expect_status() -> u16 {
    200
}

fn default_probe_interval() -> u64 {
    60
}

/// A pool's effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolConfig {
    /// Units each token may use per window of the `default` quota; null: no such quota.
    pub quota_limit: Option<u64>,
    /// The `default` quota's window, seconds.
    pub quota_window_s: u64,
    /// Units of the `default` quota kept back (a token leaves rotation at limit − reserve).
    pub quota_reserve: u64,
    /// Leases one token may hold at once.
    pub max_leases_per_token: u32,
    /// A lease's life when it does not ask for one, seconds.
    pub lease_ttl_s: u64,
    /// The longest lease, seconds.
    pub max_lease_ttl_s: u64,
    /// Life a token must have left to be leased (default `lease_ttl_s + 30`).
    pub min_token_ttl_s: u64,
    /// Which eligible token a lease gets (`lru` or `pack`).
    pub strategy: Strategy,
    /// Strikes after which a token is quarantined.
    pub quarantine_after_strikes: u32,
    /// How long a sticky session keeps its token after its last lease, seconds.
    pub session_ttl_s: u64,
    /// Default refresh settings of the pool's tokens.
    pub refresh: Option<PoolRefresh>,
    /// Refresh this long before expiry (default `min_token_ttl_s + 30`).
    pub refresh_margin_s: u64,
    /// Refresh jobs of this pool in flight at once, across every refresher.
    pub refresh_concurrency: u32,
    /// The health probe the refresher runs; null: none.
    pub probe: Option<ProbeConfig>,
    /// Quotas besides `default` (the shorthand's).
    pub quotas: Vec<Quota>,
    /// What a lease is expected to cost by cost dimension, when it does not say.
    pub cost_estimates: BTreeMap<String, u64>,
    /// Scheduled rotation; null: none.
    pub rotation: Option<RotationSchedule>,
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
        let (quotas, cost_estimates) = validate_quotas(
            self.quotas.unwrap_or_default(),
            self.cost_estimates.unwrap_or_default(),
        )?;
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
            if !is_http_url(&p.url) {
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
            quotas,
            cost_estimates,
            rotation: self.rotation.map(RotationSchedule::validate).transpose()?,
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
    /// The config of a pool that sets nothing (validated once: stored configs are read back
    /// on hot paths, every janitor sweep among them).
    pub fn defaults() -> &'static PoolConfig {
        static DEFAULTS: std::sync::LazyLock<PoolConfig> = std::sync::LazyLock::new(|| {
            PoolConfigInput::default()
                .settings()
                .expect("the defaults are valid")
        });
        &DEFAULTS
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
        let (quotas, cost_estimates) = quota_fields(&self.quotas, &self.cost_estimates);
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
            ("quotas", quotas),
            ("cost_estimates", cost_estimates),
        ])
        .into_iter()
        .chain(RotationSchedule::fields(self.rotation.as_ref()))
        .collect()
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
            quotas: quotas_from_field(f.get("quotas")),
            rotation: RotationSchedule::from_fields(f),
            cost_estimates: f
                .get("cost_estimates")
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default(),
        }
    }
}

/// A pool as `GET /v1/pools/{pool}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolView {
    /// The pool's name.
    pub name: String,
    #[serde(flatten)]
    pub config: PoolConfig,
    /// Whether the kill switch is on: new leases answer 423 `pool_frozen`.
    pub frozen: bool,
    /// Why it was frozen, as the freeze said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_reason: Option<String>,
    /// In a pool list: its tokens by view state (absent from `GET /v1/pools/{pool}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<BTreeMap<String, u64>>,
    /// Lifetime of the last credential a refresh stored, in seconds (what the provider issues).
    pub issued_ttl_s: Option<u64>,
    /// Margins that what the provider issues cannot meet ([`PoolConfig::margin_warnings`]).
    pub warnings: Vec<String>,
}

pub use vault_wire::Binding;

#[cfg(all(test, feature = "schema"))]
mod tests {
    use super::*;

    /// The bounds the document states are literals (the schema attributes take nothing else):
    /// held equal here to the constants `validate` checks against; every setting described.
    #[test]
    fn the_documented_bounds_are_the_checked_ones() {
        let schema = super::super::documented_schema::<PoolConfigInput>();
        let max = |field: &str| schema["properties"][field]["maximum"].as_u64();
        for (field, bound) in [
            ("quota_limit", super::super::MAX_QUOTA),
            ("quota_reserve", super::super::MAX_QUOTA),
            ("quota_window_s", super::super::MAX_WINDOW_S),
            ("min_token_ttl_s", super::super::MAX_WINDOW_S),
            ("refresh_margin_s", super::super::MAX_WINDOW_S),
            ("lease_ttl_s", super::super::MAX_LEASE_TTL_S),
            ("max_lease_ttl_s", super::super::MAX_LEASE_TTL_S),
        ] {
            assert_eq!(max(field), Some(bound), "{field}");
        }
    }
}
