//! Handler tests over the real router (`oneshot`, no listening socket) against a real
//! redis-server: each API transition writes its audit entry, with the acting client token's
//! `sub` and `jti`, and publishes the events it promises. The janitor's and the refresher's
//! calls of the same operations are covered end to end (tests/e2e: events, refresh).

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use serde_json::{json, Value};
use testkit::RedisServer;
use tower::ServiceExt;
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::config::RedisArgs;
use vault_core::crypto::{Cipher, MasterKey};
use vault_core::model::{AuditEntry, VaultEvent};
use vault_core::Store;

struct Vault {
    app: Router,
    store: Store,
    token: String,
    jti: String,
    _redis: RedisServer,
}

impl Vault {
    async fn start() -> Vault {
        let redis = RedisServer::start();
        let store = Store::connect(&RedisArgs {
            redis_url: redis.url(),
            prefix: "tv".into(),
            redis_timeout_ms: 2000,
            audit_max_entries: 10_000,
            events_max_entries: 10_000,
            redis_pool_size: 2,
            wait: Default::default(),
        })
        .unwrap();
        store.load_scripts().await.unwrap();
        let mut keys = KeyRing::empty("tokenvault", "tokenvault", 86_400);
        keys.add_pem("k1", &generate_key_pem()).unwrap();
        let (token, jti, _) = keys
            .mint(
                "ops-admin",
                &[Scope::Admin],
                None,
                3600,
                vault_core::time::now_ms() / 1000,
            )
            .unwrap();
        let state =
            vault_api::AppState::new(store.clone(), Cipher::new(&MasterKey::generate()), keys, 60);
        Vault {
            app: vault_api::router(state),
            store,
            token,
            jti,
            _redis: redis,
        }
    }

    /// One request through the router; the answer's status and JSON body.
    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// Every audit entry of the pool (or the vault-wide trail), oldest first.
    async fn trail(&self, pool: Option<&str>) -> Vec<AuditEntry> {
        self.store.audit_read(pool, None, None, 1000).await.unwrap()
    }

    /// Every event published so far.
    async fn events(&self) -> Vec<VaultEvent> {
        let all = self.store.events_after("0-0", 1000).await.unwrap();
        all.into_iter().map(|(_, e)| e).collect()
    }
}

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
    let lease = loop {
        let l = v.ok(M::POST, "/v1/pools/p/leases", json!({})).await;
        let id = l["lease_id"].as_str().unwrap().to_string();
        if l["token_id"] == "a" {
            break id;
        }
        v.ok(
            M::POST,
            &format!("/v1/pools/p/leases/{id}/release"),
            json!({"used": 0}),
        )
        .await;
    };
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
            "token.deposit",
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
