//! `GET /v1/audit?pool=&since=&after=&limit=&newest=`: the audit trail (scope `audit`).

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;
use vault_core::auth::Principal;
use vault_core::time::TimeInput;

use super::pool_name;
use crate::error::ApiError;
use crate::extract::Query;
use crate::AppState;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The pool's trail; without it, the vault-wide one (client tokens, pool deletions).
    #[param(value_type = Option<vault_core::model::Name>)]
    pool: Option<String>,
    /// From this time: RFC 3339 (from 1970) or unix milliseconds.
    #[param(value_type = Option<vault_core::time::TimeInput>)]
    since: Option<String>,
    /// After this entry id (the `next` of the previous page), `<ms>-<seq>`.
    #[param(pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    after: Option<String>,
    /// At most this many entries (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The latest `limit` entries (of those from `since` or `after`) instead of the first ones;
    /// still oldest first, and `next` is null. What `vaultctl audit tail` shows.
    newest: Option<bool>,
}

/// Read the audit trail (a pool's, or the vault-wide one), oldest first from a point.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "`{\"events\":[...],\"next\"}`; secrets never appear", body = crate::answers::AuditPage),
    )
)]
pub async fn read(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<crate::answers::AuditPage>, ApiError> {
    let pool = q.pool.as_deref().map(pool_name).transpose()?;
    match pool {
        Some(p) if !who.may_use_pool(p) => {
            return Err(ApiError::forbidden(
                "this client token is not allowed on this pool",
            ))
        }
        None if who.pools.is_some() => {
            return Err(ApiError::forbidden(
                "the vault-wide trail needs a token not limited to pools",
            ))
        }
        _ => {}
    }
    let since = q
        .since
        .as_deref()
        .map(|t| {
            serde_json::from_value::<TimeInput>(
                t.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(t)),
            )
        })
        .transpose()
        .map_err(|e| ApiError::invalid(format!("since: {e}")))?;
    if let Some(a) = &q.after {
        let valid = a
            .split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
        if !valid {
            return Err(ApiError::invalid(
                "after must be an entry id like 1732500000000-0",
            ));
        }
    }
    let newest = q.newest.unwrap_or(false);
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let events = s
        .store
        .audit_read(pool, since.map(|t| t.0), q.after.as_deref(), limit, newest)
        .await?;
    let next = (!newest && events.len() == limit)
        .then(|| events.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(crate::answers::AuditPage { events, next }))
}
