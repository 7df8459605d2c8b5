//! No leaks: every key a lease, an idempotency record or a session creates goes away, so the
//! key count returns to its baseline after thousands of leases end (released, reaped, revoked).

use serde_json::json;

use crate::harness::one;

#[tokio::test]
async fn key_count_returns_to_baseline() {
    let t = one(&[]).await;
    let api = &t.api;
    api.put(
        "/v1/pools/k",
        json!({"max_leases_per_token": 50, "lease_ttl_s": 1, "session_ttl_s": 1}),
    )
    .await;
    let toks: Vec<_> = (0..20)
        .map(|i| json!({"secret": format!("s{i}"), "id": format!("t{i}")}))
        .collect();
    api.post("/v1/pools/k/tokens", json!({"tokens": toks}))
        .await;
    // The per-minute lease counts (`heat:<minute>`) come and go with the minutes: each must
    // expire by itself within 3 minutes, and they are left out of the count.
    let keys = || {
        let mut k: Vec<String> = t
            .redis
            .cli(&["KEYS", "*"])
            .lines()
            .map(String::from)
            .filter(|k| {
                if !k.contains(":heat:") {
                    return true;
                }
                let ttl: i64 = t.redis.cli(&["TTL", k]).trim().parse().unwrap_or(-1);
                assert!((0..=180).contains(&ttl) || ttl == -2, "{k} has TTL {ttl}");
                false
            })
            .collect();
        k.sort();
        k
    };
    let mut expected = keys();

    // 3,000 leases from 30 concurrent workers: released, rotated, or abandoned to the reaper.
    let mut tasks = vec![];
    for w in 0..30 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let key = format!("w{w}-{i}");
                let body = if i % 4 == 0 {
                    json!({"session": format!("sess-{w}")})
                } else {
                    json!({})
                };
                let l = api
                    .call_with(
                        reqwest::Method::POST,
                        "/v1/pools/k/leases",
                        Some(body),
                        &[("Idempotency-Key", &key)],
                    )
                    .await;
                assert_eq!(l.status, 201, "{l:?}");
                let lid = l.str("lease_id");
                match i % 5 {
                    0 => {} // dies holding it
                    1 => {
                        let r = api
                            .post(
                                &format!("/v1/pools/k/leases/{lid}/rotate"),
                                json!({"outcome": "ok"}),
                            )
                            .await;
                        assert_eq!(r.status, 201, "{r:?}");
                        api.post(
                            &format!("/v1/pools/k/leases/{}/release", r.str("lease_id")),
                            json!({}),
                        )
                        .await;
                    }
                    _ => assert_eq!(
                        api.post(
                            &format!("/v1/pools/k/leases/{lid}/release"),
                            json!({"used": 0})
                        )
                        .await
                        .status,
                        200
                    ),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Leases ended by revocation, too.
    for i in 0..5 {
        api.post("/v1/pools/k/leases", json!({})).await;
        api.post(&format!("/v1/pools/k/tokens/t{i}/revoke"), json!({}))
            .await;
    }
    // The only new key is the set indexing the revoked tokens (state, not a leak).
    expected.push(format!("{}:{{k}}:v:revoked", t.dep.prefix));
    // Revocations were announced: the capped event stream exists now.
    expected.push(format!("{}:events", t.dep.prefix));
    // The janitor's heartbeat (one key, expiring).
    expected.push(format!("{}:janitor", t.dep.prefix));
    // The pool's lease counts per minute (one hash, its old minutes deleted, expiring), written by
    // the replica within 5 s of the leases.
    expected.push(format!("{}:{{k}}:rate", t.dep.prefix));
    expected.sort();
    let _janitor = t.dep.janitor(100);
    let settled =
        crate::harness::eventually(crate::harness::PATIENCE, async || keys() == expected).await;
    assert!(settled, "keys now:\n{:?}\nexpected:\n{expected:?}", keys());
    let st = api.get("/v1/pools/k/status").await;
    assert_eq!(st.body["leases_active"], 0);
    assert_eq!(st.body["tokens"]["revoked"], 5);
}
