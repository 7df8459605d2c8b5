//! Events: a revoke on replica A reaches a subscriber on replica B (whose renew then answers
//! 410) with the delay recorded; reconnecting with Last-Event-ID gets what was missed exactly
//! once; pool filters and permissions hold.

use std::time::Duration;

use serde_json::json;
use vault_core::auth::Scope;

use crate::harness::{one, Api, One};

/// A live subscription through the SDK's event stream, with deadlines.
struct Subscription {
    stream: vault_client::EventStream,
}

impl Subscription {
    async fn open(base: &str, token: &str, pools: &[&str], last_id: Option<&str>) -> Subscription {
        let stream = vault_client::Client::new(base, token)
            .events(pools, last_id)
            .await
            .expect("subscribed");
        Subscription { stream }
    }

    async fn next(&mut self) -> vault_client::Event {
        let next = tokio::time::timeout(crate::harness::PATIENCE, self.stream.next()).await;
        next.expect("an event within 10 s")
            .expect("stream open")
            .expect("readable")
    }

    /// Nothing more arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.stream.next()).await.is_err()
    }
}

#[tokio::test]
async fn a_revoke_on_one_replica_reaches_a_worker_on_another() {
    let t = one(&[]).await;
    let b = t.dep.vault(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "t1", "secret": "s1"}]}),
        )
        .await;
    let worker_token = t.dep.token("w", &[Scope::Lease], Some(vec!["p".into()]));
    let worker_b = Api::new(&b.base).with_token(&worker_token);
    let mut sub = Subscription::open(&b.base, &worker_token, &["p"], None).await;
    let lease = worker_b.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(lease.status, 201);

    let started = std::time::Instant::now();
    assert_eq!(
        t.api
            .post("/v1/pools/p/tokens/t1/revoke", json!({"reason": "leaked"}))
            .await
            .status,
        200
    );
    let e1 = sub.next().await;
    let e2 = sub.next().await;
    let took = started.elapsed();
    eprintln!("revocation reached a subscriber on the other replica in {took:?}");
    assert_eq!(
        (e1.kind.as_str(), e1.data.token_id.as_deref()),
        ("token.revoked", Some("t1"))
    );
    assert_eq!(e1.data.reason.as_deref(), Some("leaked"));
    assert_eq!(
        (e2.kind.as_str(), e2.data.lease_id.as_deref()),
        ("lease.revoked", Some(lease.str("lease_id").as_str()))
    );
    assert!(e1.id < e2.id || e1.id.len() < e2.id.len());
    assert!(
        !serde_json::to_string(&e1.data).unwrap().contains("s1\""),
        "events never carry secrets"
    );
    worker_b
        .post(
            &format!("/v1/pools/p/leases/{}/renew", lease.str("lease_id")),
            json!({}),
        )
        .await
        .problem(410, "lease_gone");

    let metrics = crate::harness::metrics_text(&b.base).await;
    let count_line = metrics
        .lines()
        .find(|l| l.starts_with("tv_revocation_propagation_seconds_count"))
        .unwrap_or("");
    let count: f64 = count_line
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        count >= 2.0,
        "propagation recorded on replica B:\n{metrics}"
    );
    // The revocation is counted once, by the replica that made it.
    let made = crate::harness::metrics_text(&t.vault.base).await;
    assert_eq!(
        crate::harness::sample(&made, "tv_token_revocations_total", &["pool=\"p\""]),
        Some(1.0),
        "{made}"
    );
    assert_eq!(
        crate::harness::sample(&metrics, "tv_token_revocations_total", &[]),
        None
    );
}

/// A vault with pool `p` holding tokens `a` and `b`.
async fn pool_with_a_and_b() -> One {
    let t = one(&[]).await;
    let a = t.api.put("/v1/pools/p", json!({})).await;
    assert_eq!(a.status, 201, "{a:?}");
    let a = t
        .api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    t
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_the_missed_events_exactly_once() {
    let t = pool_with_a_and_b().await;
    let admin = t.dep.admin.clone();
    let mut sub = Subscription::open(&t.api.base, &admin, &[], None).await;
    t.api
        .post("/v1/pools/p/freeze", json!({"reason": "one"}))
        .await;
    let first = sub.next().await;
    assert_eq!(first.kind, "pool.frozen");
    drop(sub);

    // Missed while disconnected.
    t.api.post("/v1/pools/p/unfreeze", json!({})).await;
    t.api.post("/v1/pools/p/tokens/a/revoke", json!({})).await;
    let mut again = Subscription::open(&t.api.base, &admin, &[], Some(&first.id)).await;
    let m1 = again.next().await;
    let m2 = again.next().await;
    assert_eq!(
        (m1.kind.as_str(), m2.kind.as_str()),
        ("pool.unfrozen", "token.revoked")
    );
    // Then live, without repeating anything.
    t.api.post("/v1/pools/p/tokens/b/revoke", json!({})).await;
    let live = again.next().await;
    assert_eq!(
        (live.kind.as_str(), live.data.token_id.as_deref()),
        ("token.revoked", Some("b"))
    );
    assert!(
        again.quiet(Duration::from_millis(500)).await,
        "no duplicates"
    );
    let ids = [&first.id, &m1.id, &m2.id, &live.id];
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 4);
}

#[tokio::test]
async fn subscribers_see_only_their_pools() {
    let t = one(&[]).await;
    for p in ["p", "q"] {
        t.api.put(&format!("/v1/pools/{p}"), json!({})).await;
    }
    let worker = t.dep.token("w", &[Scope::Lease], Some(vec!["p".into()]));
    let denied = Api::new(&t.api.base)
        .with_token(&worker)
        .get("/v1/events?pools=q")
        .await;
    denied.problem(403, "forbidden");
    Api::new(&t.api.base)
        .with_token(&t.dep.token("d", &[Scope::Deposit], None))
        .get("/v1/events")
        .await
        .problem(403, "forbidden");
    Api::new(&t.api.base)
        .with_token(&worker)
        .call_with(
            reqwest::Method::GET,
            "/v1/events",
            None,
            &[("last-event-id", "nope")],
        )
        .await
        .problem(400, "invalid_request");
    // No pools given: the token's own pools.
    let mut sub = Subscription::open(&t.api.base, &worker, &[], None).await;
    t.api.post("/v1/pools/q/freeze", json!({})).await;
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    let e = sub.next().await;
    assert_eq!(
        (e.kind.as_str(), Some(e.data.pool.as_str())),
        ("pool.frozen", Some("p"))
    );
}

#[tokio::test]
async fn resuming_past_trimmed_events_says_they_were_lost() {
    let t = pool_with_a_and_b().await;
    let admin = t.dep.admin.clone();
    let mut sub = Subscription::open(&t.api.base, &admin, &[], None).await;
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    let seen = sub.next().await;
    drop(sub);

    // Missed while away, and then trimmed as a full stream would be: only the newest is kept.
    t.api.post("/v1/pools/p/unfreeze", json!({})).await;
    t.api.post("/v1/pools/p/tokens/a/revoke", json!({})).await;
    let stream = format!("{}:events", t.dep.prefix);
    t.redis.cli(&["XTRIM", &stream, "MAXLEN", "1"]);

    let mut again = Subscription::open(&t.api.base, &admin, &[], Some(&seen.id)).await;
    let notice = again.next().await;
    assert_eq!(notice.kind, "events.lost", "{notice:?}");
    assert!(
        notice.id.is_empty(),
        "a notice must not move the resume point"
    );
    assert!(
        notice.data.reason.as_deref().unwrap().contains(&seen.id),
        "{notice:?}"
    );
    let kept = again.next().await;
    assert_eq!(
        (kept.kind.as_str(), kept.data.token_id.as_deref()),
        ("token.revoked", Some("a"))
    );

    // Resuming from an event still kept is not a gap.
    let mut fine = Subscription::open(&t.api.base, &admin, &[], Some(&kept.id)).await;
    t.api.post("/v1/pools/p/tokens/b/revoke", json!({})).await;
    let next = fine.next().await;
    assert_eq!(
        (next.kind.as_str(), next.data.token_id.as_deref()),
        ("token.revoked", Some("b"))
    );
}

#[tokio::test]
async fn shutdown_ends_event_streams_instead_of_waiting_out_the_grace_period() {
    let t = one(&[]).await;
    let mut v = t.dep.vault(&[("TV_SHUTDOWN_GRACE_S", "60")]).await;
    let admin = t.dep.admin.clone();
    let mut sub = Subscription::open(&v.base, &admin, &[], None).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    assert_eq!(sub.next().await.kind, "pool.frozen", "the stream is live");

    v.child.signal("TERM");
    // The stream ends (its client would reconnect elsewhere) and the process exits, far
    // sooner than the 60 s grace an open stream would otherwise hold it for.
    let ended = tokio::time::timeout(Duration::from_secs(30), sub.stream.next())
        .await
        .expect("the stream ends at shutdown");
    assert!(ended.is_none(), "{ended:?}");
    let exited = crate::harness::eventually(Duration::from_secs(30), async || {
        v.child.try_wait().is_some()
    })
    .await;
    assert!(exited, "{}", v.child.output());
    assert!(v.child.try_wait().unwrap().success());
}

/// Every `token.revoked` and `lease.revoked` on the event stream, as (type, token, lease).
fn revocation_events(t: &One) -> Vec<(String, String, String)> {
    let raw = t
        .redis
        .cli(&["XRANGE", &format!("{}:events", t.dep.prefix), "-", "+"]);
    raw.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "token.revoked" || e["type"] == "lease.revoked")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("token_id"), s("lease_id"))
        })
        .collect()
}

/// A revocation looks the same whoever makes it: an operator through the API, or the janitor
/// at a deprecated token's sunset. Each publishes `token.revoked` and a `lease.revoked` for
/// every lease it ended, and audits `token.revoke` with the number of leases ended.
#[tokio::test]
async fn a_revocation_is_announced_and_audited_alike_from_every_caller() {
    let t = one(&[]).await;
    assert_eq!(t.api.put("/v1/pools/p", json!({})).await.status, 201);
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "by-api", "secret": "s1"}, {"id": "at-sunset", "secret": "s2"}]}),
        )
        .await;
    let mut leases = std::collections::HashMap::new();
    for _ in 0..2 {
        let l = t.api.post("/v1/pools/p/leases", json!({})).await;
        assert_eq!(l.status, 201);
        leases.insert(l.str("token_id"), l.str("lease_id"));
    }
    let r = t
        .api
        .post(
            "/v1/pools/p/tokens/by-api/revoke",
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let sunset = crate::harness::now_ms() + 300;
    let d = t
        .api
        .post(
            "/v1/pools/p/tokens/at-sunset/deprecate",
            json!({"sunset_at": sunset}),
        )
        .await;
    assert_eq!(d.status, 200, "{d:?}");
    let _janitor = t.dep.janitor(50);
    // The janitor's revoke is announced and audited right after the state changes (in calls of
    // their own, events first): wait for its audit entry, the last of the three.
    crate::harness::wait_json(
        &t.api,
        "/v1/audit?pool=p",
        crate::harness::PATIENCE,
        |trail| {
            trail["events"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["action"] == "token.revoke" && e["token_id"] == "at-sunset")
            })
        },
    )
    .await;

    let events = revocation_events(&t);
    for id in ["by-api", "at-sunset"] {
        assert!(
            events.contains(&("token.revoked".into(), id.into(), String::new())),
            "{id}: {events:?}"
        );
        assert!(
            events.contains(&("lease.revoked".into(), id.into(), leases[id].clone())),
            "{id}'s lease: {events:?}"
        );
    }
    let audit = t.api.get("/v1/audit?pool=p").await.body;
    let revokes: Vec<(String, String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.revoke")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("actor"), s("token_id"), s("detail"))
        })
        .collect();
    assert!(
        revokes.contains(&(
            "janitor".into(),
            "at-sunset".into(),
            "sunset (1 leases ended)".into()
        )),
        "{revokes:?}"
    );
    assert!(
        revokes
            .iter()
            .any(|(a, id, d)| a != "janitor" && id == "by-api" && d == "leaked (1 leases ended)"),
        "{revokes:?}"
    );
}
