//! Leases: what workers send (acquire, renew, report) and what a transition grants.

use super::*;

/// Release / rotate body.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Units of the lease's reservation really used (at most what it reserved); the rest goes
    /// back to every quota. Default: all it reserved.
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 1_000_000))]
    pub used: Option<u64>,
    /// How the call with the token went. Default `ok`.
    #[serde(default)]
    pub outcome: Outcome,
    /// With `rate_limited`: the target's `Retry-After`, seconds; the token cools down until
    /// then (without it, until `reset_at` or the end of its quota window).
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 2_678_400))]
    pub retry_after_s: Option<f64>,
    /// What the target said is left of the token's `default` quota: the vault's count never
    /// stays below what the target counted.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub remaining: Option<u64>,
    /// When the target said the `default` quota resets: RFC 3339 or unix milliseconds (a time
    /// more than 31 days ahead counts as 31 days from now).
    pub reset_at: Option<TimeInput>,
    /// What went wrong, in the worker's words (audited): at most 1024 bytes, never a secret.
    #[cfg_attr(feature = "schema", schema(max_length = 1024))]
    pub detail: Option<String>,
    /// What the call cost, by cost dimension other than requests (`used` counts requests). A
    /// dimension not given counts what the lease reserved for it.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(schema_with = super::quota::costs_schema))]
    pub costs: BTreeMap<String, u64>,
    /// What the target said of the pool's named quotas (`remaining` and `reset_at` speak of
    /// `default`): the vault's counts never stay below what the target counted.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(schema_with = super::quota::quota_reports_schema))]
    pub quotas: BTreeMap<String, QuotaReport>,
    /// What the target's rate-limit headers said, by header family (`tokens`, `requests`,
    /// `x-ratelimit`, `ratelimit`, `ratelimit:<policy>`): counted on each quota that names the
    /// family in its `sync`; families no quota follows are ignored. The SDKs fill it.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(schema_with = super::quota::rate_limit_reports_schema))]
    pub rate_limit: BTreeMap<String, QuotaReport>,
}

/// What a target said of one quota in its answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaReport {
    /// What the target said is left of this quota.
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 0, maximum = 1_000_000_000_000_u64)
    )]
    pub remaining: Option<u64>,
    /// When the target said it resets: RFC 3339 or unix milliseconds (a time more than 31 days
    /// ahead counts as 31 days from now).
    pub reset_at: Option<TimeInput>,
}

impl Report {
    pub fn validate(&self) -> Result<(), VaultError> {
        if let Some(r) = self.retry_after_s {
            if !(0.0..=MAX_WINDOW_S as f64).contains(&r) {
                return Err(invalid("retry_after_s must be between 0 and 2678400"));
            }
        }
        if let Some(r) = self.remaining {
            in_range("remaining", r, 0, MAX_QUOTA)?;
        }
        if self.detail.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err(invalid("detail is longer than 1024 bytes"));
        }
        check_costs("costs", &self.costs)?;
        if self.quotas.len() > MAX_QUOTAS + 1 {
            return Err(invalid(format!(
                "quotas names at most {} quotas",
                MAX_QUOTAS + 1
            )));
        }
        if self.rate_limit.len() > 16 {
            return Err(invalid("rate_limit names at most 16 header families"));
        }
        for (family, q) in &self.rate_limit {
            check_family(&format!("rate_limit.{family}"), family)?;
            q.check(&format!("rate_limit.{family}"))?;
        }
        for (name, q) in &self.quotas {
            check_quota_name(&format!("quotas.{name}"), name)?;
            q.check(&format!("quotas.{name}"))?;
        }
        Ok(())
    }
}

impl QuotaReport {
    fn check(&self, what: &str) -> Result<(), VaultError> {
        if let Some(r) = self.remaining {
            in_range(&format!("{what}.remaining"), r, 0, MAX_QUOTA)?;
        }
        Ok(())
    }
}

/// Acquire body.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcquireInput {
    /// Who leases (a label in the audit trail and the lease's record): 1-128 printable ASCII
    /// characters.
    #[cfg_attr(feature = "schema", schema(value_type = Option<Label>))]
    pub worker: Option<String>,
    /// Units of every quota the lease reserves (settled by the report's `used`). Default 1.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1_000_000))]
    pub units: Option<u64>,
    /// Expected cost by cost dimension other than requests (default: the pool's
    /// `cost_estimates`): reserved on every quota counting it, settled by the report.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(schema_with = super::quota::costs_schema))]
    pub costs: BTreeMap<String, u64>,
    /// The lease's life, seconds. Default: the pool's `lease_ttl_s`; a longer one than its
    /// `max_lease_ttl_s` is cut to that.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub ttl_s: Option<u64>,
    /// Life the token must have left, seconds, when this lease needs more than the pool's
    /// `min_token_ttl_s`.
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 2_678_400))]
    pub min_token_ttl_s: Option<u64>,
    /// A sticky session: leases with the same session get the same token while it stays
    /// eligible (for the pool's `session_ttl_s` after the last). 1-128 printable ASCII
    /// characters.
    #[cfg_attr(feature = "schema", schema(value_type = Option<Label>))]
    pub session: Option<String>,
    /// How long to wait for a token when none is eligible, ms, instead of answering 503
    /// `pool_exhausted` at once. Default 0.
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 30_000))]
    pub wait_ms: Option<u64>,
    /// Lease only from this pipeline's share (`PUT /v1/pools/{pool}/pipelines/{name}`).
    #[cfg_attr(feature = "schema", schema(value_type = Option<Name>))]
    pub pipeline: Option<String>,
}

impl AcquireInput {
    /// What the request asks for (all but how long it may wait), hashed: a retry with the same
    /// Idempotency-Key must ask for the same thing.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let what = serde_json::json!([
            self.worker,
            self.units,
            self.costs,
            self.ttl_s,
            self.min_token_ttl_s,
            self.session,
            self.pipeline
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
        if let Some(p) = &self.pipeline {
            super::check_pipeline_name(p)?;
        }
        if let Some(u) = self.units {
            in_range("units", u, 1, 1_000_000)?;
        }
        check_costs("costs", &self.costs)?;
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
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewInput {
    /// The lease's new life from now, seconds. Default: the pool's `lease_ttl_s`; a longer one
    /// than its `max_lease_ttl_s` is cut to that.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub ttl_s: Option<u64>,
    /// Units more to reserve of every quota (a long job that is using more). Default 0.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1_000_000))]
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
    /// What it reserved of cost dimensions other than requests.
    #[serde(default)]
    pub costs: BTreeMap<String, u64>,
    pub granted_at: i64,
    pub deadline: i64,
    pub ttl_ms: i64,
    pub secret_ct: String,
    pub key_id: String,
    pub expires_at: i64,
    #[serde(flatten)]
    pub proxy: crate::crypto::SealedProxy,
    pub binding_fp: String,
    /// The pipeline it was leased through ("" = none).
    #[serde(default)]
    pub pipeline: String,
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

#[cfg(all(test, feature = "schema"))]
mod schema_tests {
    use super::*;

    /// The bounds the document states are the ones `validate` checks.
    #[test]
    fn the_lease_bodies_are_documented_with_their_bounds() {
        let acquire = crate::model::documented_schema::<AcquireInput>();
        let renew = crate::model::documented_schema::<RenewInput>();
        let max = |s: &serde_json::Value, f: &str| s["properties"][f]["maximum"].as_u64();
        assert_eq!(max(&acquire, "wait_ms"), Some(MAX_WAIT_MS));
        assert_eq!(max(&acquire, "ttl_s"), Some(MAX_LEASE_TTL_S));
        assert_eq!(max(&acquire, "min_token_ttl_s"), Some(MAX_WINDOW_S));
        assert_eq!(max(&renew, "ttl_s"), Some(MAX_LEASE_TTL_S));
        let report = crate::model::documented_schema::<Report>();
        assert_eq!(max(&report, "retry_after_s"), Some(MAX_WINDOW_S));
        assert_eq!(max(&report, "remaining"), Some(MAX_QUOTA));
        crate::model::documented_schema::<QuotaReport>();
        let token = crate::model::documented_schema::<crate::model::TokenInput>();
        let secret_max = token["properties"]["secret"]["maxLength"].as_u64();
        assert_eq!(secret_max, Some(crate::model::MAX_SECRET_BYTES as u64));
        crate::model::documented_schema::<crate::model::Binding>();
        let quota = crate::model::documented_schema::<crate::model::QuotaInput>();
        assert_eq!(max(&quota, "window_s"), Some(MAX_WINDOW_S));
        assert_eq!(max(&quota, "limit"), Some(MAX_QUOTA));
        crate::model::documented_schema::<crate::model::QuotaStatus>();
        crate::model::documented_schema::<crate::model::PoolSizing>();
        crate::model::documented_schema::<crate::model::TokensNeeded>();
        crate::model::documented_schema::<crate::model::RotationStatus>();
        crate::model::documented_schema::<crate::model::OperationStatus>();
        crate::model::documented_schema::<crate::model::JanitorStatus>();
        crate::model::documented_schema::<crate::model::PoolStatus>();
    }
}
