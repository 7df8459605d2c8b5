//! Pipelines: a job's sized, time-bounded share of a pool, on real Redis and real replicas.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use testkit::RedisServer;

use crate::harness::{one, wait_json, Api, Deployment, One, PATIENCE};

/// A pool `p` holding `n` tokens `t0`..`t{n-1}` (`cfg`: its config).
async fn pool_of(api: &Api, n: usize, cfg: Value) {
    assert!(api.put("/v1/pools/p", cfg).await.status.is_success());
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let toks: Vec<_> = chunk
            .iter()
            .map(|i| json!({"id": format!("t{i}"), "secret": format!("secret-{i}")}))
            .collect();
        let d = api
            .post("/v1/pools/p/tokens", json!({ "tokens": toks }))
            .await;
        assert_eq!(d.status, 201, "{d:?}");
    }
}

/// Every `pipeline.*` event on the stream.
fn pipeline_events(redis: &RedisServer, prefix: &str) -> Vec<Value> {
    redis
        .cli(&["XRANGE", &format!("{prefix}:events"), "-", "+"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("pipeline."))
        })
        .collect()
}

/// Lease through `pipeline` (None: the free part), release at once; the token id.
async fn cycle(api: &Api, pipeline: Option<&str>) -> Option<String> {
    let body = match pipeline {
        Some(p) => json!({ "pipeline": p }),
        None => json!({}),
    };
    let l = api.post("/v1/pools/p/leases", body).await;
    if l.status == 503 {
        return None;
    }
    assert_eq!(l.status, 201, "{l:?}");
    assert_eq!(l.body["pipeline"].as_str(), pipeline, "{l:?}");
    let r = api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    Some(l.str("token_id"))
}

/// Two pipelines and free leasing on one pool, through two replicas under load: no token of A
/// is ever leased through B or outside a pipeline, and each side uses only its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pipelines_and_free_leasing_never_cross() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (v1, v2) = (dep.vault(&[]).await, dep.vault(&[]).await);
    let apis = [dep.api(&v1), dep.api(&v2)];
    pool_of(&apis[0], 30, json!({})).await;
    for (name, n) in [("a", 10), ("b", 8)] {
        let p = apis[0]
            .put(
                &format!("/v1/pools/p/pipelines/{name}"),
                json!({"tokens": n, "duration_s": 3600}),
            )
            .await;
        assert_eq!(p.status, 201, "{p:?}");
        assert_eq!(p.body["tokens"], n, "{p:?}");
        assert_eq!(p.body["phase"], "live", "{p:?}");
    }
    let seen: Arc<Mutex<HashMap<&'static str, BTreeSet<String>>>> = Arc::default();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..24usize {
        let api = apis[w % 2].clone();
        let side: &'static str = ["a", "b", "free"][w % 3];
        let seen = seen.clone();
        workers.spawn(async move {
            for _ in 0..40 {
                let pipeline = (side != "free").then_some(side);
                if let Some(t) = cycle(&api, pipeline).await {
                    seen.lock().unwrap().entry(side).or_default().insert(t);
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("worker");
    }
    let seen = seen.lock().unwrap().clone();
    let (a, b, free) = (&seen["a"], &seen["b"], &seen["free"]);
    assert!(
        a.len() <= 10 && b.len() <= 8 && free.len() <= 12,
        "{seen:?}"
    );
    assert!(
        a.is_disjoint(b) && a.is_disjoint(free) && b.is_disjoint(free),
        "{seen:?}"
    );
    // What status says of the shares matches.
    let list = apis[1].get("/v1/pools/p/pipelines").await;
    assert_eq!(list.status, 200, "{list:?}");
    let by_name: HashMap<_, _> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    assert_eq!(by_name["a"]["tokens"], 10);
    assert_eq!(by_name["a"]["leases_granted"], 8 * 40);
    assert_eq!(by_name["b"]["under_strength"], false);
}

/// A revoked or quarantined pipeline token is replaced from the free part of the pool in the
/// same call, and the replacement is announced and audited; with nothing free, the pipeline is
/// under strength (event, status, metric) until the janitor finds a token.
#[tokio::test]
async fn a_lost_pipeline_token_is_replaced_and_announced() {
    let t = one(&[("TV_POOL_METRICS_INTERVAL_S", "1")]).await;
    pool_of(&t.api, 4, json!({"quarantine_after_strikes": 1})).await;
    let p = t
        .api
        .put(
            "/v1/pools/p/pipelines/job",
            json!({"tokens": 2, "duration_s": 600}),
        )
        .await;
    assert_eq!(p.status, 201, "{p:?}");
    // Revoke one of its tokens (found by leasing through it).
    let l = t
        .api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await;
    let first = l.str("token_id");
    let r = t
        .api
        .post(
            &format!("/v1/pools/p/tokens/{first}/revoke"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let st = t.api.get("/v1/pools/p/pipelines/job").await.body;
    assert_eq!(
        (st["tokens"].as_u64(), st["under_strength"].as_bool()),
        (Some(2), Some(false)),
        "{st}"
    );
    let ev = pipeline_events(&t.redis, &t.dep.prefix);
    let replaced = ev
        .iter()
        .find(|e| e["type"] == "pipeline.token_replaced")
        .unwrap_or_else(|| panic!("no replacement announced: {ev:?}"));
    assert_eq!(replaced["token_id"], first.as_str());
    assert_eq!(replaced["pipeline"], "job");
    let by = replaced["replaced_by"].as_str().unwrap().to_string();
    // A quarantine (one strike) replaces the next; then nothing is free: under strength.
    let l = t
        .api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await;
    assert_eq!(l.status, 201, "{l:?}");
    let r = t
        .api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "unauthorized"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..3 {
        let st = t.api.get("/v1/pools/p/pipelines/job").await.body;
        if st["under_strength"] == true {
            break;
        }
        let l = t
            .api
            .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
            .await;
        t.api
            .post(
                &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
                json!({"outcome": "unauthorized"}),
            )
            .await;
    }
    let st = t.api.get("/v1/pools/p/pipelines/job").await.body;
    assert_eq!(st["under_strength"], true, "{st}");
    assert!(st["tokens"].as_u64().unwrap() < 2, "{st}");
    let ev = pipeline_events(&t.redis, &t.dep.prefix);
    assert!(
        ev.iter().any(|e| e["type"] == "pipeline.under_strength"),
        "{ev:?}"
    );
    assert_ne!(by, first);
    // The gauge says so too (refreshed every second).
    let gauge = || async {
        let m = crate::harness::metrics_text(&t.vault.base).await;
        crate::harness::sample(
            &m,
            "tv_pipeline_under_strength",
            &["pool=\"p\"", "pipeline=\"job\""],
        )
    };
    let end = Instant::now() + PATIENCE;
    while gauge().await != Some(1.0) {
        assert!(Instant::now() < end, "tv_pipeline_under_strength never 1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let audit = t.api.get("/v1/audit?pool=p").await.body.to_string();
    assert!(audit.contains("pipeline.token_replaced"), "{audit}");
    assert!(audit.contains("pipeline.create"), "{audit}");
    // A new token: the janitor tops the pipeline up within its interval.
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"id": "fresh", "secret": "s-fresh"}),
        )
        .await;
    let _janitor = t.dep.janitor(100);
    let st = wait_json(&t.api, "/v1/pools/p/pipelines/job", PATIENCE, |b| {
        b["under_strength"] == false
    })
    .await;
    assert_eq!(st["tokens"], 2, "{st}");
    let metrics = crate::harness::metrics_text(&t.vault.base).await;
    assert!(metrics.contains("tv_pipeline_events_total"), "{metrics}");
}

/// Not enough eligible tokens: 409 `insufficient_capacity` with exact numbers and nothing
/// assigned; the admin's dry run answers the same; `allow_partial` takes what is there.
#[tokio::test]
async fn a_short_pool_answers_409_with_exact_numbers() {
    let t = one(&[]).await;
    pool_of(&t.api, 5, json!({})).await;
    let ask = json!({"tokens": 8, "duration_s": 600});
    let dry = t
        .api
        .put("/v1/pools/p/pipelines/big?dry_run=true", ask.clone())
        .await;
    dry.problem(409, "insufficient_capacity");
    assert_eq!(dry.body["capacity"]["could"], 5, "{dry:?}");
    assert_eq!(dry.body["capacity"]["missing"], 3, "{dry:?}");
    let a = t.api.put("/v1/pools/p/pipelines/big", ask.clone()).await;
    a.problem(409, "insufficient_capacity");
    assert_eq!(a.body["capacity"], dry.body["capacity"], "{a:?}");
    // Nothing stayed assigned: free leasing gets all five.
    let mut got = BTreeSet::new();
    let mut held = vec![];
    for _ in 0..5 {
        let l = t.api.post("/v1/pools/p/leases", json!({})).await;
        assert_eq!(l.status, 201, "{l:?}");
        got.insert(l.str("token_id"));
        held.push(l.str("lease_id"));
    }
    assert_eq!(got.len(), 5);
    t.api
        .get("/v1/pools/p/pipelines/big")
        .await
        .problem(404, "pipeline_not_found");
    // With every token leased, none is eligible; the next ones free up at the leases' ends.
    let a = t.api.put("/v1/pools/p/pipelines/big", ask.clone()).await;
    a.problem(409, "insufficient_capacity");
    assert_eq!(a.body["capacity"]["could"], 0, "{a:?}");
    assert!(a.body["capacity"]["next_free_at"].is_string(), "{a:?}");
    for l in held {
        t.api
            .post(&format!("/v1/pools/p/leases/{l}/release"), json!({}))
            .await;
    }
    // A dry run needs admin.
    let worker = crate::harness::Api::new(&t.vault.base).with_token(&t.dep.token(
        "w",
        &[vault_core::auth::Scope::Lease],
        None,
    ));
    worker
        .put("/v1/pools/p/pipelines/big?dry_run=true", ask.clone())
        .await
        .problem(403, "forbidden");
    let partial = worker
        .put(
            "/v1/pools/p/pipelines/big",
            json!({"tokens": 8, "duration_s": 600, "allow_partial": true}),
        )
        .await;
    assert_eq!(partial.status, 201, "{partial:?}");
    assert_eq!(partial.body["tokens"], 5, "{partial:?}");
    assert_eq!(partial.body["tokens_wanted"], 8, "{partial:?}");
    assert_eq!(partial.body["under_strength"], true, "{partial:?}");
    let ev = pipeline_events(&t.redis, &t.dep.prefix);
    assert!(
        ev.iter()
            .any(|e| e["type"] == "pipeline.under_strength" && e["pipeline"] == "big"),
        "{ev:?}"
    );
    t.api
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
}

/// Resizing grows and shrinks a share; ending it with a lease out gives its tokens back while
/// the lease keeps its deadline and is released normally.
#[tokio::test]
async fn resize_and_end_with_a_lease_out() {
    let t = one(&[]).await;
    pool_of(&t.api, 10, json!({})).await;
    let path = "/v1/pools/p/pipelines/job";
    let p = t
        .api
        .put(path, json!({"tokens": 4, "duration_s": 600}))
        .await;
    assert_eq!(
        (p.status.as_u16(), p.body["tokens"].as_u64()),
        (201, Some(4)),
        "{p:?}"
    );
    let p = t
        .api
        .put(path, json!({"tokens": 7, "duration_s": 600}))
        .await;
    assert_eq!(
        (p.status.as_u16(), p.body["tokens"].as_u64()),
        (200, Some(7)),
        "{p:?}"
    );
    let p = t
        .api
        .put(path, json!({"tokens": 2, "duration_s": 600}))
        .await;
    assert_eq!(
        (p.status.as_u16(), p.body["tokens"].as_u64()),
        (200, Some(2)),
        "{p:?}"
    );
    // Growing past the pool fails and keeps the size it had.
    let g = t
        .api
        .put(path, json!({"tokens": 11, "duration_s": 600}))
        .await;
    g.problem(409, "insufficient_capacity");
    assert_eq!(g.body["capacity"]["missing"], 1, "{g:?}");
    let st = t.api.get(path).await.body;
    assert_eq!(
        (st["tokens"].as_u64(), st["phase"].as_str()),
        (Some(2), Some("live")),
        "{st}"
    );
    // Eight free tokens; a lease out on the pipeline; end it.
    let l = t
        .api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await;
    assert_eq!(l.status, 201, "{l:?}");
    let e = t.api.delete(path).await;
    assert_eq!(
        (e.status.as_u16(), e.body["tokens_returned"].as_u64()),
        (200, Some(2)),
        "{e:?}"
    );
    t.api.get(path).await.problem(404, "pipeline_not_found");
    t.api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await
        .problem(404, "pipeline_not_found");
    let renewed = t
        .api
        .post(
            &format!("/v1/pools/p/leases/{}/renew", l.str("lease_id")),
            json!({}),
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    let r = t
        .api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Every token is free again.
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let l = t.api.post("/v1/pools/p/leases", json!({})).await;
        assert_eq!(l.status, 201, "{l:?}");
        got.insert(l.str("token_id"));
    }
    assert_eq!(got.len(), 10);
    let audit = t.api.get("/v1/audit?pool=p").await.body.to_string();
    for action in ["pipeline.create", "pipeline.resize", "pipeline.end"] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
}

/// At its deadline a pipeline ends by itself (the janitor): its tokens go back to the pool.
/// A pipeline sized from a demand gets N from the pool's sizing rule.
#[tokio::test]
async fn a_pipeline_sized_from_its_demand_ends_at_its_deadline() {
    let t = one(&[]).await;
    pool_of(&t.api, 6, json!({"quota_limit": 100, "quota_window_s": 60})).await;
    // 5 requests/s for 30 s = 150 requests; 100 per token per window: 2 tokens.
    let p = t
        .api
        .put(
            "/v1/pools/p/pipelines/crawl",
            json!({"rps": 5, "duration_s": 30, "concurrency": 2}),
        )
        .await;
    assert_eq!(p.status, 201, "{p:?}");
    assert_eq!(p.body["tokens"], 2, "{p:?}");
    assert_eq!(p.body["rate_asked"], 5.0, "{p:?}");
    let short = t
        .api
        .put(
            "/v1/pools/p/pipelines/short",
            json!({"tokens": 3, "duration_s": 1}),
        )
        .await;
    assert_eq!(short.status, 201, "{short:?}");
    let _janitor = t.dep.janitor(100);
    let list = wait_json(&t.api, "/v1/pools/p/pipelines", PATIENCE, |b| {
        b.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(list[0]["name"], "crawl", "{list}");
    let ev = pipeline_events(&t.redis, &t.dep.prefix);
    assert!(
        ev.iter()
            .any(|e| e["type"] == "pipeline.ended" && e["pipeline"] == "short"),
        "{ev:?}"
    );
    // Four tokens free: the pipeline's two stay out of free leasing.
    let mut got = BTreeSet::new();
    for _ in 0..4 {
        let l = t.api.post("/v1/pools/p/leases", json!({})).await;
        assert_eq!(l.status, 201, "{l:?}");
        got.insert(l.str("token_id"));
    }
    t.api
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
}

/// A client token limited to pipelines leases only through them.
#[tokio::test]
async fn a_pipeline_limited_client_leases_only_through_its_pipelines() {
    let t = one(&[]).await;
    pool_of(&t.api, 4, json!({})).await;
    for name in ["mine", "theirs"] {
        let p = t
            .api
            .put(
                &format!("/v1/pools/p/pipelines/{name}"),
                json!({"tokens": 1, "duration_s": 600}),
            )
            .await;
        assert_eq!(p.status, 201, "{p:?}");
    }
    let minted = t
        .api
        .post(
            "/v1/clients",
            json!({"sub": "job", "scopes": ["lease"], "pipelines": ["mine"]}),
        )
        .await;
    assert_eq!(minted.status, 201, "{minted:?}");
    let job = Api::new(&t.vault.base).with_token(&minted.str("token"));
    job.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(403, "forbidden");
    job.post("/v1/pools/p/leases", json!({"pipeline": "theirs"}))
        .await
        .problem(403, "forbidden");
    job.delete("/v1/pools/p/pipelines/theirs")
        .await
        .problem(403, "forbidden");
    assert_eq!(cycle(&job, Some("mine")).await.map(|_| ()), Some(()));
}

/// Assigning and giving back a share of 20,000 tokens runs in short batches: no Redis call
/// blocks others for long. SLOWLOG measures wall time, which on a busy machine includes time the
/// OS gave other processes while a call ran (a 1 ms call is then logged at 15 ms, about one
/// call in a thousand here): so at most 1 % of the calls may be logged over 10 ms, and none
/// over 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_of_20000_tokens_moves_in_short_batches() {
    const N: usize = 20_000;
    let t: One = one(&[]).await;
    pool_of(&t.api, N + 500, json!({})).await;
    // Where the OS allows it, fewer of those interruptions.
    t.redis.prioritize();
    t.redis.log_calls_over(10_000);
    t.redis.cli(&["CONFIG", "RESETSTAT"]);
    let s = Instant::now();
    let p = t
        .api
        .put(
            "/v1/pools/p/pipelines/huge",
            json!({"tokens": N, "duration_s": 3600}),
        )
        .await;
    assert_eq!(
        (p.status.as_u16(), p.body["tokens"].as_u64()),
        (201, Some(N as u64)),
        "{p:?}"
    );
    eprintln!("assigned {N} tokens in {:?}", s.elapsed());
    // Only the 500 others lease freely.
    for _ in 0..50 {
        cycle(&t.api, None).await.expect("a free token");
    }
    let s = Instant::now();
    let e = t.api.delete("/v1/pools/p/pipelines/huge").await;
    assert_eq!(e.status, 200, "{e:?}");
    eprintln!("returned {N} tokens in {:?}", s.elapsed());
    let calls = t
        .redis
        .command_stat("fcall", "calls")
        .expect("FCALL counted") as u64;
    assert!(
        calls > 2 * (N as u64) / 100,
        "the work was not batched: {calls} calls"
    );
    if let Err(slow) = t.redis.calls_were_short(calls, 10, 50_000) {
        panic!("{slow}");
    }
    let st = t.api.get("/v1/pools/p/status").await.body;
    assert_eq!(st["tokens"]["active"], N + 500, "{st}");
}

/// The Rust SDK creates a pipeline, works through it with a `Worker`, reads the shortfall as a
/// typed error, and ends it.
#[tokio::test]
async fn the_rust_sdk_works_through_a_pipeline() {
    let t = one(&[]).await;
    pool_of(&t.api, 3, json!({})).await;
    let c = vault_client::Client::new(&t.vault.base, &t.dep.admin);
    let demand = vault_client::PipelineInput {
        tokens: Some(2),
        duration_s: 600,
        ..Default::default()
    };
    let st = c.put_pipeline("p", "sdk", &demand).await.expect("created");
    assert_eq!(st["tokens"], 2, "{st}");
    let w = vault_client::Worker::start_in(c.clone(), "p", Some("sdk"), "w1")
        .await
        .unwrap();
    let l = w.lease().await.unwrap();
    assert_eq!(l.pipeline.as_deref(), Some("sdk"));
    w.report(&l, vault_client::Outcome::Ok).await.unwrap();
    w.finish().await.unwrap();
    let big = vault_client::PipelineInput {
        tokens: Some(5),
        duration_s: 600,
        ..Default::default()
    };
    match c.put_pipeline("p", "other", &big).await {
        Err(vault_client::Error::InsufficientCapacity(s)) => {
            assert_eq!((s.could, s.missing), (1, 4), "{s:?}")
        }
        other => panic!("expected a shortfall: {other:?}"),
    }
    assert_eq!(c.end_pipeline("p", "sdk").await.unwrap(), 2);
}

/// Inside a pipeline every rule holds as outside: the quota (a spent share answers
/// `pool_exhausted` while free tokens remain), the kill switch, idempotency (a retried lease
/// gets the same lease; the same key for another pipeline is refused), and a sticky session
/// never crosses into or out of a share.
#[tokio::test]
async fn every_rule_holds_inside_a_pipeline() {
    let t = one(&[]).await;
    pool_of(
        &t.api,
        4,
        json!({"quota_limit": 3, "quota_window_s": 3600, "max_leases_per_token": 1}),
    )
    .await;
    let p = t
        .api
        .put(
            "/v1/pools/p/pipelines/job",
            json!({"tokens": 1, "duration_s": 600}),
        )
        .await;
    assert_eq!(p.status, 201, "{p:?}");
    // Idempotency: the same key answers the same lease; with another pipeline it is refused.
    let key = [("Idempotency-Key", "k-1")];
    let body = json!({"pipeline": "job"});
    let l = t
        .api
        .call_with(
            reqwest::Method::POST,
            "/v1/pools/p/leases",
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(l.status, 201, "{l:?}");
    let again = t
        .api
        .call_with(
            reqwest::Method::POST,
            "/v1/pools/p/leases",
            Some(body),
            &key,
        )
        .await;
    assert_eq!(
        (again.status.as_u16(), again.str("lease_id")),
        (200, l.str("lease_id"))
    );
    t.api
        .call_with(
            reqwest::Method::POST,
            "/v1/pools/p/leases",
            Some(json!({})),
            &key,
        )
        .await
        .problem(422, "idempotency_mismatch");
    // Concurrency: the share's one token is held.
    t.api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await
        .problem(503, "pool_exhausted");
    let share_token = l.str("token_id");
    t.api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    // Quota: two more requests spend the share's token; then the share is exhausted while the
    // free part still leases.
    for _ in 0..2 {
        assert_eq!(cycle(&t.api, Some("job")).await, Some(share_token.clone()));
    }
    t.api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await
        .problem(503, "pool_exhausted");
    // A session started outside stays outside.
    let s = t
        .api
        .post("/v1/pools/p/leases", json!({"session": "s1"}))
        .await;
    assert_eq!(s.status, 201, "{s:?}");
    assert_ne!(s.str("token_id"), share_token);
    t.api
        .post(
            &format!("/v1/pools/p/leases/{}/release", s.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    t.api
        .post(
            "/v1/pools/p/leases",
            json!({"pipeline": "job", "session": "s1"}),
        )
        .await
        .problem(503, "pool_exhausted");
    // The kill switch holds for pipelines too.
    t.api
        .post("/v1/pools/p/freeze", json!({"reason": "drill"}))
        .await;
    t.api
        .post("/v1/pools/p/leases", json!({"pipeline": "job"}))
        .await
        .problem(423, "pool_frozen");
}

/// What an operator reads of a pipeline: the rate observed against the rate asked, the quota
/// used, and when the share runs out of quota at that rate, before its deadline.
#[tokio::test]
async fn a_pipeline_says_when_its_share_runs_out() {
    let t = one(&[]).await;
    pool_of(
        &t.api,
        4,
        json!({"quota_limit": 20, "quota_window_s": 3600}),
    )
    .await;
    // 1 request/s for an hour at 20 a token an hour: 2 tokens would not do; ask for 2 anyway.
    let p = t
        .api
        .put(
            "/v1/pools/p/pipelines/job",
            json!({"tokens": 2, "duration_s": 3600}),
        )
        .await;
    assert_eq!(p.status, 201, "{p:?}");
    for _ in 0..10 {
        cycle(&t.api, Some("job")).await.expect("a token");
    }
    let st = t.api.get("/v1/pools/p/pipelines/job").await.body;
    assert_eq!(st["leases_granted"], 10, "{st}");
    assert!(st["rate_observed"].as_f64().unwrap() > 0.0, "{st}");
    let used = st["quota_used_ratio"].as_f64().unwrap();
    assert!((used - 0.25).abs() < 1e-9, "10 of 40 units: {st}");
    assert_eq!(st["exhausts_by"], "quota", "{st}");
    assert!(
        st["exhausts_before_deadline_s"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(st["tokens_by_state"]["active"], 2, "{st}");
}
