//! Quotas beyond the one-quota shorthand: several windows and cost dimensions per pool.
//! The rule itself is `lua/rules/quota.lua`; this is what a pool config says of it.

use super::*;

/// Most quotas a pool lists in `quotas` (each is read on every lease).
pub const MAX_QUOTAS: usize = 8;
/// Sub-buckets of a sliding window when a quota does not say.
pub const DEFAULT_BUCKETS: u32 = 12;
/// Bounds of a sliding window's sub-buckets: its memory per token and its accuracy.
pub const MAX_BUCKETS: u32 = 60;
/// The cost dimension every lease asks of: its `units`.
pub const REQUESTS: &str = "requests";
/// The shorthand's quota (`quota_limit`, `quota_window_s`, `quota_reserve`).
pub const DEFAULT_QUOTA: &str = "default";

/// How a quota's window moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The window starts at the first lease after the last window ended (the shorthand's).
    #[default]
    FromFirstUse,
    /// Windows start at `anchor` + k × `window_s`: with anchor 0, a daily window resets at UTC
    /// midnight, an hourly one on the hour.
    ClockAligned,
    /// The last `window_s`, counted in `buckets` sub-buckets. Never counts less than the
    /// target's rolling window; holds a use back at most one bucket (`window_s / buckets`) longer.
    Sliding,
}

/// One quota as a pool config gives it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    /// 1-32 characters of a-z 0-9 _ -, unique in the pool; `default` is the shorthand's.
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")
    )]
    pub name: String,
    /// Units of `cost` one token may use per window.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 1_000_000_000_000_u64)
    )]
    pub limit: u64,
    /// The window's length, seconds.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_678_400))]
    pub window_s: u64,
    /// How windows are placed in time. Default `from_first_use`.
    pub kind: Option<WindowKind>,
    /// `clock_aligned` only: when a window starts (RFC 3339 or unix ms; default 0, the epoch).
    pub anchor: Option<TimeInput>,
    /// Units kept back: the token leaves rotation at `limit - reserve` (below `limit`;
    /// default 0).
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub reserve: Option<u64>,
    /// The dimension it counts: `requests` (a lease's units, the default) or a named cost such
    /// as `llm_tokens` (1-32 characters of a-z 0-9 _ -).
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")
    )]
    pub cost: Option<String>,
    /// `sliding` only: sub-buckets (2-60, default 12).
    #[cfg_attr(feature = "schema", schema(minimum = 2, maximum = 60))]
    pub buckets: Option<u32>,
    /// The target's rate-limit header family that counts this quota (`requests`, `tokens`,
    /// `x-ratelimit`, `ratelimit`, `ratelimit:<policy>`; see the API reference): what the SDKs
    /// read from the target's answers raises the vault's count to the target's. 1-64
    /// characters of a-z 0-9 _ - . :
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_.:-]+$")
    )]
    pub sync: Option<String>,
}

/// One quota of a pool, checked and complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Quota {
    /// Its name, unique in the pool (`default` for the `quota_limit` shorthand).
    pub name: String,
    /// Units of `cost` one token may use per window.
    pub limit: u64,
    /// The window's length, seconds.
    pub window_s: u64,
    /// How windows are placed in time.
    pub kind: WindowKind,
    /// `clock_aligned`: when windows start, RFC 3339 (millisecond precision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// Units kept back: the token leaves rotation at `limit - reserve`.
    pub reserve: u64,
    /// The dimension it counts: `requests` (a lease's units) or a named cost.
    pub cost: String,
    /// `sliding`: sub-buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// The header family it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
}

impl Quota {
    /// Where its windows start, unix ms (0 unless `clock_aligned`): the anchor as shown, which
    /// has the millisecond precision it was stored with.
    pub fn anchor_ms(&self) -> i64 {
        self.anchor
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or(0)
    }
}

/// A quota as the functions read it (the config's `quotas` field), written and read back.
#[derive(Serialize, Deserialize)]
struct StoredQuota {
    name: String,
    limit: u64,
    window_s: u64,
    kind: WindowKind,
    #[serde(default)]
    anchor_ms: i64,
    #[serde(default)]
    reserve: u64,
    cost: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    buckets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync: Option<String>,
}

/// `[a-z0-9_-]{1,32}`: quota names and cost dimensions (they become token-hash field names).
fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A rate-limit header family key (`tokens`, `ratelimit:<policy>`): `[a-z0-9_.:-]{1,64}`.
pub fn check_family(what: &str, s: &str) -> Result<(), VaultError> {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b':')
        })
    {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what}: a header family is 1-64 characters of a-z 0-9 _ - . :"
        )))
    }
}

/// Check a cost dimension's name (`what` names where it was given).
pub fn check_cost_name(what: &str, s: &str) -> Result<(), VaultError> {
    check_key(what, s, "cost dimensions")
}

/// Check a quota's name (`what` names where it was given).
pub fn check_quota_name(what: &str, s: &str) -> Result<(), VaultError> {
    check_key(what, s, "quota names")
}

fn check_key(what: &str, s: &str, kind: &str) -> Result<(), VaultError> {
    if valid_key(s) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what}: {kind} are 1-32 characters of a-z 0-9 _ -"
        )))
    }
}

impl QuotaInput {
    fn validate(self) -> Result<Quota, VaultError> {
        let at = |field: &str| format!("quotas.{}.{field}", self.name);
        check_quota_name(&format!("quota name {:?}", self.name), &self.name)?;
        if self.name == DEFAULT_QUOTA {
            return Err(invalid(
                "quota name \"default\" is the shorthand's: set quota_limit, quota_window_s and quota_reserve for it",
            ));
        }
        let limit = in_range(&at("limit"), self.limit, 1, MAX_QUOTA)?;
        let window_s = in_range(&at("window_s"), self.window_s, 1, MAX_WINDOW_S)?;
        let reserve = self.reserve.unwrap_or(0);
        if reserve >= limit {
            return Err(invalid(format!(
                "{} ({reserve}) must be below its limit ({limit})",
                at("reserve")
            )));
        }
        let kind = self.kind.unwrap_or_default();
        let cost = self.cost.unwrap_or_else(|| REQUESTS.to_string());
        check_cost_name(&at("cost"), &cost)?;
        let anchor_ms = match (kind, self.anchor) {
            (WindowKind::ClockAligned, a) => a.map(|a| a.0).unwrap_or(0),
            (_, None) => 0,
            (_, Some(_)) => {
                return Err(invalid(format!(
                    "{}: only a clock_aligned window has an anchor",
                    at("anchor")
                )))
            }
        };
        let buckets = match (kind, self.buckets) {
            (WindowKind::Sliding, b) => Some(in_range(
                &at("buckets"),
                b.unwrap_or(DEFAULT_BUCKETS).into(),
                2,
                MAX_BUCKETS.into(),
            )? as u32),
            (_, None) => None,
            (_, Some(_)) => {
                return Err(invalid(format!(
                    "{}: only a sliding window has buckets",
                    at("buckets")
                )))
            }
        };
        if let Some(s) = &self.sync {
            check_family(&at("sync"), s)?;
        }
        Ok(Quota {
            sync: self.sync,
            name: self.name,
            limit,
            window_s,
            kind,
            anchor: (kind == WindowKind::ClockAligned).then(|| rfc3339(anchor_ms)),
            reserve,
            cost,
            buckets,
        })
    }
}

/// Check a pool's `quotas` and `cost_estimates` together: names unique, every cost dimension a
/// quota counts (but requests) has an estimate, and every estimate is of a counted dimension.
pub(super) fn validate_quotas(
    quotas: Vec<QuotaInput>,
    estimates: BTreeMap<String, u64>,
) -> Result<(Vec<Quota>, BTreeMap<String, u64>), VaultError> {
    if quotas.len() > MAX_QUOTAS {
        return Err(invalid(format!(
            "a pool has at most {MAX_QUOTAS} quotas besides quota_limit"
        )));
    }
    let mut out: Vec<Quota> = Vec::with_capacity(quotas.len());
    for q in quotas {
        let q = q.validate()?;
        if out.iter().any(|o| o.name == q.name) {
            return Err(invalid(format!(
                "quotas.{}: two quotas have this name",
                q.name
            )));
        }
        out.push(q);
    }
    for (dim, v) in &estimates {
        check_cost_name(&format!("cost_estimates.{dim}"), dim)?;
        if dim == REQUESTS {
            return Err(invalid(
                "cost_estimates.requests: a lease's requests are its units",
            ));
        }
        if !out.iter().any(|q| &q.cost == dim) {
            return Err(invalid(format!(
                "cost_estimates.{dim}: no quota counts {dim}"
            )));
        }
        in_range(&format!("cost_estimates.{dim}"), *v, 0, MAX_QUOTA)?;
    }
    if let Some(q) = out
        .iter()
        .find(|q| q.cost != REQUESTS && !estimates.contains_key(&q.cost))
    {
        return Err(invalid(format!(
            "quotas.{}: it counts {}, so cost_estimates.{} must say what a lease is expected to cost",
            q.name, q.cost, q.cost
        )));
    }
    Ok((out, estimates))
}

/// The config fields `quotas` and `cost_estimates` as the functions read them ("" = none).
pub(super) fn quota_fields(
    quotas: &[Quota],
    estimates: &BTreeMap<String, u64>,
) -> (String, String) {
    if quotas.is_empty() {
        return (String::new(), String::new());
    }
    let stored: Vec<StoredQuota> = quotas
        .iter()
        .map(|q| StoredQuota {
            name: q.name.clone(),
            limit: q.limit,
            window_s: q.window_s,
            kind: q.kind,
            anchor_ms: q.anchor_ms(),
            reserve: q.reserve,
            cost: q.cost.clone(),
            buckets: q.buckets,
            sync: q.sync.clone(),
        })
        .collect();
    (
        serde_json::to_string(&stored).expect("quotas serialize"),
        map_arg(estimates),
    )
}

/// Read the stored `quotas` field back.
pub(super) fn quotas_from_field(v: Option<&String>) -> Vec<Quota> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return vec![];
    };
    serde_json::from_str::<Vec<StoredQuota>>(v)
        .unwrap_or_default()
        .into_iter()
        .map(|s| Quota {
            anchor: (s.kind == WindowKind::ClockAligned).then(|| rfc3339(s.anchor_ms)),
            name: s.name,
            limit: s.limit,
            window_s: s.window_s,
            kind: s.kind,
            reserve: s.reserve,
            cost: s.cost,
            buckets: s.buckets,
            sync: s.sync,
        })
        .collect()
}

/// The schema of a map keyed by names matching `key` (up to `max_key` characters, never
/// `not_key`), with at most `max` entries of `value`: what the checks of `costs`, `quotas` and
/// `rate_limit` accept, stated in the API document.
#[cfg(feature = "schema")]
fn named_map_schema(
    key: &str,
    max_key: usize,
    not_key: Option<&str>,
    max: usize,
    value: serde_json::Value,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let mut names =
        serde_json::json!({"type": "string", "pattern": key, "minLength": 1, "maxLength": max_key});
    if let Some(k) = not_key {
        names["not"] = serde_json::json!({"const": k});
    }
    serde_json::from_value(serde_json::json!({
        "type": "object",
        "propertyNames": names,
        "maxProperties": max,
        "additionalProperties": value,
        "description": description,
    }))
    .expect("a valid schema")
}

/// A map of units by cost dimension other than requests, described by `description`.
#[cfg(feature = "schema")]
fn cost_map_schema(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    named_map_schema(
        "^[a-z0-9_-]+$",
        32,
        Some(REQUESTS),
        MAX_QUOTAS,
        serde_json::json!({"type": "integer", "minimum": 0, "maximum": MAX_QUOTA}),
        description,
    )
}

/// `costs` of a lease or report: cost dimension -> units (never `requests`).
#[cfg(feature = "schema")]
pub fn costs_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    cost_map_schema(
        "Units by cost dimension other than requests (`llm_tokens`, say; 1-32 characters of \
         a-z 0-9 _ -, at most 8): what a lease reserves, or what a call cost. A dimension not \
         given counts what the lease reserved for it.",
    )
}

/// A pool's `cost_estimates`: cost dimension -> units a lease is expected to cost.
#[cfg(feature = "schema")]
pub fn cost_estimates_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    cost_map_schema(
        "What a lease is expected to cost, by cost dimension a quota counts (other than \
         requests), when the lease does not say (`costs`); settled by the report. Every \
         quota that counts a named cost needs its estimate here, and every estimate a quota \
         that counts it.",
    )
}

/// A report's `quotas`: quota name -> what the target said of it.
#[cfg(feature = "schema")]
pub fn quota_reports_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    named_map_schema(
        "^[a-z0-9_-]+$",
        32,
        None,
        MAX_QUOTAS + 1,
        serde_json::json!({"$ref": "#/components/schemas/QuotaReport"}),
        "What the target said of the pool's quotas, by quota name (`remaining` and `reset_at` \
         of the body speak of `default`): the vault's counts never stay below the target's.",
    )
}

/// A report's `rate_limit`: header family -> what the target's headers said.
#[cfg(feature = "schema")]
pub fn rate_limit_reports_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    named_map_schema(
        "^[a-z0-9_.:-]+$",
        64,
        None,
        16,
        serde_json::json!({"$ref": "#/components/schemas/QuotaReport"}),
        "What the target's rate-limit headers said, by header family (`tokens`, `requests`, \
         `x-ratelimit`, `ratelimit`, `ratelimit:<policy>`; at most 16): counted on each quota \
         that names the family in its `sync`. The SDKs fill it.",
    )
}

/// Check a lease's or report's `costs`: named dimensions other than requests, bounded.
pub fn check_costs(what: &str, costs: &BTreeMap<String, u64>) -> Result<(), VaultError> {
    if costs.len() > MAX_QUOTAS {
        return Err(invalid(format!(
            "{what} names at most {MAX_QUOTAS} cost dimensions"
        )));
    }
    for (k, v) in costs {
        check_cost_name(&format!("{what}.{k}"), k)?;
        if k == REQUESTS {
            return Err(invalid(format!(
                "{what}.requests: requests are given as units (used in a report)"
            )));
        }
        in_range(&format!("{what}.{k}"), *v, 0, MAX_QUOTA)?;
    }
    Ok(())
}

/// A map (a lease's or report's `costs`, a report's `quotas` or `rate_limit`) as a function
/// argument: a JSON object, or "" for none.
pub fn map_arg<T: Serialize>(m: &BTreeMap<String, T>) -> String {
    if m.is_empty() {
        String::new()
    } else {
        serde_json::to_string(m).expect("a map of names serializes")
    }
}
