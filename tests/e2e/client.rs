//! The Rust SDK against the real vault: a worker drops a revoked token the moment the event
//! arrives (its request in flight finishes), the next request uses a new lease, and a 401
//! rotates to another token at once.

use std::time::Duration;

use serde_json::json;
use vault_client::{Client, Outcome, Worker};
use vault_core::auth::Scope;

use crate::harness::{eventually, one, One};

/// Pool `p` (`pack`: leases go to `a` first) with tokens `a`, `b`, `c`; a lease-scoped client
/// token for it.
async fn pool_of_three(t: &One) -> String {
    let a = t
        .api
        .put(
            "/v1/pools/p",
            json!({"strategy": "pack", "max_leases_per_token": 5}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let a = t.api.post("/v1/pools/p/tokens", json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}, {"id": "c", "secret": "sc"}]})).await;
    assert_eq!(a.status, 201, "{a:?}");
    t.dep.token("w", &[Scope::Lease], Some(vec!["p".into()]))
}

#[tokio::test]
async fn worker_drops_a_revoked_token_and_rotates_on_401() {
    worker_scenario(false).await;
}

/// The same worker over gRPC: leases, reports and rotates with gRPC calls, and hears of the
/// revocation on a `Watch` stream.
#[tokio::test]
async fn worker_over_grpc_drops_a_revoked_token_and_rotates_on_401() {
    worker_scenario(true).await;
}

async fn worker_scenario(over_grpc: bool) {
    let t = one(&[]).await;
    let grpc_addr = format!("127.0.0.1:{}", testkit::free_port());
    let b = t
        .dep
        .vault(&[("TV_GRPC_LISTEN_ADDR", grpc_addr.as_str())])
        .await;
    let token = pool_of_three(&t).await;
    // The worker talks to replica B; the revocation is made on replica A.
    let client = if over_grpc {
        Client::grpc(&format!("http://{grpc_addr}"), &token).unwrap()
    } else {
        Client::new(&b.base, &token)
    };
    let worker = Worker::start(client, "p", "scraper-1").await.unwrap();
    let first = worker.lease().await.unwrap();
    assert_eq!(first.token_id, "a");
    assert_eq!(
        worker.lease().await.unwrap().lease_id,
        first.lease_id,
        "kept across requests"
    );
    assert!(
        !format!("{first:?}").contains("sa"),
        "Debug leaves the secret out"
    );

    let in_flight = first.clone(); // a request started with it...
    t.api
        .post("/v1/pools/p/tokens/a/revoke", json!({"reason": "leaked"}))
        .await;
    assert!(
        eventually(Duration::from_secs(1), async || worker
            .is_revoked(&in_flight))
        .await,
        "the event reaches the worker within 1 s"
    );
    assert_eq!(in_flight.secret, "sa", "...finishes with what it has");
    let next = worker.lease().await.unwrap();
    assert_ne!(next.token_id, "a", "the next request uses a new lease");
    assert_ne!(next.lease_id, first.lease_id);

    // 401 mid-job: rotate to another token at once.
    worker.report(&next, Outcome::Unauthorized).await.unwrap();
    let after = worker.lease().await.unwrap();
    assert!(
        after.token_id != next.token_id && after.token_id != "a",
        "{after:?}"
    );
    let meta = t
        .api
        .get(&format!("/v1/pools/p/tokens/{}", next.token_id))
        .await;
    assert_eq!(
        meta.str("state"),
        "expired",
        "no refresh method: the 401 took it out"
    );
    worker.finish().await.unwrap();
    assert_eq!(
        t.api.get("/v1/pools/p/status").await.body["leases_active"],
        0
    );
    // Every call took the transport asked for: the gRPC listener counted them, or nothing.
    let m = crate::harness::metrics_text(&b.base).await;
    let grpc_calls = ["Lease", "Rotate", "Release", "Watch"]
        .iter()
        .filter(|method| {
            let label = format!("method=\"{method}\"");
            crate::harness::sample(&m, "tv_grpc_requests_total", &["code=\"Ok\"", &label])
                .is_some_and(|n| n >= 1.0)
        })
        .count();
    assert_eq!(grpc_calls, if over_grpc { 4 } else { 0 }, "{m}");
}

#[tokio::test]
async fn worker_rechecks_its_lease_when_events_were_lost() {
    let t = one(&[]).await;
    let port = testkit::free_port();
    let mut b = t.dep.vault_at(port, &[]).await;
    let token = pool_of_three(&t).await;
    let worker = Worker::start(Client::new(&b.base, &token), "p", "w1")
        .await
        .unwrap();
    let held = worker.lease().await.unwrap();
    assert_eq!(held.token_id, "a");
    // An event the worker sees, so it has a resume point.
    t.api.post("/v1/pools/p/tokens/b/revoke", json!({})).await;
    let b_lease = vault_client::Lease {
        token_id: "b".into(),
        ..held.clone()
    };
    assert!(eventually(Duration::from_secs(2), async || worker.is_revoked(&b_lease)).await);

    // The worker's replica goes away; meanwhile its token is revoked and the event trimmed.
    b.child.terminate(Duration::from_secs(10));
    t.api.post("/v1/pools/p/tokens/a/revoke", json!({})).await;
    t.redis
        .cli(&["XTRIM", &format!("{}:events", t.dep.prefix), "MAXLEN", "0"]);
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    t.api.post("/v1/pools/p/unfreeze", json!({})).await;
    let _b_again = t.dep.vault_at(port, &[]).await;

    // It never heard of the revoke; the `events.lost` notice makes it ask the vault (410).
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    let next = loop {
        let l = worker.lease().await.unwrap();
        if l.token_id != "a" || std::time::Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(next.token_id, "c", "the revoked lease was dropped");
    assert!(!worker.is_revoked(&held), "not through a revoke event");
    worker.finish().await.unwrap();
}

/// `LeaseGuard`: requests go through the token's bound proxy with its headers; a 401 rotates and
/// sends again, a 429 cools the token for the target's `Retry-After` and sends again with another
/// one; the target's rate-limit headers reach the report; the lease is renewed in the background
/// and given back when the guard is dropped.
#[tokio::test]
async fn lease_guard_sends_through_the_proxy_and_handles_401_429_and_its_lease() {
    let t = one(&[]).await;
    let fake = crate::fakes::Fake::start(crate::fakes::Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    // The fake is the target and, for tokens bound to it, the proxy too.
    let proxy = format!("http://{}", fake.addr);
    let put = t
        .api
        .put(
            "/v1/pools/g",
            json!({"strategy": "pack", "quota_limit": 100, "lease_ttl_s": 2}),
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    for (id, secret, bound) in [("a", "sa", true), ("b", "sb", true), ("c", "sc", false)] {
        let mut tok = json!({"id": id, "secret": secret});
        if bound {
            tok["binding"] = json!({ "proxy": proxy });
        }
        assert_eq!(t.api.post("/v1/pools/g/tokens", tok).await.status, 201);
    }
    let client = Client::new(&t.vault.base, &t.dep.token("w", &[Scope::Lease], None));
    let guard = client.guard("g", "w").await.unwrap();
    let first = guard.lease().await.unwrap();
    assert_eq!(first.token_id, "a");

    // Renewed in the background at half its two seconds.
    let renewed = {
        let end = std::time::Instant::now() + crate::harness::PATIENCE;
        loop {
            let now = guard.lease().await.unwrap();
            if now.lease_expires_at != first.lease_expires_at {
                break now;
            }
            assert!(std::time::Instant::now() < end, "the lease was not renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(renewed.lease_id, first.lease_id);

    // 401 from the target: rotated to b, sent again.
    fake.burn("sa");
    let api = fake.url("/api");
    let res = guard.send(|http| http.get(&api)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(guard.lease().await.unwrap().token_id, "b");
    // 429: b cools down for the target's 7 s, c (no proxy) serves.
    fake.state.limited.lock().unwrap().insert("sb".into());
    let res = guard.send(|http| http.get(&api)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(guard.lease().await.unwrap().token_id, "c");
    let calls = fake.state.target_calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            ("sa".to_string(), true),
            ("sb".to_string(), true),
            ("sb".to_string(), true),
            ("sc".to_string(), false)
        ],
        "bound tokens go through their proxy, the unbound one does not"
    );
    let a = t.api.get("/v1/pools/g/tokens/a").await;
    assert_eq!(a.str("state"), "expired", "the 401 took a out");
    let b = t.api.get("/v1/pools/g/tokens/b").await;
    assert_eq!(b.str("state"), "cooling");
    let cooled_for = crate::harness::ms(&b.body, "cooling_until") - crate::harness::now_ms();
    // The Retry-After (7 s), not the quota reset an hour away.
    assert!((1..=7_500).contains(&cooled_for), "{cooled_for}");

    // Released with what the target said: 41 left of 100, so 59 used.
    guard.release(Outcome::Ok).await.unwrap();
    let c = t.api.get("/v1/pools/g/tokens/c").await;
    assert_eq!(c.body["quota"]["used"], 59, "{:?}", c.body);

    // A guard dropped without release gives its lease back.
    let dropped = client.guard("g", "w").await.unwrap();
    assert_eq!(
        t.api.get("/v1/pools/g/status").await.body["leases_active"],
        1
    );
    drop(dropped);
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    while t.api.get("/v1/pools/g/status").await.body["leases_active"] != 0 {
        assert!(
            std::time::Instant::now() < end,
            "the dropped guard kept its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `examples/worker.rs` runs against a real vault and target.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_example_runs() {
    let t = one(&[]).await;
    let fake = crate::fakes::Fake::start(crate::fakes::Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    assert_eq!(t.api.put("/v1/pools/ex", json!({})).await.status, 201);
    let tokens = json!({"tokens": [{"id": "x", "secret": "sx"}, {"id": "y", "secret": "sy"}]});
    assert_eq!(t.api.post("/v1/pools/ex/tokens", tokens).await.status, 201);
    fake.burn("sx");
    let example = testkit::bin_path("vault-api")
        .parent()
        .unwrap()
        .join("examples/worker");
    if !example.is_file() {
        // `cargo test --workspace` builds the examples; a narrower run may not have.
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "vault-client", "--example", "worker"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    let (url, token, target) = (
        t.vault.base.clone(),
        t.dep.token("ex", &[Scope::Lease], None),
        fake.url("/api"),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(example)
            .env("TV_URL", url)
            .env("TV_TOKEN", token)
            .env("TV_POOL", "ex")
            .env("TARGET_URL", target)
            .env("REQUESTS", "3")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        printed.matches("200 OK with token y").count(),
        3,
        "the 401 of x rotated to y:\n{printed}"
    );
    assert_eq!(
        t.api.get("/v1/pools/ex/status").await.body["leases_active"],
        0
    );
}

/// The SDK tells an error that passes by itself, and when to try again, from one that does not:
/// a Redis that stalls (503 `redis_busy`), an exhausted pool and a vault that does not answer
/// are retryable; an unknown pool is not.
#[tokio::test]
async fn sdk_errors_say_whether_and_when_a_retry_can_help() {
    sdk_errors(false).await;
}

/// The same errors, over gRPC: read back from the status's `ErrorInfo` and `RetryInfo`.
#[tokio::test]
async fn sdk_errors_over_grpc_are_the_same() {
    sdk_errors(true).await;
}

async fn sdk_errors(over_grpc: bool) {
    let grpc_addr = format!("127.0.0.1:{}", testkit::free_port());
    let t = one(&[
        ("TV_REDIS_TIMEOUT_MS", "300"),
        ("TV_GRPC_LISTEN_ADDR", grpc_addr.as_str()),
    ])
    .await;
    let token = pool_of_three(&t).await;
    let connect = |rest: &str, grpc: &str, token: &str| {
        if over_grpc {
            Client::grpc(&format!("http://{grpc}"), token).unwrap()
        } else {
            Client::new(rest, token)
        }
    };
    let client = connect(&t.vault.base, &grpc_addr, &token);
    let e = client.lease("nope", "w").await.unwrap_err();
    assert!(e.retry_after().is_none(), "{e}");
    assert!(
        matches!(&e, vault_client::Error::Api { status: 403, .. }),
        "a pool the token may not use: {e:?}"
    );

    t.redis.pause();
    let stalled = client.lease("p", "w").await;
    t.redis.resume();
    let e = stalled.unwrap_err();
    assert!(
        matches!(&e, vault_client::Error::Unavailable { code, .. } if code == "redis_busy"),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");

    let unused = format!("127.0.0.1:{}", testkit::free_port());
    let nobody = connect(&format!("http://{unused}"), &unused, "x");
    let e = nobody.lease("p", "w").await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");

    // 3 tokens × 5 leases, then the pool is exhausted, with the vault's Retry-After. (The
    // stalled call may have landed once Redis went on: a 503 `redis_busy` says so.)
    let out = t.api.get("/v1/pools/p/status").await.body["leases_active"]
        .as_u64()
        .unwrap();
    let mut held = vec![];
    let e = loop {
        match client.lease("p", "w").await {
            Ok(l) => held.push(l),
            Err(e) => break e,
        }
        assert!(held.len() <= 15, "more leases than the pool allows");
    };
    assert_eq!(held.len() as u64 + out, 15);
    assert!(matches!(e, vault_client::Error::Exhausted { .. }), "{e:?}");
    assert!(e.retry_after().is_some(), "{e}");
}
