//! Secrets at rest: after deposits, leases and refresh credentials, no value anywhere in Redis
//! contains a plaintext secret, while metadata stays readable for redis-cli users.

use redis::AsyncCommands;
use serde_json::json;

use crate::harness::one;

/// Every string stored under every key, whatever its type.
pub(crate) async fn dump_everything(url: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = {
        let mut it: redis::AsyncIter<String> = c.scan().await.unwrap();
        let mut v = vec![];
        while let Some(k) = it.next_item().await {
            v.push(k.unwrap());
        }
        v
    };
    let mut out = vec![];
    for k in keys {
        let ty: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        // Bytes: a sealed secret is stored as bytes, not text.
        let vals: Vec<Vec<u8>> = match ty.as_str() {
            "string" => vec![c.get(&k).await.unwrap()],
            "hash" => {
                let h: Vec<Vec<u8>> = c.hgetall(&k).await.unwrap();
                h
            }
            "set" => c.smembers(&k).await.unwrap(),
            "zset" => c.zrange(&k, 0, -1).await.unwrap(),
            "list" => c.lrange(&k, 0, -1).await.unwrap(),
            "stream" => {
                let rows: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                rows.into_iter()
                    .flat_map(|(_, fields)| fields)
                    .map(String::into_bytes)
                    .collect()
            }
            other => panic!("unexpected key type {other} for {k}"),
        };
        // DUMP too: the serialized form must not carry it either (e.g. in a listpack).
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        out.push((k.clone(), String::from_utf8_lossy(&dump).into_owned()));
        out.extend(
            vals.into_iter()
                .map(|v| (k.clone(), String::from_utf8_lossy(&v).into_owned())),
        );
    }
    out
}

#[tokio::test]
async fn no_plaintext_secret_in_redis() {
    let t = one(&[]).await;
    let api = &t.api;
    api.put("/v1/pools/sec", json!({"max_leases_per_token": 3}))
        .await;
    let secrets = [
        "PLAINTEXT-alpha-7f3a",
        "PLAINTEXT-beta-91c2",
        "PLAINTEXT-gamma-e4d0",
    ];
    let a = api
        .post(
            "/v1/pools/sec/tokens",
            json!({"tokens": [
                {"secret": secrets[0], "id": "t0"},
                {"secret": secrets[1], "id": "t1", "refresh": {"kind": "oauth2_refresh_token",
                    "token_url": "https://idp.example/token", "refresh_token": "PLAINTEXT-refresh-55aa",
                    "client_id": "cid", "client_secret": "PLAINTEXT-client-66bb"}},
                {"secret": secrets[2], "id": "t2",
                    "binding": {"proxy": "http://proxyuser:PLAINTEXT-proxy-77cc@127.0.0.1:3128"}}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    for _ in 0..5 {
        let l = api
            .post("/v1/pools/sec/leases", json!({"session": "s1"}))
            .await;
        assert_eq!(l.status, 201);
        assert!(
            secrets.contains(&l.str("secret").as_str()),
            "the lease itself carries the secret"
        );
    }
    let everything = dump_everything(&t.dep.redis_url).await;
    assert!(
        everything.len() > 10,
        "the scan saw the data: {}",
        everything.len()
    );
    for (key, value) in &everything {
        assert!(!value.contains("PLAINTEXT"), "plaintext secret under {key}");
    }
    // Metadata is readable where an operator looks.
    let key = crate::harness::token_key(&t.redis, &t.dep.prefix, "sec", "t0");
    let h = t.redis.cli(&["HGETALL", &key]);
    for field in ["state", "fingerprint", "sha256:", "key_id"] {
        assert!(h.contains(field), "{field} missing in:\n{h}");
    }
    // The sealed secret is beside it, as bytes: nonce (12), ciphertext, tag (16).
    let sealed = key.replace(":t:", ":sec:");
    let len: usize = t.redis.cli(&["STRLEN", &sealed]).trim().parse().unwrap();
    assert_eq!(len, 12 + secrets[0].len() + 16, "{sealed}");
    let meta = api.get("/v1/pools/sec/tokens/t1").await;
    assert_eq!(meta.body["refresh"]["client_id"], "cid");
    assert!(!meta.body.to_string().contains("PLAINTEXT"));
    // Proxy credentials: redacted in metadata and listings, in full only in a lease.
    let meta = api.get("/v1/pools/sec/tokens/t2").await;
    assert_eq!(
        meta.body["binding"]["proxy"],
        "http://proxyuser:***@127.0.0.1:3128"
    );
    let list = api.get("/v1/pools/sec/tokens?limit=10").await;
    assert!(!list.body.to_string().contains("PLAINTEXT"), "{list:?}");
    let mut seen_full = false;
    for _ in 0..6 {
        let l = api.post("/v1/pools/sec/leases", json!({})).await;
        if l.str("token_id") == "t2" {
            assert_eq!(
                l.body["binding"]["proxy"],
                "http://proxyuser:PLAINTEXT-proxy-77cc@127.0.0.1:3128"
            );
            seen_full = true;
        }
    }
    assert!(seen_full, "t2 was leased");
    // Only proxy URLs, and nothing smuggled in them.
    for bad in [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://host:1/\r\nX-Injected: 1",
        "ftp://host:21",
        "socks5://",
    ] {
        let a = api
            .post(
                "/v1/pools/sec/tokens",
                json!({"secret": "s", "binding": {"proxy": bad}}),
            )
            .await;
        a.problem(400, "invalid_request");
        assert!(!a.str("detail").contains(bad), "{a:?}");
    }
    for ok in ["https://h:443", "socks5h://u:p@h:1080"] {
        let a = api
            .post(
                "/v1/pools/sec/tokens",
                json!({"secret": "s", "binding": {"proxy": ok}}),
            )
            .await;
        assert_eq!(a.status, 201, "{ok}: {a:?}");
    }
}

#[tokio::test]
async fn a_vault_with_another_master_key_cannot_read_secrets() {
    let t = one(&[]).await;
    t.api.put("/v1/pools/k", json!({})).await;
    t.api
        .post("/v1/pools/k/tokens", json!({"secret": "s3cr3t"}))
        .await;
    let mut other = t.dep.clone();
    other.master_key = vault_core::crypto::MasterKey::generate().to_base64();
    let v2 = other.vault(&[]).await;
    let api2 = other.api(&v2);
    let a = api2.post("/v1/pools/k/leases", json!({})).await;
    a.problem(500, "crypto_error");
    assert!(!a.body.to_string().contains("s3cr3t"));
}

#[tokio::test]
async fn master_key_rotation_with_reencrypt() {
    let t = one(&[]).await;
    let api = &t.api;
    // The pool's own secret (its default refresh client secret) is re-sealed like the tokens'.
    api.put(
        "/v1/pools/p",
        serde_json::json!({"max_leases_per_token": 10, "refresh": {"kind": "oauth2_client_credentials",
            "token_url": "http://idp/t", "client_id": "c", "client_secret": "pool-cs"}}),
    )
    .await;
    api.post("/v1/pools/p/tokens", serde_json::json!({"tokens": [
        {"id": "a", "secret": "sa", "refresh": {"kind": "oauth2_refresh_token", "token_url": "http://idp/t", "refresh_token": "rt"}},
        {"id": "b", "secret": "sb", "binding": {"proxy": "http://u:proxy-pw@127.0.0.1:3128"}}]})).await;
    let k1 = t.dep.master_key.clone();
    let k2 = vault_core::crypto::MasterKey::generate();
    let k2_id = k2.id().to_string();
    // Step 1: every process gets the new key as current, the old one for reading.
    let mut rotated = t.dep.clone();
    rotated.master_key = k2.to_base64();
    let v2 = rotated.vault(&[("TV_MASTER_KEYS_OLD", &k1)]).await;
    let api2 = rotated.api(&v2);
    let secrets: std::collections::BTreeSet<String> = futures_lease_all(&api2, 2).await;
    assert_eq!(
        secrets,
        ["sa", "sb"].iter().map(|s| s.to_string()).collect(),
        "old records still open"
    );
    api2.post(
        "/v1/pools/p/tokens",
        serde_json::json!({"id": "c", "secret": "sc"}),
    )
    .await;
    assert_eq!(
        api2.get("/v1/pools/p/tokens/c").await.str("key_id"),
        k2_id,
        "new writes use the new key"
    );
    assert_ne!(api2.get("/v1/pools/p/tokens/a").await.str("key_id"), k2_id);

    // Step 2: re-seal what is left.
    let reencrypt = |old: Option<&str>| {
        let mut cmd = std::process::Command::new(testkit::bin_path("vaultctl"));
        cmd.args(["keys", "reencrypt", "--pool", "p"])
            .env("TV_REDIS_URL", &t.dep.redis_url)
            .env("TV_PREFIX", &t.dep.prefix)
            .env("TV_MASTER_KEY", k2.to_base64())
            .env_remove("TV_MASTER_KEYS_OLD");
        if let Some(o) = old {
            cmd.env("TV_MASTER_KEYS_OLD", o);
        }
        cmd.output().unwrap()
    };
    let out = reencrypt(Some(&k1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(": 3 re-sealed") && text.contains(", 1 already current"),
        "{text}"
    );
    for id in ["a", "b"] {
        assert_eq!(
            api2.get(&format!("/v1/pools/p/tokens/{id}"))
                .await
                .str("key_id"),
            k2_id
        );
    }
    let refresh_kid = t.redis.cli(&[
        "HGET",
        &crate::harness::token_key(&t.redis, &t.dep.prefix, "p", "a"),
        "refresh_key_id",
    ]);
    assert_eq!(
        refresh_kid.trim(),
        k2_id,
        "refresh credentials re-sealed too"
    );
    let proxy_kid = t.redis.cli(&[
        "HGET",
        &crate::harness::token_key(&t.redis, &t.dep.prefix, "p", "b"),
        "proxy_key_id",
    ]);
    assert_eq!(proxy_kid.trim(), k2_id, "proxy credentials re-sealed too");
    let pool_kid = t.redis.cli(&[
        "HGET",
        &format!("{}:{{p}}:cfg", t.dep.prefix),
        "refresh_key_id",
    ]);
    assert_eq!(
        pool_kid.trim(),
        k2_id,
        "the pool's client secret re-sealed too"
    );
    let again = String::from_utf8_lossy(&reencrypt(None).stdout).into_owned();
    assert!(
        again.contains(": 0 re-sealed") && again.contains(", 4 already current"),
        "{again}"
    );

    // Step 3: the old key can go; everything opens with the new key alone.
    let v3 = rotated.vault(&[]).await;
    let all = futures_lease_all(&rotated.api(&v3), 3).await;
    assert_eq!(all.len(), 3);
    // A vault without the record's key says so clearly instead of answering garbage.
    let stale = t.dep.vault(&[]).await;
    let a = t
        .dep
        .api(&stale)
        .post("/v1/pools/p/leases", serde_json::json!({}))
        .await;
    a.problem(500, "crypto_error");
}

/// Lease `n` times (holding the leases) and collect the secrets handed out.
async fn futures_lease_all(
    api: &crate::harness::Api,
    n: usize,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for _ in 0..n {
        let l = api
            .post("/v1/pools/p/leases", serde_json::json!({"ttl_s": 5}))
            .await;
        assert_eq!(l.status, 201, "{l:?}");
        out.insert(l.str("secret"));
    }
    out
}

/// A pool written before pool client secrets were sealed kept its secret in the settings' JSON;
/// `vaultctl keys reencrypt` seals it and leaves only the fingerprint in clear.
#[tokio::test]
async fn reencrypt_seals_a_legacy_pool_client_secret() {
    let t = one(&[]).await;
    assert_eq!(t.api.put("/v1/pools/p", json!({})).await.status, 201);
    let legacy = json!({"kind": "oauth2_client_credentials", "token_url": "http://idp/t",
        "client_id": "c", "client_secret": "LEGACY-cs-42"});
    t.redis.cli(&[
        "HSET",
        &format!("{}:{{p}}:cfg", t.dep.prefix),
        "refresh",
        &legacy.to_string(),
    ]);
    let out = std::process::Command::new(testkit::bin_path("vaultctl"))
        .args(["keys", "reencrypt", "--pool", "p"])
        .env("TV_REDIS_URL", &t.dep.redis_url)
        .env("TV_PREFIX", &t.dep.prefix)
        .env("TV_MASTER_KEY", &t.dep.master_key)
        .env_remove("TV_MASTER_KEYS_OLD")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(": 1 re-sealed"),
        "{text}"
    );
    for (key, value) in dump_everything(&t.dep.redis_url).await {
        assert!(
            !value.contains("LEGACY-cs"),
            "the legacy secret under {key}"
        );
    }
    let shown = t.api.get("/v1/pools/p").await.body;
    assert_eq!(
        shown["refresh"]["client_secret_fingerprint"],
        vault_core::crypto::Secret::new("LEGACY-cs-42").fingerprint(),
        "{shown}"
    );
}
