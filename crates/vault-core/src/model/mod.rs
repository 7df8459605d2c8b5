//! Domain types: what the API accepts (with validation), what the store keeps, what it answers.
//! Request types use `deny_unknown_fields` so a typo is a 400, not a silently ignored field.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::crypto::{Cipher, Secret};
use crate::error::VaultError;
use crate::time::{rfc3339, rfc3339_opt, TimeInput};

const MAX_QUOTA: u64 = 1_000_000_000_000;
const MAX_WINDOW_S: u64 = 31 * 86_400;
const MAX_LEASE_TTL_S: u64 = 7 * 86_400;
/// Largest secret accepted (JWTs with many claims fit easily).
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Most tokens in one deposit request.
pub const MAX_DEPOSIT: usize = 1000;

fn invalid(msg: impl Into<String>) -> VaultError {
    VaultError::Invalid(msg.into())
}

/// `[A-Za-z0-9_.-]{1,max}`: pool names, token ids. Anything else could break key parsing or logs.
pub fn valid_name(s: &str, max: usize) -> bool {
    // `.` and `..` would be path segments, not names.
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// [`valid_name`] as a JSON Schema pattern (with `maxLength`): the characters, and not only
/// dots unless three or more (`.` and `..` are path segments).
pub const NAME_PATTERN: &str = r"^([A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*|\.{3,})$";

/// The schema of a string of `min..=max` characters matching `pattern` (the string types the
/// API document names: [`Name`], [`Label`], [`Reason`]).
#[cfg(feature = "schema")]
fn string_schema(
    min: usize,
    max: usize,
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// A pool or pipeline name, as documented wherever one is taken.
pub struct Name;

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            1,
            64,
            NAME_PATTERN,
            "1-64 characters of `A-Z a-z 0-9 _ . -`, not `.` or `..`",
        )
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for Name {}

/// Most characters of a [`Label`].
pub const MAX_LABEL_CHARS: usize = 128;
/// [`check_label`]'s characters as a JSON Schema pattern: printable ASCII, no spaces.
pub const LABEL_PATTERN: &str = "^[!-~]+$";

/// A label (a client's `sub` or `jti`, a worker, a session, an idempotency key), as
/// documented wherever one is taken: what `check_label(.., MAX_LABEL_CHARS)` accepts.
pub struct Label;

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for Label {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            1,
            MAX_LABEL_CHARS,
            LABEL_PATTERN,
            "1-128 printable ASCII characters, no spaces",
        )
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for Label {}

/// An `http://` or `https://` URL of at most 2048 bytes: what a token endpoint or a probe
/// may be (documented as `pattern: ^https?://`, `maxLength: 2048`).
pub fn is_http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048
}

/// Most characters of a reason (freeze, revoke, rotation).
pub const MAX_REASON_CHARS: usize = 1024;
/// A reason's characters: no control characters (it goes into logs, audit and events).
pub const REASON_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// An operator's reason for an action, as documented wherever one is taken: what
/// [`check_reason`] accepts.
pub struct Reason;

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for Reason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            0,
            MAX_REASON_CHARS,
            REASON_PATTERN,
            "at most 1024 characters, no control characters",
        )
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for Reason {}

/// An operator's reason for an action: at most [`MAX_REASON_CHARS`] characters, none a
/// control character.
pub fn check_reason(reason: &str) -> Result<(), VaultError> {
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(invalid(format!(
            "reason must be at most {MAX_REASON_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

pub fn check_pool_name(name: &str) -> Result<(), VaultError> {
    if valid_name(name, 64) {
        Ok(())
    } else {
        Err(invalid(
            "pool names are 1-64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

pub fn check_token_id(id: &str) -> Result<(), VaultError> {
    if valid_name(id, 128) {
        Ok(())
    } else {
        Err(invalid(
            "token ids are 1-128 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// Free-form identifiers chosen by clients (worker names, sessions, idempotency keys):
/// printable ASCII without spaces, bounded.
pub fn check_label(what: &str, s: &str, max: usize) -> Result<(), VaultError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{what} must be 1-{max} printable ASCII characters"
        )));
    }
    Ok(())
}

fn in_range(name: &str, v: u64, lo: u64, hi: u64) -> Result<u64, VaultError> {
    if v < lo || v > hi {
        return Err(invalid(format!(
            "{name} must be between {lo} and {hi}, got {v}"
        )));
    }
    Ok(v)
}

mod answers;
mod lease;
mod pipeline;
mod pool;
mod quota;
mod refresh_settings;
mod schedule;
mod sizing;
mod status;
mod token;

pub use answers::*;
pub use lease::*;
pub use pipeline::*;
pub use pool::*;
pub use quota::*;
pub use refresh_settings::*;
pub use schedule::*;
pub use sizing::*;
pub use status::*;
pub use token::*;

/// `T`'s schema as the document shows it, after asserting that every property says what it
/// is (an optional reference carries its description inside its `oneOf`).
#[cfg(test)]
#[cfg(feature = "schema")]
pub(crate) fn documented_schema<T: utoipa::PartialSchema>() -> serde_json::Value {
    let schema = serde_json::to_value(T::schema()).unwrap();
    // A struct with a flattened part is an `allOf` of objects (a referenced part is checked
    // as its own type).
    let parts: Vec<&serde_json::Value> = match schema["allOf"].as_array() {
        Some(all) => all.iter().collect(),
        None => vec![&schema],
    };
    let properties = parts.iter().filter_map(|p| p["properties"].as_object());
    for (field, p) in properties.flatten() {
        let described = p["description"].is_string()
            || p["oneOf"]
                .as_array()
                .is_some_and(|o| o.iter().any(|v| v["description"].is_string()));
        assert!(described, "{field} has no description: {p}");
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&crate::crypto::MasterKey::generate())
    }

    /// The documented patterns say what the checks accept: names, times.
    #[cfg(feature = "schema")]
    #[test]
    fn declared_patterns_match_the_checks() {
        let name = regex::Regex::new(NAME_PATTERN).unwrap();
        for s in [
            "a", "pool-1", "A.b_c", ".a", "a.", "...", "....", "-", "_", ".", "..", "a b", "", "é",
            "a/b", "a,b", "a\n",
        ] {
            assert_eq!(name.is_match(s), valid_name(s, 64), "{s:?}");
        }
        let label = regex::Regex::new(LABEL_PATTERN).unwrap();
        for s in ["w-1", "a:b@c/d", "~", "", "a b", "é", "tab\t"] {
            assert_eq!(
                label.is_match(s),
                check_label("label", s, MAX_LABEL_CHARS).is_ok(),
                "{s:?}"
            );
        }
        let reason = regex::Regex::new(REASON_PATTERN).unwrap();
        for s in [
            "",
            "leaked in a log",
            "é ü 漢",
            "a\nb",
            "\u{7f}",
            "\u{85}",
            "tab\t",
        ] {
            assert_eq!(reason.is_match(s), check_reason(s).is_ok(), "{s:?}");
        }
        let binding = serde_json::to_value(<Binding as utoipa::PartialSchema>::schema()).unwrap();
        let proxy =
            regex::Regex::new(binding["properties"]["proxy"]["pattern"].as_str().unwrap()).unwrap();
        for s in [
            "http://proxy:8080",
            "https://u:p@10.0.0.1:3128/",
            "socks5h://a.b",
            "socks5://-",
            "http://x:65535",
            "http://.",
            "http://a:b",
            "ftp://a",
            "http://",
            "http://a b",
            "http://x:65536",
        ] {
            if proxy.is_match(s) {
                assert!(
                    token::check_proxy(s).is_ok(),
                    "{s:?} is declared valid and refused"
                );
            }
        }
        assert!(proxy.is_match("https://u:p@10.0.0.1:3128/"));
        let time = regex::Regex::new(crate::time::RFC3339_FROM_1970).unwrap();
        for s in [
            "1970-01-01T00:00:00Z",
            "2023-11-14T22:13:20.5+01:00",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14",
            "",
            "yesterday",
            "0999-01-01T00:00:00Z",
        ] {
            let parses = serde_json::from_value::<TimeInput>(serde_json::json!(s)).is_ok();
            assert_eq!(time.is_match(s), parses, "{s:?}");
        }
    }

    #[test]
    fn pool_config_defaults_and_bounds() {
        let k = cipher();
        let c = PoolConfigInput::default().validate(&k, "p").unwrap();
        assert_eq!(
            (c.lease_ttl_s, c.min_token_ttl_s, c.max_leases_per_token),
            (60, 90, 1)
        );
        let bad = |j: &str| {
            serde_json::from_str::<PoolConfigInput>(j)
                .map_err(|e| e.to_string())
                .and_then(|i| i.validate(&k, "p").map_err(|e| e.to_string()))
        };
        assert!(bad(r#"{"quota_limit":10,"quota_reserve":10}"#).is_err());
        assert!(bad(r#"{"lease_ttl_s":100,"max_lease_ttl_s":50}"#).is_err());
        assert!(bad(r#"{"max_leases_per_token":0}"#).is_err());
        assert!(bad(r#"{"quota_limit":-1}"#).is_err());
        assert!(bad(r#"{"quota_limt":5}"#).is_err(), "typo must be refused");
        assert!(bad(r#"{"strategy":"random"}"#).is_err());
        assert!(
            bad(r#"{"refresh_margin_s":60}"#).is_err(),
            "margin below the default min TTL (90)"
        );
        assert!(bad(r#"{"refresh_margin_s":60,"min_token_ttl_s":60}"#).is_ok());
        let c2 = PoolConfig::from_fields(
            &c.to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(c, c2);
    }

    #[test]
    fn quotas_are_checked_and_errors_name_the_quota() {
        let k = cipher();
        let check = |j: serde_json::Value| {
            serde_json::from_value::<PoolConfigInput>(j)
                .map_err(|e| e.to_string())
                .and_then(|i| i.validate(&k, "p").map_err(|e| e.to_string()))
        };
        let good = check(serde_json::json!({
            "quota_limit": 5000,
            "quotas": [
                {"name": "rpm", "limit": 60, "window_s": 60, "kind": "sliding"},
                {"name": "tpm", "limit": 90000, "window_s": 60, "cost": "llm_tokens", "reserve": 1000},
                {"name": "rpd", "limit": 1000, "window_s": 86400, "kind": "clock_aligned",
                 "anchor": "2026-01-01T08:00:00Z"}
            ],
            "cost_estimates": {"llm_tokens": 1500}
        }))
        .unwrap();
        assert_eq!(good.quotas.len(), 3);
        assert_eq!(good.quotas[0].buckets, Some(DEFAULT_BUCKETS));
        assert_eq!(
            good.quotas[2].anchor.as_deref(),
            Some("2026-01-01T08:00:00Z")
        );
        // What is stored reads back the same.
        let back = PoolConfig::from_fields(
            &good
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(good, back);
        // What the API answers reads back the same (clients read it as this type), and the
        // anchor shown keeps its milliseconds.
        let answered: PoolConfig =
            serde_json::from_value(serde_json::to_value(&good).unwrap()).unwrap();
        assert_eq!(good, answered);
        let odd = check(
            serde_json::json!({"quotas": [{"name": "rpd", "limit": 1, "window_s": 86400,
            "kind": "clock_aligned", "anchor": 1_767_254_400_123_i64}]}),
        )
        .unwrap();
        assert_eq!(odd.quotas[0].anchor_ms(), 1_767_254_400_123);
        let (stored, _) = quota::quota_fields(&odd.quotas, &odd.cost_estimates);
        assert_eq!(quota::quotas_from_field(Some(&stored)), odd.quotas);
        let err = |j: serde_json::Value, needle: &str| {
            let e = check(j.clone()).expect_err(&j.to_string());
            assert!(e.contains(needle), "{j}: {e}");
        };
        let q = |extra: serde_json::Value| {
            let mut base = serde_json::json!({"name": "rpm", "limit": 60, "window_s": 60});
            base.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::json!({"quotas": [base]})
        };
        err(q(serde_json::json!({"limit": 0})), "quotas.rpm.limit");
        err(q(serde_json::json!({"window_s": 0})), "quotas.rpm.window_s");
        err(q(serde_json::json!({"reserve": 60})), "quotas.rpm.reserve");
        err(q(serde_json::json!({"kind": "weekly"})), "weekly");
        err(q(serde_json::json!({"buckets": 6})), "quotas.rpm.buckets");
        err(
            q(serde_json::json!({"kind": "sliding", "buckets": 61})),
            "quotas.rpm.buckets",
        );
        err(q(serde_json::json!({"anchor": 0})), "quotas.rpm.anchor");
        err(q(serde_json::json!({"name": "Bad Name"})), "Bad Name");
        err(q(serde_json::json!({"name": "default"})), "shorthand");
        err(
            q(serde_json::json!({"cost": "llm_tokens"})),
            "cost_estimates.llm_tokens",
        );
        err(q(serde_json::json!({"unknown": 1})), "unknown");
        err(
            serde_json::json!({"quotas": [{"name": "a", "limit": 1, "window_s": 1},
                                          {"name": "a", "limit": 2, "window_s": 1}]}),
            "quotas.a",
        );
        err(
            serde_json::json!({"cost_estimates": {"llm_tokens": 5}}),
            "no quota counts llm_tokens",
        );
        let many: Vec<_> = (0..9)
            .map(|i| serde_json::json!({"name": format!("q{i}"), "limit": 1, "window_s": 1}))
            .collect();
        err(serde_json::json!({ "quotas": many }), "at most 8");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_pool_name("scrape.prod-1_a").is_ok());
        for bad in ["", "a b", "x}y", "{p}", "a:b", &"x".repeat(65), "ü"] {
            assert!(check_pool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refresh_needs_its_fields() {
        let r: RefreshInput = serde_json::from_str(
            r#"{"kind":"oauth2_refresh_token","token_url":"https://idp/token"}"#,
        )
        .unwrap();
        assert!(RefreshInput::for_token(Some(&r), None).is_err());
        let r: RefreshInput = serde_json::from_str(r#"{"kind":"oauth2_refresh_token","token_url":"https://idp/token","refresh_token":"rt"}"#).unwrap();
        assert!(RefreshInput::for_token(Some(&r), None).is_ok());
        assert!(!format!("{r:?}").contains("\"rt\""));
    }

    /// A token takes what it leaves out from its pool's settings of the same grant; the pool's
    /// client secret is sealed and only its fingerprint is shown or stored in clear.
    #[test]
    fn tokens_inherit_their_pool_refresh_settings() {
        let k = cipher();
        let pool: PoolConfigInput = serde_json::from_str(
            r#"{"refresh":{"kind":"oauth2_client_credentials","token_url":"https://idp/token","client_id":"c","client_secret":"pool-secret-1"}}"#,
        )
        .unwrap();
        let cfg = pool.validate(&k, "p").unwrap();
        let fields = format!("{:?}", cfg.to_fields());
        assert!(!fields.contains("pool-secret-1"), "{fields}");
        let back = PoolConfig::from_fields(
            &cfg.to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(back, cfg);
        let pr = back.refresh.as_ref().unwrap();
        assert_eq!(
            pr.open_client_secret(&k, "p").unwrap().unwrap().expose(),
            "pool-secret-1"
        );
        assert!(
            pr.open_client_secret(&k, "other").is_err(),
            "bound to its pool"
        );
        let shown = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            shown["refresh"]["client_secret_fingerprint"],
            Secret::new("pool-secret-1").fingerprint()
        );
        assert!(!shown.to_string().contains("pool-secret-1"));

        // No refresh of its own: the pool's, whole.
        let t = RefreshInput::for_token(None, Some(pr)).unwrap();
        assert_eq!(
            (t.kind.as_str(), t.inherits_pool, t.token_url),
            ("oauth2_client_credentials", true, None)
        );
        // A refresh_token grant in the pool: each token must bring its refresh token.
        let rt_pool: PoolConfigInput = serde_json::from_str(
            r#"{"refresh":{"kind":"oauth2_refresh_token","token_url":"https://idp/token"}}"#,
        )
        .unwrap();
        let rt_cfg = rt_pool.validate(&k, "p").unwrap();
        let rt = rt_cfg.refresh.as_ref();
        assert!(RefreshInput::for_token(None, rt).is_err());
        let own: RefreshInput = serde_json::from_str(r#"{"refresh_token":"r1"}"#).unwrap();
        let t = RefreshInput::for_token(Some(&own), rt).unwrap();
        assert_eq!(
            (t.kind.as_str(), t.inherits_pool),
            ("oauth2_refresh_token", true)
        );
        // Another grant of its own: nothing inherited.
        let ext: RefreshInput = serde_json::from_str(r#"{"kind":"external"}"#).unwrap();
        assert!(
            !RefreshInput::for_token(Some(&ext), rt)
                .unwrap()
                .inherits_pool
        );
        // Without a pool to inherit from, the kind is required.
        assert!(RefreshInput::for_token(Some(&own), None).is_err());

        let bad = |j: &str| {
            serde_json::from_str::<PoolConfigInput>(j)
                .unwrap()
                .validate(&k, "p")
                .is_err()
        };
        assert!(
            bad(r#"{"refresh":{"token_url":"https://idp/token"}}"#),
            "kind needed"
        );
        assert!(bad(
            r#"{"refresh":{"kind":"oauth2_refresh_token","token_url":"https://i/t","refresh_token":"x"}}"#
        ));
        assert!(bad(
            r#"{"refresh":{"kind":"oauth2_client_credentials","token_url":"https://i/t","client_id":"c"}}"#
        ));
    }
}
