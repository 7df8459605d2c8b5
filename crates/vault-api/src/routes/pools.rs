//! Pools: config, listing, status, freeze.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use vault_core::auth::Principal;
use vault_core::model::{PoolConfigInput, PoolStatus, PoolView};

use super::pool_name;
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Path, Query};
use crate::AppState;

/// Create or replace a pool's configuration (quota, concurrency, expiry margin, refresh,
/// binding, probe). Tokens and leases are kept; the new rules apply to the next lease.
#[utoipa::path(
    put,
    path = "/pools/{pool}",
    tag = "pools",
    params(crate::openapi::PoolPath),
    request_body = vault_core::model::PoolConfigInput,
    responses(
        (status = 201, description = "created", body = vault_core::model::PoolView),
        (status = 200, description = "updated", body = vault_core::model::PoolView),
    )
)]
pub async fn upsert(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    Body(input): Body<PoolConfigInput>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    let pool = pool_name(&pool)?;
    let cfg = input.validate(&s.cipher, pool)?;
    let created = s.store.upsert_pool(&(&who).into(), pool, &cfg).await?;
    let view = s.store.pool_get(pool).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(view),
    ))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PoolListQuery {
    /// Pools per page, 1-1000 (default 100); a page holds about that many (SSCAN steps).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<u64>,
}

use crate::answers::PoolPage;

/// The pools the client token may see, a page at a time.
#[utoipa::path(
    get,
    path = "/pools",
    tag = "pools",
    params(PoolListQuery),
    responses(
        (status = 200, description = "a page of the pools the client may see, with token counts by state", body = PoolPage),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    crate::extract::Query(q): crate::extract::Query<PoolListQuery>,
) -> Result<Json<PoolPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let (pools, next) = s
        .store
        .pool_page(who.pools.as_deref(), limit, q.cursor.unwrap_or(0))
        .await?;
    Ok(Json(PoolPage {
        pools,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// A pool's configuration (secrets in it, such as a client secret, are never shown).
#[utoipa::path(
    get,
    path = "/pools/{pool}",
    tag = "pools",
    params(crate::openapi::PoolPath),
    responses(
        (status = 200, description = "the pool's configuration", body = vault_core::model::PoolView),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.store.pool_get(pool_name(&pool)?).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete it even while it holds tokens (their leases end). Default false.
    #[serde(default)]
    force: bool,
}

/// Delete a pool with every key it has. Refused while it holds tokens unless `force=true`,
/// which ends their leases too.
#[utoipa::path(
    delete,
    path = "/pools/{pool}",
    tag = "pools",
    params(crate::openapi::PoolPath, DeleteQuery),
    responses(
        (status = 204, description = "deleted with every key"),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 409, description = "`conflict`: the pool holds tokens (use `force=true`)", body = Problem),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    s.store
        .delete_pool(&(&who).into(), pool_name(&pool)?, q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A pool's state at a glance: tokens by state, leases, quota use, sizing, rotation and
/// migration progress, the janitor's last pass.
#[utoipa::path(
    get,
    path = "/pools/{pool}/status",
    tag = "pools",
    params(crate::openapi::PoolPath),
    responses(
        (status = 200, description = "counts by state, leases, ratios, rotation progress", body = vault_core::model::PoolStatus),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn status(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<PoolStatus>, ApiError> {
    Ok(Json(status_of(&s, &pool).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CalendarQuery {
    /// Days covered from today (UTC), 1-366. Default 30.
    #[param(minimum = 1, maximum = 366)]
    days: Option<u64>,
}

/// The pool's rotation calendar: with a scheduled `rotation`, how many tokens reach their
/// maximum age on each day, how many are past it and waiting their turn, and how many are
/// being rotated now.
#[utoipa::path(
    get,
    path = "/pools/{pool}/rotations",
    tag = "pools",
    params(crate::openapi::PoolPath, CalendarQuery),
    responses(
        (status = 200, description = "what is due when (`schedule` null: the pool rotates nothing on schedule)", body = vault_core::model::RotationCalendar),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn rotations(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    crate::extract::Query(q): crate::extract::Query<CalendarQuery>,
) -> Result<Json<vault_core::model::RotationCalendar>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=vault_core::model::MAX_CALENDAR_DAYS).contains(&days) {
        return Err(ApiError::invalid("days must be between 1 and 366"));
    }
    Ok(Json(
        s.store.rotation_calendar(pool_name(&pool)?, days).await?,
    ))
}

/// A pool's status, whatever the transport.
pub(crate) async fn status_of(s: &AppState, pool: &str) -> Result<PoolStatus, ApiError> {
    let mut st = s.store.pool_status(pool_name(pool)?).await?;
    st.global = s.global.as_ref().map(|g| g.report());
    Ok(st)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeInput {
    /// End the live leases too (their workers are told), instead of letting them run out.
    /// Default false.
    #[serde(default)]
    revoke_leases: bool,
    /// Why, for the audit trail and the `pool.frozen` event (at most 1024 characters, no
    /// control characters).
    #[schema(value_type = Option<vault_core::model::Reason>)]
    reason: Option<String>,
    /// `region` (default): this region's pool, now. `global`: the pool of this name in every
    /// region (needs the global plane), through the global log.
    #[serde(default)]
    scope: ActionScope,
}

pub use crate::answers::ActionScope;

/// The global plane, for an action asked with `"scope": "global"`.
fn global_plane(s: &AppState) -> Result<&vault_core::global::Global, ApiError> {
    s.store.global().ok_or_else(|| {
        // A well-formed request this deployment cannot carry out: 422, not 400.
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "global_not_configured",
            "\"scope\": \"global\" needs the global control plane (TV_GLOBAL_REDIS_URL), which this vault is not configured with",
        )
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnfreezeInput {
    /// `region` (default) or `global`: lift a global freeze in every region.
    #[serde(default)]
    scope: ActionScope,
}

/// The kill switch: new leases answer 423 `pool_frozen` at once on every replica (live leases
/// run out unless revoked). `"scope":"global"` freezes the pool of that name in every region.
#[utoipa::path(
    post,
    path = "/pools/{pool}/freeze",
    tag = "pools",
    params(crate::openapi::PoolPath),
    request_body = FreezeInput,
    responses(
        (status = 200, description = "frozen: new leases answer 423", body = crate::answers::Frozen),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 422, description = "`global_not_configured`: `\"scope\":\"global\"` on a vault without the global plane", body = Problem),
    )
)]
pub async fn freeze(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    Body(input): Body<FreezeInput>,
) -> Result<Json<crate::answers::Frozen>, ApiError> {
    let pool = pool_name(&pool)?;
    let reason = input.reason.unwrap_or_default();
    vault_core::model::check_reason(&reason)?;
    if input.scope == ActionScope::Global {
        let action = vault_core::global::GlobalAction::PoolFreeze {
            pool: pool.to_string(),
            revoke_leases: input.revoke_leases,
        };
        let written = global_plane(&s)?
            .append(action, &reason, &(&who).into())
            .await?;
        return Ok(Json(crate::answers::Frozen {
            pool: pool.to_string(),
            frozen: true,
            leases_ended: None,
            global: Some(written),
        }));
    }
    let ended = s
        .store
        .freeze_pool(&(&who).into(), pool, input.revoke_leases, &reason)
        .await?;
    let ended = ended
        .into_iter()
        .map(|e| crate::answers::EndedLease {
            lease_id: e.lease_id,
            token_id: e.token_id,
        })
        .collect();
    Ok(Json(crate::answers::Frozen {
        pool: pool.to_string(),
        frozen: true,
        leases_ended: Some(ended),
        global: None,
    }))
}

/// Lift the kill switch: the pool leases again (a global freeze is lifted everywhere).
#[utoipa::path(
    post,
    path = "/pools/{pool}/unfreeze",
    tag = "pools",
    params(crate::openapi::PoolPath),
    request_body = UnfreezeInput,
    responses(
        (status = 200, description = "leasing again", body = crate::answers::Frozen),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 422, description = "`global_not_configured`: `\"scope\":\"global\"` on a vault without the global plane", body = Problem),
    )
)]
pub async fn unfreeze(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    Body(input): Body<UnfreezeInput>,
) -> Result<Json<crate::answers::Frozen>, ApiError> {
    let pool = pool_name(&pool)?;
    let global = if input.scope == ActionScope::Global {
        let action = vault_core::global::GlobalAction::PoolUnfreeze {
            pool: pool.to_string(),
        };
        Some(global_plane(&s)?.append(action, "", &(&who).into()).await?)
    } else {
        s.store.unfreeze_pool(&(&who).into(), pool).await?;
        None
    };
    Ok(Json(crate::answers::Frozen {
        pool: pool.to_string(),
        frozen: false,
        leases_ended: None,
        global,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// How long deprecated tokens have to be refreshed before they are revoked, seconds
    /// (1 s to 30 days).
    #[schema(required = true, nullable = false, minimum = 1, maximum = 2_592_000)]
    sunset_s: Option<u64>,
    /// Why, for the audit trail (default "emergency rotation"; at most 1024 characters, no
    /// control characters).
    #[schema(value_type = Option<vault_core::model::Reason>)]
    reason: Option<String>,
}

/// Emergency rotation: every current token deprecated, refreshed in the background, revoked at
/// the sunset unless refreshed by then.
#[utoipa::path(
    post,
    path = "/pools/{pool}/rotate",
    tag = "pools",
    params(crate::openapi::PoolPath),
    request_body = RotateInput,
    responses(
        (status = 202, description = "rotation started: tokens deprecated, refreshes queued", body = crate::answers::RotationStarted),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 409, description = "`conflict`: a rotation is already running", body = Problem),
    )
)]
pub async fn rotate(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    Body(input): Body<RotateInput>,
) -> Result<(StatusCode, Json<crate::answers::RotationStarted>), ApiError> {
    let pool = pool_name(&pool)?;
    let sunset_s = input
        .sunset_s
        .ok_or_else(|| ApiError::invalid("sunset_s is required"))?;
    if !(1..=30 * 86_400).contains(&sunset_s) {
        return Err(ApiError::invalid("sunset_s must be between 1 and 2592000"));
    }
    let reason = input.reason.unwrap_or_else(|| "emergency rotation".into());
    vault_core::model::check_reason(&reason)?;
    let (rotation_id, tokens, sunset) = s
        .store
        .rotate_pool(&(&who).into(), pool, sunset_s, &reason)
        .await?;
    let body = crate::answers::RotationStarted {
        pool: pool.to_string(),
        rotation_id,
        tokens,
        sunset_at: vault_core::time::rfc3339(sunset),
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Cancel a running rotation: deprecated tokens go back in rotation, queued refreshes stay.
#[utoipa::path(
    post,
    path = "/pools/{pool}/rotate/cancel",
    tag = "pools",
    params(crate::openapi::PoolPath),
    responses(
        (status = 200, description = "rolled back: deprecated tokens current again", body = crate::answers::RotationCancelled),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 409, description = "`conflict`: no rotation is running", body = Problem),
    )
)]
pub async fn rotate_cancel(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
) -> Result<Json<crate::answers::RotationCancelled>, ApiError> {
    let pool = pool_name(&pool)?;
    let restored = s.store.cancel_rotation(&(&who).into(), pool).await?;
    Ok(Json(crate::answers::RotationCancelled {
        pool: pool.to_string(),
        restored,
    }))
}
