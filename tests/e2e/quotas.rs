//! Several quotas under load: one pool limits each token to 60 requests a minute, 90,000 cost
//! units a minute and 1,000 requests a day, and an emulated LLM-style target enforces the same
//! three limits itself (exactly: rolling minutes, the UTC day), answering 429 past any of them.
//! Workers on two vault replicas lease, call the target with a cost only known after the call
//! (never above the lease's estimate), and release with that cost and the target's
//! `x-ratelimit-*` headers (read by the Rust SDK). The vault must keep every token under every
//! limit: the target never answers 429.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use rand::{Rng, SeedableRng};
use serde_json::json;
use testkit::RedisServer;

use crate::harness::{now_ms, Deployment, PATIENCE};

const RPM: u64 = 60;
const TPM: u64 = 90_000;
const RPD: u64 = 1_000;
/// What a lease reserves of `llm_tokens`; a call costs between half of it and all of it.
const ESTIMATE: u64 = 2_000;
const TOKENS: usize = 4;
const WORKERS: usize = 32;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// What the target counts per key: its calls (time, cost) of the last minute, and today's.
#[derive(Default)]
struct Counts {
    minute: VecDeque<(i64, u64)>,
    day: (i64, u64),
}

#[derive(Default)]
struct Target {
    keys: Mutex<HashMap<String, Counts>>,
    /// (key, status) of every call.
    log: Mutex<Vec<(String, u16)>>,
}

#[derive(serde::Deserialize)]
struct Call {
    cost: u64,
}

async fn call(
    State(t): State<Arc<Target>>,
    Query(q): Query<Call>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let now = now_ms();
    let mut keys = t.keys.lock().unwrap();
    let c = keys.entry(key.clone()).or_default();
    while c
        .minute
        .front()
        .is_some_and(|(at, _)| *at <= now - MINUTE_MS)
    {
        c.minute.pop_front();
    }
    if c.day.0 != now / DAY_MS {
        c.day = (now / DAY_MS, 0);
    }
    let requests = c.minute.len() as u64;
    let tokens: u64 = c.minute.iter().map(|(_, n)| n).sum();
    let status = if requests + 1 > RPM || tokens + q.cost > TPM || c.day.1 + 1 > RPD {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        c.minute.push_back((now, q.cost));
        c.day.1 += 1;
        StatusCode::OK
    };
    let requests = c.minute.len() as u64;
    let tokens: u64 = c.minute.iter().map(|(_, n)| n).sum();
    // The oldest call of the minute leaves it then.
    let reset = c
        .minute
        .front()
        .map(|(at, _)| (at + MINUTE_MS - now).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    t.log.lock().unwrap().push((key, status.as_u16()));
    let mut h = HeaderMap::new();
    for (k, v) in [
        (
            "x-ratelimit-remaining-requests",
            (RPM - requests).to_string(),
        ),
        ("x-ratelimit-remaining-tokens", (TPM - tokens).to_string()),
        ("x-ratelimit-reset-requests", format!("{reset:.3}s")),
        ("x-ratelimit-reset-tokens", format!("{reset:.3}s")),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    (status, h, "{}")
}

async fn serve_target(t: Arc<Target>) -> String {
    let app = Router::new().route("/call", get(call)).with_state(t);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    exhausted: AtomicU64,
}

async fn worker(
    vault: vault_client::Client,
    target: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        // Half the workers say what they expect a call to cost; the rest leave it to the pool.
        let costs: BTreeMap<String, u64> = if seed % 2 == 0 {
            [("llm_tokens".to_string(), ESTIMATE)].into()
        } else {
            BTreeMap::new()
        };
        let lease = match vault.lease_costing("mixed", "w", &costs).await {
            Ok(l) => l,
            Err(vault_client::Error::Exhausted { .. }) => {
                tally.exhausted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => panic!("lease: {e}"),
        };
        assert_eq!(lease.costs.get("llm_tokens"), Some(&ESTIMATE));
        let cost = rng.gen_range(ESTIMATE / 2..=ESTIMATE);
        let res = http
            .get(format!("{target}/call?cost={cost}"))
            .header("authorization", lease.headers.authorization.as_str())
            .send()
            .await
            .unwrap();
        let ok = res.status() == 200;
        let report = vault_client::Report {
            outcome: if ok {
                vault_client::Outcome::Ok
            } else {
                vault_client::Outcome::RateLimited
            },
            costs: if ok {
                [("llm_tokens".to_string(), cost)].into()
            } else {
                [("llm_tokens".to_string(), 0)].into()
            },
            used: Some(u64::from(ok)),
            rate_limit: vault_client::rate_limit_families(res.headers()),
            ..Default::default()
        };
        vault.release_with(&lease, &report).await.unwrap();
        tally.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_quotas_hold_against_a_target_that_enforces_them() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let v1 = dep.vault(&[]).await;
    let v2 = dep.vault(&[]).await;
    let admin = dep.api(&v1);
    let made = admin
        .put(
            "/v1/pools/mixed",
            json!({
                "max_leases_per_token": 4,
                "quotas": [
                    {"name": "rpm", "limit": RPM, "window_s": 60, "kind": "sliding", "sync": "requests"},
                    {"name": "tpm", "limit": TPM, "window_s": 60, "kind": "sliding",
                     "cost": "llm_tokens", "sync": "tokens"},
                    {"name": "rpd", "limit": RPD, "window_s": 86_400, "kind": "clock_aligned"},
                ],
                "cost_estimates": {"llm_tokens": ESTIMATE},
            }),
        )
        .await;
    assert_eq!(made.status, 201, "{made:?}");
    let tokens: Vec<_> = (0..TOKENS)
        .map(|i| json!({"id": format!("k{i}"), "secret": format!("llm-key-{i}")}))
        .collect();
    let dep_ok = admin
        .post("/v1/pools/mixed/tokens", json!({ "tokens": tokens }))
        .await;
    assert_eq!(dep_ok.status, 201, "{dep_ok:?}");

    let target = Arc::new(Target::default());
    let url = serve_target(target.clone()).await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for w in 0..WORKERS {
        let base = if w % 2 == 0 { &v1.base } else { &v2.base };
        tasks.push(tokio::spawn(worker(
            vault_client::Client::new(base, &dep.admin),
            url.clone(),
            tally.clone(),
            stop.clone(),
            w as u64,
        )));
    }
    // Run until every token's minute is spent and the pool has refused many leases since: the
    // workers then keep asking and the vault keeps refusing.
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let served = target.log.lock().unwrap().len() as u64;
        if served >= 150 && tally.exhausted.load(Ordering::Relaxed) >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not reach its end: {served} calls, {} refusals",
            tally.exhausted.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker panicked");
    }

    let log = target.log.lock().unwrap().clone();
    let refused: Vec<_> = log.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "the target refused {} of {} calls: {refused:?}",
        refused.len(),
        log.len()
    );
    // The vault's counts: never below the target's, never past a limit.
    for i in 0..TOKENS {
        let key = format!("llm-key-{i}");
        let served = log.iter().filter(|(k, _)| *k == key).count() as u64;
        let target_tokens: u64 = target.keys.lock().unwrap()[&key]
            .minute
            .iter()
            .map(|(_, n)| n)
            .sum();
        let meta = admin.get(&format!("/v1/pools/mixed/tokens/k{i}")).await;
        let q = |name: &str| {
            meta.body["quotas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["name"] == name)
                .unwrap_or_else(|| panic!("no quota {name}: {}", meta.body))
                .clone()
        };
        let (rpm, tpm, rpd) = (q("rpm"), q("tpm"), q("rpd"));
        // No lease went past a limit: the target refused nothing (above). A count may end a
        // little over a limit: a report's headers count the calls of the token's other leases
        // still out, which their own reports count again (the safe direction), at most one per
        // worker.
        for (quota, limit) in [(&rpm, RPM), (&tpm, TPM), (&rpd, RPD)] {
            assert_eq!(quota["reserved"], 0, "{quota}");
            assert!(
                quota["used"].as_u64().unwrap() <= limit + WORKERS as u64,
                "{quota} is past its limit {limit}"
            );
        }
        assert!(
            rpd["used"].as_u64().unwrap() >= served,
            "k{i}: the target served {served}, the vault counted {rpd}"
        );
        assert!(
            tpm["used"].as_u64().unwrap() >= target_tokens,
            "k{i}: the target counted {target_tokens} tokens, the vault {tpm}"
        );
        // Every token was used up to a minute limit (the run went on until it had to).
        assert!(
            rpm["used"].as_u64().unwrap() >= RPM || tpm["used"].as_u64().unwrap() + ESTIMATE > TPM,
            "k{i} was not spent: {rpm} {tpm}"
        );
    }
    let st = admin.get("/v1/pools/mixed/status").await;
    assert_eq!(st.body["leases_active"], 0, "{}", st.body);
    assert!(tally.calls.load(Ordering::Relaxed) >= 150);
}
