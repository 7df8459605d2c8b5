//! The quota rule with several quotas (lua/rules/quota.lua): each window kind at its edges, costs
//! reserved by leases and settled by reports, and the target's own counts, against a real
//! redis-server with the scripts' clock pinned.

use std::collections::BTreeMap;

use super::*;
use crate::model::{LeaseGrant, Outcome, QuotaReport, Report};
use crate::store::AcquireArgs;
use crate::VaultError;
use serde_json::json;

/// A one-token pool with `quotas` (and room for many leases at once).
async fn pool(quotas: serde_json::Value, estimates: serde_json::Value) -> Env {
    let e = Env::new(json!({"max_leases_per_token": 100, "quotas": quotas,
                            "cost_estimates": estimates}))
    .await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    e
}

fn costs(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn lease_costing(e: &Env, c: &[(&str, u64)]) -> Result<LeaseGrant, VaultError> {
    e.lease_with(AcquireArgs {
        units: 1,
        costs: costs(c),
        ..Default::default()
    })
    .await
}

async fn release_costing(e: &Env, lease: &str, c: &[(&str, u64)]) -> Result<(), VaultError> {
    release_reporting(e, lease, c, BTreeMap::new()).await
}

/// Release with what the call cost and what the target said of named quotas.
async fn release_reporting(
    e: &Env,
    lease: &str,
    c: &[(&str, u64)],
    quotas: BTreeMap<String, QuotaReport>,
) -> Result<(), VaultError> {
    let r = Report {
        costs: costs(c),
        quotas,
        ..Default::default()
    };
    e.store.release(&e.pool, lease, &r).await.map(|_| ())
}

/// Token `a`'s quota `name`: (used, reserved).
async fn counts(e: &Env, name: &str) -> (u64, u64) {
    let m = e.meta("a").await;
    let q = m
        .quotas
        .iter()
        .find(|q| q.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no quota {name} in {:?}", m.quotas));
    (q.used, q.reserved)
}

#[tokio::test]
async fn a_cost_is_reserved_at_its_estimate_and_settled_up_or_down_by_the_report() {
    let e = pool(
        json!([{"name": "tpm", "limit": 10_000, "window_s": 60, "cost": "llm_tokens"}]),
        json!({"llm_tokens": 1000}),
    )
    .await;
    // The pool's estimate, then the lease's own.
    let l1 = lease_costing(&e, &[]).await.unwrap();
    assert_eq!(l1.costs, costs(&[("llm_tokens", 1000)]));
    let l2 = lease_costing(&e, &[("llm_tokens", 3000)]).await.unwrap();
    assert_eq!(counts(&e, "tpm").await, (0, 4000));
    // Settled up (the call cost more than guessed) and down.
    release_costing(&e, &l1.lease_id, &[("llm_tokens", 2500)])
        .await
        .unwrap();
    assert_eq!(counts(&e, "tpm").await, (2500, 3000));
    release_costing(&e, &l2.lease_id, &[("llm_tokens", 100)])
        .await
        .unwrap();
    assert_eq!(counts(&e, "tpm").await, (2600, 0));
    // Not reported: counts what it reserved. An expired lease: the same.
    let l3 = lease_costing(&e, &[("llm_tokens", 400)]).await.unwrap();
    release_costing(&e, &l3.lease_id, &[]).await.unwrap();
    assert_eq!(counts(&e, "tpm").await, (3000, 0));
    lease_costing(&e, &[("llm_tokens", 700)]).await.unwrap();
    e.advance(61_000);
    // The window started at the first lease and is over: the reaped lease counts in a new one.
    assert_eq!(e.store.reap_leases(&e.pool, 10).await.unwrap().len(), 1);
    assert_eq!(counts(&e, "tpm").await, (700, 0));
}

#[tokio::test]
async fn a_lease_needs_room_in_every_quota_and_waits_for_the_last_one_to_allow() {
    let e = pool(
        json!([
            {"name": "rpm", "limit": 2, "window_s": 60, "kind": "clock_aligned"},
            {"name": "tpm", "limit": 5000, "window_s": 60, "kind": "clock_aligned", "cost": "llm_tokens"},
            {"name": "rpd", "limit": 3, "window_s": 86_400, "kind": "clock_aligned"},
        ]),
        json!({"llm_tokens": 2000}),
    )
    .await;
    // T0 is a whole minute: rpm and tpm windows end at T0 + 60 s, rpd at the next UTC midnight.
    assert_eq!(T0 % 60_000, 0);
    let midnight = (T0 / 86_400_000 + 1) * 86_400_000;
    let a = lease_costing(&e, &[]).await.unwrap();
    release_costing(&e, &a.lease_id, &[("llm_tokens", 4000)])
        .await
        .unwrap();
    // rpm has room (1 of 2) but tpm has 1000 left and the estimate is 2000.
    let retry = exhausted(lease_costing(&e, &[]).await);
    assert!(retry.is_none(), "no lease or cooldown ends: {retry:?}");
    // A smaller estimate fits.
    let b = lease_costing(&e, &[("llm_tokens", 1000)]).await.unwrap();
    release_costing(&e, &b.lease_id, &[]).await.unwrap();
    // Both per-minute quotas are spent now: the token cools until the minute ends.
    assert_eq!(
        exhausted(lease_costing(&e, &[("llm_tokens", 1)]).await),
        Some(60_000)
    );
    e.advance(59_999);
    exhausted(lease_costing(&e, &[("llm_tokens", 1)]).await);
    e.advance(1);
    e.store.return_cooled(&e.pool, 100).await.unwrap();
    let c = lease_costing(&e, &[]).await.unwrap();
    release_costing(&e, &c.lease_id, &[]).await.unwrap();
    assert_eq!(counts(&e, "rpm").await, (1, 0));
    assert_eq!(counts(&e, "rpd").await, (3, 0));
    // The day's quota is spent: nothing until midnight, though the minute starts over sooner.
    e.advance(60_000);
    let now = T0 + 120_000;
    assert_eq!(
        exhausted(lease_costing(&e, &[]).await),
        Some((midnight - now) as u64)
    );
    let m = e.meta("a").await;
    let rpd = m
        .quotas
        .iter()
        .find(|q| q.name.as_deref() == Some("rpd"))
        .unwrap();
    assert_eq!(
        rpd.window_resets_at.as_deref(),
        Some(crate::time::rfc3339(midnight).as_str())
    );
    e.advance(midnight - now);
    e.store.return_cooled(&e.pool, 100).await.unwrap();
    lease_costing(&e, &[]).await.unwrap();
}

#[tokio::test]
async fn a_clock_aligned_window_follows_its_anchor() {
    // Windows of an hour starting at 15 minutes past.
    let anchor = T0 + 15 * 60_000;
    let e = pool(
        json!([{"name": "hourly", "limit": 1, "window_s": 3600, "kind": "clock_aligned",
                "anchor": anchor}]),
        json!({}),
    )
    .await;
    let l = e.lease(1).await.unwrap();
    e.release(&l.lease_id, None, Outcome::Ok).await.unwrap();
    // Spent until 15 minutes past (the window [anchor - 1 h, anchor) started before T0).
    assert_eq!(exhausted(e.lease(1).await), Some(15 * 60_000));
    e.advance(15 * 60_000 - 1);
    exhausted(e.lease(1).await);
    e.advance(1);
    e.store.return_cooled(&e.pool, 100).await.unwrap();
    e.lease(1).await.unwrap();
}

#[tokio::test]
async fn a_sliding_window_counts_the_last_window_and_at_most_one_bucket_more() {
    // 3 requests per 60 s, in 6 buckets of 10 s.
    let e = pool(
        json!([{"name": "rpm", "limit": 3, "window_s": 60, "kind": "sliding", "buckets": 6}]),
        json!({}),
    )
    .await;
    let use_one = || async {
        let l = e.lease(1).await?;
        e.release(&l.lease_id, None, Outcome::Ok).await.map(|_| ())
    };
    use_one().await.unwrap(); // T0 (bucket 0)
    e.advance(25_000);
    use_one().await.unwrap(); // T0 + 25 s (bucket 2)
    e.advance(20_000);
    use_one().await.unwrap(); // T0 + 45 s (bucket 4)
    assert_eq!(counts(&e, "rpm").await, (3, 0));
    // Spent: the first use stops counting once its bucket is a whole window and a bucket old,
    // at T0 + 70 s (a rolling window would free it at T0 + 60 s: the stated bound).
    assert_eq!(exhausted(e.lease(1).await), Some(70_000 - 45_000));
    e.advance(60_000 - 45_000);
    exhausted(e.lease(1).await);
    assert_eq!(counts(&e, "rpm").await, (3, 0));
    e.advance(9_999);
    exhausted(e.lease(1).await);
    e.advance(1);
    assert_eq!(counts(&e, "rpm").await, (2, 0));
    e.store.return_cooled(&e.pool, 100).await.unwrap();
    use_one().await.unwrap();
    // Never more than 3 in any 60 s: the next frees at T0 + 25 s's bucket end + 60 s.
    assert_eq!(exhausted(e.lease(1).await), Some(90_000 - 70_000));
    // Memory stays bounded: the field holds at most buckets + 1 counts.
    let key = format!("{}:{{p}}:t:#1", e.prefix);
    let v = e.redis.cli(&["HGET", &key, "s:rpm"]);
    assert!(v.split_whitespace().count() <= 1 + 7, "{v}");
    e.advance(3_600_000);
    assert_eq!(counts(&e, "rpm").await, (0, 0));
}

#[tokio::test]
async fn the_targets_count_raises_the_vaults_and_its_reset_cools_the_token() {
    let e = pool(
        json!([{"name": "tpm", "limit": 10_000, "window_s": 60, "cost": "llm_tokens",
                "kind": "sliding"}]),
        json!({"llm_tokens": 100}),
    )
    .await;
    let l = lease_costing(&e, &[]).await.unwrap();
    let mut quotas = BTreeMap::new();
    quotas.insert(
        "tpm".to_string(),
        QuotaReport {
            remaining: Some(4000),
            reset_at: None,
        },
    );
    release_reporting(&e, &l.lease_id, &[("llm_tokens", 100)], quotas.clone())
        .await
        .unwrap();
    // The target counted 6,000 used; the vault had 100.
    assert_eq!(counts(&e, "tpm").await, (6000, 0));
    // An older answer saying more is left changes nothing.
    let l = lease_costing(&e, &[]).await.unwrap();
    quotas.get_mut("tpm").unwrap().remaining = Some(9000);
    release_reporting(&e, &l.lease_id, &[("llm_tokens", 50)], quotas.clone())
        .await
        .unwrap();
    assert_eq!(counts(&e, "tpm").await, (6050, 0));
    // None left until 30 s from now: the token cools until then.
    let l = lease_costing(&e, &[]).await.unwrap();
    quotas.insert(
        "tpm".to_string(),
        QuotaReport {
            remaining: Some(0),
            reset_at: Some(crate::time::TimeInput(T0 + 30_000)),
        },
    );
    release_reporting(&e, &l.lease_id, &[], quotas)
        .await
        .unwrap();
    assert_eq!(counts(&e, "tpm").await, (10_000, 0));
    assert!(exhausted(lease_costing(&e, &[]).await).is_some());
}

#[tokio::test]
async fn costs_and_quotas_the_pool_does_not_have_are_refused_and_change_nothing() {
    let e = pool(
        json!([{"name": "tpm", "limit": 10_000, "window_s": 60, "cost": "llm_tokens"}]),
        json!({"llm_tokens": 100}),
    )
    .await;
    match lease_costing(&e, &[("images", 1)]).await {
        Err(VaultError::Invalid(d)) => assert!(d.contains("costs.images"), "{d}"),
        other => panic!("{other:?}"),
    }
    let l = lease_costing(&e, &[]).await.unwrap();
    let mut quotas = BTreeMap::new();
    quotas.insert("rpd".to_string(), QuotaReport::default());
    let r = Report {
        quotas,
        ..Default::default()
    };
    match e.store.release(&e.pool, &l.lease_id, &r).await {
        Err(VaultError::Invalid(d)) => assert!(d.contains("quotas.rpd"), "{d}"),
        other => panic!("{other:?}"),
    }
    match release_costing(&e, &l.lease_id, &[("images", 3)]).await {
        Err(VaultError::Invalid(d)) => assert!(d.contains("costs.images"), "{d}"),
        other => panic!("{other:?}"),
    }
    // The lease is still live and holds its reservation.
    assert_eq!(counts(&e, "tpm").await, (0, 100));
    release_costing(&e, &l.lease_id, &[]).await.unwrap();
    assert_eq!(counts(&e, "tpm").await, (100, 0));
}

#[tokio::test]
async fn a_pool_with_only_the_shorthand_stores_and_answers_as_before() {
    let e = Env::new(json!({"quota_limit": 5})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}])).await;
    let l = e.lease(2).await.unwrap();
    assert!(l.costs.is_empty());
    e.release(&l.lease_id, Some(1), Outcome::Ok).await.unwrap();
    let m = e.meta("a").await;
    assert_eq!((m.quota.used, m.quota.limit), (1, Some(5)));
    assert!(m.quotas.is_empty());
    let key = format!("{}:{{p}}:t:#1", e.prefix);
    let fields = e.redis.cli(&["HKEYS", &key]);
    assert!(!fields.contains(':'), "no field of another quota: {fields}");
}

#[tokio::test]
async fn rate_limit_headers_count_on_the_quotas_that_follow_their_family() {
    let e = pool(
        json!([
            {"name": "rpm", "limit": 100, "window_s": 60, "sync": "requests"},
            {"name": "tpm", "limit": 10_000, "window_s": 60, "cost": "llm_tokens", "sync": "tokens"},
        ]),
        json!({"llm_tokens": 100}),
    )
    .await;
    let l = lease_costing(&e, &[]).await.unwrap();
    let seen = |remaining| QuotaReport {
        remaining: Some(remaining),
        reset_at: None,
    };
    let mut rate_limit = BTreeMap::new();
    rate_limit.insert("requests".to_string(), seen(90));
    rate_limit.insert("tokens".to_string(), seen(7000));
    // A family no quota follows is ignored.
    rate_limit.insert("ratelimit:burst".to_string(), seen(0));
    let r = Report {
        rate_limit,
        ..Default::default()
    };
    e.store.release(&e.pool, &l.lease_id, &r).await.unwrap();
    assert_eq!(counts(&e, "rpm").await, (10, 0));
    assert_eq!(counts(&e, "tpm").await, (3000, 0));
    lease_costing(&e, &[]).await.unwrap();
}

#[tokio::test]
async fn status_shows_every_quota_and_the_one_that_binds() {
    let e = pool(
        json!([
            {"name": "rpm", "limit": 100, "window_s": 60},
            {"name": "tpm", "limit": 1000, "window_s": 60, "cost": "llm_tokens"},
        ]),
        json!({"llm_tokens": 400}),
    )
    .await;
    for _ in 0..2 {
        let l = lease_costing(&e, &[]).await.unwrap();
        release_costing(&e, &l.lease_id, &[]).await.unwrap();
    }
    // 800 of 1,000 tokens used: a 400 estimate no longer fits (refused for tpm), a smaller one
    // does and spends it (the token cools for tpm).
    exhausted(lease_costing(&e, &[]).await);
    let l = lease_costing(&e, &[("llm_tokens", 200)]).await.unwrap();
    release_costing(&e, &l.lease_id, &[]).await.unwrap();
    let st = e.store.pool_status(&e.pool).await.unwrap();
    let names: Vec<_> = st.quotas.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["rpm", "tpm"], "no default quota: nothing limits it");
    let tpm = &st.quotas[1];
    assert_eq!(
        (tpm.cost.as_str(), tpm.used_ratio),
        ("llm_tokens", Some(1.0))
    );
    assert_eq!(tpm.binds, 2);
    assert_eq!(st.quotas[0].used_ratio, Some(0.03));
    assert_eq!(st.binding_quota.as_deref(), Some("tpm"));
    assert_eq!(st.quota_used_ratio, Some(1.0));
}
