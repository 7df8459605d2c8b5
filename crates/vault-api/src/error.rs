//! The one error type of the HTTP layer: every failure is `application/problem+json`
//! (RFC 9457) with a stable `code`. 5xx answers say little; the real cause is logged.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vault_core::VaultError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after_s: Option<u64>,
    /// `WWW-Authenticate` value for 401s.
    pub www_authenticate: Option<String>,
    /// `insufficient_capacity`: what a pipeline could have had.
    pub capacity: Option<Box<vault_wire::CapacityShort>>,
}

/// RFC 9457 problem details (the wire type the SDK reads too).
pub use vault_wire::Problem;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after_s: None,
            www_authenticate: None,
            capacity: None,
        }
    }

    /// 401 for a missing or refused client token (RFC 6750 `WWW-Authenticate`).
    pub fn unauthorized(e: vault_core::auth::AuthError) -> Self {
        let challenge = match e {
            vault_core::auth::AuthError::Missing => "Bearer realm=\"tokenvault\"".to_string(),
            _ => format!(
                "Bearer realm=\"tokenvault\", error=\"invalid_token\", error_description=\"{e}\""
            ),
        };
        let mut err = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        err.www_authenticate = Some(challenge);
        err
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 400 for a body that is not one JSON value (a syntax error, cut short, trailing data).
    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use StatusCode as S;
        let code = e.code();
        let (status, detail, retry) = match &e {
            VaultError::PoolNotFound
            | VaultError::TokenNotFound
            | VaultError::PipelineNotFound(_) => (S::NOT_FOUND, e.to_string(), None),
            VaultError::LeaseGone | VaultError::JobGone => (S::GONE, e.to_string(), None),
            VaultError::PoolFrozen => (S::LOCKED, e.to_string(), None),
            VaultError::PoolExhausted { retry_after_ms } => {
                // Round up, at least 1 s: a fleet that retries at once only hammers.
                let s = retry_after_ms
                    .map(|ms| ms.div_ceil(1000).max(1))
                    .unwrap_or(5);
                (
                    S::SERVICE_UNAVAILABLE,
                    format!("no token in this pool is eligible; retry in {s} s"),
                    Some(s),
                )
            }
            VaultError::IdempotencyConflict
            | VaultError::StaleJob(_)
            | VaultError::Conflict(_)
            | VaultError::PipelineNotReady(_)
            | VaultError::InsufficientCapacity(_)
            | VaultError::TokenExpiring(_)
            | VaultError::QuotaExhausted(_)
            | VaultError::CredentialRevoked(_) => (S::CONFLICT, e.to_string(), None),
            VaultError::GlobalStateStale(_) => (S::SERVICE_UNAVAILABLE, e.to_string(), Some(5)),
            VaultError::GlobalUnavailable(_) => {
                tracing::warn!(error = %e, "global plane unavailable");
                (
                    S::SERVICE_UNAVAILABLE,
                    "the global control plane (its Redis primary) cannot be reached from this \
                     region right now, so the action is not global yet: retry (the call is safe \
                     to repeat), or act from another region"
                        .to_string(),
                    Some(1),
                )
            }
            VaultError::Invalid(_) => (S::BAD_REQUEST, e.to_string(), None),
            VaultError::IdempotencyMismatch => (S::UNPROCESSABLE_ENTITY, e.to_string(), None),
            VaultError::RedisUnavailable(_) => {
                tracing::warn!(error = %e, "redis unavailable");
                (
                    S::SERVICE_UNAVAILABLE,
                    "the vault cannot reach Redis right now".to_string(),
                    Some(1),
                )
            }
            VaultError::RedisBusy(_) => {
                tracing::warn!(error = %e, "redis busy");
                (
                    S::SERVICE_UNAVAILABLE,
                    "Redis did not answer in time (busy or stalled); a write may still have \
                     been applied: retry (a lease with the same Idempotency-Key)"
                        .to_string(),
                    Some(1),
                )
            }
            VaultError::NotReplicated(_) => {
                tracing::warn!(error = %e, "write not acknowledged by enough replicas");
                (
                    S::SERVICE_UNAVAILABLE,
                    "the change is made on the Redis primary, but not enough replicas \
                     acknowledged it in time, so a failover could still lose it: retry \
                     (the call is safe to repeat)"
                        .to_string(),
                    Some(1),
                )
            }
            VaultError::ScriptsUnavailable(_) => {
                tracing::error!(error = %e, "redis refuses scripts");
                (
                    S::SERVICE_UNAVAILABLE,
                    "Redis refuses Lua scripts; the vault fails closed".to_string(),
                    Some(5),
                )
            }
            VaultError::LayoutOutdated(_) => {
                tracing::error!(error = %e, "storage layout outdated");
                (
                    S::SERVICE_UNAVAILABLE,
                    "Redis holds pools in an older storage layout; an operator runs \
                     `vaultctl migrate`"
                        .to_string(),
                    Some(5),
                )
            }
            VaultError::Crypto(_) | VaultError::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                (
                    S::INTERNAL_SERVER_ERROR,
                    "internal error; see the vault's logs".to_string(),
                    None,
                )
            }
        };
        let capacity = match e {
            VaultError::InsufficientCapacity(c) => Some(Box::new(c)),
            _ => None,
        };
        Self {
            status,
            code,
            detail,
            retry_after_s: retry,
            www_authenticate: None,
            capacity,
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request bodies are limited to 1 MiB",
            );
        }
        Self::invalid(format!("cannot read the request body: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(format!("bad query string: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("tv_problems_total", "code" => self.code).increment(1);
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            capacity: self.capacity.map(|c| *c),
            ..Problem::new(self.status.as_u16(), title, self.code, self.detail)
        };
        let mut res = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self
            .www_authenticate
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        res
    }
}
