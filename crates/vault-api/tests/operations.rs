//! Handler tests over the real router (`oneshot`, no listening socket) against a real
//! redis-server (the test binary's shared one, a key prefix per test): each API transition writes its audit entry, with the acting client token's
//! `sub` and `jti`, and publishes the events it promises. The janitor's and the refresher's
//! calls of the same operations are covered end to end (tests/e2e: events, refresh).

mod common;

use axum::http::Method;
use common::Vault;
use serde_json::json;

#[tokio::test]
async fn every_api_transition_is_audited_with_its_actor_and_announced() {
    let v = Vault::start().await;
    use Method as M;
    v.ok(
        M::PUT,
        "/v1/pools/p",
        json!({"quarantine_after_strikes": 1}),
    )
    .await;
    v.ok(
        M::PUT,
        "/v1/pools/p",
        json!({"quarantine_after_strikes": 1}),
    )
    .await;
    v.ok(
        M::POST,
        "/v1/pools/p/tokens",
        json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"},
            {"id": "c", "secret": "sc", "refresh": {"kind": "external"}}]}),
    )
    .await;
    // A lease on `a`, then `a` revoked: its lease ends with it.
    // Bounded: the pool picks among three tokens, so 200 tries without `a` is a bug, not luck.
    let mut on_a = None;
    for _ in 0..200 {
        let l = v.ok(M::POST, "/v1/pools/p/leases", json!({})).await;
        let id = l["lease_id"].as_str().unwrap().to_string();
        if l["token_id"] == "a" {
            on_a = Some(id);
            break;
        }
        v.ok(
            M::POST,
            &format!("/v1/pools/p/leases/{id}/release"),
            json!({"used": 0}),
        )
        .await;
    }
    let lease = on_a.expect("token a was never leased in 200 tries");
    v.ok(
        M::POST,
        "/v1/pools/p/tokens/a/revoke",
        json!({"reason": "leaked"}),
    )
    .await;
    // `b` struck once: quarantined; then restored.
    let l = v.ok(M::POST, "/v1/pools/p/leases", json!({})).await;
    assert_eq!(l["token_id"], "b");
    let lid = l["lease_id"].as_str().unwrap();
    v.ok(
        M::POST,
        &format!("/v1/pools/p/leases/{lid}/release"),
        json!({"outcome": "forbidden"}),
    )
    .await;
    v.ok(M::POST, "/v1/pools/p/tokens/b/restore", json!({}))
        .await;
    v.ok(M::POST, "/v1/pools/p/tokens/b/deprecate", json!({}))
        .await;
    v.ok(M::POST, "/v1/pools/p/tokens/c/refresh", json!({}))
        .await;
    v.ok(M::POST, "/v1/pools/p/freeze", json!({"reason": "drill"}))
        .await;
    v.ok(M::POST, "/v1/pools/p/unfreeze", json!({})).await;
    v.ok(M::POST, "/v1/pools/p/rotate", json!({"sunset_s": 600}))
        .await;
    v.ok(M::POST, "/v1/pools/p/rotate/cancel", json!({})).await;
    v.ok(M::DELETE, "/v1/pools/p/tokens/c", json!({})).await;

    let trail = v.trail(Some("p")).await;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "pool.create",
            "pool.update",
            "token.deposit",
            "token.revoke",
            "lease.outcome",
            "token.quarantine",
            "token.restore",
            "token.deprecate",
            "token.refresh_requested",
            "pool.freeze",
            "pool.unfreeze",
            "pool.rotate",
            "pool.rotate_cancel",
            "token.delete",
        ],
        "{trail:?}"
    );
    for e in &trail {
        assert_eq!(
            (e.actor.as_str(), e.actor_jti.as_deref()),
            ("ops-admin", Some(v.jti.as_str())),
            "{e:?}"
        );
        assert_eq!(e.pool.as_deref(), Some("p"));
    }
    let revoke = trail.iter().find(|e| e.action == "token.revoke").unwrap();
    assert_eq!(revoke.detail.as_deref(), Some("leaked (1 leases ended)"));
    // One entry for the deposit of three tokens, each listed with its secret's fingerprint.
    let deposit = trail.iter().find(|e| e.action == "token.deposit").unwrap();
    let listed = deposit.detail.as_deref().unwrap_or_default();
    assert!(
        listed.starts_with("sha256:")
            && [" a, sha256:", " b, sha256:", " c (3 tokens)"]
                .iter()
                .all(|p| listed.contains(p)),
        "{listed}"
    );

    let events: Vec<(String, Option<String>, Option<String>)> = v
        .events()
        .await
        .into_iter()
        .map(|e| (e.kind, e.token_id, e.lease_id))
        .collect();
    let some = |s: &str| Some(s.to_string());
    for expected in [
        ("token.revoked".to_string(), some("a"), None),
        ("lease.revoked".to_string(), some("a"), Some(lease.clone())),
        ("token.quarantined".to_string(), some("b"), None),
        ("pool.frozen".to_string(), None, None),
        ("pool.unfrozen".to_string(), None, None),
        ("pool.rotating".to_string(), None, None),
    ] {
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }

    // Deleting the pool is on the vault-wide trail.
    v.ok(M::DELETE, "/v1/pools/p?force=true", json!({})).await;
    let wide = v.trail(None).await;
    let delete = wide.iter().find(|e| e.action == "pool.delete").unwrap();
    assert_eq!(delete.actor_jti.as_deref(), Some(v.jti.as_str()));
}
