//! Client authentication: bad tokens on every route family, scopes and pool limits, the
//! clients API, revocation across replicas (also after a Redis restart), staged key rotation
//! with no failed request, and offline minting with vaultctl.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};

use crate::harness::{key_ring, now_ms, one, Api, One};

/// One request per route family, with a body that would succeed for an admin.
fn families() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/v1/pools", None),
        (Method::GET, "/v1/pools/p/status", None),
        (Method::PUT, "/v1/pools/p", Some(json!({}))),
        (
            Method::POST,
            "/v1/pools/p/tokens",
            Some(json!({"secret": "s-new"})),
        ),
        (Method::GET, "/v1/pools/p/tokens", None),
        (
            Method::POST,
            "/v1/pools/p/tokens/t1/revoke",
            Some(json!({})),
        ),
        (Method::POST, "/v1/pools/p/leases", Some(json!({}))),
        (
            Method::POST,
            "/v1/pools/p/refresh-jobs/claim",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/clients",
            Some(json!({"sub": "x", "scopes": ["lease"]})),
        ),
        (
            Method::POST,
            "/v1/clients/revoke",
            Some(json!({"jti": "j"})),
        ),
        (Method::POST, "/v1/introspect", Some(json!({"token": "x"}))),
        (Method::GET, "/v1/audit?pool=p", None),
    ]
}

async fn setup() -> One {
    let t = one(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api.put("/v1/pools/other", json!({})).await;
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s1", "id": "t1"}))
        .await;
    t
}

fn forge(header: Value, claims: Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn bad_tokens_are_refused_on_every_route_family() {
    let t = setup().await;
    let now = now_ms() / 1000;
    let dir = t.dep.keys_dir.path();
    let ring = key_ring(dir);
    let claims = json!({"iss": "tokenvault", "aud": "tokenvault", "sub": "x", "exp": now + 600, "iat": now, "jti": "j1", "scope": "admin"});
    // Same kid, another key.
    let mut imposter = KeyRing::empty("tokenvault", "tokenvault", 86_400);
    imposter.add_pem("k1", &generate_key_pem()).unwrap();
    let mut unknown = KeyRing::empty("tokenvault", "tokenvault", 86_400);
    unknown.add_pem("k9", &generate_key_pem()).unwrap();
    let mut other_aud = KeyRing::empty("tokenvault", "someone-else", 86_400);
    other_aud
        .add_pem("k1", &std::fs::read_to_string(dir.join("k1.pem")).unwrap())
        .unwrap();
    let mut other_iss = KeyRing::empty("evil", "tokenvault", 86_400);
    other_iss
        .add_pem("k1", &std::fs::read_to_string(dir.join("k1.pem")).unwrap())
        .unwrap();
    // HS256 keyed with the vault's *public* key: the classic algorithm-confusion attack.
    let public_x = key_ring(dir).jwks().keys[0].x.clone();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();

    let mint = |r: &KeyRing, now: i64| r.mint("x", &[Scope::Admin], None, 600, now).unwrap().0;
    let unauthorized: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a JWT", Some("not-a-jwt".into())),
        ("bad signature", Some(mint(&imposter, now))),
        ("unknown kid", Some(mint(&unknown, now))),
        ("expired", Some(mint(&ring, now - 3600))),
        ("not yet valid", Some(mint(&ring, now + 3600))),
        ("wrong audience", Some(mint(&other_aud, now))),
        ("wrong issuer", Some(mint(&other_iss, now))),
        (
            "alg none",
            Some(forge(
                json!({"alg": "none", "typ": "JWT", "kid": "k1"}),
                claims.clone(),
                "",
            )),
        ),
        ("HS256 with the public key", Some(hs256)),
    ];
    let no_scope = t.dep.token("auditor", &[Scope::Audit], None);
    let other_pool = t.dep.token(
        "w",
        &[Scope::Lease, Scope::Deposit],
        Some(vec!["other".into()]),
    );
    let anon = Api::new(&t.api.base);
    let keys_before = t.redis.cli(&["DBSIZE"]);
    for (method, path, body) in families() {
        for (what, token) in &unauthorized {
            let headers: Vec<(&str, String)> = token
                .iter()
                .map(|tk| ("authorization", format!("Bearer {tk}")))
                .collect();
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let a = anon.call_with(method.clone(), path, body.clone(), &h).await;
            assert_eq!(a.status, 401, "{what} on {method} {path}: {a:?}");
            assert_eq!(a.code(), "unauthorized", "{what} on {path}");
            let challenge = a.www_authenticate.clone().unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer"),
                "{what} on {path}: {challenge}"
            );
        }
        // Valid, but without the scope (GET /v1/pools is open to every scope; the audit
        // route is what this token's scope is for).
        if path != "/v1/pools" && !path.starts_with("/v1/audit") {
            let a = anon
                .clone()
                .with_token(&no_scope)
                .call(method.clone(), path, body.clone())
                .await;
            a.problem(403, "forbidden");
        }
        // Valid, but for another pool.
        if path.starts_with("/v1/pools/p") {
            let a = anon
                .clone()
                .with_token(&other_pool)
                .call(method.clone(), path, body.clone())
                .await;
            a.problem(403, "forbidden");
        }
    }
    assert_eq!(
        t.redis.cli(&["DBSIZE"]),
        keys_before,
        "refused requests changed nothing"
    );
    // Every refusal is counted by its reason (what the auth-failure alert watches).
    let m = crate::harness::metrics_text(&t.vault.base).await;
    let routes = families().len() as f64;
    for (reason, tokens) in [
        ("missing", 1.0),
        // "not a JWT", and `alg: none` (no algorithm the JWT library knows).
        ("malformed", 2.0),
        ("signature", 1.0),
        ("unknown_key", 1.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("wrong_audience", 2.0),
        ("algorithm", 1.0),
    ] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            crate::harness::sample(&m, "tv_client_auth_failures_total", &[&label]),
            Some(tokens * routes),
            "{reason}:\n{m}"
        );
    }
}

#[tokio::test]
async fn scopes_and_pools_limit_what_a_client_sees() {
    let t = setup().await;
    let base = Api::new(&t.api.base);
    let worker = base.clone().with_token(&t.dep.token(
        "worker",
        &[Scope::Lease],
        Some(vec!["p".into()]),
    ));
    let depositor = base
        .clone()
        .with_token(&t.dep.token("login-bot", &[Scope::Deposit], None));

    let l = worker.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201);
    assert_eq!(worker.get("/v1/pools/p/status").await.status, 200);
    let pools: Vec<String> = worker.get("/v1/pools").await.body["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pools, ["p"], "a worker sees only its pools");
    worker
        .post("/v1/pools/p/tokens", json!({"secret": "x"}))
        .await
        .problem(403, "forbidden");
    worker
        .get("/v1/pools/p/tokens")
        .await
        .problem(403, "forbidden");
    worker
        .put("/v1/pools/p", json!({}))
        .await
        .problem(403, "forbidden");
    worker
        .post("/v1/pools/other/leases", json!({}))
        .await
        .problem(403, "forbidden");

    assert_eq!(
        depositor
            .post("/v1/pools/p/tokens", json!({"secret": "dep"}))
            .await
            .status,
        201
    );
    depositor
        .get("/v1/pools/p/tokens")
        .await
        .problem(403, "forbidden");
    depositor
        .get("/v1/pools/p/tokens/t1")
        .await
        .problem(403, "forbidden");
    depositor
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(403, "forbidden");
    depositor
        .post("/v1/clients", json!({"sub": "x", "scopes": ["admin"]}))
        .await
        .problem(403, "forbidden");

    // A pool-limited admin cannot mint a wider token.
    let limited_admin = base.clone().with_token(&t.dep.token(
        "pool-admin",
        &[Scope::Admin],
        Some(vec!["p".into()]),
    ));
    limited_admin
        .post("/v1/clients", json!({"sub": "x", "scopes": ["lease"]}))
        .await
        .problem(403, "forbidden");
    assert_eq!(
        limited_admin
            .post(
                "/v1/clients",
                json!({"sub": "x", "scopes": ["lease"], "pools": ["p"]})
            )
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn clients_mint_introspect_revoke_and_jwks() {
    let t = setup().await;
    let m = t
        .api
        .post(
            "/v1/clients",
            json!({"sub": "scraper-7", "scopes": ["lease"], "pools": ["p"], "ttl_s": 600}),
        )
        .await;
    assert_eq!(m.status, 201, "{m:?}");
    let token = m.str("token");
    let worker = Api::new(&t.api.base).with_token(&token);
    assert_eq!(
        worker.post("/v1/pools/p/leases", json!({})).await.status,
        201
    );
    let i = t.api.post("/v1/introspect", json!({"token": token})).await;
    assert_eq!(i.body["active"], true);
    assert_eq!(
        (i.str("sub"), i.str("scope"), i.str("jti")),
        ("scraper-7".into(), "lease".into(), m.str("jti"))
    );
    let form = t
        .api
        .raw(Method::POST, "/v1/introspect")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        Api::answer(form).await.body["active"],
        true,
        "RFC 7662 form body"
    );
    t.api
        .post("/v1/clients", json!({"sub": "x", "scopes": ["root"]}))
        .await
        .problem(400, "invalid_request");
    t.api
        .post(
            "/v1/clients",
            json!({"sub": "x", "scopes": ["lease"], "ttl_s": 99999999}),
        )
        .await
        .problem(400, "invalid_request");

    assert_eq!(
        t.api
            .post("/v1/clients/revoke", json!({"jti": m.str("jti")}))
            .await
            .status,
        200
    );
    worker
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(401, "unauthorized");
    assert_eq!(
        t.api
            .post("/v1/introspect", json!({"token": token}))
            .await
            .body["active"],
        false
    );
    assert_eq!(
        t.api
            .post("/v1/introspect", json!({"token": "garbage"}))
            .await
            .body["active"],
        false
    );

    let jwks = Api::new(&t.api.base).get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let k = &jwks.body["keys"][0];
    assert_eq!(
        (k["kid"].as_str(), k["kty"].as_str(), k["crv"].as_str()),
        (Some("k1"), Some("OKP"), Some("Ed25519"))
    );
    assert!(!jwks.body.to_string().contains("PRIVATE"));
}

/// Poll until `api` answers 401 to a lease call, returning how long it took.
async fn refused_within(api: &Api, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if api.post("/v1/pools/p/leases", json!({})).await.status == 401 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "not refused within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn revocation_reaches_another_replica_within_a_second_also_after_a_redis_restart() {
    let mut t = setup().await;
    let b = t.dep.vault(&[]).await;
    let token = t.dep.token("w", &[Scope::Lease], None);
    let jti = key_ring(t.dep.keys_dir.path()).verify(&token).unwrap().jti;
    let on_b = Api::new(&b.base).with_token(&token);
    assert_eq!(
        on_b.post("/v1/pools/p/leases", json!({})).await.status,
        201,
        "B accepts it (and caches it)"
    );
    assert_eq!(
        t.api
            .post("/v1/clients/revoke", json!({"jti": jti}))
            .await
            .status,
        200
    );
    let took = refused_within(&on_b, Duration::from_secs(1)).await;
    eprintln!("revocation on replica B after {took:?}");

    // Redis restarts (empty: tests run without persistence). B must still refuse the token it
    // knows is revoked, and must learn of a revocation made while it was reconnecting.
    t.redis.restart();
    let admin_b = t.dep.api(&b);
    let deadline = Instant::now() + crate::harness::PATIENCE;
    while admin_b.put("/v1/pools/p", json!({})).await.status.as_u16() >= 300 {
        assert!(
            Instant::now() < deadline,
            "B did not recover after the Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s2"}))
        .await;
    on_b.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(401, "unauthorized");
    // B writes back what the empty Redis lost, so a replica started now refuses it too.
    let stored = format!("{}:revoked", t.dep.prefix);
    assert!(
        crate::harness::eventually(crate::harness::PATIENCE, async || !t
            .redis
            .cli(&["ZSCORE", &stored, &jti])
            .trim()
            .is_empty())
        .await,
        "the lost revocation was not written back"
    );
    let c = t.dep.vault(&[]).await;
    Api::new(&c.base)
        .with_token(&token)
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(401, "unauthorized");
    let token2 = t.dep.token("w2", &[Scope::Lease], None);
    let jti2 = key_ring(t.dep.keys_dir.path()).verify(&token2).unwrap().jti;
    let on_b2 = Api::new(&b.base).with_token(&token2);
    assert_eq!(
        on_b2.post("/v1/pools/p/leases", json!({})).await.status,
        201
    );
    assert_eq!(
        t.api
            .post("/v1/clients/revoke", json!({"jti": jti2}))
            .await
            .status,
        200
    );
    let took = refused_within(&on_b2, Duration::from_secs(1)).await;
    eprintln!("revocation on replica B after a Redis restart: {took:?}");
}

#[tokio::test]
async fn staged_key_rotation_with_no_failed_request() {
    let t = setup().await;
    let dir = t.dep.keys_dir.path().to_path_buf();
    let b = t.dep.vault(&[]).await;
    // The replicas a load balancer would route to; a restarting one is skipped.
    let replicas = Arc::new(RwLock::new(vec![t.vault.base.clone(), b.base.clone()]));
    let mut vaults = vec![t.vault, b];
    let old_token = t.dep.token("w", &[Scope::Lease], None);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let admin = t.dep.admin.clone();
    let client = {
        let (replicas, stop, ok, failed) =
            (replicas.clone(), stop.clone(), ok.clone(), failed.clone());
        let old_token = old_token.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let bases = replicas.read().unwrap().clone();
                let base = &bases[i % bases.len()];
                i += 1;
                // A token minted just now by whichever replica, and the long-lived old one.
                let Ok(res) = Api::new(base)
                    .with_token(&admin)
                    .raw(Method::POST, "/v1/clients")
                    .json(&json!({"sub": "fresh", "scopes": ["lease"], "ttl_s": 600}))
                    .send()
                    .await
                else {
                    continue;
                };
                let m = Api::answer(res).await;
                if m.status != 201 && !m.status.is_server_error() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                for tok in [m.str("token"), old_token.clone()]
                    .into_iter()
                    .filter(|t| !t.is_empty())
                {
                    let other = &bases[i % bases.len()];
                    // A replica that is going down refuses the connection: a load balancer
                    // retries elsewhere; only answers count.
                    let Ok(res) = Api::new(other)
                        .with_token(&tok)
                        .raw(Method::GET, "/v1/pools/p/status")
                        .send()
                        .await
                    else {
                        continue;
                    };
                    if res.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }
        })
    };
    // Rolling restart: take one replica out of rotation, restart it, put it back.
    // After each restart the client must make 10 more successful calls before the next step,
    // so traffic provably runs through every step of the rotation.
    async fn roll(
        dep: &crate::harness::Deployment,
        vaults: &mut [crate::harness::Vault],
        replicas: &RwLock<Vec<String>>,
        ok: Option<&AtomicU64>,
    ) {
        for v in vaults.iter_mut() {
            let old = v.base.clone();
            replicas.write().unwrap().retain(|b| *b != old);
            v.child.terminate(Duration::from_secs(5));
            *v = dep.vault(&[]).await;
            replicas.write().unwrap().push(v.base.clone());
            if let Some(ok) = ok {
                let before = ok.load(Ordering::Relaxed);
                let served = crate::harness::eventually(crate::harness::PATIENCE, async || {
                    ok.load(Ordering::Relaxed) >= before + 10
                })
                .await;
                assert!(served, "the client made no progress after a restart");
            }
        }
    }
    let new_pem = generate_key_pem();
    // 1. k2's public key everywhere: verifies, does not sign yet.
    let pub_pem = {
        use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
        ed25519_dalek::SigningKey::from_pkcs8_pem(&new_pem)
            .unwrap()
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap()
    };
    std::fs::write(dir.join("k2.pub.pem"), pub_pem).unwrap();
    roll(&t.dep, &mut vaults, &replicas, Some(&ok)).await;
    // 2. k2 becomes the signer (its private key sorts after k1).
    std::fs::remove_file(dir.join("k2.pub.pem")).unwrap();
    std::fs::write(dir.join("k2.pem"), &new_pem).unwrap();
    roll(&t.dep, &mut vaults, &replicas, Some(&ok)).await;
    let served_during = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation"
    );
    assert!(
        served_during > 20,
        "the client kept calling: {served_during}"
    );
    let fresh = Api::new(&vaults[0].base)
        .with_token(&t.dep.admin)
        .post("/v1/clients", json!({"sub": "n", "scopes": ["lease"]}))
        .await;
    let kid = jsonwebtoken::decode_header(fresh.str("token")).unwrap().kid;
    assert_eq!(kid.as_deref(), Some("k2"), "k2 signs now");

    // 3. After the longest client-token TTL, k1 is retired: its tokens stop working.
    std::fs::remove_file(dir.join("k1.pem")).unwrap();
    roll(&t.dep, &mut vaults, &replicas, None).await;
    let api = Api::new(&vaults[1].base);
    api.clone()
        .with_token(&old_token)
        .get("/v1/pools/p/status")
        .await
        .problem(401, "unauthorized");
    assert_eq!(
        api.with_token(&fresh.str("token"))
            .get("/v1/pools/p/status")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn vaultctl_mints_offline_tokens_the_vault_accepts() {
    let t = setup().await;
    let out = std::process::Command::new(testkit::bin_path("vaultctl"))
        .args(["token", "mint", "--signing-key"])
        .arg(t.dep.keys_dir.path().join("k1.pem"))
        .args(["--sub", "bootstrap", "--scopes", "admin", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let api = Api::new(&t.api.base).with_token(&token);
    assert_eq!(api.get("/v1/pools/p/tokens").await.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("2026-12.pem");
    let gen = std::process::Command::new(testkit::bin_path("vaultctl"))
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success());
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    let again = std::process::Command::new(testkit::bin_path("vaultctl"))
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success(), "never overwrites a key");
}

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_address() {
    let t = one(&[("TV_AUTH_FAILURE_LIMIT", "3")]).await;
    let anon = Api::new(&t.api.base);
    for _ in 0..3 {
        anon.clone()
            .with_token("garbage")
            .get("/v1/pools")
            .await
            .problem(401, "unauthorized");
    }
    let a = anon.clone().with_token("garbage").get("/v1/pools").await;
    a.problem(429, "too_many_auth_failures");
    assert!(
        a.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{a:?}"
    );
    anon.get("/v1/pools")
        .await
        .problem(429, "too_many_auth_failures");
    // A valid token from the same address still works.
    assert_eq!(t.api.get("/v1/pools").await.status, 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = one(&[("TV_HEADER_READ_TIMEOUT_MS", "300")]).await;
    let addr = t.api.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile others are served.
    assert_eq!(t.api.get("/healthz").await.status, 200);
    let start = Instant::now();
    let mut buf = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    let n = read
        .expect("the server must close a connection whose headers never finish")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(3));
}
