//! The vault's own client tokens: mint, revoke, introspect (RFC 7662), JWKS.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::auth::{Principal, Scope};
use vault_core::model::{check_label, check_pool_name};
use vault_core::time::rfc3339;

use crate::error::ApiError;
use crate::extract::Body;
use crate::AppState;
use vault_core::ops::Actor;

/// The public keys that verify the vault's client tokens (RFC 7517), for services that check
/// them themselves.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "clients",
    responses(
        (status = 200, description = "the public keys that verify client tokens, each with its `kid`", body = vault_core::auth::Jwks),
    ),
    security(())
)]
pub async fn jwks(State(s): State<AppState>) -> Json<vault_core::auth::Jwks> {
    Json(s.keys.jwks())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintInput {
    /// Who the token is for (1-128 printable ASCII characters): its `sub`, the actor in the
    /// audit trail.
    #[schema(required = true, value_type = vault_core::model::Label)]
    sub: Option<String>,
    /// What it may do (at least one).
    #[schema(required = true, min_items = 1, value_type = Vec<vault_core::auth::Scope>)]
    scopes: Option<Vec<String>>,
    /// Limit the token to these pools; absent: every pool.
    #[schema(value_type = Option<Vec<vault_core::model::Name>>)]
    pools: Option<Vec<String>>,
    /// Limit the token to leasing through these pipelines (and creating, resizing, ending
    /// them), at most 100; absent: not limited.
    #[schema(value_type = Option<Vec<vault_core::model::Name>>, max_items = 100)]
    pipelines: Option<Vec<String>>,
    /// Its lifetime, seconds (default 3600; at most the vault's
    /// `TV_CLIENT_TOKEN_MAX_TTL_S`, 30 days unless set).
    #[schema(minimum = 1, maximum = 2_592_000)]
    ttl_s: Option<i64>,
}

/// Mint a client token (a signed JWT) with scopes, pools and a lifetime. It is shown once.
#[utoipa::path(
    post,
    path = "/clients",
    tag = "clients",
    request_body = MintInput,
    responses(
        (status = 201, description = "the token, shown once", body = crate::answers::MintedToken),
    )
)]
pub async fn mint(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(input): Body<MintInput>,
) -> Result<(StatusCode, Json<crate::answers::MintedToken>), ApiError> {
    let sub = input
        .sub
        .ok_or_else(|| ApiError::invalid("sub is required"))?;
    check_label("sub", &sub, 128)?;
    let names = input
        .scopes
        .ok_or_else(|| ApiError::invalid("scopes is required"))?;
    let mut scopes = vec![];
    for n in &names {
        scopes.push(Scope::parse(n).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown scope {n}: use lease, deposit, admin, audit"
            ))
        })?);
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes must name at least one scope"));
    }
    if let Some(pools) = &input.pools {
        for p in pools {
            check_pool_name(p)?;
        }
    }
    if let Some(pipelines) = &input.pipelines {
        if pipelines.len() > 100 {
            return Err(ApiError::invalid("pipelines lists at most 100 names"));
        }
        for p in pipelines {
            vault_core::model::check_pipeline_name(p)?;
        }
    }
    if who.pipelines.is_some()
        && !input
            .pipelines
            .as_ref()
            .is_some_and(|ps| ps.iter().all(|p| who.may_use_pipeline(p)))
    {
        return Err(ApiError::forbidden(
            "a pipeline-limited client can only mint tokens for its own pipelines",
        ));
    }
    // A pool-limited admin cannot mint a token wider than its own.
    if who.pools.is_some() {
        let inside = input
            .pools
            .as_ref()
            .is_some_and(|ps| ps.iter().all(|p| who.may_use_pool(p)));
        if !inside {
            return Err(ApiError::forbidden(
                "a pool-limited client can only mint tokens for its own pools",
            ));
        }
    }
    let ttl = input.ttl_s.unwrap_or(3600);
    let now = s.store.now_ms().await? / 1000;
    let (token, jti, exp) = s
        .keys
        .mint_limited(
            &sub,
            &scopes,
            input.pools.clone(),
            input.pipelines.clone(),
            ttl,
            now,
        )
        .map_err(ApiError::invalid)?;
    let detail = format!("sub={sub} scopes={} jti={jti}", names.join(","));
    s.store
        .record_minted_client(
            &Actor::from(&who),
            &jti,
            input.pools.as_deref(),
            exp - now,
            detail,
        )
        .await?;
    tracing::info!(actor = %who.sub, sub = %sub, jti = %jti, scopes = ?names, "client token minted");
    Ok((
        StatusCode::CREATED,
        Json(crate::answers::MintedToken {
            token,
            jti,
            expires_at: rfc3339(exp * 1000),
        }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeInput {
    /// The client token's id (its `jti`, as minting answered it).
    #[schema(required = true, value_type = vault_core::model::Label)]
    jti: Option<String>,
}

/// Revoke a client token by its `jti`: refused by every replica (and every region, with the
/// global plane) within a second.
#[utoipa::path(
    post,
    path = "/clients/revoke",
    tag = "clients",
    request_body = RevokeInput,
    responses(
        (status = 200, description = "refused by every replica within 1 s", body = crate::answers::ClientRevoked),
        (status = 403, description = "`forbidden`: a pool-limited admin revoking a token outside its pools", body = crate::error::Problem),
    )
)]
pub async fn revoke(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(input): Body<RevokeInput>,
) -> Result<Json<crate::answers::ClientRevoked>, ApiError> {
    let jti = input
        .jti
        .ok_or_else(|| ApiError::invalid("jti is required"))?;
    check_label("jti", &jti, 128)?;
    // A pool-limited admin may revoke only tokens minted here for a subset of its pools.
    if let Some(own) = &who.pools {
        let inside = match s.store.client_pools(&jti).await? {
            Some(Some(pools)) => pools.iter().all(|p| own.contains(p)),
            _ => false,
        };
        if !inside {
            return Err(ApiError::forbidden(
                "a pool-limited client may revoke only client tokens limited to its own pools",
            ));
        }
    }
    // Kept for the longest lifetime a client token may have: past that it is expired anyway.
    let until = s.store.now_ms().await? / 1000 + s.keys.max_ttl_s;
    let actor = Actor::from(&who);
    // Here first, at once; then everywhere (with the global plane), which this region's
    // follower applies again as a no-op.
    s.store.revoke_client_token(&actor, &jti, until).await?;
    s.revocations.insert(&jti, until);
    let global = match s.store.global() {
        Some(g) => {
            let action = vault_core::global::GlobalAction::ClientRevoke {
                jti: jti.clone(),
                until_s: until,
            };
            Some(g.append(action, "client token revoked", &actor).await?)
        }
        None => None,
    };
    Ok(Json(crate::answers::ClientRevoked {
        jti,
        revoked: true,
        global,
    }))
}

/// RFC 7662: `{"token": ...}` as JSON or `token=...` as a form.
#[utoipa::path(
    post,
    path = "/introspect",
    tag = "clients",
    request_body = IntrospectInput,
    responses(
        (status = 200, description = "RFC 7662: `{\"active\":false}` or the token's claims", body = crate::answers::Introspection),
    )
)]
pub async fn introspect(
    State(s): State<AppState>,
    crate::extract::RawBody(body): crate::extract::RawBody,
) -> Result<Json<crate::answers::Introspection>, ApiError> {
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(String::from))
        .or_else(|| {
            serde_json::from_value::<Value>(json!(form_urlencoded(&body)))
                .ok()
                .and_then(|v| v.get("token").and_then(Value::as_str).map(String::from))
        })
        .ok_or_else(|| {
            ApiError::invalid("send the token to inspect as {\"token\": ...} or token=...")
        })?;
    Ok(Json(match crate::auth::authenticate(&s, &token) {
        Ok(p) => crate::answers::Introspection {
            active: true,
            scope: Some(p.scope_string()),
            sub: Some(p.sub),
            exp: Some(p.exp),
            iat: Some(p.iat),
            jti: Some(p.jti),
            iss: Some(s.keys.issuer.clone()),
            aud: Some(s.keys.audience.clone()),
            pools: p.pools,
            token_type: Some("Bearer".into()),
        },
        Err(_) => crate::answers::Introspection::default(),
    }))
}

fn form_urlencoded(body: &[u8]) -> serde_json::Map<String, Value> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.replace('+', " "))))
        .collect()
}

/// `POST /v1/introspect` body: JSON, or a form (`token=...`) as RFC 7662 has it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; the handler accepts both encodings
pub(crate) struct IntrospectInput {
    /// The client token to look at.
    token: String,
}
