//! The concurrency invariant test: two vault-api replicas (separate processes) on one Redis,
//! a janitor, 200 worker tasks leasing / releasing / rotating / renewing / dying at random
//! against three pools (max_leases_per_token 1, 2, 3) of tokens with small quotas, some
//! expiring mid-run, while a chaos task revokes tokens and freezes a pool.
//!
//! The phases are driven by what happened, not by the clock: chaos acts after a number of
//! grants, the freeze lasts until it has refused a lease, and the run ends once it has lasted
//! at least `RUN` and made `MIN_GRANTS` grants. A slow machine makes it longer, never red.
//!
//! Every lease is logged with client-side times: granted = when the answer arrived (after the
//! server granted it), ended = when the release was sent (before the server ended it). The
//! logged interval therefore lies inside the server's, so any overlap beyond the limit in the
//! log is a real violation (no false positives from timing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use testkit::RedisServer;

use crate::harness::{ms, now_ms, Api, Deployment};

const POOLS: [(&str, u64); 3] = [("race1", 1), ("race2", 2), ("race3", 3)];
const TOKENS_PER_POOL: usize = 12;
const QUOTA: u64 = 60;
const RESERVE: u64 = 2;
const LEASE_TTL_S: i64 = 2;
const MIN_TTL_MS: i64 = (LEASE_TTL_S + 30) * 1000;
const WORKERS: usize = 200;
const RUN: Duration = Duration::from_secs(10);
const MIN_GRANTS: usize = 1000;
/// How long any phase may take on a slow machine before the test gives up.
const PHASE_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
struct Grant {
    pool: String,
    token: String,
    lease: String,
    units: u64,
    replica: usize,
    /// Client: request sent / answer received.
    sent: i64,
    recv: i64,
    /// Server: from the lease answer.
    token_expires_at: Option<i64>,
    lease_expires_at: i64,
    ttl_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Released (or rotated away) with this many units used; `at` = request sent.
    Released { used: u64, at: i64 },
    /// The worker "died": the lease ends at its deadline, all units used.
    Died,
    /// The vault had already ended it (revoked, frozen, reaped): 410 at `at`.
    Gone { at: i64 },
}

#[derive(Default)]
struct Log {
    grants: Vec<Grant>,
    ends: HashMap<String, End>,
    exhausted: u64,
    frozen_refusals: u64,
    /// (pool, token) -> when the revoke answer arrived.
    revoked: HashMap<(String, String), i64>,
    /// pool -> (freeze answer arrived, unfreeze sent).
    frozen: HashMap<String, (i64, i64)>,
}

fn grant_of(v: &Value, pool: &str, replica: usize, sent: i64, recv: i64, units: u64) -> Grant {
    let lease_expires_at = ms(v, "lease_expires_at");
    Grant {
        pool: pool.to_string(),
        token: v["token_id"].as_str().unwrap().to_string(),
        lease: v["lease_id"].as_str().unwrap().to_string(),
        units,
        replica,
        sent,
        recv,
        token_expires_at: v["token_expires_at"]
            .as_str()
            .map(|_| ms(v, "token_expires_at")),
        lease_expires_at,
        ttl_ms: LEASE_TTL_S * 1000,
    }
}

/// Poll the log until `pred` holds; false if `deadline` passed first.
async fn until(log: &Mutex<Log>, deadline: Duration, pred: impl Fn(&Log) -> bool) -> bool {
    let end = Instant::now() + deadline;
    while !pred(&log.lock().unwrap()) {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn worker(apis: Arc<Vec<Api>>, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let replica = rng.gen_range(0..apis.len());
        let api = &apis[replica];
        let (pool, _) = POOLS[rng.gen_range(0..POOLS.len())];
        let units = rng.gen_range(1..=3u64);
        let sent = now_ms();
        let a = api
            .post(
                &format!("/v1/pools/{pool}/leases"),
                json!({"units": units, "worker": format!("w{seed}")}),
            )
            .await;
        let recv = now_ms();
        match a.status.as_u16() {
            201 => {}
            503 => {
                assert_eq!(a.code(), "pool_exhausted", "{a:?}");
                assert!(a.retry_after.is_some());
                log.lock().unwrap().exhausted += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..30))).await;
                continue;
            }
            423 => {
                log.lock().unwrap().frozen_refusals += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            _ => panic!("unexpected acquire answer {a:?}"),
        }
        let mut g = grant_of(&a.body, pool, replica, sent, recv, units);
        log.lock().unwrap().grants.push(g.clone());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;

        // Use it once more through another path, sometimes.
        let roll = rng.gen_range(0..100);
        if roll < 3 {
            log.lock().unwrap().ends.insert(g.lease.clone(), End::Died);
            continue;
        }
        if (3..8).contains(&roll) {
            let sent = now_ms();
            let r = api
                .post(
                    &format!("/v1/pools/{pool}/leases/{}/renew", g.lease),
                    json!({"ttl_s": 3}),
                )
                .await;
            match r.status.as_u16() {
                200 => g.ttl_ms = 3000,
                410 => {
                    log.lock()
                        .unwrap()
                        .ends
                        .insert(g.lease.clone(), End::Gone { at: sent });
                    continue;
                }
                _ => panic!("unexpected renew answer {r:?}"),
            }
        }
        if (8..14).contains(&roll) {
            // The 401-mid-job path without burning the token: rotate with outcome ok.
            let sent = now_ms();
            let r = api
                .post(
                    &format!("/v1/pools/{pool}/leases/{}/rotate", g.lease),
                    json!({"outcome": "ok"}),
                )
                .await;
            let recv = now_ms();
            let mut l = log.lock().unwrap();
            match r.status.as_u16() {
                201 => {
                    l.ends.insert(
                        g.lease.clone(),
                        End::Released {
                            used: g.units,
                            at: sent,
                        },
                    );
                    let mut ng = grant_of(&r.body, pool, replica, sent, recv, g.units);
                    // The new lease inherits the old one's (possibly renewed) TTL.
                    ng.ttl_ms = g.ttl_ms;
                    l.ends.insert(
                        ng.lease.clone(),
                        End::Released {
                            used: 0,
                            at: i64::MAX,
                        },
                    );
                    l.grants.push(ng.clone());
                    g = ng;
                }
                503 => {
                    l.ends.insert(
                        g.lease.clone(),
                        End::Released {
                            used: g.units,
                            at: sent,
                        },
                    );
                    continue;
                }
                410 => {
                    l.ends.insert(g.lease.clone(), End::Gone { at: sent });
                    continue;
                }
                _ => panic!("unexpected rotate answer {r:?}"),
            }
        }
        let used = rng.gen_range(0..=g.units);
        let body = if roll >= 97 {
            json!({"used": used, "outcome": "rate_limited", "retry_after_s": 1})
        } else {
            json!({"used": used, "outcome": "ok"})
        };
        let sent = now_ms();
        let r = api
            .post(
                &format!("/v1/pools/{pool}/leases/{}/release", g.lease),
                body,
            )
            .await;
        let end = match r.status.as_u16() {
            200 => End::Released { used, at: sent },
            410 => End::Gone { at: sent },
            _ => panic!("unexpected release answer {r:?}"),
        };
        log.lock().unwrap().ends.insert(g.lease.clone(), end);
    }
}

async fn chaos(apis: Arc<Vec<Api>>, log: Arc<Mutex<Log>>, token_ids: HashMap<String, Vec<String>>) {
    let grants = |n: usize| move |l: &Log| l.grants.len() >= n;
    assert!(
        until(&log, PHASE_DEADLINE, grants(100)).await,
        "workers made no progress"
    );
    // Revoke two tokens per pool, from alternating replicas, with traffic between revokes.
    for (i, (pool, _)) in POOLS.iter().enumerate() {
        for k in 0..2 {
            let id = &token_ids[*pool][k * 5 + 1];
            let a = apis[(i + k) % 2]
                .post(
                    &format!("/v1/pools/{pool}/tokens/{id}/revoke"),
                    json!({"reason": "leak"}),
                )
                .await;
            assert_eq!(a.status, 200, "{a:?}");
            let n = {
                let mut l = log.lock().unwrap();
                l.revoked.insert((pool.to_string(), id.clone()), now_ms());
                l.grants.len()
            };
            assert!(until(&log, PHASE_DEADLINE, grants(n + 40)).await);
        }
    }
    // Freeze race2 while a lease of chaos' own is live: the freeze ends it (410 afterwards) and
    // refuses new leases (423) until the unfreeze.
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    let held = loop {
        assert!(
            std::time::Instant::now() < end,
            "race2 never granted chaos a lease"
        );
        let sent = now_ms();
        let a = apis[0]
            .post("/v1/pools/race2/leases", json!({"worker": "chaos"}))
            .await;
        let recv = now_ms();
        if a.status == 201 {
            let g = grant_of(&a.body, "race2", 0, sent, recv, 1);
            log.lock().unwrap().grants.push(g.clone());
            break g;
        }
        a.problem(503, "pool_exhausted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let a = apis[0]
        .post(
            "/v1/pools/race2/freeze",
            json!({"revoke_leases": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let frozen_at = now_ms();
    let sent = now_ms();
    apis[1]
        .post(
            &format!("/v1/pools/race2/leases/{}/release", held.lease),
            json!({"used": 1}),
        )
        .await
        .problem(410, "lease_gone");
    apis[1]
        .post("/v1/pools/race2/leases", json!({"worker": "chaos"}))
        .await
        .problem(423, "pool_frozen");
    {
        let mut l = log.lock().unwrap();
        l.ends.insert(held.lease.clone(), End::Gone { at: sent });
        l.frozen_refusals += 1;
    }
    // Let the workers run into the freeze too (not required: chaos' refusal above counts).
    let refused = log.lock().unwrap().frozen_refusals;
    until(&log, Duration::from_secs(5), |l| {
        l.frozen_refusals > refused
    })
    .await;
    let unfreeze_sent = now_ms();
    log.lock()
        .unwrap()
        .frozen
        .insert("race2".into(), (frozen_at, unfreeze_sent));
    assert_eq!(
        apis[1]
            .post("/v1/pools/race2/unfreeze", json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invariants_hold_under_concurrency_across_replicas() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let v1 = dep.vault(&[]).await;
    let v2 = dep.vault(&[]).await;
    let _janitor = dep.janitor(100);
    let apis = Arc::new(vec![dep.api(&v1), dep.api(&v2)]);

    let start = now_ms();
    let mut token_ids: HashMap<String, Vec<String>> = HashMap::new();
    let mut expiring: HashMap<(String, String), i64> = HashMap::new();
    let mut limits: HashMap<(String, String), Option<u64>> = HashMap::new();
    for (pool, max) in POOLS {
        let a = apis[0]
            .put(&format!("/v1/pools/{pool}"), json!({"max_leases_per_token": max, "quota_reserve": RESERVE,
                "lease_ttl_s": LEASE_TTL_S, "max_lease_ttl_s": 10, "quarantine_after_strikes": 1000}))
            .await;
        assert_eq!(a.status, 201);
        let mut toks = vec![];
        for i in 0..TOKENS_PER_POOL {
            let id = format!("{pool}-t{i}");
            let mut t = json!({"id": id, "secret": format!("secret-{pool}-{i}")});
            // Half the tokens have a small quota, the rest none.
            let limit = (i % 2 == 0).then_some(QUOTA);
            if let Some(l) = limit {
                t["quota_limit"] = json!(l);
            }
            // Three per pool leave rotation 3-7 s into the run.
            if i % 4 == 3 {
                let exp = start + MIN_TTL_MS + 3000 + (i as i64) * 300;
                t["expires_at"] = json!(exp);
                expiring.insert((pool.to_string(), id.clone()), exp);
            }
            limits.insert((pool.to_string(), id.clone()), limit);
            toks.push(t);
            token_ids.entry(pool.to_string()).or_default().push(id);
        }
        let a = apis[1]
            .post(&format!("/v1/pools/{pool}/tokens"), json!({"tokens": toks}))
            .await;
        assert_eq!(a.status, 201, "{a:?}");
    }

    let log = Arc::new(Mutex::new(Log::default()));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for w in 0..WORKERS {
        tasks.push(tokio::spawn(worker(
            apis.clone(),
            log.clone(),
            stop.clone(),
            w as u64,
        )));
    }
    let chaos = tokio::spawn(chaos(apis.clone(), log.clone(), token_ids.clone()));
    chaos.await.expect("chaos panicked");
    // Run on until the expiring tokens have left rotation (RUN) and enough grants were made.
    let ran = until(&log, PHASE_DEADLINE, |l| {
        started.elapsed() >= RUN && l.grants.len() >= MIN_GRANTS
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker panicked");
    }
    assert!(ran, "fewer than {MIN_GRANTS} grants in {PHASE_DEADLINE:?}");

    // Every dead worker's lease is reclaimed by the janitor.
    let deadline = Instant::now() + crate::harness::PATIENCE;
    for (pool, _) in POOLS {
        loop {
            let st = apis[0].get(&format!("/v1/pools/{pool}/status")).await;
            if st.body["leases_active"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "leases never reclaimed: {}",
                st.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        redis
            .cli(&["KEYS", &format!("{}:*:l:*", dep.prefix)])
            .trim(),
        "",
        "lease records left behind"
    );

    let log = std::mem::take(&mut *log.lock().unwrap());
    let grants = &log.grants;
    let dead = log.ends.values().filter(|e| **e == End::Died).count();
    let gone = log
        .ends
        .values()
        .filter(|e| matches!(e, End::Gone { .. }))
        .count();
    eprintln!(
        "grants {} (replica 0: {}), exhausted {}, frozen refusals {}, died {}, ended by the vault {}",
        grants.len(),
        grants.iter().filter(|g| g.replica == 0).count(),
        log.exhausted,
        log.frozen_refusals,
        dead,
        gone
    );
    // The run exercised what it claims to.
    assert!(
        grants.len() >= MIN_GRANTS,
        "too few grants: {}",
        grants.len()
    );
    assert!(grants.iter().any(|g| g.replica == 0) && grants.iter().any(|g| g.replica == 1));
    assert!(log.exhausted > 0 && dead > 0 && gone > 0 && log.frozen_refusals > 0);

    // End of each logged lease interval, conservative (never later than the server's end).
    // A lease the vault may have ended itself (died, or answered 410) ends no later than a
    // revoke or freeze that completed while it was held.
    let ended_by_vault = |g: &Grant, end: i64| -> i64 {
        let mut end = end;
        if let Some(r) = log.revoked.get(&(g.pool.clone(), g.token.clone())) {
            if *r >= g.recv {
                end = end.min(*r);
            }
        }
        if let Some((f, _)) = log.frozen.get(&g.pool) {
            if *f >= g.recv {
                end = end.min(*f);
            }
        }
        end
    };
    let end_of = |g: &Grant| -> i64 {
        match log.ends.get(&g.lease) {
            Some(End::Released { at, .. }) if *at != i64::MAX => *at,
            Some(End::Died) => ended_by_vault(g, g.lease_expires_at),
            Some(End::Gone { at }) => ended_by_vault(g, (*at).min(g.lease_expires_at)),
            _ => panic!("lease {} has no recorded end", g.lease),
        }
    };

    let mut by_token: HashMap<(String, String), Vec<&Grant>> = HashMap::new();
    for g in grants {
        by_token
            .entry((g.pool.clone(), g.token.clone()))
            .or_default()
            .push(g);
    }
    let max_of: HashMap<&str, u64> = POOLS.iter().copied().collect();
    let mut checked_overlaps = 0;
    for ((pool, token), gs) in &by_token {
        // 1. Concurrency: sweep the intervals.
        let mut events: Vec<(i64, i32)> = vec![];
        for g in gs {
            let e = end_of(g);
            if e > g.recv {
                events.push((g.recv, 1));
                events.push((e, -1));
            }
        }
        events.sort();
        let (mut live, mut peak) = (0i32, 0i32);
        for (_, d) in events {
            live += d;
            peak = peak.max(live);
        }
        checked_overlaps += 1;
        assert!(
            peak as u64 <= max_of[pool.as_str()],
            "{pool}/{token}: {peak} concurrent leases"
        );

        for g in gs {
            // The server's grant time (Redis TIME; same machine clock as the log's).
            let granted = g.lease_expires_at - g.ttl_ms;
            assert!(
                granted >= g.sent - 1 && granted <= g.recv + 1,
                "grant time outside its request: {g:?}"
            );
            // 2. Revoked: no lease granted after the revoke answered.
            if let Some(r) = log.revoked.get(&(pool.clone(), token.clone())) {
                assert!(
                    granted <= *r,
                    "{pool}/{token} leased after revocation: {g:?}"
                );
            }
            // 3. Frozen: no lease granted between the freeze's answer and the unfreeze request.
            if let Some((f, u)) = log.frozen.get(pool) {
                assert!(
                    !(granted > *f && granted < *u),
                    "{pool}/{token} leased while frozen: {g:?} frozen {f}..{u}"
                );
            }
            // 4. TTL: every lease left the token at least min_token_ttl_s of life.
            if let Some(exp) = g.token_expires_at {
                assert!(
                    exp - granted >= MIN_TTL_MS,
                    "{pool}/{token} leased with {} ms left",
                    exp - granted
                );
            }
        }

        // 5. Quota: the vault's count equals the log's, and never passes limit - reserve.
        let logged_used: u64 = gs
            .iter()
            .map(|g| match log.ends.get(&g.lease) {
                Some(End::Released { used, at }) if *at != i64::MAX => *used,
                Some(End::Released { .. }) => unreachable!("every rotated-in lease is ended later"),
                _ => g.units,
            })
            .sum();
        let meta = apis[0]
            .get(&format!("/v1/pools/{pool}/tokens/{token}"))
            .await;
        let used = meta.body["quota"]["used"].as_u64().unwrap();
        assert_eq!(meta.body["quota"]["reserved"], 0, "{pool}/{token}");
        assert_eq!(meta.body["leases"], 0, "{pool}/{token}");
        assert_eq!(
            used, logged_used,
            "{pool}/{token}: vault counted {used}, log says {logged_used}"
        );
        if let Some(limit) = limits[&(pool.clone(), token.clone())] {
            assert!(
                used <= limit - RESERVE,
                "{pool}/{token} used {used} of {limit}"
            );
        }
    }
    assert!(checked_overlaps >= POOLS.len() * 8);

    // Tokens whose life ran short left rotation; revoked ones stayed revoked.
    for ((pool, token), exp) in &expiring {
        if exp - MIN_TTL_MS < now_ms() {
            let st = apis[1]
                .get(&format!("/v1/pools/{pool}/tokens/{token}"))
                .await
                .str("state");
            assert!(st == "expired" || st == "revoked", "{pool}/{token} is {st}");
        }
    }
    for (pool, token) in log.revoked.keys() {
        assert_eq!(
            apis[1]
                .get(&format!("/v1/pools/{pool}/tokens/{token}"))
                .await
                .str("state"),
            "revoked"
        );
    }
}
