//! What an outside attack run found: far-future times, expired leases, connection exhaustion.
//! Each test fails on the code before its fix.

use std::time::Duration;

use serde_json::json;

use crate::harness::{eventually, now_ms, one, wait_json};

/// "Never expires" written as a far-future date leases like a token without expiry, and no
/// time past 9999 is accepted.
#[tokio::test]
async fn far_future_times_are_bounded() {
    let t = one(&[]).await;
    let api = &t.api;
    api.put("/v1/pools/p", json!({})).await;
    let a = api
        .post(
            "/v1/pools/p/tokens",
            json!({"id": "forever", "secret": "s", "expires_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let l = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    assert!(l.body["token_expires_at"].is_null(), "{l:?}");
    assert!(api.get("/v1/pools/p/tokens/forever").await.body["expires_at"].is_null());
    for bad in [
        json!(253_402_300_800_000u64),
        json!("+10000-01-01T00:00:00Z"),
    ] {
        api.post(
            "/v1/pools/p/tokens",
            json!({"id": "x", "secret": "s2", "expires_at": bad}),
        )
        .await
        .problem(400, "invalid_request");
    }

    // A cooldown until the year 9999 is refused like a 40-day retry_after_s...
    let release = format!("/v1/pools/p/leases/{}/release", l.str("lease_id"));
    let far = api
        .post(
            &release,
            json!({"outcome": "rate_limited", "reset_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    far.problem(400, "invalid_request");
    assert!(far.str("detail").contains("reset_at"), "{far:?}");
    // ...and a legal one can be ended by an admin.
    let r = api
        .post(
            &release,
            json!({"outcome": "rate_limited", "retry_after_s": 86400}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.str("token_state"), "cooling");
    api.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
    let back = api
        .post("/v1/pools/p/tokens/forever/restore", json!({}))
        .await;
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(back.str("state"), "active");
    let l = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "leasable again at once: {l:?}");
    let r = api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Restoring a token that is neither quarantined nor cooling is a conflict.
    api.post("/v1/pools/p/tokens/forever/restore", json!({}))
        .await
        .problem(409, "conflict");
}

/// A lease is over at its deadline even while no janitor runs: renew and release say 410, the
/// next acquire reclaims it; status and /metrics show whether a janitor is sweeping.
#[tokio::test]
async fn expired_leases_end_at_their_deadline_without_a_janitor() {
    let t = one(&[]).await;
    let api = &t.api;
    api.put(
        "/v1/pools/p",
        json!({"lease_ttl_s": 1, "max_leases_per_token": 1}),
    )
    .await;
    api.post("/v1/pools/p/tokens", json!({"id": "a", "secret": "sa"}))
        .await;
    let past = |l: &crate::harness::Answer| {
        let deadline = crate::harness::ms(&l.body, "lease_expires_at");
        async move { eventually(Duration::from_secs(10), || now_ms() > deadline + 5).await }
    };

    let l1 = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l1.status, 201, "{l1:?}");
    assert!(past(&l1).await);
    api.post(
        &format!("/v1/pools/p/leases/{}/renew", l1.str("lease_id")),
        json!({}),
    )
    .await
    .problem(410, "lease_gone");

    // A worker that died: its lease is reclaimed by the next acquire.
    let dead = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(dead.status, 201, "{dead:?}");
    assert!(past(&dead).await);
    let next = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(next.status, 201, "reclaimed without a janitor: {next:?}");
    api.post(
        &format!("/v1/pools/p/leases/{}/release", dead.str("lease_id")),
        json!({"outcome": "ok"}),
    )
    .await
    .problem(410, "lease_gone");
    assert_eq!(
        api.get("/v1/pools/p/tokens/a").await.body["quota"]["used"],
        2,
        "the dead leases' units count as used"
    );

    // No janitor yet; then one sweeping; then it is gone.
    assert!(api.get("/v1/pools/p/status").await.body["janitor"].is_null());
    let mut janitor = t.dep.janitor(100);
    wait_json(api, "/v1/pools/p/status", Duration::from_secs(20), |v| {
        v["janitor"]["healthy"] == true
    })
    .await;
    let m = crate::harness::metrics_text(&t.vault.base).await;
    assert!(
        crate::harness::sample(&m, "tv_janitor_last_sweep_age_seconds", &[]).is_some(),
        "{m}"
    );
    janitor.kill();
    wait_json(api, "/v1/pools/p/status", Duration::from_secs(20), |v| {
        v["janitor"]["healthy"] == false
    })
    .await;
}
