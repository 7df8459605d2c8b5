//! Tokens: what a deposit accepts, its sealed form, the metadata the API shows.

use super::*;

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

/// What a deposit did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Deposited {
    /// Every token's id, in the order given.
    pub ids: Vec<String>,
    /// Those already in the pool with the same secret, left as they were (a deposit tried
    /// again).
    pub unchanged: Vec<String>,
}

/// One token in a deposit request.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// The credential (a bearer token, JWT, session key, API key): 1-16384 bytes of printable
    /// ASCII, since it travels in an HTTP header. Sealed at rest; never answered except to the
    /// lease that holds it.
    #[cfg_attr(feature = "schema", schema(value_type = String, format = Password, min_length = 1, max_length = 16384, pattern = "^[ -~]+$"))]
    pub secret: Secret,
    /// The token's id in its pool: 1-128 characters of A-Z a-z 0-9 _ . -. Default: derived
    /// from the secret, so depositing the same secret again finds it.
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub id: Option<String>,
    /// When the credential expires: RFC 3339 or unix milliseconds; a JWT's `exp` when absent;
    /// never, for an opaque secret without one.
    pub expires_at: Option<TimeInput>,
    /// This token's own `default` quota limit, below or above the pool's. Default: the pool's.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 1_000_000_000_000_u64)
    )]
    pub quota_limit: Option<u64>,
    /// The proxy and browser fingerprint the token must be used with; handed to every lease.
    pub binding: Option<Binding>,
    #[cfg_attr(feature = "schema", schema(schema_with = labels_schema))]
    pub labels: Option<BTreeMap<String, String>>,
    /// How the token is refreshed; absent: as its pool says (or not at all).
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
                    .any(|(k, v)| k.is_empty() || k.chars().count() > 64 || v.chars().count() > 256)
            {
                return Err(invalid(
                    "labels: at most 32, keys 1-64 characters, values up to 256",
                ));
            }
        }
        Ok(())
    }
}

pub use vault_wire::Outcome;

/// A deposit's `labels`, as the API document states them (what `TokenInput::validate` checks).
#[cfg(feature = "schema")]
fn labels_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(serde_json::json!({
        "type": ["object", "null"],
        "description": "Free labels (an account name, a plan): at most 32, keys 1-64 characters, values up to 256.",
        "maxProperties": 32,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 256},
    }))
    .expect("a valid schema")
}

/// Token metadata as the API shows it (vaultctl reads it back). Never carries a secret, only
/// its fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokenMeta {
    /// The token's id, unique in its pool.
    pub id: String,
    /// Its state: `active`, `leased`, `cooling`, `refreshing`, `quarantined`, `deprecated`,
    /// `revoked` or `expired`.
    pub state: String,
    /// When the secret expires (RFC 3339); null = never.
    pub expires_at: Option<String>,
    /// The `default` quota (the pool's `quota_limit`, or the token's own).
    pub quota: QuotaView,
    /// The pool's other quotas (`quotas` of its config), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaView>,
    /// Leases live on it now.
    pub leases: u64,
    /// The proxy and fingerprint it must be used with (the proxy's credentials are never shown).
    pub binding: Binding,
    /// The labels it was deposited with.
    pub labels: BTreeMap<String, String>,
    /// `sha256:` and the first 12 hex digits of the secret's SHA-256: how logs, audit and
    /// global revocation name the credential.
    pub fingerprint: String,
    /// Strikes since it was last healthy (`suspect` outcomes, failed probes); at the pool's
    /// `quarantine_after_strikes` it is quarantined.
    pub strikes: u64,
    /// Why its last refresh or probe failed, if it did.
    pub last_error: Option<String>,
    /// When it was deposited (RFC 3339).
    pub created_at: Option<String>,
    /// When it was last leased (RFC 3339); null = never.
    pub last_leased_at: Option<String>,
    /// While `cooling` (after `rate_limited`): when it may be leased again (RFC 3339).
    pub cooling_until: Option<String>,
    /// While `deprecated` by a rotation: when it is revoked unless refreshed (RFC 3339).
    pub sunset_at: Option<String>,
    /// When it was revoked (RFC 3339); null unless `revoked`.
    pub revoked_at: Option<String>,
    /// How it is refreshed (`kind` `none` when it is not); secrets never shown.
    pub refresh: RefreshPublic,
    /// The id of the master key its secret is encrypted with at rest.
    pub key_id: String,
    /// Bumped by every successful refresh (1 = the deposited secret).
    pub generation: u64,
    /// When it was last refreshed (RFC 3339); null = never.
    pub refreshed_at: Option<String>,
    /// Failed refresh attempts since the last success (the next waits longer; past the
    /// limit it is quarantined).
    pub refresh_attempts: u64,
    /// Its age, seconds: since its last refresh, else its deposit (what a pool's scheduled
    /// `rotation` counts against `max_age_s`).
    pub age_s: u64,
}

/// A quota's use on one token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct QuotaView {
    /// The quota's name (absent for `default`, shown as `quota`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Units spent in the current window.
    pub used: u64,
    /// Units held by live leases (`units` of a lease, spent or given back at release).
    pub reserved: u64,
    /// Units allowed per window (the token's own limit, else the pool's); null = unlimited.
    pub limit: Option<u64>,
    /// When the current window ends and its units count again (RFC 3339); null = no window running.
    pub window_resets_at: Option<String>,
}

/// A token's quota as the quota rule reads it now (`quota_now` in lua/rules/quota.lua): a
/// window that is over already counts nothing used. Rust shows it, never recomputes it.
#[derive(Debug, Clone, Deserialize)]
pub struct QuotaNow {
    pub used: i64,
    pub reserved: i64,
    /// The token's own limit, else the pool's; None = unlimited.
    pub limit: Option<u64>,
    /// End of the live window, 0 = none (a sliding window: when its oldest counted use stops
    /// counting).
    pub win_end: i64,
    /// None for `default`.
    #[serde(default)]
    pub name: Option<String>,
}

impl From<QuotaNow> for QuotaView {
    fn from(q: QuotaNow) -> Self {
        QuotaView {
            name: q.name,
            used: q.used.max(0) as u64,
            reserved: q.reserved.max(0) as u64,
            limit: q.limit,
            window_resets_at: (q.win_end > 0).then(|| rfc3339(q.win_end)),
        }
    }
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

    /// Build from the values of [`TokenMeta::FIELDS`] (in that order) and the token's quota as
    /// `token_rows.lua` read them. None when the token does not exist.
    pub fn from_row(row: &[Option<String>], quotas: Vec<QuotaNow>, now_ms: i64) -> Option<Self> {
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
        let aged_from = match n("refreshed_at") {
            0 => n("created_at"),
            r => r,
        };
        Some(TokenMeta {
            age_s: (now_ms.saturating_sub(aged_from).max(0) / 1000) as u64,
            id: s("id"),
            state: s("view"),
            expires_at: rfc3339_opt(n("expires_at")),
            quota: quotas.first().cloned()?.into(),
            quotas: quotas.into_iter().skip(1).map(Into::into).collect(),
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
                    kind: RefreshKind::None,
                    ..Default::default()
                }),
            key_id: s("key_id"),
            generation: n("generation").max(1) as u64,
            refreshed_at: rfc3339_opt(n("refreshed_at")),
            refresh_attempts: n("refresh_attempts").max(0) as u64,
        })
    }
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
        let refresh_pub = if refresh.kind == RefreshKind::None {
            String::new()
        } else {
            serde_json::to_string(&refresh).expect("refresh settings serialize")
        };
        let refresh_kind = refresh.kind.as_str().to_string();
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
