//! Tokens: deposit (encrypted at once), metadata, lifecycle actions. No answer here ever
//! carries a secret, only its fingerprint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use vault_core::model::{check_token_id, TokenInput, TokenMeta, MAX_DEPOSIT, VIEW_STATES};
use vault_core::time::TimeInput;

use super::pool_name;
use crate::error::{ApiError, Problem};
use crate::extract::{Body, JsonBytes, Path, Query};
use crate::AppState;
use axum::Extension;
use vault_core::auth::Principal;

/// A batch deposit: `{"tokens":[...]}` and nothing else.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DepositBatch)]
pub(crate) struct Batch {
    /// The tokens (1-1000), deposited all or nothing.
    #[schema(min_items = 1, max_items = 1000)]
    tokens: Vec<TokenInput>,
}

/// `{"tokens":[...]}` or one token object, deserialized from the bytes themselves (not through
/// a `Value`), so a duplicate key is refused here as on every other route.
fn parse_deposit(body: &JsonBytes) -> Result<Vec<TokenInput>, ApiError> {
    if body.is_blank() {
        return Err(ApiError::invalid(
            "the body must be a token object or {\"tokens\": [...]}",
        ));
    }
    let shape: Value = body.parse("invalid token")?;
    let tokens = if shape.as_object().is_some_and(|o| o.contains_key("tokens")) {
        body.parse::<Batch>("invalid batch")?.tokens
    } else {
        vec![body.parse::<TokenInput>("invalid token")?]
    };
    if tokens.is_empty() || tokens.len() > MAX_DEPOSIT {
        return Err(ApiError::invalid(format!(
            "deposit 1-{MAX_DEPOSIT} tokens per request"
        )));
    }
    Ok(tokens)
}

/// Deposit one token, or many under `tokens`: encrypted at rest, all or nothing. A secret
/// already revoked globally is refused.
#[utoipa::path(
    post,
    path = "/pools/{pool}/tokens",
    tag = "tokens",
    params(crate::openapi::PoolPath),
    request_body = DepositBody,
    responses(
        (status = 201, description = "deposited, all or nothing; tokens already in with the same secret are left as they were (`unchanged`)", body = vault_core::model::Deposited),
        (status = 404, description = "`pool_not_found`", body = Problem),
        (status = 409, description = "`conflict`: a token with this id exists, or a token's `refresh` leaves out `kind` and the pool has no refresh settings to take it from", body = Problem),
    )
)]
pub async fn deposit(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(pool): Path<String>,
    body: JsonBytes,
) -> Result<(StatusCode, Json<vault_core::model::Deposited>), ApiError> {
    let pool = pool_name(&pool)?;
    let tokens = parse_deposit(&body)?;
    // Tokens without refresh settings of their own take the pool's.
    let pool_refresh = s.store.pool_config(pool).await?.refresh;
    let mut sealed = Vec::with_capacity(tokens.len());
    for t in &tokens {
        sealed.push(t.seal(&s.cipher, pool, pool_refresh.as_ref())?);
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = sealed.iter().find(|t| !seen.insert(t.id.as_str())) {
        return Err(ApiError::invalid(format!(
            "token id {} appears twice in this deposit",
            dup.id
        )));
    }
    let done = s
        .store
        .deposit_tokens(&(&who).into(), pool, &sealed)
        .await?;
    Ok((StatusCode::CREATED, Json(done)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tokens in this view state: `active`, `leased`, `cooling`, `refreshing`,
    /// `quarantined`, `deprecated`, `revoked` or `expired`. Default: all.
    #[param(
        pattern = "^(active|leased|cooling|refreshing|quarantined|deprecated|revoked|expired)$"
    )]
    state: Option<String>,
    /// Tokens per page, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (default 0: the start).
    cursor: Option<u64>,
}

use crate::answers::TokenPage;

/// A page of a pool's token metadata, optionally of one state. Secrets are never listed.
#[utoipa::path(
    get,
    path = "/pools/{pool}/tokens",
    tag = "tokens",
    params(crate::openapi::PoolPath, ListQuery),
    responses(
        (status = 200, description = "metadata only, never a secret", body = TokenPage),
        (status = 404, description = "`pool_not_found`", body = Problem),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TokenPage>, ApiError> {
    let pool = pool_name(&pool)?;
    if let Some(st) = &q.state {
        if !VIEW_STATES.contains(&st.as_str()) {
            return Err(ApiError::invalid(format!(
                "state must be one of {}",
                VIEW_STATES.join(", ")
            )));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let (tokens, next) = s
        .store
        .token_list(pool, q.state.as_deref(), limit, q.cursor.unwrap_or(0))
        .await?;
    Ok(Json(TokenPage {
        tokens,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

fn ids(pool: &str, id: &str) -> Result<(), ApiError> {
    pool_name(pool)?;
    check_token_id(id)?;
    Ok(())
}

/// One token's metadata: state, expiry, labels, quota use, leases, strikes, fingerprint.
#[utoipa::path(
    get,
    path = "/pools/{pool}/tokens/{id}",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    responses(
        (status = 200, description = "metadata and the secret's `sha256:` fingerprint", body = vault_core::model::TokenMeta),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Path((pool, id)): Path<(String, String)>,
) -> Result<Json<TokenMeta>, ApiError> {
    Ok(Json(meta_of(&s, &pool, &id).await?))
}

/// A token's metadata, whatever the transport.
pub(crate) async fn meta_of(s: &AppState, pool: &str, id: &str) -> Result<TokenMeta, ApiError> {
    ids(pool, id)?;
    Ok(s.store.token_get(pool, id).await?)
}

/// Delete a token: its leases end and it is gone from every index.
#[utoipa::path(
    delete,
    path = "/pools/{pool}/tokens/{id}",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    responses(
        (status = 204, description = "deleted; its leases end"),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ids(&pool, &id)?;
    s.store.delete_token(&(&who).into(), &pool, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonInput {
    /// Why, for the audit trail and the `token.revoked` event (default "revoked"; at most
    /// 1024 characters, no control characters).
    #[schema(value_type = Option<vault_core::model::Reason>)]
    reason: Option<String>,
}

/// Revoke a token in this pool: never leased again, its leases end, workers are told
/// (`token.revoked`).
#[utoipa::path(
    post,
    path = "/pools/{pool}/tokens/{id}/revoke",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    request_body = ReasonInput,
    responses(
        (status = 200, description = "revoked at once; its leases end; `token.revoked` published", body = crate::answers::TokenState),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
    )
)]
pub async fn revoke(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, id)): Path<(String, String)>,
    Body(input): Body<ReasonInput>,
) -> Result<Json<crate::answers::TokenState>, ApiError> {
    ids(&pool, &id)?;
    let reason = input.reason.unwrap_or_else(|| "revoked".into());
    vault_core::model::check_reason(&reason)?;
    let ended = s
        .store
        .revoke_token(&(&who).into(), &pool, &id, &reason)
        .await?;
    Ok(Json(crate::answers::TokenState {
        token_id: id,
        state: "revoked".into(),
        leases_ended: Some(ended),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecateInput {
    /// RFC 3339 or unix milliseconds.
    sunset_at: Option<TimeInput>,
}

/// Deprecate a token: leased only when no current token is eligible.
#[utoipa::path(
    post,
    path = "/pools/{pool}/tokens/{id}/deprecate",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    request_body = DeprecateInput,
    responses(
        (status = 200, description = "deprecated: leased only when nothing else is", body = crate::answers::TokenState),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
    )
)]
pub async fn deprecate(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, id)): Path<(String, String)>,
    Body(input): Body<DeprecateInput>,
) -> Result<Json<crate::answers::TokenState>, ApiError> {
    ids(&pool, &id)?;
    let state = s
        .store
        .deprecate_token(&(&who).into(), &pool, &id, input.sunset_at.map(|t| t.0))
        .await?;
    Ok(Json(crate::answers::TokenState {
        token_id: id,
        state,
        leases_ended: None,
    }))
}

/// Put a quarantined or cooling token back in rotation.
#[utoipa::path(
    post,
    path = "/pools/{pool}/tokens/{id}/restore",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    responses(
        (status = 200, description = "back in rotation: a quarantined token (strikes cleared) or a cooling one (cooldown ended, fresh quota window)", body = crate::answers::TokenState),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
        (status = 409, description = "`conflict`: neither quarantined nor cooling", body = Problem),
    )
)]
pub async fn restore(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, id)): Path<(String, String)>,
) -> Result<Json<crate::answers::TokenState>, ApiError> {
    ids(&pool, &id)?;
    let state = s.store.restore_token(&(&who).into(), &pool, &id).await?;
    Ok(Json(crate::answers::TokenState {
        token_id: id,
        state,
        leases_ended: None,
    }))
}

/// Queue a refresh now (OAuth2 grant or an external login job), as a 401 would.
#[utoipa::path(
    post,
    path = "/pools/{pool}/tokens/{id}/refresh",
    tag = "tokens",
    params(crate::openapi::TokenPath),
    responses(
        (status = 202, description = "refresh queued (at most once at a time)", body = crate::answers::TokenState),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
        (status = 409, description = "`conflict`: the token has no refresh method or cannot be refreshed now", body = Problem),
    )
)]
pub async fn refresh(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((pool, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<crate::answers::TokenState>), ApiError> {
    ids(&pool, &id)?;
    let state = s.store.request_refresh(&(&who).into(), &pool, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::answers::TokenState {
            token_id: id,
            state,
            leases_ended: None,
        }),
    ))
}

/// A deposit: one token object, or many under `tokens` (at most 1000).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the body; the handler parses it by hand for clearer errors
pub(crate) enum DepositBody {
    One(Box<vault_core::model::TokenInput>),
    Many(Batch),
}
