//! Scheduled rotation with a pinned clock: tokens reach their maximum age over days and are
//! rotated in bounded batches, replaced through their grant or by the login workers, as the
//! calendar said.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use super::*;
use crate::ops::Actor;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const MAX_IN_FLIGHT: u64 = 20;

#[tokio::test]
async fn aged_tokens_are_rotated_in_bounded_batches_as_the_calendar_said() {
    let e = Env::new(json!({
        "rotation": {"max_age_s": 10 * 86_400, "overlap_s": 6 * 3600, "max_in_flight": MAX_IN_FLIGHT},
    }))
    .await;
    let grant = json!({"kind": "oauth2_refresh_token", "token_url": "https://idp/t", "refresh_token": "rt"});
    // 1,000 tokens, 100 a day over ten days; one in five has no grant of its own.
    let mut without_grant = HashSet::new();
    for day in 0..10 {
        if day > 0 {
            e.advance(DAY);
        }
        let batch: Vec<_> = (0..100)
            .map(|i| {
                let id = format!("d{day}-{i}");
                if i % 5 == 0 {
                    without_grant.insert(id.clone());
                    json!({"secret": format!("s-{id}"), "id": id})
                } else {
                    json!({"secret": format!("s-{id}"), "id": id, "refresh": grant})
                }
            })
            .collect();
        e.deposit(json!(batch)).await;
    }
    // The calendar: the day deposited ten days after each batch (days are UTC, the deposits
    // were made at the same hour each day).
    let cal = e.store.rotation_calendar("p", 12).await.unwrap();
    let promised: Vec<u64> = cal.days.iter().map(|d| d.due).collect();
    assert_eq!(
        promised,
        [0, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 0],
        "{cal:?}"
    );
    assert_eq!((cal.overdue, cal.in_flight), (0, 0));
    assert_eq!(
        cal.next_due_at.as_deref(),
        Some(crate::time::rfc3339(T0 + 10 * DAY).as_str())
    );
    let first_day = cal.days[0].date.clone();

    // Every hour for eleven days (up to the hour the first replacements come of age
    // themselves): a janitor sweep, the refresher and the login workers each replacing what
    // they can, and workers leasing.
    let janitor = Actor::process("janitor");
    let mut started_by_day: BTreeMap<String, u64> = BTreeMap::new();
    let mut most_at_once = 0;
    let (mut by_grant, mut by_login) = (HashSet::new(), HashSet::new());
    for _ in 0..(11 * 24 - 1) {
        e.advance(HOUR);
        let now = e.clock.load(std::sync::atomic::Ordering::SeqCst);
        let started = e
            .store
            .rotate_aged_tokens(&janitor, "p", 1000)
            .await
            .unwrap();
        *started_by_day
            .entry(crate::time::rfc3339(now)[..10].to_string())
            .or_default() += started;
        let counts = e.store.token_counts("p").await.unwrap();
        most_at_once = most_at_once.max(counts["deprecated"]);
        assert!(counts["deprecated"] <= MAX_IN_FLIGHT, "{counts:?}");
        // Leases never meet an empty pool: rotation takes at most MAX_IN_FLIGHT tokens, and
        // those stay leasable.
        let mut held = vec![];
        for _ in 0..20 {
            held.push(e.lease(1).await.expect("a lease while tokens rotate"));
        }
        for l in held {
            e.release(&l.lease_id, Some(1), Outcome::Ok).await.unwrap();
        }
        // The refresher replaces up to 15 tokens an hour, the login workers 5.
        for (external, n, seen) in [(false, 15, &mut by_grant), (true, 5, &mut by_login)] {
            for _ in 0..n {
                let Some(job) = e.claim(external).await else {
                    break;
                };
                let r = e
                    .complete(&job, &format!("new-{}", job.token_id), 30 * DAY)
                    .await;
                assert!(r.error.is_none() && r.rotated, "{r:?}");
                assert!(
                    seen.insert(job.token_id.clone()),
                    "{} replaced twice",
                    job.token_id
                );
            }
        }
    }
    // What happened is what the calendar said: each day's tokens started on that day.
    let happened: Vec<u64> = cal
        .days
        .iter()
        .map(|d| started_by_day.get(&d.date).copied().unwrap_or(0))
        .collect();
    assert_eq!(happened, promised, "from {first_day}: {started_by_day:?}");
    // In batches: the first hour of a day's 100 took only MAX_IN_FLIGHT of them.
    assert_eq!(most_at_once, MAX_IN_FLIGHT);
    // Tokens without a grant went to the login workers; the others through their grant.
    assert_eq!(by_login, without_grant);
    assert_eq!(by_grant.len(), 800);
    assert!(by_grant.is_disjoint(&without_grant));
    // Everything replaced in time: nothing revoked, nothing in flight, and the next round is
    // counted from the refreshes.
    let counts = e.store.token_counts("p").await.unwrap();
    assert_eq!(
        (counts["revoked"], counts["deprecated"]),
        (0, 0),
        "{counts:?}"
    );
    let t = e.meta("d0-1").await;
    assert_eq!((t.state.as_str(), t.generation), ("active", 2));
    let after = e.store.rotation_calendar("p", 1).await.unwrap();
    assert_eq!((after.overdue, after.in_flight), (0, 0));
    assert!(after.next_due_at.unwrap().as_str() > crate::time::rfc3339(T0 + 19 * DAY).as_str());
}

#[tokio::test]
async fn a_token_not_replaced_within_the_overlap_is_revoked_at_its_sunset() {
    let e = Env::new(json!({"rotation": {"max_age_s": 60, "overlap_s": 30}})).await;
    e.deposit(json!([{"secret": "s1", "id": "a"}, {"secret": "s2", "id": "b"}]))
        .await;
    let janitor = Actor::process("janitor");
    e.advance(59_999);
    assert_eq!(
        e.store.rotate_aged_tokens(&janitor, "p", 10).await.unwrap(),
        0
    );
    e.advance(1);
    assert_eq!(
        e.store.rotate_aged_tokens(&janitor, "p", 10).await.unwrap(),
        2
    );
    assert_eq!(e.meta("a").await.state, "deprecated");
    // Started once: a second sweep finds nothing more.
    assert_eq!(
        e.store.rotate_aged_tokens(&janitor, "p", 10).await.unwrap(),
        0
    );
    // `a` is replaced by a login worker; `b` is not, and is revoked at its sunset.
    let job = e.claim(true).await.expect("a login job");
    let other = e.claim(true).await.expect("another login job");
    let (ja, _) = if job.token_id == "a" {
        (job, other)
    } else {
        (other, job)
    };
    assert!(e.complete(&ja, "s1-new", DAY).await.rotated);
    // Its job left the login workers' queue and its claim their in-flight count; `b`'s stays.
    let pk = e.store.keys().pool("p");
    let internal = e.redis.cli(&["HGET", &pk.ids(), "a"]);
    assert_eq!(
        e.redis
            .cli(&["ZSCORE", &pk.xjobs(), internal.trim()])
            .trim(),
        ""
    );
    assert_eq!(
        e.redis
            .cli(&["ZCARD", &format!("{}:claimed", pk.xjobs())])
            .trim(),
        "1"
    );
    e.advance(30_000);
    assert_eq!(e.store.sunset_due(&janitor, "p", 10).await.unwrap(), 1);
    assert_eq!(e.meta("a").await.state, "active");
    assert_eq!(e.meta("b").await.state, "revoked");
    let cal = e.store.rotation_calendar("p", 1).await.unwrap();
    assert_eq!((cal.in_flight, cal.overdue), (0, 0));
    // `a`'s age now counts from its replacement.
    assert_eq!(
        cal.next_due_at.as_deref(),
        Some(crate::time::rfc3339(T0 + 60_000 + 60_000).as_str())
    );
}
