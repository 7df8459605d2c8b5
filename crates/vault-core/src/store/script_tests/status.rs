//! Status figures made from the replicas' lease tallies.

use serde_json::json;

use super::*;

#[tokio::test]
async fn lease_skew_names_the_busiest_token_of_the_last_full_minute() {
    let e = Env::new(json!({"max_leases_per_token": 100})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}, {"secret": "s3", "id": "c"}]))
        .await;
    assert_eq!(e.store.pool_status("p").await.unwrap().lease_skew, None);
    // A sticky session leases one token ten times; two other leases go to the other tokens.
    let sticky = AcquireArgs {
        session: "s".into(),
        ..Default::default()
    };
    let busy = e.lease_with(sticky.clone()).await.unwrap().token_id;
    for _ in 0..9 {
        assert_eq!(e.lease_with(sticky.clone()).await.unwrap().token_id, busy);
    }
    let others = [
        e.lease(1).await.unwrap().token_id,
        e.lease(1).await.unwrap().token_id,
    ];
    assert!(
        !others.contains(&busy) && others[0] != others[1],
        "{others:?}"
    );
    e.store.flush_lease_tally().await.unwrap();
    // The minute counted is the last full one: this one is still running.
    assert_eq!(e.store.pool_status("p").await.unwrap().lease_skew, None);
    e.advance(60_000);
    let skew = e.store.pool_status("p").await.unwrap().lease_skew.unwrap();
    assert_eq!(
        skew,
        crate::model::LeaseSkew {
            minute_at: crate::time::rfc3339(T0.div_euclid(60_000) * 60_000),
            tokens_leased: 3,
            busiest_token: busy,
            busiest_leases: 10,
            median_leases: 1,
        }
    );
    // A minute without leases: no skew.
    e.advance(60_000);
    assert_eq!(e.store.pool_status("p").await.unwrap().lease_skew, None);
}
