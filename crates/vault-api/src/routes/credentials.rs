//! Credentials as such, wherever they are deposited: revoked by their secret's fingerprint in
//! every pool (and, with the global plane, every region).

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use vault_core::auth::Principal;
use vault_core::ops::Actor;

use crate::error::{ApiError, Problem};
use crate::extract::Body;
use crate::routes::pool_name;
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRevokeInput {
    fingerprint: Option<String>,
    pool: Option<String>,
    token_id: Option<String>,
    reason: Option<String>,
}

/// The body as the API document states it: the credential named one way or the other, never
/// both (what the handler checks).
pub struct CredentialRevokeBody;

impl utoipa::PartialSchema for CredentialRevokeBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let reason = serde_json::json!({
            "type": "string", "minLength": 1, "maxLength": vault_core::model::MAX_REASON_CHARS,
            "pattern": vault_core::model::REASON_PATTERN,
            "description": "Why: in every region's audit trail and on the `token.revoked` events (no control characters).",
        });
        let fingerprint = serde_json::json!({
            "type": "string", "pattern": "^sha256:[0-9a-f]{12}$",
            "description": "The secret's fingerprint (`sha256:` + 12 hex, as token metadata and audit show it).",
        });
        let pool = serde_json::json!({
            "allOf": [{"$ref": "#/components/schemas/Name"}],
            "description": "A pool of this region holding a token with the secret.",
        });
        let token_id = serde_json::json!({
            "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_.-]+$",
            "description": "The token's id in `pool`: it stands for its secret.",
        });
        serde_json::from_value(serde_json::json!({
            "description": "The credential to revoke everywhere: by `fingerprint`, or by `pool` and `token_id`.",
            "oneOf": [
                {"type": "object", "additionalProperties": false,
                 "required": ["fingerprint", "reason"],
                 "properties": {"fingerprint": fingerprint, "reason": reason}},
                {"type": "object", "additionalProperties": false,
                 "required": ["pool", "token_id", "reason"],
                 "properties": {"pool": pool, "token_id": token_id, "reason": reason}},
            ],
        }))
        .expect("a valid schema")
    }
}

impl utoipa::ToSchema for CredentialRevokeBody {}

/// Whether `fp` has the shape of a fingerprint (`sha256:` + 12 lowercase hex).
fn is_fingerprint(fp: &str) -> bool {
    fp.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 12
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Revoke a credential everywhere: by its fingerprint, or by a pool and token id that stand
/// for it. Every token with that secret, in every pool (and every region), is revoked.
#[utoipa::path(
    post,
    path = "/credentials/revoke",
    tag = "tokens",
    request_body = CredentialRevokeBody,
    responses(
        (status = 200, description = "revoked: with the global plane, written to the global log and applied by every region's follower (this one's within milliseconds); without it, revoked in this region's pools now", body = crate::answers::CredentialRevoked),
        (status = 400, description = "`invalid_request`: neither or both of `fingerprint` and `pool`+`token_id`, or a malformed fingerprint", body = Problem),
        (status = 403, description = "`forbidden`: a pool-limited client (a credential is revoked in every pool)", body = Problem),
        (status = 404, description = "`pool_not_found`, `token_not_found`", body = Problem),
        (status = 503, description = "`global_unavailable`: the global primary cannot be reached; `not_replicated`: fewer region replicas than TV_GLOBAL_WAIT_REGIONS had it in time", body = Problem),
    )
)]
pub async fn revoke_credential(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(input): Body<CredentialRevokeInput>,
) -> Result<Json<crate::answers::CredentialRevoked>, ApiError> {
    if who.pools.is_some() {
        return Err(ApiError::forbidden(
            "a credential is revoked in every pool: a pool-limited client may not",
        ));
    }
    let reason = input
        .reason
        .ok_or_else(|| ApiError::invalid("reason is required"))?;
    if reason.is_empty() {
        return Err(ApiError::invalid("reason must not be empty"));
    }
    vault_core::model::check_reason(&reason)?;
    let fingerprint = match (input.fingerprint, input.pool, input.token_id) {
        (Some(fp), None, None) => {
            if !is_fingerprint(&fp) {
                return Err(ApiError::invalid(
                    "fingerprint must be `sha256:` and 12 lowercase hex digits",
                ));
            }
            fp
        }
        (None, Some(pool), Some(id)) => {
            let pool = pool_name(&pool)?;
            vault_core::model::check_token_id(&id)?;
            s.store.token_get(pool, &id).await?.fingerprint
        }
        _ => {
            return Err(ApiError::invalid(
                "name the credential by `fingerprint`, or by `pool` and `token_id` (not both)",
            ))
        }
    };
    let actor = Actor::from(&who);
    Ok(Json(match s.store.global() {
        Some(g) => {
            let action = vault_core::global::GlobalAction::CredentialRevoke {
                fingerprint: fingerprint.clone(),
            };
            let written = g.append(action, &reason, &actor).await?;
            crate::answers::CredentialRevoked {
                fingerprint,
                scope: crate::answers::ActionScope::Global,
                global: Some(written),
                tokens: None,
            }
        }
        None => {
            let done = s
                .store
                .revoke_credential(&actor, &fingerprint, &reason)
                .await?;
            crate::answers::CredentialRevoked {
                fingerprint,
                scope: crate::answers::ActionScope::Region,
                global: None,
                tokens: Some(
                    done.into_iter()
                        .map(
                            |(pool, token_id, leases_ended)| crate::answers::RevokedToken {
                                pool,
                                token_id,
                                leases_ended,
                            },
                        )
                        .collect(),
                ),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_have_one_shape() {
        let fp = vault_core::crypto::Secret::new("s").fingerprint();
        assert!(super::is_fingerprint(&fp), "{fp}");
        for bad in ["sha256:0123", "sha256:0123456789AB", "md5:0123456789ab", ""] {
            assert!(!super::is_fingerprint(bad), "{bad}");
        }
    }
}
