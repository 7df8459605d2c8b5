//! Edge cases of every transition script, through the typed store API, against a real
//! redis-server started for this test binary. The scripts' clock is pinned, so window resets,
//! TTL edges and cooldowns are exact.

use super::*;
use crate::model::{Outcome, Report, TokenInput};
use crate::store::AcquireArgs;
use crate::VaultError;
use serde_json::json;

#[tokio::test]
async fn quota_stops_exactly_at_limit_minus_reserve_and_release_returns_units() {
    let e =
        Env::new(json!({"quota_limit": 10, "quota_reserve": 2, "max_leases_per_token": 100})).await;
    let ids = e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    assert_eq!(ids, ["a"]);
    // 8 units may be in use (10 - 2): 3 + 5 fit exactly.
    let l1 = e.lease(3).await.unwrap();
    let l2 = e.lease(5).await.unwrap();
    let retry = exhausted(e.lease(1).await).expect("retry hint");
    // The earliest event that frees units is a lease deadline (60 s), before the window reset.
    assert_eq!(retry, 60_000);
    assert_eq!(e.meta("a").await.state, "leased");
    // Releasing 5 reserved units with 1 used gives 4 back.
    e.release(&l2.lease_id, Some(1), Outcome::Ok).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!((m.quota.used, m.quota.reserved), (1, 3));
    let l3 = e.lease(4).await.unwrap();
    exhausted(e.lease(1).await);
    // used > units is refused and changes nothing.
    let err = e
        .release(&l3.lease_id, Some(5), Outcome::Ok)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Invalid(_)), "{err:?}");
    assert_eq!(e.meta("a").await.quota.reserved, 7);
    e.release(&l3.lease_id, None, Outcome::Ok).await.unwrap();
    e.release(&l1.lease_id, Some(0), Outcome::Ok).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!((m.quota.used, m.quota.reserved, m.leases), (5, 0, 0));
    assert_eq!(m.state, "active");
}

#[tokio::test]
async fn window_reset_brings_an_exhausted_token_back() {
    let e =
        Env::new(json!({"quota_limit": 2, "quota_window_s": 10, "max_leases_per_token": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let l = e.lease(2).await.unwrap();
    e.release(&l.lease_id, None, Outcome::Ok).await.unwrap();
    assert_eq!(e.meta("a").await.state, "cooling");
    assert_eq!(exhausted(e.lease(1).await), Some(10_000));
    e.advance(9_999);
    assert_eq!(e.store.return_cooled("p", 100).await.unwrap(), 0);
    exhausted(e.lease(1).await);
    e.advance(1);
    assert_eq!(e.store.return_cooled("p", 100).await.unwrap(), 1);
    let m = e.meta("a").await;
    assert_eq!((m.state.as_str(), m.quota.used), ("active", 0));
    e.lease(2).await.unwrap();
}

/// Metadata, listings and status read the quota as the quota rule sees it now: the moment the
/// window is over it counts nothing used, before any transition has written that down.
#[tokio::test]
async fn readers_see_a_window_over_before_any_transition_records_it() {
    let e =
        Env::new(json!({"quota_limit": 4, "quota_window_s": 10, "max_leases_per_token": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b", "quota_limit": 8}]))
        .await;
    let l = e.lease(3).await.unwrap();
    e.release(&l.lease_id, None, Outcome::Ok).await.unwrap();
    let m = e.meta(&l.token_id).await;
    assert_eq!(m.quota.used, 3);
    assert!(m.quota.window_resets_at.is_some());
    let limit = m.quota.limit.unwrap();
    assert_eq!(
        e.store.pool_status("p").await.unwrap().quota_used_ratio,
        Some(3.0 / 12.0)
    );
    assert_eq!(limit, if l.token_id == "a" { 4 } else { 8 });
    e.advance(10_000);
    let m = e.meta(&l.token_id).await;
    assert_eq!((m.quota.used, m.quota.limit), (0, Some(limit)));
    assert_eq!(m.quota.window_resets_at, None);
    let (page, _) = e.store.token_list("p", None, 10, 0).await.unwrap();
    assert!(page.iter().all(|t| t.quota.used == 0), "{page:?}");
    assert_eq!(
        e.store.pool_status("p").await.unwrap().quota_used_ratio,
        Some(0.0)
    );
    // The stored fields still say 3 until the token's next transition writes the roll.
    let pk = e.store.keys().pool("p");
    let internal = e.redis.cli(&["HGET", &pk.ids(), &l.token_id]);
    let k = pk.token(internal.trim());
    assert_eq!(e.redis.cli(&["HGET", &k, "used"]).trim(), "3");
    assert!(matches!(
        e.store.token_get("p", "nope").await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        e.store.token_get("nopool", "a").await,
        Err(VaultError::PoolNotFound)
    ));
}

#[tokio::test]
async fn concurrency_limit_per_token() {
    let e = Env::new(json!({"max_leases_per_token": 2})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let mut per_token = std::collections::HashMap::<String, u32>::new();
    let mut leases = vec![];
    for _ in 0..4 {
        let l = e.lease(1).await.unwrap();
        *per_token.entry(l.token_id.clone()).or_default() += 1;
        leases.push(l);
    }
    assert_eq!(per_token["a"], 2);
    assert_eq!(per_token["b"], 2);
    // Every token at its limit: the hint is the earliest lease deadline (60 s default TTL).
    assert_eq!(exhausted(e.lease(1).await), Some(60_000));
    e.release(&leases[0].lease_id, None, Outcome::Ok)
        .await
        .unwrap();
    assert_eq!(e.lease(1).await.unwrap().token_id, leases[0].token_id);
}

#[tokio::test]
async fn ttl_edge_and_moving_out_of_rotation() {
    // min_token_ttl_s defaults to lease_ttl_s + 30 = 90 s.
    let e = Env::new(json!({})).await;
    e.deposit(json!([
        {"secret": "s1", "id": "exact", "expires_at": T0 + 90_000},
        {"secret": "s2", "id": "short", "expires_at": T0 + 89_999},
        {"secret": "s3", "id": "refr", "expires_at": T0 + 89_999, "refresh": {"kind": "external"}},
    ]))
    .await;
    assert_eq!(e.meta("short").await.state, "expired");
    assert_eq!(e.meta("refr").await.state, "refreshing");
    let l = e.lease(1).await.unwrap();
    assert_eq!(
        l.token_id, "exact",
        "exactly min_token_ttl_s left is still leasable"
    );
    e.release(&l.lease_id, None, Outcome::Ok).await.unwrap();
    e.advance(1);
    exhausted(e.lease(1).await);
    assert_eq!(e.meta("exact").await.state, "expired");
    // A per-request min_token_ttl_s larger than what is left skips the token without moving it.
    let e2 = Env::new(json!({})).await;
    e2.deposit(json!([{"secret": "s1", "id": "x", "expires_at": T0 + 200_000}]))
        .await;
    exhausted(
        e2.lease_with(AcquireArgs {
            min_ttl_ms: Some(300_000),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e2.meta("x").await.state, "active");
    // The janitor's sweep does the same without a lease request.
    e2.advance(110_001);
    assert_eq!(e2.store.expire_tokens("p", 100).await.unwrap(), 1);
    assert_eq!(e2.meta("x").await.state, "expired");
}

#[tokio::test]
async fn jwt_exp_is_taken_and_malformed_jwt_refused() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let e = Env::new(json!({})).await;
    let exp_s = (T0 + 3_600_000) / 1000;
    let jwt = format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"exp":{exp_s}}}"#))
    );
    e.deposit(json!([{"secret": jwt, "id": "j"}])).await;
    assert_eq!(
        e.meta("j").await.expires_at.unwrap(),
        crate::time::rfc3339(exp_s * 1000)
    );
    let bad: TokenInput =
        serde_json::from_value(json!({"secret": format!("{}.@@@.sig", b64(r#"{"alg":"RS256"}"#))}))
            .unwrap();
    assert!(matches!(
        bad.seal(&e.cipher, "p", None),
        Err(VaultError::Invalid(_))
    ));
}

#[tokio::test]
async fn strikes_quarantine_and_restore() {
    let e = Env::new(json!({"quarantine_after_strikes": 2})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let l = e.lease(1).await.unwrap();
    assert_eq!(
        e.release(&l.lease_id, None, Outcome::Forbidden)
            .await
            .unwrap(),
        "active"
    );
    let l = e.lease(1).await.unwrap();
    // An ok in between clears the strikes: only consecutive strikes count.
    e.release(&l.lease_id, None, Outcome::Ok).await.unwrap();
    assert_eq!(e.meta("a").await.strikes, 0);
    let l = e.lease(1).await.unwrap();
    e.release(&l.lease_id, None, Outcome::Suspect)
        .await
        .unwrap();
    let l = e.lease(1).await.unwrap();
    assert_eq!(
        e.release(&l.lease_id, None, Outcome::Forbidden)
            .await
            .unwrap(),
        "quarantined"
    );
    exhausted(e.lease(1).await);
    assert_eq!(e.store.restore("p", "a").await.unwrap(), "active");
    assert_eq!(e.meta("a").await.strikes, 0);
    e.lease(1).await.unwrap();
    assert!(matches!(
        e.store.restore("p", "a").await,
        Err(VaultError::Conflict(_))
    ));
}

/// LRU hands out each token in turn; take leases until we hold `id`.
async fn pick(e: &Env, id: &str) -> crate::model::LeaseGrant {
    loop {
        let l = e.lease(1).await.unwrap();
        if l.token_id == id {
            return l;
        }
        e.release(&l.lease_id, Some(0), Outcome::Ok).await.unwrap();
    }
}

#[tokio::test]
async fn outcomes_rate_limited_unauthorized_and_target_remaining() {
    let e = Env::new(json!({"quota_limit": 100, "max_leases_per_token": 3})).await;
    e.deposit(json!([
        {"secret": "s1", "id": "a"},
        {"secret": "s2", "id": "b", "refresh": {"kind": "external"}},
        {"secret": "s3", "id": "c"},
    ]))
    .await;
    let la = pick(&e, "a").await;
    let r = Report {
        outcome: Outcome::RateLimited,
        retry_after_s: Some(30.0),
        ..Default::default()
    };
    e.store.release("p", &la.lease_id, &r).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!(m.state, "cooling");
    assert_eq!(m.cooling_until.unwrap(), crate::time::rfc3339(T0 + 30_000));
    let lb = pick(&e, "b").await;
    assert_eq!(
        e.release(&lb.lease_id, None, Outcome::Unauthorized)
            .await
            .unwrap(),
        "refreshing"
    );
    let lc = pick(&e, "c").await;
    assert_eq!(
        e.release(&lc.lease_id, None, Outcome::Unauthorized)
            .await
            .unwrap(),
        "expired"
    );
    e.advance(30_000);
    assert_eq!(e.store.return_cooled("p", 10).await.unwrap(), 1);
    // The target says 7 remain until reset: the vault trusts it over its estimate.
    let la = pick(&e, "a").await;
    let r = Report {
        remaining: Some(7),
        reset_at: Some(crate::time::TimeInput(T0 + 500_000)),
        ..Default::default()
    };
    e.store.release("p", &la.lease_id, &r).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!(m.quota.used, 93);
    assert_eq!(
        m.quota.window_resets_at.unwrap(),
        crate::time::rfc3339(T0 + 500_000)
    );
    // Two leases of the token; the one whose last answer is older reports last. Its `remaining`
    // is stale (calls were made since): it must not lower the count.
    let (l1, l2) = (pick(&e, "a").await, pick(&e, "a").await);
    let report = |remaining| Report {
        used: Some(1),
        remaining: Some(remaining),
        reset_at: Some(crate::time::TimeInput(T0 + 500_000)),
        ..Default::default()
    };
    e.store
        .release("p", &l2.lease_id, &report(3))
        .await
        .unwrap();
    assert_eq!(e.meta("a").await.quota.used, 97);
    e.store
        .release("p", &l1.lease_id, &report(5))
        .await
        .unwrap();
    assert_eq!(
        e.meta("a").await.quota.used,
        98,
        "a stale remaining lowered the count"
    );
    // A 429 with both a Retry-After and a reset time: back after the Retry-After (quota is
    // left: the reset is when the window ends, not when to come back).
    let l = pick(&e, "a").await;
    let r = Report {
        outcome: Outcome::RateLimited,
        retry_after_s: Some(7.0),
        remaining: Some(1),
        reset_at: Some(crate::time::TimeInput(T0 + 30_000 + 400_000)),
        ..Default::default()
    };
    e.store.release("p", &l.lease_id, &r).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!(
        m.cooling_until.unwrap(),
        crate::time::rfc3339(T0 + 30_000 + 7_000)
    );
    // A 429 whose reset time is years ahead (a target's bug, or a hostile worker) cools the
    // token 31 days at most.
    e.advance(7_000);
    assert_eq!(e.store.return_cooled("p", 10).await.unwrap(), 1);
    let l = pick(&e, "a").await;
    let r = Report {
        outcome: Outcome::RateLimited,
        reset_at: Some(crate::time::TimeInput(crate::time::MAX_MS)),
        ..Default::default()
    };
    e.store.release("p", &l.lease_id, &r).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!(
        m.cooling_until.unwrap(),
        crate::time::rfc3339(T0 + 37_000 + 31 * 86_400_000)
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_same_lease() {
    let e = Env::new(json!({"max_leases_per_token": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let a = AcquireArgs {
        idempotency_key: "req-1".into(),
        ..Default::default()
    };
    let l1 = e.lease_with(a.clone()).await.unwrap();
    let l2 = e.lease_with(a.clone()).await.unwrap();
    assert_eq!(l1.lease_id, l2.lease_id);
    assert!(l2.replayed && !l1.replayed);
    assert_eq!(e.meta("a").await.leases, 1);
    e.release(&l1.lease_id, None, Outcome::Ok).await.unwrap();
    // The record ends with its lease.
    let l3 = e.lease_with(a).await.unwrap();
    assert_ne!(l3.lease_id, l1.lease_id);
}

#[tokio::test]
async fn revoke_ends_leases_and_takes_the_token_out() {
    let e = Env::new(json!({"max_leases_per_token": 2})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let l1 = e.lease(1).await.unwrap();
    let ended = e.store.revoke("p", &l1.token_id, "leaked").await.unwrap();
    assert_eq!(ended, vec![l1.lease_id.clone()]);
    assert!(matches!(
        e.store.renew("p", &l1.lease_id, None, None).await,
        Err(VaultError::LeaseGone)
    ));
    assert!(matches!(
        e.release(&l1.lease_id, None, Outcome::Ok).await,
        Err(VaultError::LeaseGone)
    ));
    for _ in 0..2 {
        assert_ne!(e.lease(1).await.unwrap().token_id, l1.token_id);
    }
    assert_eq!(e.meta(&l1.token_id).await.state, "revoked");
    assert!(
        e.store
            .revoke("p", &l1.token_id, "again")
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    assert!(matches!(
        e.store.revoke("p", "nope", "x").await,
        Err(VaultError::TokenNotFound)
    ));
}

/// A credential revoked by fingerprint is found through the index in every pool (two tokens of
/// one pool may hold it), wherever it sits, and only while it holds that secret: a refresh
/// moves its entry, a delete drops it. Applying the revocation again changes nothing.
#[tokio::test]
async fn a_credential_is_revoked_by_fingerprint_in_every_pool() {
    let e = Env::new(json!({"max_leases_per_token": 2})).await;
    let fp = |s: &str| crate::crypto::Secret::new(s).fingerprint();
    e.deposit(
        json!([{"secret": "leaked", "id": "a"}, {"secret": "leaked", "id": "a2"},
        {"secret": "fine", "id": "b"}, {"secret": "gone", "id": "c"},
        {"secret": "old", "id": "d", "refresh": {"kind": "external"}}]),
    )
    .await;
    let other: crate::model::PoolConfigInput = serde_json::from_value(json!({})).unwrap();
    e.store
        .pool_upsert("q", &other.validate(&e.cipher, "q").unwrap())
        .await
        .unwrap();
    let sealed = serde_json::from_value::<TokenInput>(json!({"secret": "leaked", "id": "qa"}))
        .unwrap()
        .seal(&e.cipher, "q", None)
        .unwrap();
    e.store.deposit("q", &[sealed]).await.unwrap();
    let actor = crate::ops::Actor::process("test");

    // A deleted token leaves the index; a refreshed one moves to its new secret's entry.
    e.store.token_delete("p", "c").await.unwrap();
    assert!(e
        .store
        .revoke_credential(&actor, &fp("gone"), "x")
        .await
        .unwrap()
        .is_empty());
    e.store.refresh_enqueue("p", "d").await.unwrap();
    let job = e.claim(true).await.expect("d's job");
    e.complete(&job, "new", 3_600_000).await;
    assert!(e
        .store
        .revoke_credential(&actor, &fp("old"), "x")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        e.store
            .revoke_credential(&actor, &fp("new"), "x")
            .await
            .unwrap(),
        vec![("p".to_string(), "d".to_string(), 0)]
    );

    // One of a, a2, b (the others are gone): its lease ends if it holds the leaked secret.
    let lease = e.lease(1).await.unwrap();
    let mut revoked = e
        .store
        .revoke_credential(&actor, &fp("leaked"), "leaked")
        .await
        .unwrap();
    revoked.sort();
    let expect = |t: &str| usize::from(t == lease.token_id);
    assert_eq!(
        revoked,
        vec![
            ("p".to_string(), "a".to_string(), expect("a")),
            ("p".to_string(), "a2".to_string(), expect("a2")),
            ("q".to_string(), "qa".to_string(), 0),
        ]
    );
    for t in ["a", "a2"] {
        assert_eq!(e.meta(t).await.state, "revoked");
    }
    assert_ne!(e.meta("b").await.state, "revoked");
    assert!(
        e.store
            .revoke_credential(&actor, &fp("leaked"), "again")
            .await
            .unwrap()
            .is_empty(),
        "applied twice, nothing changes the second time"
    );
    // One secret under many ids: every index change is O(1), and the revocation runs in
    // batches until all are revoked.
    let many: Vec<_> = (0..250)
        .map(|i| {
            serde_json::from_value::<TokenInput>(json!({"secret": "shared", "id": format!("m{i}")}))
                .unwrap()
                .seal(&e.cipher, "q", None)
                .unwrap()
        })
        .collect();
    for chunk in many.chunks(50) {
        e.store.deposit("q", chunk).await.unwrap();
    }
    e.store.token_delete("q", "m3").await.unwrap();
    let revoked = e
        .store
        .revoke_credential(&actor, &fp("shared"), "shared")
        .await
        .unwrap();
    assert_eq!(revoked.len(), 249);
    assert!(revoked.iter().all(|(p, id, _)| p == "q" && id != "m3"));
}

#[tokio::test]
async fn freeze_blocks_leases_and_can_end_them() {
    let e = Env::new(json!({})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let l1 = e.lease(1).await.unwrap();
    assert!(e
        .store
        .freeze("p", false, "drill")
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(e.lease(1).await, Err(VaultError::PoolFrozen)));
    e.store.renew("p", &l1.lease_id, None, None).await.unwrap();
    let ended = e.store.freeze("p", true, "breach").await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].lease_id, l1.lease_id);
    assert!(matches!(
        e.store.renew("p", &l1.lease_id, None, None).await,
        Err(VaultError::LeaseGone)
    ));
    e.store.unfreeze("p").await.unwrap();
    e.lease(1).await.unwrap();
}

#[tokio::test]
async fn sticky_session_keeps_its_token_while_eligible() {
    let e = Env::new(json!({"max_leases_per_token": 3})).await;
    e.deposit(json!([{"secret": "s1", "id": "a", "binding": {"proxy": "socks5://u:pw@10.0.0.7:1080", "fingerprint": "chrome-120"}}, {"secret": "s2", "id": "b"}])).await;
    let s = |sess: &str| AcquireArgs {
        session: sess.into(),
        ..Default::default()
    };
    let first = e.lease_with(s("user-42")).await.unwrap();
    for _ in 0..2 {
        let l = e.lease_with(s("user-42")).await.unwrap();
        assert_eq!(l.token_id, first.token_id);
        assert_eq!(
            l.binding(&e.cipher, "p").unwrap(),
            first.binding(&e.cipher, "p").unwrap()
        );
    }

    // At its concurrency limit the session moves to the other token.
    let moved = e.lease_with(s("user-42")).await.unwrap();
    assert_ne!(moved.token_id, first.token_id);
    let again = e.lease_with(s("user-42")).await.unwrap();
    assert_eq!(again.token_id, moved.token_id);
    let bound = if first.token_id == "a" {
        &first
    } else {
        &moved
    };
    // The lease holder gets the proxy with its credentials; everyone else sees them redacted.
    assert_eq!(
        bound.binding(&e.cipher, "p").unwrap().proxy.as_deref(),
        Some("socks5://u:pw@10.0.0.7:1080")
    );
    assert_eq!(bound.proxy.shown, "socks5://u:***@10.0.0.7:1080");
    assert_eq!(
        e.meta("a").await.binding.proxy.as_deref(),
        Some("socks5://u:***@10.0.0.7:1080")
    );
}

#[tokio::test]
async fn reaper_counts_dead_leases_as_used() {
    let e = Env::new(json!({"quota_limit": 10, "lease_ttl_s": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let l = e.lease(4).await.unwrap();
    assert_eq!(l.deadline, T0 + 5_000);
    e.advance(4_999);
    assert!(e.store.reap_leases("p", 100).await.unwrap().is_empty());
    e.advance(1);
    let reaped = e.store.reap_leases("p", 100).await.unwrap();
    assert_eq!(reaped.len(), 1);
    let m = e.meta("a").await;
    assert_eq!(
        (m.quota.used, m.quota.reserved, m.leases, m.state.as_str()),
        (4, 0, 0, "active")
    );
    assert!(matches!(
        e.release(&l.lease_id, None, Outcome::Ok).await,
        Err(VaultError::LeaseGone)
    ));
}

#[tokio::test]
async fn a_lease_longer_than_the_pool_allows_is_cut_to_its_max() {
    let e = Env::new(json!({"lease_ttl_s": 10, "max_lease_ttl_s": 100})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let l = e
        .lease_with(crate::store::AcquireArgs {
            ttl_ms: Some(500_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(l.deadline, T0 + 100_000);
    e.advance(1_000);
    let r = e
        .store
        .renew("p", &l.lease_id, Some(900_000), None)
        .await
        .unwrap();
    assert_eq!(r.deadline, T0 + 101_000);
}

#[tokio::test]
async fn renew_extends_and_checks_token_life_and_quota() {
    let e = Env::new(json!({"quota_limit": 5, "lease_ttl_s": 10, "max_lease_ttl_s": 100})).await;
    e.deposit(json!([{"secret": "s1", "id": "a", "expires_at": T0 + 60_000}]))
        .await;
    let l = e.lease(2).await.unwrap();
    e.advance(5_000);
    let r = e
        .store
        .renew("p", &l.lease_id, Some(20_000), None)
        .await
        .unwrap();
    assert_eq!(r.deadline, T0 + 25_000);
    // Longer than the pool's max_lease_ttl_s: cut to it (and then past the token's life).
    assert!(matches!(
        e.store.renew("p", &l.lease_id, Some(101_000), None).await,
        Err(VaultError::TokenExpiring(_))
    ));
    assert!(matches!(
        e.store.renew("p", &l.lease_id, None, Some(6)).await,
        Err(VaultError::QuotaExhausted(_))
    ));
    assert_eq!(
        e.store
            .renew("p", &l.lease_id, None, Some(5))
            .await
            .unwrap()
            .units,
        5
    );
    assert!(matches!(
        e.store.renew("p", &l.lease_id, Some(60_000), None).await,
        Err(VaultError::TokenExpiring(_))
    ));
}

#[tokio::test]
async fn a_lease_ends_at_its_deadline_without_the_janitor() {
    let e =
        Env::new(json!({"quota_limit": 10, "lease_ttl_s": 10, "max_leases_per_token": 1})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    // Renew and release past the deadline: gone, and the units count as used.
    let l = e.lease(2).await.unwrap();
    e.advance(10_000);
    assert!(matches!(
        e.store.renew("p", &l.lease_id, None, None).await,
        Err(VaultError::LeaseGone)
    ));
    assert!(matches!(
        e.release(&l.lease_id, Some(0), Outcome::Ok).await,
        Err(VaultError::LeaseGone)
    ));
    let m = e.meta("a").await;
    assert_eq!((m.quota.used, m.quota.reserved, m.leases), (2, 0, 0));
    // A dead worker's lease: the next acquire reclaims it, no janitor needed.
    let dead = e.lease(3).await.unwrap();
    assert!(matches!(
        e.lease(1).await,
        Err(VaultError::PoolExhausted { .. })
    ));
    e.advance(10_000);
    let next = e.lease(1).await.unwrap();
    assert_eq!(next.token_id, "a");
    assert_ne!(next.lease_id, dead.lease_id);
    let m = e.meta("a").await;
    assert_eq!((m.quota.used, m.quota.reserved, m.leases), (5, 1, 1));
}

#[tokio::test]
async fn rotate_hands_out_a_different_token() {
    let e = Env::new(json!({"max_leases_per_token": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a", "refresh": {"kind": "external"}}, {"secret": "s2", "id": "b"}])).await;
    let l = e.lease(1).await.unwrap();
    let r = Report {
        outcome: Outcome::Unauthorized,
        ..Default::default()
    };
    let (released, new) = e
        .store
        .rotate("p", &l.lease_id, &r, "new-lease")
        .await
        .unwrap();
    let new = new.unwrap();
    assert_eq!(released.token_id, l.token_id);
    assert_ne!(new.token_id, l.token_id);
    assert_eq!(new.lease_id, "new-lease");
    // Rotating the last healthy token: released, but nothing else to give.
    let r = Report {
        outcome: Outcome::Ok,
        ..Default::default()
    };
    let (_, none) = e.store.rotate("p", "new-lease", &r, "third").await.unwrap();
    assert!(matches!(none, Err(VaultError::PoolExhausted { .. })));
    assert!(matches!(
        e.release("new-lease", None, Outcome::Ok).await,
        Err(VaultError::LeaseGone)
    ));
}

#[tokio::test]
async fn strategies_and_deprecation_order_the_choice() {
    let e = Env::new(json!({"strategy": "pack", "max_leases_per_token": 2})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let got: Vec<String> = [e.lease(1).await, e.lease(1).await, e.lease(1).await]
        .into_iter()
        .map(|l| l.unwrap().token_id)
        .collect();
    assert_eq!(got, ["a", "a", "b"], "pack fills the first token first");

    let e = Env::new(json!({"max_leases_per_token": 10})).await;
    e.deposit(json!([{"secret": "s1", "id": "old"}, {"secret": "s2", "id": "new"}]))
        .await;
    e.store
        .deprecate("p", "old", Some(T0 + 60_000))
        .await
        .unwrap();
    for _ in 0..3 {
        let l = e.lease(1).await.unwrap();
        assert_eq!(l.token_id, "new", "deprecated is never preferred");
    }
    e.store.revoke("p", "new", "x").await.unwrap();
    assert_eq!(
        e.lease(1).await.unwrap().token_id,
        "old",
        "but still leasable when nothing else is"
    );
    e.advance(60_000);
    let sunset = e.store.sunset_tokens("p", 10).await.unwrap();
    assert_eq!(
        sunset
            .iter()
            .map(|(id, ended)| (id.as_str(), ended.len()))
            .collect::<Vec<_>>(),
        [("old", 1)],
        "its lease ended with it"
    );
    assert_eq!(e.meta("old").await.state, "revoked");
}

#[tokio::test]
async fn pool_delete_needs_force_and_removes_every_key() {
    let e = Env::new(json!({})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    e.lease(1).await.unwrap();
    assert!(matches!(
        e.store.pool_delete("p", false).await,
        Err(VaultError::Conflict(_))
    ));
    assert_eq!(e.store.pool_delete("p", true).await.unwrap(), 1);
    assert_eq!(e.redis.cli(&["DBSIZE"]).trim(), "0");
    assert!(matches!(e.lease(1).await, Err(VaultError::PoolNotFound)));
}

#[tokio::test]
async fn ten_thousand_cycles_leave_no_keys_behind() {
    let e = Env::new(json!({"max_leases_per_token": 1000, "session_ttl_s": 1})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let baseline: u64 = e.redis.cli(&["DBSIZE"]).trim().parse().unwrap();
    for i in 0..10_000u64 {
        let a = AcquireArgs {
            idempotency_key: format!("k{i}"),
            session: if i % 10 == 0 {
                format!("s{}", i % 7)
            } else {
                String::new()
            },
            ..Default::default()
        };
        let l = e.lease_with(a).await.unwrap();
        match i % 3 {
            0 => drop(e.release(&l.lease_id, Some(0), Outcome::Ok).await.unwrap()),
            1 => {
                let r = Report {
                    outcome: Outcome::Ok,
                    ..Default::default()
                };
                let (_, n) = e
                    .store
                    .rotate("p", &l.lease_id, &r, &format!("r{i}"))
                    .await
                    .unwrap();
                e.release(&n.unwrap().lease_id, None, Outcome::Ok)
                    .await
                    .unwrap();
            }
            _ => {
                // Left to die: the reaper ends it.
                e.advance(61_000);
                assert_eq!(e.store.reap_leases("p", 100).await.unwrap().len(), 1);
            }
        }
    }
    // Sessions expire by themselves (1 s TTL, real Redis clock).
    let settled = testkit::wait_until(std::time::Duration::from_secs(60), || {
        e.redis.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap() == baseline
    });
    assert!(
        settled,
        "keys: {} vs baseline {baseline}",
        e.redis.cli(&["DBSIZE"])
    );
}

#[tokio::test]
async fn refresh_jobs_queue_once_hide_while_claimed_and_check_generations() {
    let e =
        Env::new(json!({"lease_ttl_s": 10, "min_token_ttl_s": 20, "refresh_margin_s": 60})).await;
    let refresh = json!({"kind": "oauth2_refresh_token", "token_url": "https://idp/t", "refresh_token": "rt"});
    e.deposit(json!([
        {"secret": "s1", "id": "a", "expires_at": T0 + 100_000, "refresh": refresh},
        {"secret": "s2", "id": "b", "expires_at": T0 + 100_000, "refresh": refresh},
        {"secret": "s3", "id": "c", "expires_at": T0 + 100_000},
    ]))
    .await;
    // Due at expires_at - 60 s = T0 + 40 s; only refreshable tokens are scheduled.
    e.advance(39_999);
    assert_eq!(e.store.enqueue_due("p", 100).await.unwrap(), 0);
    e.advance(1);
    assert_eq!(e.store.enqueue_due("p", 100).await.unwrap(), 2);
    assert_eq!(
        e.meta("a").await.state,
        "active",
        "still leasable while its refresh runs"
    );
    // Queued at most once: a 401 on a queued token does not add a second job.
    e.store.refresh_enqueue("p", "a").await.unwrap();
    assert_eq!(
        e.redis
            .cli(&["ZCARD", &format!("{}jobs", e.store.keys().pool("p").base())])
            .trim(),
        "2"
    );

    // In-flight limit 1: the second claim waits for the first to finish.
    let j1 = e
        .store
        .job_claim("p", false, 5_000, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert!(e
        .store
        .job_claim("p", false, 5_000, Some(1))
        .await
        .unwrap()
        .is_none());
    let j2 = e
        .store
        .job_claim("p", false, 5_000, Some(2))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(j1.token_id, j2.token_id);
    assert!(
        e.store
            .job_claim("p", false, 5_000, None)
            .await
            .unwrap()
            .is_none(),
        "both hidden"
    );
    // The external queue is separate.
    assert!(e
        .store
        .job_claim("p", true, 5_000, None)
        .await
        .unwrap()
        .is_none());

    // j1 succeeds; a duplicate completion is refused.
    let secret = crate::crypto::Secret::new("fresh");
    let done = crate::store::RefreshedToken::seal(
        &e.cipher,
        "p",
        &j1.token_id,
        &secret,
        Some(T0 + 3_700_000),
        None,
    )
    .unwrap();
    assert_eq!(
        e.store
            .job_complete("p", &j1.job_id, 0, &done, &RETRY)
            .await
            .unwrap()
            .generation,
        Some(2)
    );
    assert!(matches!(
        e.store
            .job_complete("p", &j1.job_id, 0, &done, &RETRY)
            .await,
        Err(VaultError::JobGone)
    ));
    let m = e.meta(&j1.token_id).await;
    assert_eq!(
        (m.generation, m.state.as_str(), m.fingerprint.clone()),
        (2, "active", secret.fingerprint())
    );

    // j2 fails transiently: rescheduled after the backoff, not before.
    assert_eq!(
        e.store
            .job_fail(
                "p",
                &j2.job_id,
                "token endpoint answered 503",
                Some(2_000),
                3
            )
            .await
            .unwrap()
            .state,
        "active"
    );
    e.advance(1_999);
    assert!(e
        .store
        .job_claim("p", false, 5_000, None)
        .await
        .unwrap()
        .is_none());
    e.advance(1);
    let j3 = e
        .store
        .job_claim("p", false, 5_000, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (j3.token_id.as_str(), j3.attempts),
        (j2.token_id.as_str(), 1)
    );
    // Its claimer dies: after the visibility timeout the job reappears with a new id, and
    // the dead claimer's completion is stale.
    e.advance(5_000);
    let j4 = e
        .store
        .job_claim("p", false, 5_000, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j4.token_id, j3.token_id);
    assert!(matches!(
        e.store
            .job_complete("p", &j3.job_id, 1, &done, &RETRY)
            .await,
        Err(VaultError::StaleJob(_))
    ));
    // Permanent failure quarantines and unschedules.
    assert_eq!(
        e.store
            .job_fail("p", &j4.job_id, "invalid_grant", None, 3)
            .await
            .unwrap()
            .state,
        "quarantined"
    );
    e.advance(100_000);
    assert!(e
        .store
        .job_claim("p", false, 5_000, None)
        .await
        .unwrap()
        .is_none());
    let m = e.meta(&j4.token_id).await;
    assert_eq!(
        (m.state.as_str(), m.last_error.as_deref()),
        ("quarantined", Some("invalid_grant"))
    );
}

/// A refresh whose credential lives shorter than the pool's margin is a failed attempt with a
/// reason, retried only after the backoff, and quarantines at the limit: never a loop.
#[tokio::test]
async fn a_refresh_too_short_lived_for_the_pool_is_a_failed_attempt() {
    // lease_ttl_s 60: the pool needs 90 s of life left.
    let e = Env::new(json!({})).await;
    e.deposit(
        json!([{"secret": "s", "id": "a", "expires_at": T0 + 3_600_000,
        "refresh": {"kind": "external"}}]),
    )
    .await;
    e.store.refresh_enqueue("p", "a").await.unwrap();
    let mut gen = 1;
    for attempt in 1..=3u32 {
        let j = e.claim(true).await.expect("a job is visible");
        let r = e.complete(&j, &format!("short-{attempt}"), 60_000).await;
        gen += 1;
        assert_eq!(r.generation, Some(gen), "the credential is stored");
        assert_eq!(
            r.error.as_deref(),
            Some("issued token lives 60 s, pool needs 90 s")
        );
        let m = e.meta("a").await;
        assert_eq!(m.last_error.as_deref(), r.error.as_deref());
        assert_eq!(m.refresh_attempts, attempt as u64);
        if attempt < 3 {
            assert_eq!(
                (r.state.as_str(), r.outcome()),
                ("refreshing", "will_retry")
            );
            assert!(
                e.lease(1).await.is_err(),
                "a too short-lived token is not leased"
            );
            // Not queued again at once: only after the backoff (at least half of 2 s).
            assert!(e.claim(true).await.is_none());
            e.advance(999);
            assert!(e.claim(true).await.is_none());
            e.advance(1_001);
        } else {
            assert_eq!(
                (r.state.as_str(), r.outcome()),
                ("quarantined", "quarantined")
            );
        }
    }
    e.advance(600_000);
    assert!(e.claim(true).await.is_none());
}

/// A credential that outlives the pool's minimum but not its refresh margin would be due again
/// at once; it is refreshed halfway through its usable life instead.
#[tokio::test]
async fn a_refresh_within_the_margin_is_due_halfway_not_at_once() {
    // lease_ttl_s 10: min_token_ttl_s 40, refresh_margin_s 70.
    let e = Env::new(json!({"lease_ttl_s": 10})).await;
    e.deposit(
        json!([{"secret": "s", "id": "a", "expires_at": T0 + 3_600_000,
        "refresh": {"kind": "external"}}]),
    )
    .await;
    e.store.refresh_enqueue("p", "a").await.unwrap();
    let j = e.claim(true).await.unwrap();
    let r = e.complete(&j, "sixty", 60_000).await;
    assert_eq!((r.state.as_str(), r.error), ("active", None));
    // Usable for 20 s (60 - 40): due after 10.
    e.advance(9_999);
    assert_eq!(e.store.enqueue_due("p", 10).await.unwrap(), 0);
    e.advance(1);
    assert_eq!(e.store.enqueue_due("p", 10).await.unwrap(), 1);
    let view = e.store.pool_get("p").await.unwrap();
    assert_eq!(view.issued_ttl_s, Some(60));
    assert!(
        view.warnings[0].contains("within refresh_margin_s (70 s)"),
        "{:?}",
        view.warnings
    );
}

/// The config hash, read on every call, stays a hash table: as a listpack Redis would search it
/// field by field on every lease (see `CFG_LAYOUT` in lua/rules/base.lua).
#[tokio::test]
async fn the_pool_config_is_kept_as_a_hash_table() {
    let e = Env::new(json!({"quota_limit": 10})).await;
    let key = e.redis.cli(&["KEYS", "*:{p}:cfg"]);
    let key = key.trim();
    assert!(key.ends_with(":{p}:cfg"), "{key}");
    assert_eq!(
        e.redis.cli(&["OBJECT", "ENCODING", key]).trim(),
        "hashtable"
    );
}

/// A config written before the layout field (a listpack) becomes a hash table at start-up's
/// completion; a pool deleted meanwhile is not brought back by it.
#[tokio::test]
async fn completion_gives_an_older_pool_config_this_layout_and_never_recreates_one() {
    let e = Env::new(json!({"quota_limit": 10})).await;
    let key = e.redis.cli(&["KEYS", "*:{p}:cfg"]);
    let key = key.trim().to_string();
    // Rewrite the hash as an older vault left it: every field but `layout`, as a listpack.
    let all = e.redis.cli(&["HGETALL", &key]);
    let lines: Vec<&str> = all.lines().collect();
    let mut hset = vec!["HSET", key.as_str()];
    for pair in lines.chunks(2) {
        if pair[0] != "layout" {
            hset.extend_from_slice(pair);
        }
    }
    e.redis.cli(&["DEL", &key]);
    e.redis.cli(&hset);
    assert_eq!(
        e.redis.cli(&["OBJECT", "ENCODING", &key]).trim(),
        "listpack"
    );
    let before = e.store.pool_config("p").await.unwrap();

    assert_eq!(e.store.complete_pool_configs().await.unwrap(), 1);
    assert_eq!(
        e.redis.cli(&["OBJECT", "ENCODING", &key]).trim(),
        "hashtable"
    );
    assert_eq!(
        e.store.pool_config("p").await.unwrap().to_fields(),
        before.to_fields()
    );
    // Once complete, nothing more to do.
    assert_eq!(e.store.complete_pool_configs().await.unwrap(), 0);

    // Listed but gone: completion does not write a config for it.
    let pools = key.replace("{p}:cfg", "pools");
    assert_eq!(
        e.redis.cli(&["SADD", &pools, "gone"]).trim(),
        "1",
        "{pools}"
    );
    assert_eq!(e.store.complete_pool_configs().await.unwrap(), 0);
    assert_eq!(e.redis.cli(&["KEYS", "*{gone}*"]).trim(), "");
}

fn sealed_tokens(
    e: &Env,
    ids: impl Iterator<Item = usize>,
    secret: &str,
) -> Vec<crate::model::SealedToken> {
    ids.map(|i| {
        let t: TokenInput = serde_json::from_value(
            json!({"id": format!("t{i}"), "secret": format!("{secret}-{i}")}),
        )
        .unwrap();
        t.seal(&e.cipher, &e.pool, None).unwrap()
    })
    .collect()
}

/// Function calls Redis ran since `CONFIG RESETSTAT`.
fn fcalls_since_reset(e: &Env) -> usize {
    e.redis
        .command_stat("fcall", "calls")
        .expect("no FCALL in INFO commandstats") as usize
}

/// A freeze that ends many leases announces each, in order after `pool.frozen`, in a few calls
/// (not one round trip per lease).
#[tokio::test]
async fn a_freeze_announces_every_ended_lease_in_order_in_a_few_calls() {
    use crate::ops::Actor;
    use crate::store::{EVENT_BATCH, POOL_OP_BATCH};
    const N: usize = 250;
    let e = Env::new(json!({})).await;
    let tokens: Vec<_> = (0..N)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    e.deposit(json!(tokens)).await;
    for _ in 0..N {
        e.lease(1).await.unwrap();
    }
    let before = e.store.newest_event_id().await.unwrap();
    e.redis.cli(&["CONFIG", "RESETSTAT"]);
    let ended = e
        .store
        .freeze_pool(&Actor::process("test"), "p", true, "breach")
        .await
        .unwrap();
    assert_eq!(ended.len(), N);
    assert_eq!(
        fcalls_since_reset(&e),
        N.div_ceil(POOL_OP_BATCH) + (N + 1).div_ceil(EVENT_BATCH)
    );
    let events = e
        .store
        .events_after(before.as_deref().unwrap_or("0-0"), 1000)
        .await
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|(_, ev)| ev.kind.as_str()).collect();
    assert_eq!(kinds[0], "pool.frozen");
    assert!(
        kinds[1..].iter().all(|k| *k == "lease.revoked"),
        "{kinds:?}"
    );
    let announced: Vec<_> = events[1..]
        .iter()
        .map(|(_, ev)| (ev.lease_id.clone().unwrap(), ev.token_id.clone().unwrap()))
        .collect();
    let expected: Vec<_> = ended
        .iter()
        .map(|l| (l.lease_id.clone(), l.token_id.clone()))
        .collect();
    assert_eq!(announced, expected);
}

/// A deposit of the largest size goes to Redis in short calls (reserve every id, then write, in
/// batches), and still lands whole or not at all: a conflict in its last batch leaves nothing
/// of it, and no reservation behind.
#[tokio::test]
async fn a_large_deposit_lands_whole_or_not_at_all_in_short_calls() {
    use crate::model::MAX_DEPOSIT;
    use crate::store::DEPOSIT_BATCH;
    let e = Env::new(json!({})).await;
    let keys = crate::keys::Keys::new(e.prefix.as_str());
    let (ids, depositing) = (keys.pool("p").ids(), keys.pool("p").depositing());
    let card = |key: &str, cmd: &str| -> usize { e.redis.cli(&[cmd, key]).trim().parse().unwrap() };
    e.store
        .deposit(
            "p",
            &sealed_tokens(&e, [MAX_DEPOSIT - 1].into_iter(), "first"),
        )
        .await
        .unwrap();

    let refused = e
        .store
        .deposit("p", &sealed_tokens(&e, 0..MAX_DEPOSIT, "second"))
        .await;
    assert!(
        matches!(refused, Err(VaultError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        card(&ids, "HLEN"),
        1,
        "nothing of the refused deposit stays"
    );
    assert_eq!(
        card(&depositing, "ZCARD"),
        0,
        "its reservations were given back"
    );

    e.redis.cli(&["CONFIG", "RESETSTAT"]);
    let all = e
        .store
        .deposit("p", &sealed_tokens(&e, 0..MAX_DEPOSIT - 1, "third"))
        .await
        .unwrap();
    assert_eq!((all.ids.len(), all.unchanged.len()), (MAX_DEPOSIT - 1, 0));
    assert_eq!(card(&ids, "HLEN"), MAX_DEPOSIT);
    assert_eq!(card(&depositing, "ZCARD"), 0);
    assert_eq!(
        fcalls_since_reset(&e),
        2 * (MAX_DEPOSIT - 1).div_ceil(DEPOSIT_BATCH)
    );

    // Tried again (its answer was lost): the same ids, nothing written twice.
    let seq = keys.pool("p").seq();
    let written = e.redis.cli(&["GET", &seq]);
    let again = e
        .store
        .deposit("p", &sealed_tokens(&e, 0..MAX_DEPOSIT - 1, "third"))
        .await
        .unwrap();
    assert_eq!((&again.ids, &again.unchanged), (&all.ids, &all.ids));
    assert_eq!(e.redis.cli(&["GET", &seq]), written);
    // An id held by a token with another secret is still a conflict.
    let other = e
        .store
        .deposit("p", &sealed_tokens(&e, [0].into_iter(), "fourth"))
        .await;
    assert!(matches!(other, Err(VaultError::Conflict(_))), "{other:?}");
}

/// A deposit that stopped while writing (the first batches in, Redis failing for the rest)
/// completes when tried again: what is in stays as it is, the rest is written.
#[tokio::test]
async fn a_deposit_stopped_midway_completes_when_tried_again() {
    use crate::store::DEPOSIT_BATCH;
    let e = Env::new(json!({})).await;
    let tokens = sealed_tokens(&e, 0..3 * DEPOSIT_BATCH, "s");
    e.store
        .deposit("p", &tokens[..DEPOSIT_BATCH + 7])
        .await
        .unwrap();
    let leased = e.lease_with(AcquireArgs::default()).await.unwrap().token_id;
    let done = e.store.deposit("p", &tokens).await.unwrap();
    assert_eq!(done.ids.len(), tokens.len());
    assert_eq!(done.unchanged.len(), DEPOSIT_BATCH + 7);
    let counts = e.store.token_counts("p").await.unwrap();
    assert_eq!(
        counts.values().sum::<u64>(),
        tokens.len() as u64,
        "{counts:?}"
    );
    let meta = e.store.token_get("p", &leased).await.unwrap();
    assert_eq!(meta.leases, 1, "a token already in is left as it is");
}

/// Deposits racing over the same ids: each lands whole or not at all, whichever wins; none
/// leaves a reservation behind. An id a vault reserved and never wrote (it died) is free again
/// once the reservation lapses.
#[tokio::test]
async fn racing_deposits_each_land_whole_or_not_at_all() {
    use crate::store::DEPOSIT_BATCH;
    let e = Env::new(json!({})).await;
    let keys = crate::keys::Keys::new(e.prefix.as_str());
    let depositing = keys.pool("p").depositing();
    // Eight deposits of four batches each, every one overlapping its neighbours.
    let size = 4 * DEPOSIT_BATCH;
    let deposits: Vec<_> = (0..8)
        .map(|k| sealed_tokens(&e, k * size / 2..k * size / 2 + size, &format!("d{k}")))
        .collect();
    let tasks: Vec<_> = deposits
        .iter()
        .cloned()
        .map(|tokens| {
            let store = e.store.clone();
            tokio::spawn(async move { store.deposit("p", &tokens).await })
        })
        .collect();
    let mut landed = 0;
    for (tokens, task) in deposits.iter().zip(tasks) {
        let outcome = task.await.unwrap();
        let mut theirs = 0;
        for t in tokens {
            let meta = e.store.token_get("p", &t.id).await;
            if meta.is_ok_and(|m| m.fingerprint == t.fingerprint) {
                theirs += 1;
            }
        }
        match outcome {
            Ok(done) => {
                assert_eq!((done.ids.len(), theirs), (size, size));
                landed += 1;
            }
            Err(VaultError::Conflict(_)) => assert_eq!(theirs, 0, "a refused deposit left tokens"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(landed >= 1);
    assert_eq!(e.redis.cli(&["ZCARD", &depositing]).trim(), "0");

    // A reservation nobody gives back (its vault died) holds its id until its deadline.
    let lapses_at = (T0 + 1_000).to_string();
    e.redis.cli(&["ZADD", &depositing, &lapses_at, "orphan"]);
    let orphan = || {
        let t: TokenInput = serde_json::from_value(json!({"id": "orphan", "secret": "o"})).unwrap();
        vec![t.seal(&e.cipher, &e.pool, None).unwrap()]
    };
    let held = e.store.deposit("p", &orphan()).await;
    assert!(
        matches!(&held, Err(VaultError::Conflict(d)) if d.contains("being deposited")),
        "{held:?}"
    );
    e.advance(1_000);
    assert_eq!(
        e.store.deposit("p", &orphan()).await.unwrap().ids,
        ["orphan"]
    );
}
