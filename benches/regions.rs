//! Does a revocation storm in one region touch another region's leasing path? Two regions
//! (region 1 holds the global primary; region 2 reaches it through a link delayed 50 ms each
//! way, as in tests/e2e/regions.rs), each with its own Redis, vault-api and janitor. Workers
//! lease and release in region 2 through REST, in alternating rounds: quiet, then while region 1
//! revokes credentials as fast as one client can (each revocation applied in region 2 by its
//! follower: the same credentials are deposited in both regions). Reported: region 2's lease
//! cycle latency (p50/p99) in each kind of round, their ratio, and the storm's rate. Figures are
//! reported, never asserted.
//!
//! Tokens have 40-byte secrets, a label and an expiry; audit is on.
//!
//!   cargo build --release --workspace --bins && cargo bench --bench regions
//!
//! `TV_BENCH_BIN=<dir>` takes the binaries from there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Child, DelayProxy, RedisServer};

mod common;
use common::{bin_dir, deposit, random_text, BenchVault};

const LEASE_TOKENS: usize = 200;
const STORM_CREDENTIALS: usize = 4_000;
/// The paced storm's rate (revocations a second); the other storm goes as fast as one client can.
const PACED_PER_S: u64 = 100;
const WORKERS: usize = 4;
const ROUNDS: usize = 6;
const CYCLES_PER_ROUND: usize = 400;

fn janitor(bin: &std::path::Path, redis_url: &str, global: &[(&str, String)]) -> Child {
    let mut env = vec![
        ("TV_REDIS_URL", redis_url.to_string()),
        ("TV_JANITOR_INTERVAL_MS", "200".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    env.extend(global.iter().cloned());
    Child::spawn(&bin.join("janitor"), &[], &env)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `CYCLES_PER_ROUND` lease+release cycles by `WORKERS` workers; each cycle's wall time (ms).
async fn round(v: &Arc<BenchVault>) -> Vec<f64> {
    let left = Arc::new(AtomicUsize::new(CYCLES_PER_ROUND));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (v, left) = (v.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let started = Instant::now();
                let l = v.post("/v1/pools/p/leases", json!({})).await;
                let lid = l["lease_id"].as_str().unwrap().to_string();
                v.post(
                    &format!("/v1/pools/p/leases/{lid}/release"),
                    json!({"outcome": "ok"}),
                )
                .await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin = std::env::var("TV_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| bin_dir());
    let global = RedisServer::start();
    let link = DelayProxy::start(
        &format!("127.0.0.1:{}", global.port),
        Duration::from_millis(50),
    );
    let replica = RedisServer::start_with(&[&format!("replicaof 127.0.0.1 {}", link.port)]);
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let env1 = vec![
        ("TV_REGION", "r1".to_string()),
        ("TV_GLOBAL_REDIS_URL", global.url()),
    ];
    let env2 = vec![
        ("TV_REGION", "r2".to_string()),
        (
            "TV_GLOBAL_REDIS_URL",
            format!("redis://127.0.0.1:{}", link.port),
        ),
        ("TV_GLOBAL_REDIS_READ_URL", replica.url()),
    ];
    let v1 = BenchVault::start_with(&bin, &r1.url(), &env1).await;
    let v2 = Arc::new(BenchVault::start_with(&bin, &r2.url(), &env2).await);
    let _j1 = janitor(&bin, &r1.url(), &env1);
    let _j2 = janitor(&bin, &r2.url(), &env2);

    let storm_secret = |i: usize| format!("storm-{i:034}");
    for v in [&v1, &*v2] {
        v.put(
            "/v1/pools/p",
            json!({"quota_limit": 1_000_000_000, "max_leases_per_token": 8}),
        )
        .await;
        v.put("/v1/pools/q", json!({})).await;
        deposit(v, "p", LEASE_TOKENS, 200, || random_text(40)).await;
        let expires = vault_core::time::now_ms() + 30 * 86_400_000;
        for start in (0..STORM_CREDENTIALS).step_by(500) {
            let tokens: Vec<_> = (start..start + 500)
                .map(|i| {
                    json!({"secret": storm_secret(i), "labels": {"team": "crawl"},
                    "expires_at": vault_core::time::rfc3339(expires)})
                })
                .collect();
            v.post("/v1/pools/q/tokens", json!({"tokens": tokens}))
                .await;
        }
    }
    // Warm up region 2's path.
    round(&v2).await;

    let storming = Arc::new(AtomicBool::new(false));
    let paced = Arc::new(AtomicBool::new(false));
    // The control: as fast, but each revoke is local to region 1 (a token of a pool only region
    // 1 has), so region 2 has nothing to apply; what it costs region 2 is the shared machine.
    let local = Arc::new(AtomicBool::new(false));
    v1.put("/v1/pools/l", json!({})).await;
    let expires = vault_core::time::now_ms() + 30 * 86_400_000;
    for start in (0..STORM_CREDENTIALS).step_by(500) {
        let tokens: Vec<_> = (start..start + 500)
            .map(|i| json!({"id": format!("l{i}"), "secret": random_text(40), "labels": {"team": "crawl"},
                "expires_at": vault_core::time::rfc3339(expires)}))
            .collect();
        v1.post("/v1/pools/l/tokens", json!({"tokens": tokens}))
            .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (storming, stop, revoked) = (storming.clone(), stop.clone(), revoked.clone());
        let (paced, local) = (paced.clone(), local.clone());
        tokio::spawn(async move {
            let (mut i, mut l) = (0, 0);
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if !storming.load(Ordering::SeqCst) || i >= STORM_CREDENTIALS {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                if local.load(Ordering::SeqCst) {
                    if l < STORM_CREDENTIALS {
                        v1.post(
                            &format!("/v1/pools/l/tokens/l{l}/revoke"),
                            json!({"reason": "storm"}),
                        )
                        .await;
                        revoked.fetch_add(1, Ordering::SeqCst);
                        l += 1;
                    }
                    continue;
                }
                if paced.load(Ordering::SeqCst) {
                    // After a pause the pace starts over (no burst to catch up).
                    next =
                        (next + Duration::from_micros(1_000_000 / PACED_PER_S)).max(Instant::now());
                    tokio::time::sleep_until(next.into()).await;
                }
                let fp = vault_core::crypto::Secret::new(storm_secret(i)).fingerprint();
                v1.post(
                    "/v1/credentials/revoke",
                    json!({"fingerprint": fp, "reason": "storm"}),
                )
                .await;
                revoked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };

    // Four kinds of rounds, alternated: quiet, a paced storm, a storm at full speed, and the
    // control (as fast, local to region 1).
    let mut times: [Vec<f64>; 4] = Default::default();
    let mut storm_secs = [0.0; 4];
    let mut storm_count = [0; 4];
    for _ in 0..ROUNDS {
        for (kind, t) in times.iter_mut().enumerate() {
            let before = revoked.load(Ordering::SeqCst);
            paced.store(kind == 1, Ordering::SeqCst);
            local.store(kind == 3, Ordering::SeqCst);
            storming.store(kind > 0, Ordering::SeqCst);
            let started = Instant::now();
            t.extend(round(&v2).await);
            storming.store(false, Ordering::SeqCst);
            storm_secs[kind] += started.elapsed().as_secs_f64();
            storm_count[kind] += revoked.load(Ordering::SeqCst) - before;
        }
    }
    stop.store(true, Ordering::SeqCst);
    storm.await.unwrap();
    // Region 2 applied the storm: its copies of the credentials are revoked.
    let total: usize = storm_count[..3].iter().sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    let applied = loop {
        let st = v2
            .send(reqwest::Method::GET, "/v1/pools/q/status", json!(null))
            .await;
        let n = st["tokens"]["revoked"].as_u64().unwrap_or(0) as usize;
        if n + 1 >= total || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for t in times.iter_mut() {
        t.sort_by(f64::total_cmp);
    }
    let (q50, q99) = (pct(&times[0], 0.5), pct(&times[0], 0.99));
    for (kind, name) in [
        "quiet",
        "paced storm",
        "full-speed storm",
        "local storm (control)",
    ]
    .iter()
    .enumerate()
    {
        let (p50, p99) = (pct(&times[kind], 0.5), pct(&times[kind], 0.99));
        let rate = if kind == 0 {
            String::new()
        } else {
            format!(
                "; {} revocations in region 1 at {:.0}/s",
                storm_count[kind],
                storm_count[kind] as f64 / storm_secs[kind]
            )
        };
        println!(
            "region 2 lease+release, {name}: p50 {p50:.2} ms, p99 {p99:.2} ms ({} cycles; {:.2}x / {:.2}x quiet{rate})",
            times[kind].len(),
            p50 / q50,
            p99 / q99
        );
    }
    println!("{applied} of {total} revocations applied in region 2");
}
