//! Refresh jobs for external login workers (the headed-browser / CAPTCHA fleet): claim a job,
//! log in through the token's binding, then complete it with the new secret or fail it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vault_core::crypto::Secret;
use vault_core::model::check_label;
use vault_core::refresh::{RefreshResult, RefreshSecrets, RetryPolicy};
use vault_core::store::RefreshedToken;
use vault_core::time::TimeInput;

use super::pool_name;
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Path};
use crate::AppState;
use axum::Extension;
use vault_core::auth::Principal;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimInput {
    /// How long the job stays hidden from other workers, seconds (1-3600; default 300: a
    /// login takes time).
    #[schema(minimum = 1, maximum = 3600)]
    visibility_s: Option<u64>,
}

/// Claim the next refresh job (for external login workers): the token to log in again, with
/// its current secret and the pool's refresh settings, hidden from other claimers for
/// `visibility_s`.
#[utoipa::path(
    post,
    path = "/pools/{pool}/refresh-jobs/claim",
    tag = "refresh-jobs",
    params(crate::openapi::PoolPath),
    request_body = ClaimInput,
    responses(
        (status = 200, description = "a job, hidden from others for `visibility_s`", body = crate::answers::ClaimedJob),
        (status = 204, description = "no job waiting"),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn claim(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(input): Body<ClaimInput>,
) -> Result<Response, ApiError> {
    let pool = pool_name(&pool)?;
    let vis = input.visibility_s.unwrap_or(300);
    if !(1..=3600).contains(&vis) {
        return Err(ApiError::invalid("visibility_s must be between 1 and 3600"));
    }
    let Some(job) = s
        .store
        .claim_refresh_job(pool, true, vis * 1000, None)
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    // The login worker acts through the token's proxy: it gets the URL in full, like a lease.
    let proxy = job.proxy_url(&s.cipher, pool)?;
    let body = crate::answers::ClaimedJob {
        labels: job.labels()?,
        binding: vault_core::model::Binding {
            proxy: opt(&proxy),
            fingerprint: opt(&job.binding_fp),
        },
        attempts: job.attempts,
        visible_until: vault_core::time::rfc3339(job.visible_at),
        job_id: job.job_id,
        token_id: job.token_id,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteInput {
    /// The new secret (1-16384 printable ASCII characters: it travels in an HTTP header),
    /// stored encrypted.
    #[schema(value_type = String, format = Password, required = true, min_length = 1, max_length = 16384, pattern = "^[ -~]+$")]
    secret: Option<Secret>,
    /// When the new secret expires: RFC 3339 or unix milliseconds (default: read from a JWT's
    /// `exp`, else never).
    expires_at: Option<TimeInput>,
    /// A new refresh token, when the login gave one (replaces the old one).
    #[schema(value_type = Option<String>, format = Password, min_length = 1, max_length = 16384, pattern = "^[ -~]+$")]
    refresh_token: Option<Secret>,
}

/// Finish a claimed job with the new secret: stored encrypted, the token back in rotation.
#[utoipa::path(
    post,
    path = "/pools/{pool}/refresh-jobs/{job}/complete",
    tag = "refresh-jobs",
    params(crate::openapi::JobPath),
    request_body = CompleteInput,
    responses(
        (status = 200, description = "the new secret stored: `{\"job_id\",\"token_id\",\"generation\",\"state\",\"error\"}`; `error` null = back in rotation, else why not (a secret living less than the pool's `min_token_ttl_s` is a failed attempt, retried later or quarantined)", body = crate::answers::JobResult),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 410, description = "`job_gone`", body = Problem),
        (status = 409, description = "`stale_job`: the token changed since the claim", body = Problem),
    )
)]
pub async fn complete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, job)): Path<(String, String)>,
    Body(input): Body<CompleteInput>,
) -> Result<Json<crate::answers::JobResult>, ApiError> {
    let pool = pool_name(&pool)?;
    check_label("job id", &job, 64)?;
    let secret = input
        .secret
        .ok_or_else(|| ApiError::invalid("secret is required"))?;
    vault_core::model::check_secret(secret.expose())?;
    if let Some(rt) = &input.refresh_token {
        vault_core::model::check_secret(rt.expose())?;
    }
    // The token id is only known to the claim; sealing needs it, so look the job up first.
    let (token_id, attempts) = s.store.job_token(pool, &job).await?;
    let rotated = input.refresh_token.map(|rt| RefreshSecrets {
        refresh_token: Some(rt.expose().to_string()),
        client_secret: None,
    });
    let sealed = RefreshedToken::seal(
        &s.cipher,
        pool,
        &token_id,
        &secret,
        input.expires_at.map(|t| t.0),
        rotated.as_ref(),
    )?;
    let r = s
        .store
        .complete_refresh_job(
            &(&who).into(),
            pool,
            &job,
            attempts,
            &sealed,
            &RetryPolicy::EXTERNAL,
        )
        .await?;
    tracing::info!(pool, token_id = %token_id, fingerprint = %secret.fingerprint(), generation = ?r.generation, outcome = r.outcome(), "refresh job completed by an external worker");
    Ok(Json(answer(&job, &r)))
}

/// What a completed or failed job did: the token's state, and why it is not back in rotation.
fn answer(job: &str, r: &RefreshResult) -> crate::answers::JobResult {
    crate::answers::JobResult {
        job_id: job.to_string(),
        token_id: r.token_id.clone(),
        generation: r.generation,
        state: r.state.clone(),
        error: r.error.clone(),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    /// What went wrong, at most 512 characters (default "external login failed").
    #[schema(max_length = 512)]
    error: Option<String>,
    /// Retry after this long, seconds (at most 86400); absent = permanent (the token is
    /// quarantined).
    #[schema(minimum = 0, maximum = 86_400)]
    retry_after_s: Option<u64>,
}

/// Report that a claimed job failed: retried later with backoff, or the token quarantined
/// when `permanent`.
#[utoipa::path(
    post,
    path = "/pools/{pool}/refresh-jobs/{job}/fail",
    tag = "refresh-jobs",
    params(crate::openapi::JobPath),
    request_body = FailInput,
    responses(
        (status = 200, description = "retried later, or quarantined when permanent", body = crate::answers::JobResult),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 410, description = "`job_gone`", body = Problem),
        (status = 409, description = "`stale_job`", body = Problem),
    )
)]
pub async fn fail(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, job)): Path<(String, String)>,
    Body(input): Body<FailInput>,
) -> Result<Json<crate::answers::JobResult>, ApiError> {
    let pool = pool_name(&pool)?;
    check_label("job id", &job, 64)?;
    let error = input
        .error
        .unwrap_or_else(|| "external login failed".into());
    if error.chars().count() > 512 {
        return Err(ApiError::invalid("error is longer than 512 characters"));
    }
    if input.retry_after_s.is_some_and(|r| r > 86_400) {
        return Err(ApiError::invalid("retry_after_s must be at most 86400"));
    }
    let r = s
        .store
        .fail_refresh_job(
            &(&who).into(),
            pool,
            &job,
            &error,
            input.retry_after_s.map(|r| r * 1000),
            RetryPolicy::EXTERNAL.max_attempts,
        )
        .await?;
    Ok(Json(answer(&job, &r)))
}
