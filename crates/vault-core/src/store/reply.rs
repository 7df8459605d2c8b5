//! The typed answers of the functions: every field the function always sends is required, so a
//! changed or broken function is an error here, never a silent default.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::EndedLease;
use crate::error::VaultError;
use crate::Result;

/// A list in a function's answer. Lua's cjson writes an empty table as `{}`, so that is an empty
/// list; anything else that is not a list is an error.
pub(super) fn lua_list<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List<T> {
        Items(Vec<T>),
        Table(HashMap<String, Value>),
    }
    match List::deserialize(d)? {
        List::Items(v) => Ok(v),
        List::Table(t) if t.is_empty() => Ok(vec![]),
        List::Table(_) => Err(serde::de::Error::custom("expected a list, found an object")),
    }
}

/// Read a function's answer as `R`; a missing or mistyped field is an error that names it.
pub(super) fn typed<R: serde::de::DeserializeOwned>(function: &str, v: Value) -> Result<R> {
    serde_json::from_value(v)
        .map_err(|e| VaultError::Internal(format!("{function} answered unexpectedly: {e}")))
}

#[derive(Deserialize)]
pub(super) struct OpStarted {
    pub(super) op_id: String,
}
#[derive(Deserialize)]
pub(super) struct Upserted {
    pub(super) created: bool,
    pub(super) op_id: String,
}
#[derive(Deserialize)]
pub(super) struct Completed {
    pub(super) completed: bool,
}
#[derive(Deserialize)]
pub(super) struct Migrated {
    pub(super) converted: u64,
    pub(super) left: u64,
    pub(super) done: bool,
}
#[derive(Deserialize)]
pub(super) struct Deleting {
    pub(super) tokens: u64,
    pub(super) op_id: String,
}
#[derive(Deserialize)]
pub(super) struct Batch {
    pub(super) op: String,
    pub(super) done: bool,
    pub(super) affected: u64,
}
#[derive(Deserialize)]
pub(super) struct LeasesEnded {
    #[serde(deserialize_with = "lua_list")]
    pub(super) leases_ended: Vec<EndedLease>,
}
#[derive(Deserialize)]
pub(super) struct LeaseIdsEnded {
    #[serde(deserialize_with = "lua_list")]
    pub(super) leases_ended: Vec<String>,
}
#[derive(Deserialize)]
pub(super) struct TokenRows {
    #[serde(deserialize_with = "lua_list")]
    pub(super) rows: Vec<TokenRow>,
}
/// Both present, or both absent for a token that does not exist.
#[derive(Deserialize)]
pub(super) struct TokenRow {
    pub(super) fields: Option<Vec<Option<String>>>,
    pub(super) quota: Option<crate::model::QuotaNow>,
    /// The pool's other quotas (absent when it has none).
    #[serde(default)]
    pub(super) quotas: Vec<crate::model::QuotaNow>,
}
#[derive(Deserialize)]
pub(super) struct Deposited {
    #[serde(deserialize_with = "lua_list")]
    pub(super) ids: Vec<String>,
    #[serde(deserialize_with = "lua_list")]
    pub(super) unchanged: Vec<String>,
}
#[derive(Deserialize)]
pub(super) struct State {
    pub(super) state: String,
}
#[derive(Deserialize)]
pub(super) struct Reaped {
    #[serde(deserialize_with = "lua_list")]
    pub(super) reaped: Vec<EndedLease>,
}
#[derive(Deserialize)]
pub(super) struct Returned {
    pub(super) returned: u64,
}
#[derive(Deserialize)]
pub(super) struct Moved {
    pub(super) moved: u64,
}
#[derive(Deserialize)]
pub(super) struct Enqueued {
    pub(super) enqueued: u64,
}
#[derive(Deserialize)]
pub(super) struct Claimed {
    pub(super) job: Option<crate::store::ClaimedJob>,
}
#[derive(Deserialize)]
pub(super) struct Resealed {
    pub(super) resealed: bool,
}
#[derive(Deserialize)]
pub(super) struct RevokedToken {
    pub(super) token_id: String,
    #[serde(deserialize_with = "lua_list")]
    pub(super) leases_ended: Vec<String>,
}
/// Tokens a call revoked (sunset, fingerprint), each with the leases it ended.
#[derive(Deserialize)]
pub(super) struct RevokedNow {
    #[serde(deserialize_with = "lua_list")]
    pub(super) revoked: Vec<RevokedToken>,
    /// More to revoke (a batch of a fingerprint revocation).
    #[serde(default)]
    pub(super) more: bool,
}
#[derive(Deserialize)]
pub(super) struct Lease {
    pub(super) lease: crate::model::LeaseGrant,
}

/// `rotate_aged`.
#[derive(Deserialize)]
pub(super) struct RotationsStarted {
    #[serde(deserialize_with = "lua_list")]
    pub(super) started: Vec<crate::store::RotationStart>,
    pub(super) in_flight: u64,
}

/// `rotation_calendar`.
#[derive(Deserialize)]
pub(super) struct Calendar {
    pub(super) scheduled: bool,
    #[serde(default)]
    pub(super) in_flight: u64,
    #[serde(default)]
    pub(super) overdue: u64,
    #[serde(default)]
    pub(super) next_due_ms: i64,
    #[serde(default, deserialize_with = "lua_list")]
    pub(super) days: Vec<u64>,
}
