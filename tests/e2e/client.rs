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
    let t = one(&[]).await;
    let b = t.dep.vault(&[]).await;
    let token = pool_of_three(&t).await;
    // The worker talks to replica B; the revocation is made on replica A.
    let worker = Worker::start(Client::new(&b.base, &token), "p", "scraper-1")
        .await
        .unwrap();
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
        eventually(Duration::from_secs(1), || worker.is_revoked(&in_flight)).await,
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
    assert!(eventually(Duration::from_secs(2), || worker.is_revoked(&b_lease)).await);

    // The worker's replica goes away; meanwhile its token is revoked and the event trimmed.
    b.child.terminate(Duration::from_secs(10));
    t.api.post("/v1/pools/p/tokens/a/revoke", json!({})).await;
    t.redis
        .cli(&["XTRIM", &format!("{}:events", t.dep.prefix), "MAXLEN", "0"]);
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    t.api.post("/v1/pools/p/unfreeze", json!({})).await;
    let _b_again = t.dep.vault_at(port, &[]).await;

    // It never heard of the revoke; the `events.lost` notice makes it ask the vault (410).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
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
