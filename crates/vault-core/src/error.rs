//! The one error type of the request path. Each variant has a stable machine code that the API
//! puts in problem+json `code`; messages never carry secrets.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum VaultError {
    #[error("pool not found")]
    PoolNotFound,
    #[error("token not found")]
    TokenNotFound,
    #[error("the lease has ended (expired, released or revoked)")]
    LeaseGone,
    #[error("the pool is frozen: no new leases")]
    PoolFrozen,
    #[error("no token is eligible right now")]
    PoolExhausted {
        /// When something can become eligible, if anything can.
        retry_after_ms: Option<u64>,
    },
    #[error("this Idempotency-Key was used for a lease that has ended")]
    IdempotencyConflict,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PipelineNotFound(String),
    /// The pipeline's tokens are still being assigned.
    #[error("{0}")]
    PipelineNotReady(String),
    /// The pool holds fewer eligible tokens than a pipeline needs.
    #[error("{}", capacity_short(.0))]
    InsufficientCapacity(vault_wire::CapacityShort),
    #[error("the refresh job is gone (completed, failed, or its token deleted)")]
    JobGone,
    #[error("stale refresh job: {0}")]
    StaleJob(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TokenExpiring(String),
    #[error("{0}")]
    QuotaExhausted(String),
    #[error("Redis is unavailable: {0}")]
    RedisUnavailable(String),
    /// Redis is reachable but did not answer within the budget (busy, paused or slow). A write
    /// that timed out may still have been applied.
    #[error("Redis is busy: {0}")]
    RedisBusy(String),
    /// The write was applied on the primary, but fewer replicas than `TV_REDIS_WAIT_REPLICAS`
    /// acknowledged it in time: a failover now could lose it.
    #[error("not acknowledged by enough replicas: {0}")]
    NotReplicated(String),
    /// The global Redis primary (or the region's replica of it) cannot be reached: a global
    /// action cannot be written now (nothing was changed).
    #[error("the global control plane is unavailable: {0}")]
    GlobalUnavailable(String),
    /// This region's copy of the global state is older than `TV_GLOBAL_STALE_AFTER_S` and the
    /// operator chose to refuse new leases then.
    #[error("{0}")]
    GlobalStateStale(String),
    /// The credential was revoked everywhere: it may not be deposited again.
    #[error("{0}")]
    CredentialRevoked(String),
    #[error("Redis refuses Lua scripts ({0}); tokenvault needs Redis Functions (FUNCTION LOAD, FCALL) and never falls back to non-atomic commands")]
    ScriptsUnavailable(String),
    /// Redis holds pools in the storage layout of an older tokenvault, which this one does not
    /// read: `vaultctl migrate` converts them.
    #[error("{0}")]
    LayoutOutdated(String),
    #[error("cannot decrypt a stored secret: {0}")]
    Crypto(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a pipeline could not get, in words.
fn capacity_short(c: &vault_wire::CapacityShort) -> String {
    let next = c
        .next_free_at
        .as_ref()
        .map(|t| format!("; the next free up at {t}"))
        .unwrap_or_default();
    format!(
        "the pool has {} eligible tokens of those this pipeline needs: {} missing{next}",
        c.could, c.missing
    )
}

impl VaultError {
    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PoolNotFound => "pool_not_found",
            Self::TokenNotFound => "token_not_found",
            Self::LeaseGone => "lease_gone",
            Self::PoolFrozen => "pool_frozen",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::IdempotencyMismatch => "idempotency_mismatch",
            Self::Conflict(_) => "conflict",
            Self::PipelineNotFound(_) => "pipeline_not_found",
            Self::PipelineNotReady(_) => "pipeline_not_ready",
            Self::InsufficientCapacity(_) => "insufficient_capacity",
            Self::JobGone => "job_gone",
            Self::StaleJob(_) => "stale_job",
            Self::Invalid(_) => "invalid_request",
            Self::TokenExpiring(_) => "token_expiring",
            Self::QuotaExhausted(_) => "quota_exhausted",
            Self::RedisUnavailable(_) => "redis_unavailable",
            Self::RedisBusy(_) => "redis_busy",
            Self::NotReplicated(_) => "not_replicated",
            Self::GlobalUnavailable(_) => "global_unavailable",
            Self::GlobalStateStale(_) => "global_state_stale",
            Self::CredentialRevoked(_) => "credential_revoked",
            Self::ScriptsUnavailable(_) => "scripts_unavailable",
            Self::LayoutOutdated(_) => "layout_outdated",
            Self::Crypto(_) => "crypto_error",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether a process meeting this error at start-up must refuse to run (rather than start
    /// and wait for Redis): Redis refuses functions, or holds an older layout.
    pub fn refuses_start(&self) -> bool {
        matches!(self, Self::ScriptsUnavailable(_) | Self::LayoutOutdated(_))
    }

    /// Map a script's `{"err": code, "detail": ...}` answer.
    pub(crate) fn from_script(code: &str, v: &serde_json::Value) -> Self {
        let detail = v
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        match code {
            "pool_not_found" => Self::PoolNotFound,
            "token_not_found" => Self::TokenNotFound,
            "lease_gone" => Self::LeaseGone,
            "pool_frozen" => Self::PoolFrozen,
            "pool_exhausted" => Self::PoolExhausted {
                retry_after_ms: v
                    .get("retry_after_ms")
                    .and_then(|r| r.as_f64())
                    .map(|r| r as u64),
            },
            "idempotency_conflict" => Self::IdempotencyConflict,
            "idempotency_mismatch" => Self::IdempotencyMismatch,
            "conflict" => Self::Conflict(detail),
            "pipeline_not_found" => Self::PipelineNotFound(detail),
            "pipeline_not_ready" => Self::PipelineNotReady(detail),
            "job_gone" => Self::JobGone,
            "stale_job" => Self::StaleJob(detail),
            "invalid_request" => Self::Invalid(detail),
            "token_expiring" => Self::TokenExpiring(detail),
            "quota_exhausted" => Self::QuotaExhausted(detail),
            other => Self::Internal(format!("script answered unknown error code {other}")),
        }
    }

    /// Classify a Redis client error: a refused script is not an outage, a Lua bug is ours, a
    /// slow answer is not a dead server.
    pub(crate) fn from_redis(e: &redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        let text = e.to_string();
        // A timed-out read, a script (anyone's) running past lua-time-limit, or a cluster slot
        // on the move: Redis is there, just not answering this call now.
        if e.is_timeout()
            || e.code() == Some("BUSY")
            || e.kind() == ErrorKind::Server(ServerErrorKind::TryAgain)
        {
            return Self::RedisBusy(text);
        }
        match e.kind() {
            ErrorKind::Server(ServerErrorKind::NoPerm) => Self::ScriptsUnavailable(text),
            ErrorKind::Server(ServerErrorKind::NoScript) => Self::ScriptsUnavailable(text),
            ErrorKind::Server(ServerErrorKind::ResponseError)
                if text.contains("unknown command") =>
            {
                Self::ScriptsUnavailable(text)
            }
            ErrorKind::Server(ServerErrorKind::ResponseError)
                if text.contains("user_function")
                    || text.contains("user_script")
                    || text.contains("script") =>
            {
                Self::Internal(text)
            }
            _ => Self::RedisUnavailable(text),
        }
    }
}
