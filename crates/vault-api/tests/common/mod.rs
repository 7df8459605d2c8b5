//! A vault for handler tests: the real router answering over `oneshot` (no listening socket,
//! no process), on the test binary's one shared redis-server, under a key prefix of its own,
//! with an admin client token. Scenarios that need several processes stay in `tests/e2e`.

#![allow(dead_code)] // Each test file uses its own part.

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::config::RedisArgs;
use vault_core::crypto::{Cipher, MasterKey};
use vault_core::model::{AuditEntry, VaultEvent};
use vault_core::Store;

pub(crate) struct Vault {
    pub(crate) app: Router,
    pub(crate) store: Store,
    pub(crate) token: String,
    pub(crate) jti: String,
}

pub(crate) use testkit::Answer;

impl Vault {
    pub(crate) async fn start() -> Vault {
        let store = Store::connect(&RedisArgs {
            redis_timeout_ms: 5000,
            audit_max_entries: 10_000,
            events_max_entries: 10_000,
            redis_pool_size: 2,
            // The test's own keys on the shared server.
            ..RedisArgs::new(
                testkit::shared_redis().url(),
                format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            )
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
        }
    }

    /// A request with the admin token.
    pub(crate) fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
    }

    /// Send a request through the router.
    pub(crate) async fn send(&self, req: Request<Body>) -> Answer {
        let (head, body) = self.app.clone().oneshot(req).await.unwrap().into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
        Answer::new(head.status, &head.headers, &bytes)
    }

    /// A JSON request (no body when `body` is None).
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        match body {
            Some(b) => self.send_json_text(method, path, b.to_string()).await,
            None => {
                let req = self.request(method, path).body(Body::empty()).unwrap();
                self.send(req).await
            }
        }
    }

    /// A request whose body is `text` as given, sent as JSON (for bodies that are not).
    pub(crate) async fn send_json_text(
        &self,
        method: Method,
        path: &str,
        text: impl Into<Body>,
    ) -> Answer {
        let req = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(text.into())
            .unwrap();
        self.send(req).await
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
    pub(crate) async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
    pub(crate) async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A JSON request that must succeed (2xx); its body.
    pub(crate) async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let a = self.call(method.clone(), path, Some(body)).await;
        assert!(a.status.is_success(), "{method} {path}: {a:?}");
        a.body
    }

    /// Every audit entry of the pool (or the vault-wide trail), oldest first.
    pub(crate) async fn trail(&self, pool: Option<&str>) -> Vec<AuditEntry> {
        self.store
            .audit_read(pool, None, None, 1000, false)
            .await
            .unwrap()
    }

    /// Every event published so far.
    pub(crate) async fn events(&self) -> Vec<VaultEvent> {
        let all = self.store.events_after("0-0", 1000).await.unwrap();
        all.into_iter().map(|(_, e)| e).collect()
    }
}
