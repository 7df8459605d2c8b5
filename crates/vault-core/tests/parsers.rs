//! Property tests for what clients send: client tokens, pool configs, token deposits and worker
//! reports. Whatever arrives, parsing and validation never panic; what they refuse is a clear
//! `invalid_request` (or an authentication error), never an internal one; what they accept
//! keeps every bound.

use proptest::prelude::*;
use serde_json::{Map, Value};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::crypto::{Cipher, MasterKey};
use vault_core::model::{AcquireInput, PoolConfigInput, Report, TokenInput};
use vault_core::VaultError;

/// JSON shaped like the inputs: objects whose keys are mostly the real field names, with values
/// of every type, sign and size (and nesting), plus arbitrary strings.
fn json(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        4 => (0u64..100_000).prop_map(Value::from),
        1 => (-1e12f64..1e12).prop_map(Value::from),
        1 => prop_oneof![Just(0i64), Just(1), Just(-1), Just(3600), Just(u32::MAX as i64)]
            .prop_map(Value::from),
        1 => ".{0,40}".prop_map(Value::String),
        2 => "[a-z0-9:/._-]{0,30}".prop_map(Value::String),
    ];
    // Mostly scalars (so many objects parse and reach validation), sometimes nested values.
    let value = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            6 => inner.clone(),
            1 => proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => proptest::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        12 => proptest::sample::select(fields).prop_map(String::from),
        1 => "[a-z_]{1,12}",
    ];
    prop_oneof![
        4 => proptest::collection::vec((key, value.clone()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        1 => value,
    ]
}

fn refused_cleanly(e: &VaultError) -> bool {
    matches!(e, VaultError::Invalid(_))
}

const POOL_FIELDS: &[&str] = &[
    "quota_limit",
    "quota_window_s",
    "quota_reserve",
    "max_leases_per_token",
    "lease_ttl_s",
    "max_lease_ttl_s",
    "min_token_ttl_s",
    "strategy",
    "quarantine_after_strikes",
    "session_ttl_s",
    "refresh",
    "refresh_margin_s",
    "refresh_concurrency",
    "probe",
];

const TOKEN_FIELDS: &[&str] = &[
    "secret",
    "id",
    "expires_at",
    "quota_limit",
    "binding",
    "proxy",
    "fingerprint",
    "labels",
    "refresh",
    "kind",
    "token_url",
    "refresh_token",
];

const REPORT_FIELDS: &[&str] = &[
    "used",
    "outcome",
    "retry_after_s",
    "remaining",
    "reset_at",
    "detail",
];

const ACQUIRE_FIELDS: &[&str] = &[
    "units",
    "ttl_s",
    "worker",
    "session",
    "wait_ms",
    "min_token_ttl_s",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pool_configs_are_refused_cleanly_or_complete_and_bounded(v in json(POOL_FIELDS)) {
        let cipher = Cipher::new(&MasterKey::generate());
        if let Ok(input) = serde_json::from_value::<PoolConfigInput>(v) {
            match input.validate(&cipher, "p") {
                Ok(c) => {
                    prop_assert!(c.quota_window_s >= 1);
                    prop_assert!(c.max_leases_per_token >= 1);
                    prop_assert!(c.lease_ttl_s >= 1 && c.lease_ttl_s <= c.max_lease_ttl_s);
                    prop_assert!(c.refresh_margin_s >= c.min_token_ttl_s);
                    if let Some(l) = c.quota_limit {
                        prop_assert!(c.quota_reserve < l);
                    }
                }
                Err(e) => prop_assert!(refused_cleanly(&e), "{e:?}"),
            }
        }
    }

    #[test]
    fn deposits_are_refused_cleanly_or_sealed(mut v in json(TOKEN_FIELDS), secret in ".{0,64}") {
        // `secret` is required: give most objects one, so they reach validation.
        if let Some(o) = v.as_object_mut() {
            o.entry("secret").or_insert(Value::String(secret));
        }
        let cipher = Cipher::new(&MasterKey::generate());
        if let Ok(input) = serde_json::from_value::<TokenInput>(v) {
            match input.seal(&cipher, "p", None) {
                Ok(t) => {
                    prop_assert!(!t.id.is_empty());
                    prop_assert!(t.expires_at >= 0);
                    // The secret is never stored or shown in the clear.
                    let clear = input.secret.expose();
                    prop_assert!(clear.len() < 4 || !t.secret_ct.contains(clear));
                }
                Err(e) => prop_assert!(refused_cleanly(&e), "{e:?}"),
            }
        }
    }

    #[test]
    fn reports_and_lease_requests_are_refused_cleanly_or_bounded(
        v in json(REPORT_FIELDS),
        a in json(ACQUIRE_FIELDS),
    ) {
        if let Ok(r) = serde_json::from_value::<Report>(v) {
            match r.validate() {
                Ok(()) => {
                    if let Some(s) = r.retry_after_s {
                        prop_assert!((0.0..=31.0 * 86_400.0).contains(&s));
                    }
                    prop_assert!(r.detail.as_ref().is_none_or(|d| d.len() <= 1024));
                }
                Err(e) => prop_assert!(refused_cleanly(&e), "{e:?}"),
            }
        }
        if let Ok(a) = serde_json::from_value::<AcquireInput>(a) {
            match a.validate() {
                Ok(()) => prop_assert!(a.units.is_none_or(|u| (1..=1_000_000).contains(&u))),
                Err(e) => prop_assert!(refused_cleanly(&e), "{e:?}"),
            }
        }
    }

    #[test]
    fn arbitrary_client_tokens_are_refused(s in ".{0,300}") {
        prop_assert!(ring().verify(&s).is_err());
    }

    #[test]
    fn jwt_shaped_garbage_is_refused(
        header in proptest::collection::vec(any::<u8>(), 0..64),
        claims in json(&["sub", "exp", "iat", "jti", "scope", "iss", "aud", "pools", "kid", "alg"]),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let forged = format!("{}.{}.{}", b64(&header), b64(claims.to_string().as_bytes()), b64(&sig));
        prop_assert!(ring().verify(&forged).is_err());
        // A well-formed header does not help without the key's signature.
        let forged = format!("{}.{}.{}", b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#), b64(claims.to_string().as_bytes()), b64(&sig));
        prop_assert!(ring().verify(&forged).is_err());
    }

    #[test]
    fn any_change_to_a_minted_token_is_refused(at in any::<prop::sample::Index>(), to in "[A-Za-z0-9_-]") {
        let (ring, token) = minted();
        prop_assert!(ring.verify(&token).is_ok());
        let chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        let to = to.chars().next().unwrap();
        prop_assume!(chars[i] != '.' && chars[i] != to);
        let mut changed = chars.clone();
        changed[i] = to;
        let changed: String = changed.into_iter().collect();
        prop_assert!(ring.verify(&changed).is_err(), "accepted {changed}");
    }
}

fn ring() -> &'static KeyRing {
    &minted_pair().0
}

fn minted() -> (&'static KeyRing, String) {
    let (ring, token) = minted_pair();
    (ring, token.clone())
}

/// One key ring (a key in a temp dir, as the vault loads it) and a token it minted.
fn minted_pair() -> &'static (KeyRing, String) {
    static PAIR: std::sync::OnceLock<(KeyRing, String)> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1.pem"), generate_key_pem()).unwrap();
        let mut ring = KeyRing::empty("tokenvault", "tokenvault", 86_400);
        ring.load(dir.path()).unwrap();
        let now = vault_core::time::now_ms() / 1000;
        let (token, _, _) = ring
            .mint("w", &[Scope::Lease], Some(vec!["p".into()]), 3600, now)
            .unwrap();
        (ring, token)
    })
}

/// The generators reach validation: a property over inputs that never parse proves nothing.
#[test]
fn generated_inputs_reach_validation() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cipher = Cipher::new(&MasterKey::generate());
    let (mut pools, mut pools_refused, mut reports) = (0, 0, 0);
    for _ in 0..512 {
        let v = json(POOL_FIELDS).new_tree(&mut runner).unwrap().current();
        if let Ok(i) = serde_json::from_value::<PoolConfigInput>(v) {
            pools += 1;
            pools_refused += i.validate(&cipher, "p").is_err() as u32;
        }
        let v = json(REPORT_FIELDS).new_tree(&mut runner).unwrap().current();
        reports += serde_json::from_value::<Report>(v).is_ok() as u32;
    }
    assert!(
        pools >= 100 && pools_refused >= 20,
        "pools parsed {pools}, refused {pools_refused}"
    );
    assert!(reports >= 100, "reports parsed {reports}");
}
