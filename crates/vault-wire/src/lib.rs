//! The types that cross the wire between the vault and its workers, written once: the server
//! (vault-api, vault-core) serializes them and the SDK (vault-client) reads them, so the two
//! cannot drift apart.

use serde::{Deserialize, Serialize};

#[cfg(feature = "grpc")]
pub mod grpc;

/// W3C trace context on outgoing requests.
#[cfg(feature = "trace")]
pub mod trace {
    /// The caller's trace context as `traceparent` (and `tracestate`) headers: its current
    /// `tracing` span's (through tracing-opentelemetry), else the current OpenTelemetry
    /// context, written by the propagator the application installed (none: no header). Only
    /// the ids travel, never a span's attributes.
    pub fn headers() -> http::HeaderMap {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        let cx = if cx.span().span_context().is_valid() {
            cx
        } else {
            opentelemetry::Context::current()
        };
        let mut headers = http::HeaderMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers))
        });
        headers
    }
}

/// Where a token came from and how it must be used (sticky identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The proxy the token must be used through: an `http`, `https`, `socks5` or `socks5h`
    /// URL with a host (and optionally `user:password@` and a port), at most 1024 characters
    /// (sealed at rest; it may hold credentials).
    #[cfg_attr(
        feature = "schema",
        schema(
            max_length = 1024,
            pattern = r"^(https?|socks5h?)://([A-Za-z0-9._~!$&'()*+,;=-]+(:[A-Za-z0-9._~!$&'()*+,;=-]*)?@)?[A-Za-z0-9.-]+(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?/?$"
        )
    )]
    pub proxy: Option<String>,
    /// The browser or client fingerprint the token must be used with (free text, at most
    /// 1024 bytes).
    #[cfg_attr(feature = "schema", schema(max_length = 1024))]
    pub fingerprint: Option<String>,
}

/// How the worker's call with a leased token went, reported on release and rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call worked: the token's strikes are cleared.
    #[default]
    Ok,
    /// The target refused the credential (401): the token leaves rotation and is refreshed
    /// (or handed to login workers); never leased again as it is.
    Unauthorized,
    /// The target said too many (429): the token cools down until `retry_after_s` (or
    /// `reset_at`, or the end of its quota window).
    RateLimited,
    /// The target forbade the call (403): a strike; `quarantine_after_strikes` strikes
    /// quarantine the token.
    Forbidden,
    /// Something looked wrong with the token (a captcha, an odd answer): a strike, as
    /// `forbidden`.
    Suspect,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::Forbidden => "forbidden",
            Self::Suspect => "suspect",
        }
    }
}

/// The headers a worker sends with a leased token, ready made.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LeaseHeaders {
    /// `Bearer <secret>`.
    #[serde(rename = "Authorization")]
    pub authorization: String,
}

impl std::fmt::Debug for LeaseHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseHeaders([redacted])")
    }
}

/// A lease as the vault hands it out: the only place a plaintext secret leaves the vault.
/// `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The lease's id: renew, release and rotate name it.
    pub lease_id: String,
    /// The pool it was leased from.
    pub pool: String,
    /// The leased token's id in its pool (its fingerprint is in the token's metadata).
    pub token_id: String,
    /// The credential itself, to use until the lease ends. Never logged or stored by the
    /// clients; release the lease when done.
    #[cfg_attr(feature = "schema", schema(format = Password))]
    pub secret: String,
    /// RFC 3339; null when the token does not expire.
    pub token_expires_at: Option<String>,
    /// RFC 3339: the lease ends then unless renewed.
    pub lease_expires_at: String,
    /// Units of every quota the lease reserved (report what was used on release).
    pub units: u64,
    /// The pipeline it was leased through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// What the lease reserved of cost dimensions other than requests (pools whose quotas count
    /// costs); report what the call really cost in the release's `costs`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub costs: std::collections::BTreeMap<String, u64>,
    /// The proxy and fingerprint the token must be used with (the proxy in full, credentials
    /// included).
    pub binding: Binding,
    /// Headers to send with the token, ready made (`Authorization: Bearer <secret>`).
    pub headers: LeaseHeaders,
    /// The credential's `sha256:` fingerprint: how the audit trail, events and revocations
    /// name it (never the credential).
    #[serde(default)]
    pub fingerprint: String,
    /// The W3C trace id (32 hex digits) of the lease call: the caller's `traceparent`'s, or
    /// the one the vault started. Links the worker's trace to the vault's spans and audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lease_id", &self.lease_id)
            .field("pool", &self.pool)
            .field("token_id", &self.token_id)
            .field("secret", &"[redacted]")
            .field("token_expires_at", &self.token_expires_at)
            .field("lease_expires_at", &self.lease_expires_at)
            .field("units", &self.units)
            .field("binding", &self.binding)
            .field("fingerprint", &self.fingerprint)
            .field("trace_id", &self.trace_id)
            .finish()
    }
}

/// An event pushed to workers (`GET /v1/events`). Never carries a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Event {
    /// `token.revoked`, `lease.revoked`, `token.refreshed`, `token.quarantined`,
    /// `pool.frozen`, `pool.unfrozen`, `pool.rotating`, `pipeline.created`, `pipeline.resized`,
    /// `pipeline.ended`, `pipeline.token_replaced`, `pipeline.under_strength`,
    /// `pipeline.at_strength`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The pool it concerns.
    pub pool: String,
    /// The token it concerns (`token.*`, and the token of a `lease.revoked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The lease it concerns (`lease.revoked`: drop it, its token is no longer yours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// When it happened (unix ms; for revocations, when the revoke took effect).
    pub at: i64,
    /// Why (a revocation's or freeze's reason as its author gave it; `events.lost` says what
    /// to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pipeline it concerns (`pipeline.*` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// `pipeline.token_replaced`: the token that took `token_id`'s place (absent: none was free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// The W3C trace id (32 hex digits) of the request or job that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// `PUT /v1/pools/{pool}/pipelines/{name}`: the demand a pipeline is sized from, or an explicit
/// token count. Sent again, it resizes the pipeline and restarts its deadline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineInput {
    /// Requests per second the job will make (above 0, at most 10,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schema(exclusive_minimum = 0, maximum = 10_000_000)
    )]
    pub rps: Option<f64>,
    /// How long the job runs, seconds (1 s to 31 days): the pipeline ends this long after the
    /// request.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_678_400))]
    pub duration_s: u64,
    /// Requests the job holds a token for at once (1-1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<u64>,
    /// Quota units one request takes (1-1,000,000,000; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1_000_000_000))]
    pub units_per_request: Option<u64>,
    /// Life a token must have left to join, seconds (at most 7 days; default: the pool's
    /// `min_token_ttl_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 0, maximum = 604_800))]
    pub min_token_ttl_s: Option<u64>,
    /// Tokens to hold (1-1,000,000), instead of sizing from `rps` and `concurrency`: give
    /// either this or the demand (`rps` and/or `concurrency`), not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 1_000_000))]
    pub tokens: Option<u64>,
    /// Take what is there when the pool holds fewer eligible tokens than needed (the pipeline
    /// is then under strength and topped up as tokens free up), instead of a 409.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_partial: bool,
}

/// What ending a pipeline did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PipelineEnded {
    /// The pipeline's name.
    pub pipeline: String,
    /// Tokens it held, now back in the pool (leases out on them keep their deadlines).
    pub tokens_returned: u64,
}

/// What a pipeline could not get (`409 insufficient_capacity`, and a dry run's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CapacityShort {
    /// Tokens it could have had.
    pub could: u64,
    /// Tokens missing.
    pub missing: u64,
    /// When the next tokens free up (a cooldown or lease ends, another pipeline's deadline);
    /// RFC 3339, null when nothing is due.
    pub next_free_at: Option<String>,
}

/// An error answer (RFC 9457 problem details); `code` is the stable machine-readable name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `urn:tokenvault:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person (never a secret).
    pub detail: String,
    /// The stable machine-readable name: `invalid_request`, `pool_not_found`,
    /// `pool_exhausted`, ...
    pub code: String,
    /// `insufficient_capacity`: what could be had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityShort>,
}

impl Problem {
    /// The problem `code` answered with HTTP `status` (whose reason phrase is `title`).
    pub fn new(status: u16, title: &str, code: &str, detail: String) -> Problem {
        Problem {
            kind: format!("urn:tokenvault:problem:{code}"),
            title: title.to_string(),
            status,
            detail,
            code: code.to_string(),
            capacity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_never_prints_its_secret() {
        let l = Lease {
            lease_id: "l".into(),
            pool: "p".into(),
            token_id: "t".into(),
            secret: "s3cr3t".into(),
            token_expires_at: None,
            lease_expires_at: "2030-01-01T00:00:00Z".into(),
            units: 1,
            pipeline: None,
            costs: Default::default(),
            binding: Binding::default(),
            headers: LeaseHeaders {
                authorization: "Bearer s3cr3t".into(),
            },
            fingerprint: "sha256:0123456789ab".into(),
            trace_id: None,
        };
        let shown = format!("{l:?} {:?}", l.headers);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // The wire form is what the SDK reads back, with the header under its HTTP name.
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["headers"]["Authorization"], "Bearer s3cr3t");
        assert_eq!(serde_json::from_value::<Lease>(json).unwrap(), l);
    }
}
