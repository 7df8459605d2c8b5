//! Pipelines: a job's sized, time-bounded share of a pool.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vault_core::auth::{Principal, Scope};
use vault_core::model::{check_pipeline_name, PipelineDemand, PipelineInput, PipelineStatus};
use vault_core::ops::PipelinePut;

use super::pool_name;
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Path, Query};
use crate::AppState;

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Say what an assignment would get now, and assign nothing (admin).
    #[serde(default)]
    dry_run: bool,
}

/// The pool and pipeline of a path, checked.
fn names<'a>(pool: &'a str, name: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    let pool = pool_name(pool)?;
    check_pipeline_name(name)?;
    Ok((pool, name))
}

/// Create or resize a pipeline: a job's share of the pool, sized in tokens and bounded in
/// time. Leases that name it draw only on its tokens.
#[utoipa::path(
    put,
    path = "/pools/{pool}/pipelines/{name}",
    tag = "pipelines",
    params(crate::openapi::PipelinePath, PutQuery),
    request_body = PipelineInput,
    responses(
        (status = 201, description = "created: its tokens are assigned and it leases", body = PipelineStatus),
        (status = 200, description = "resized (grown or shrunk) and its deadline restarted; with `dry_run`, what an assignment would get", body = PipelineStatus),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 409, description = "`insufficient_capacity` (with `capacity`: how many it could have, how many are missing, when the next free up; nothing stays assigned), `conflict` (it is being assigned or ended, or the pool has 100 pipelines)", body = Problem),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, name)): Path<(String, String)>,
    Query(q): Query<PutQuery>,
    Body(input): Body<PipelineInput>,
) -> Result<Response, ApiError> {
    let (pool, name) = names(&pool, &name)?;
    input.validate()?;
    if q.dry_run && !who.has(Scope::Admin) {
        return Err(ApiError::forbidden("a dry run needs scope admin"));
    }
    Ok(
        match s
            .store
            .put_pipeline(&(&who).into(), pool, name, &input, q.dry_run)
            .await?
        {
            PipelinePut::DryRun(d) => match d.short {
                Some(short) if !input.allow_partial || short.could == 0 => {
                    return Err(vault_core::VaultError::InsufficientCapacity(short).into())
                }
                _ => (StatusCode::OK, Json(d)).into_response(),
            },
            PipelinePut::Done(created, st) => (
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                Json(*st),
            )
                .into_response(),
        },
    )
}

/// Every pipeline of a pool.
#[utoipa::path(
    get,
    path = "/pools/{pool}/pipelines",
    tag = "pipelines",
    params(crate::openapi::PoolPath),
    responses(
        (status = 200, description = "every pipeline of the pool", body = Vec<PipelineStatus>),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Vec<PipelineStatus>>, ApiError> {
    let pool = pool_name(&pool)?;
    let cfg = s.store.pool_config(pool).await?;
    Ok(Json(s.store.pipeline_status(pool, &cfg, &[]).await?))
}

/// One pipeline: its tokens, leases, deadline and state.
#[utoipa::path(
    get,
    path = "/pools/{pool}/pipelines/{name}",
    tag = "pipelines",
    params(crate::openapi::PipelinePath),
    responses(
        (status = 200, description = "the pipeline", body = PipelineStatus),
        (status = 404, description = "`pool_not_found`, `pipeline_not_found`", body = Problem),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let (pool, name) = names(&pool, &name)?;
    let cfg = s.store.pool_config(pool).await?;
    s.store
        .pipeline_status(pool, &cfg, &[name.to_string()])
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| {
            vault_core::VaultError::PipelineNotFound(format!("no pipeline {name} in this pool"))
                .into()
        })
}

use crate::answers::PipelineEnded;

/// End a pipeline: its tokens go back to the pool.
#[utoipa::path(
    delete,
    path = "/pools/{pool}/pipelines/{name}",
    tag = "pipelines",
    params(crate::openapi::PipelinePath),
    responses(
        (status = 200, description = "ended: its tokens are back in the pool", body = PipelineEnded),
        (status = 404, description = "`pool_not_found`, `pipeline_not_found`", body = Problem),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Json<PipelineEnded>, ApiError> {
    let (pool, name) = names(&pool, &name)?;
    let n = s.store.end_pipeline(&(&who).into(), pool, name).await?;
    Ok(Json(PipelineEnded {
        pipeline: name.to_string(),
        tokens_returned: n,
    }))
}
