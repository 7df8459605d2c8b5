//! A slow Redis is not a dead one. While Redis stalls for about a second at a time (a paused
//! server, a long script), answers wait or say `redis_busy`, never `redis_unavailable`, and no
//! lease is lost or handed out twice. A write that timed out may still have been applied: a
//! retry with the same `Idempotency-Key` gets that lease instead of a second one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{eventually, one, wait_json, Answer, Api};

const TOKENS: usize = 8;
const WORKERS: usize = 16;
/// Each kind of stall happens this many times while the workers run.
const STALLS_PER_KIND: usize = 3;

/// A Lua script that keeps Redis busy for `ms` (nothing else is served meanwhile).
fn busy_script(ms: u64) -> String {
    format!(
        "local t0 = redis.call('TIME') local s = t0[1] * 1000000 + t0[2] \
         repeat local t = redis.call('TIME') until (t[1] * 1000000 + t[2]) - s >= {} return 1",
        ms * 1000
    )
}

#[derive(Default)]
struct Seen {
    /// 5xx answers other than `pool_exhausted`, by code.
    codes: Vec<String>,
    /// The longest any call took: the stalls did hold up requests.
    slowest: Duration,
    /// Tokens some worker holds right now.
    held: HashSet<String>,
    doubled: Vec<String>,
    unexpected: Vec<String>,
}

impl Seen {
    fn note(&mut self, what: &str, a: &Answer, took: Duration) {
        self.slowest = self.slowest.max(took);
        if a.status.as_u16() >= 500 && a.code() != "pool_exhausted" {
            self.codes.push(format!("{what}: {}", a.code()));
        }
    }
}

/// Lease with one Idempotency-Key until it is answered; a busy answer is retried with the same
/// key (the first call may have landed). None when the pool is exhausted.
async fn lease(api: &Api, seen: &Mutex<Seen>) -> Option<Answer> {
    let key = uuid::Uuid::new_v4().to_string();
    loop {
        let sent = Instant::now();
        let a = api
            .call_with(
                reqwest::Method::POST,
                "/v1/pools/p/leases",
                Some(json!({"worker": "w"})),
                &[("Idempotency-Key", &key)],
            )
            .await;
        seen.lock().unwrap().note("lease", &a, sent.elapsed());
        match (a.status.as_u16(), a.code()) {
            (200 | 201, _) => return Some(a),
            (503, "redis_busy") => assert_eq!(a.retry_after, Some(1), "{a:?}"),
            (503, "pool_exhausted") => return None,
            _ => {
                seen.lock().unwrap().unexpected.push(format!("{a:?}"));
                return None;
            }
        }
    }
}

/// Release until answered; after a busy answer the release may already have been applied, so
/// `lease_gone` then counts as done.
async fn release(api: &Api, lease_id: &str, seen: &Mutex<Seen>) {
    let mut was_busy = false;
    loop {
        let sent = Instant::now();
        let a = api
            .post(
                &format!("/v1/pools/p/leases/{lease_id}/release"),
                json!({"outcome": "ok", "used": 1}),
            )
            .await;
        seen.lock().unwrap().note("release", &a, sent.elapsed());
        match (a.status.as_u16(), a.code()) {
            (200, _) => return,
            (410, "lease_gone") if was_busy => return,
            (503, "redis_busy") => was_busy = true,
            _ => {
                seen.lock().unwrap().unexpected.push(format!("{a:?}"));
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_redis_makes_answers_wait_or_say_busy_never_unavailable() {
    // A budget well above the stalls: every call must simply wait. (Nothing below the budget
    // may cancel a command: the redis crate's own 500 ms response timeout used to.)
    let budget = [("TV_REDIS_TIMEOUT_MS", "5000")];
    let t = one(&budget).await;
    let b = t.dep.vault(&budget).await;
    let apis = [t.api.clone(), t.dep.api(&b)];
    assert_eq!(
        apis[0]
            .put(
                "/v1/pools/p",
                json!({"max_leases_per_token": 1, "quota_limit": null})
            )
            .await
            .status,
        201
    );
    let toks: Vec<_> = (0..TOKENS)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    assert_eq!(
        apis[1]
            .post("/v1/pools/p/tokens", json!({ "tokens": toks }))
            .await
            .status,
        201
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let grants = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for w in 0..WORKERS {
        let (api, seen, grants, stop) = (
            apis[w % 2].clone(),
            seen.clone(),
            grants.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(l) = lease(&api, &seen).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let token = l.str("token_id");
                {
                    let mut s = seen.lock().unwrap();
                    if !s.held.insert(token.clone()) {
                        s.doubled.push(token.clone());
                    }
                }
                grants.fetch_add(1, Ordering::Relaxed);
                // Given back before the release is sent: a grant of it after that is no double.
                seen.lock().unwrap().held.remove(&token);
                release(&api, &l.str("lease_id"), &seen).await;
            }
        }));
    }

    // Stall Redis, each time once the workers have made progress since the last stall.
    let port = t.redis.port;
    for i in 0..2 * STALLS_PER_KIND {
        let before = grants.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(60), async || grants
                .load(Ordering::Relaxed)
                >= before + 20)
            .await,
            "no progress after stall {i}: {:?}",
            seen.lock().unwrap().codes
        );
        let args: Vec<String> = if i % 2 == 0 {
            ["CLIENT", "PAUSE", "1000", "ALL"].map(String::from).into()
        } else {
            vec!["EVAL".into(), busy_script(900), "0".into()]
        };
        let out = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("redis-cli")
                .arg("-p")
                .arg(port.to_string())
                .args(&args)
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap();
        assert!(out.contains("OK") || out.trim() == "1", "stall {i}: {out}");
    }
    let before = grants.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(60), async || grants
            .load(Ordering::Relaxed)
            >= before + 20)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker panicked");
    }

    let s = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        s.unexpected.is_empty(),
        "unexpected answers: {:?}",
        s.unexpected
    );
    assert!(s.doubled.is_empty(), "tokens leased twice: {:?}", s.doubled);
    assert!(
        s.codes.is_empty(),
        "calls within the budget were refused: {:?}",
        s.codes
    );
    eprintln!(
        "{} grants through {} stalls; slowest call {:?}",
        grants.load(Ordering::Relaxed),
        2 * STALLS_PER_KIND,
        s.slowest,
    );
    assert!(
        s.slowest >= Duration::from_millis(300),
        "the stalls held up no request: {:?}",
        s.slowest
    );
    // Nothing lost: every lease granted was given back, so none is left and every token is
    // back in rotation.
    let st = wait_json(
        &apis[0],
        "/v1/pools/p/status",
        crate::harness::PATIENCE,
        |v| v["leases_active"] == 0,
    )
    .await;
    assert_eq!(st["tokens"]["active"], TOKENS, "{st}");
}

#[tokio::test]
async fn a_lease_that_timed_out_is_returned_by_its_idempotency_key() {
    let t = one(&[("TV_REDIS_TIMEOUT_MS", "300")]).await;
    // Two leases per token: a retry without the key would get a second one.
    t.api
        .put("/v1/pools/p", json!({"max_leases_per_token": 2}))
        .await;
    t.api
        .post("/v1/pools/p/tokens", json!({"id": "a", "secret": "sa"}))
        .await;
    let lease = |key: &'static str| {
        let api = t.api.clone();
        async move {
            api.call_with(
                reqwest::Method::POST,
                "/v1/pools/p/leases",
                Some(json!({})),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };

    // Writes (scripts) wait for 1.5 s; reads and pings go on. The lease script is sent and
    // held, so the call times out after it reached Redis.
    assert!(t
        .redis
        .cli(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .contains("OK"));
    let a = lease("k1").await;
    a.problem(503, "redis_busy");
    assert_eq!(a.retry_after, Some(1));
    assert!(a.str("detail").contains("Idempotency-Key"), "{a:?}");

    // The timed-out call lands once Redis goes on. (Had the vault reused its connection while
    // the script waited, the connection would have been dropped and the call would not land:
    // either way the retry below leaves exactly one lease.) A write of the test's own returns
    // once the pause is over.
    assert!(t.redis.cli(&["SET", "pause-probe", "1"]).contains("OK"));
    wait_json(
        &t.api,
        "/v1/pools/p/status",
        crate::harness::PATIENCE,
        |v| v["leases_active"] == 1,
    )
    .await;
    // Its retry gets that lease, not a second one.
    let again = lease("k1").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.str("token_id"), "a");
    let st = t.api.get("/v1/pools/p/status").await.body;
    assert_eq!(st["leases_active"], 1, "{st}");
    let rel = t
        .api
        .post(
            &format!("/v1/pools/p/leases/{}/release", again.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(rel.status, 200, "{rel:?}");
    let st = t.api.get("/v1/pools/p/status").await.body;
    assert_eq!(st["leases_active"], 0, "{st}");
}
