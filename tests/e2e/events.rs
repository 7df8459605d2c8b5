//! Events: a revoke on replica A reaches a subscriber on replica B (whose renew then answers
//! 410) with the delay recorded; reconnecting with Last-Event-ID gets what was missed exactly
//! once; pool filters and permissions hold.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use vault_core::auth::Scope;

use crate::harness::{one, Api};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    kind: String,
    data: Value,
}

/// A live SSE subscription read by a background task.
struct Subscription {
    rx: mpsc::UnboundedReceiver<Sse>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Subscribe; returns once the server answered (the subscription is live from then on).
    async fn open(base: &str, token: &str, query: &str, last_id: Option<&str>) -> Subscription {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/v1/events{query}"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let mut res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = res.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut id, mut kind, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().into();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().into();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    if !kind.is_empty() {
                        let _ = tx.send(Sse {
                            id,
                            kind,
                            data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        });
                    }
                }
            }
        });
        Subscription { rx, task }
    }

    async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
    }

    /// Nothing more arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
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
    let mut sub = Subscription::open(&b.base, &worker_token, "?pools=p", None).await;
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
        (e1.kind.as_str(), e1.data["token_id"].as_str()),
        ("token.revoked", Some("t1"))
    );
    assert_eq!(e1.data["reason"], "leaked");
    assert_eq!(
        (e2.kind.as_str(), e2.data["lease_id"].as_str()),
        ("lease.revoked", Some(lease.str("lease_id").as_str()))
    );
    assert!(e1.id < e2.id || e1.id.len() < e2.id.len());
    assert!(
        !e1.data.to_string().contains("s1\""),
        "events never carry secrets"
    );
    worker_b
        .post(
            &format!("/v1/pools/p/leases/{}/renew", lease.str("lease_id")),
            json!({}),
        )
        .await
        .problem(410, "lease_gone");

    let metrics = reqwest::get(format!("{}/metrics", b.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_the_missed_events_exactly_once() {
    let t = one(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}]}),
        )
        .await;
    let admin = t.dep.admin.clone();
    let mut sub = Subscription::open(&t.api.base, &admin, "", None).await;
    t.api
        .post("/v1/pools/p/freeze", json!({"reason": "one"}))
        .await;
    let first = sub.next().await;
    assert_eq!(first.kind, "pool.frozen");
    drop(sub);

    // Missed while disconnected.
    t.api.post("/v1/pools/p/unfreeze", json!({})).await;
    t.api.post("/v1/pools/p/tokens/a/revoke", json!({})).await;
    let mut again = Subscription::open(&t.api.base, &admin, "", Some(&first.id)).await;
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
        (live.kind.as_str(), live.data["token_id"].as_str()),
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
    let mut sub = Subscription::open(&t.api.base, &worker, "", None).await;
    t.api.post("/v1/pools/q/freeze", json!({})).await;
    t.api.post("/v1/pools/p/freeze", json!({})).await;
    let e = sub.next().await;
    assert_eq!(
        (e.kind.as_str(), e.data["pool"].as_str()),
        ("pool.frozen", Some("p"))
    );
}
