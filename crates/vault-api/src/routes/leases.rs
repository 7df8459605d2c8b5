//! Leases: the worker's path. The lease answer is the only place a plaintext secret leaves the
//! vault.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use vault_core::crypto::Sealed;
use vault_core::model::{check_label, AcquireInput, LeaseGrant, RenewInput, Report};
use vault_core::store::AcquireArgs;
use vault_core::time::rfc3339;
use vault_core::VaultError;

use super::pool_name;
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Path};
use crate::AppState;
use axum::Extension;
use vault_core::auth::Principal;

/// The lease answer: the wire type the SDK reads.
pub use vault_wire::Lease as LeaseView;

fn lease_view(s: &AppState, pool: &str, g: LeaseGrant) -> Result<LeaseView, ApiError> {
    let sealed = Sealed {
        key_id: g.key_id.clone(),
        data: g.secret_ct.clone(),
    };
    let secret = s.cipher.open_secret(pool, &g.token_id, &sealed)?;
    let binding = g.binding(&s.cipher, pool)?;
    let plain = secret.expose().to_string();
    Ok(LeaseView {
        fingerprint: secret.fingerprint(),
        trace_id: vault_core::telemetry::current_trace_id(),
        headers: vault_wire::LeaseHeaders {
            authorization: format!("Bearer {plain}"),
        },
        secret: plain,
        lease_id: g.lease_id,
        pool: pool.to_string(),
        token_id: g.token_id,
        token_expires_at: (g.expires_at > 0).then(|| rfc3339(g.expires_at)),
        lease_expires_at: rfc3339(g.deadline),
        units: g.units,
        pipeline: (!g.pipeline.is_empty()).then(|| g.pipeline.clone()),
        costs: g.costs,
        binding,
    })
}

fn lease_id(id: &str) -> Result<(), ApiError> {
    check_label("lease id", id, 64).map_err(ApiError::from)
}

fn new_lease_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How long to sleep between attempts while a request waits (`wait_ms`) for a token.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Lease a token: the one call workers make. Every rule is checked in one step (quota,
/// concurrency, expiry margin, revocation, freeze, binding); with `wait_ms` the request waits
/// for a token instead of answering 503.
#[utoipa::path(
    post,
    path = "/pools/{pool}/leases",
    tag = "leases",
    params(
        crate::openapi::PoolPath,
        ("Idempotency-Key" = Option<vault_core::model::Label>, Header, nullable = false, description = "a retried request with the same key gets the same lease (1-128 printable ASCII characters)"),
    ),
    request_body = vault_core::model::AcquireInput,
    responses(
        (status = 201, description = "a new lease", body = LeaseView),
        (status = 200, description = "the lease an earlier request with this Idempotency-Key got", body = LeaseView),
        (status = 404, description = "`pool_not_found`, `pipeline_not_found` (none, or it ended)", body = Problem),
        (status = 409, description = "`idempotency_conflict`: the key's lease has ended; `pipeline_not_ready`: its tokens are still being assigned", body = Problem),
        (status = 422, description = "`idempotency_mismatch`: the key was used with a different request", body = Problem),
        (status = 423, description = "`pool_frozen`", body = Problem),
        (status = 503, description = "`pool_exhausted` (with `Retry-After`: when a token can next be eligible), `redis_unavailable` or `redis_busy` (the lease may still have been created: retry with the same `Idempotency-Key`)", body = Problem, headers(("Retry-After" = u64, description = "seconds"))),
    )
)]
pub async fn acquire(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    Body(input): Body<AcquireInput>,
) -> Result<(StatusCode, Json<LeaseView>), ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))?,
        ),
        None => None,
    };
    let (replayed, lease) = lease(&s, &who, &pool, input, key).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(lease)))
}

/// A lease, whatever the transport (REST, gRPC): checks, the client's idempotency scope, the
/// wait for a token. Returns whether an earlier request with the same key got it.
pub(crate) async fn lease(
    s: &AppState,
    who: &Principal,
    pool: &str,
    input: AcquireInput,
    idempotency_key: Option<&str>,
) -> Result<(bool, LeaseView), ApiError> {
    let pool = pool_name(pool)?;
    input.validate()?;
    if let Some(g) = &s.global {
        g.check_lease()?;
    }
    if !who.may_use_pipeline(input.pipeline.as_deref().unwrap_or("")) {
        return Err(ApiError::forbidden(match &input.pipeline {
            Some(_) => "this client token is not allowed on this pipeline",
            None => "this client token leases only through its pipelines: name one",
        }));
    }
    // The key is the client's own: scoped by its token's jti, so another client sending the
    // same key gets nothing of this one's lease.
    let idem = match idempotency_key {
        Some(k) => {
            check_label("Idempotency-Key", k, 128)?;
            format!("{}:{k}", who.jti)
        }
        None => String::new(),
    };
    let mut args = AcquireArgs {
        lease_id: new_lease_id(),
        worker: input.worker.clone().unwrap_or_default(),
        units: input.units.unwrap_or(1),
        costs: input.costs.clone(),
        ttl_ms: input.ttl_s.map(|t| t * 1000),
        min_ttl_ms: input.min_token_ttl_s.map(|t| t * 1000),
        session: input.session.clone().unwrap_or_default(),
        idempotency_key: idem,
        request_fp: input.fingerprint(),
        pipeline: input.pipeline.clone().unwrap_or_default(),
    };
    let deadline = Instant::now() + Duration::from_millis(input.wait_ms.unwrap_or(0));
    loop {
        match s.store.lease_token(pool, &args).await {
            Ok(g) => {
                metrics::counter!("tv_leases_granted_total", "pool" => pool.to_string())
                    .increment(1);
                let replayed = g.replayed;
                return Ok((replayed, lease_view(s, pool, g)?));
            }
            Err(e @ VaultError::PoolExhausted { .. }) if Instant::now() >= deadline => {
                metrics::counter!("tv_pool_exhausted_total", "pool" => pool.to_string())
                    .increment(1);
                return Err(e.into());
            }
            Err(VaultError::PoolExhausted { retry_after_ms }) => {
                let hint = Duration::from_millis(retry_after_ms.unwrap_or(u64::MAX).max(1));
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(WAIT_POLL.min(hint).min(left)).await;
                // A fresh id per attempt: an attempt that timed out on the client side may
                // still have landed, and must not be confused with this one.
                args.lease_id = new_lease_id();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Extend a live lease by the pool's lease TTL (or `ttl_s`), spending more quota when asked.
#[utoipa::path(
    post,
    path = "/pools/{pool}/leases/{lease}/renew",
    tag = "leases",
    params(crate::openapi::LeasePath),
    request_body = vault_core::model::RenewInput,
    responses(
        (status = 200, description = "the lease, extended", body = LeaseView),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 410, description = "`lease_gone`: expired, released or revoked", body = Problem),
        (status = 409, description = "`token_expiring`, `quota_exhausted`", body = Problem),
    )
)]
pub async fn renew(
    State(s): State<AppState>,
    Path((pool, lease)): Path<(String, String)>,
    Body(input): Body<RenewInput>,
) -> Result<Json<LeaseView>, ApiError> {
    Ok(Json(renew_lease(&s, &pool, &lease, input).await?))
}

/// Extend a live lease, whatever the transport.
pub(crate) async fn renew_lease(
    s: &AppState,
    pool: &str,
    lease: &str,
    input: RenewInput,
) -> Result<LeaseView, ApiError> {
    let pool = pool_name(pool)?;
    lease_id(lease)?;
    input.validate()?;
    let g = s
        .store
        .renew_lease(pool, lease, input.ttl_s.map(|t| t * 1000), input.units)
        .await?;
    lease_view(s, pool, g)
}

/// End a lease with the worker's report: the outcome (`ok`, `rate_limited`, `unauthorized`,
/// ...) decides what happens to the token.
#[utoipa::path(
    post,
    path = "/pools/{pool}/leases/{lease}/release",
    tag = "leases",
    params(crate::openapi::LeasePath),
    request_body = vault_core::model::Report,
    responses(
        (status = 200, description = "released; the report applied to the token", body = crate::answers::Released),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 410, description = "`lease_gone`: expired, released or revoked", body = Problem),
    )
)]
pub async fn release(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, lease)): Path<(String, String)>,
    Body(report): Body<Report>,
) -> Result<Json<crate::answers::Released>, ApiError> {
    Ok(Json(release_lease(&s, &who, &pool, &lease, &report).await?))
}

/// End a lease with the worker's report, whatever the transport.
pub(crate) async fn release_lease(
    s: &AppState,
    who: &Principal,
    pool: &str,
    lease: &str,
    report: &Report,
) -> Result<crate::answers::Released, ApiError> {
    let pool = pool_name(pool)?;
    lease_id(lease)?;
    report.validate()?;
    let r = s
        .store
        .release_lease(&who.into(), pool, lease, report)
        .await?;
    Ok(crate::answers::Released {
        lease_id: lease.to_string(),
        token_id: r.token_id,
        token_state: r.state,
        released: true,
    })
}

/// Report on a lease and lease another token in one step (after a 401 or 429, say).
#[utoipa::path(
    post,
    path = "/pools/{pool}/leases/{lease}/rotate",
    tag = "leases",
    params(crate::openapi::LeasePath),
    request_body = vault_core::model::Report,
    responses(
        (status = 201, description = "the report applied and a new lease on another token", body = LeaseView),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 410, description = "`lease_gone`: expired, released or revoked", body = Problem),
        (status = 503, description = "`pool_exhausted` (the report was still applied), `redis_unavailable` or `redis_busy`", body = Problem),
    )
)]
pub async fn rotate(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, lease)): Path<(String, String)>,
    Body(report): Body<Report>,
) -> Result<(StatusCode, Json<LeaseView>), ApiError> {
    let (_, next) = rotate_lease(&s, &who, &pool, &lease, &report).await?;
    Ok((StatusCode::CREATED, Json(next?)))
}

/// Report and lease another token in one step, whatever the transport: the released token,
/// and the new lease or why there is none (the report was applied either way).
pub(crate) async fn rotate_lease(
    s: &AppState,
    who: &Principal,
    pool: &str,
    lease: &str,
    report: &Report,
) -> Result<(vault_core::store::Released, Result<LeaseView, ApiError>), ApiError> {
    let pool = pool_name(pool)?;
    lease_id(lease)?;
    report.validate()?;
    let (released, next) = s
        .store
        .rotate_lease(&who.into(), pool, lease, report, &new_lease_id())
        .await?;
    let next = next
        .map_err(ApiError::from)
        .and_then(|g| lease_view(s, pool, g));
    Ok((released, next))
}
