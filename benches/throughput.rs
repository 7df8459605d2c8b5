//! tokenvault benchmarks (a bench binary; figures are reported, never asserted).
//!
//! Build the release binaries first, then run:
//!   cargo build --release --workspace --bins && cargo bench --bench throughput
//!
//! Measures, in one run on one machine:
//!   (a) the raw ceiling: acquire+release scripts called directly (EVALSHA) from C tasks;
//!   (b) end-to-end HTTP lease+release cycles/s and p50/p99 against one and two vault-api
//!       replicas at the same concurrency, and lease latency at half the peak rate;
//!   (c) acquire+release cost with 100 vs 100,000 tokens in a pool (client round trip and
//!       Redis's own time per script call from INFO commandstats);
//!   (d) Redis memory per token at 100,000 tokens;
//!   (e) cycles/s through haproxy (deploy/haproxy.cfg) in front of 1, 2 and 3 replicas.
//! TV_BENCH_ONLY=c, c100, deposit, freeze or trace runs one measurement alone (see main); trace
//! compares HTTP cycles/s of replicas with tracing off, on (spans made, not exported) and
//! exporting to a local OTLP/HTTP sink, side by side.
//! The load generator shares the machine with Redis and the replicas.

// The operations' futures (a deposit checks the global plane, writes, announces) nest deeply.
#![recursion_limit = "256"]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{bin_path, free_port, Child, RedisServer};
use vault_core::config::RedisArgs;
use vault_core::crypto::{Cipher, MasterKey};
use vault_core::model::{Outcome, PoolConfigInput, Report, TokenInput};
use vault_core::store::AcquireArgs;
use vault_core::Store;

const CONCURRENCY: usize = 64;

/// The lease-scoped client token every HTTP request carries.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
const RUN: Duration = Duration::from_secs(5);

fn store_for(redis: &RedisServer, prefix: &str) -> Store {
    Store::connect(&RedisArgs {
        redis_timeout_ms: 5000,
        ..RedisArgs::new(redis.url(), prefix)
    })
    .unwrap()
}

async fn make_pool(store: &Store, cipher: &Cipher, pool: &str, tokens: usize) {
    let cfg: PoolConfigInput =
        serde_json::from_value(json!({"max_leases_per_token": 1000})).unwrap();
    store
        .upsert_pool(&bench(), pool, &cfg.validate(cipher, pool).unwrap())
        .await
        .unwrap();
    for chunk in (0..tokens).collect::<Vec<_>>().chunks(1000) {
        let sealed: Vec<_> = chunk
            .iter()
            .map(|i| {
                let t: TokenInput = serde_json::from_value(
                    json!({"id": format!("t{i}"), "secret": format!("secret-{i}")}),
                )
                .unwrap();
                t.seal(cipher, pool, None).unwrap()
            })
            .collect();
        store.deposit_tokens(&bench(), pool, &sealed).await.unwrap();
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Figures {
    cycles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Closed loop: `CONCURRENCY` tasks each doing acquire+release for `RUN`.
async fn raw_ceiling(store: &Store, pool: &str) -> Figures {
    let stop = Instant::now() + RUN;
    let mut tasks = vec![];
    for _ in 0..CONCURRENCY {
        let store = store.clone();
        let pool = pool.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < stop {
                let t = Instant::now();
                let a = AcquireArgs {
                    lease_id: uuid::Uuid::new_v4().to_string(),
                    units: 1,
                    ..Default::default()
                };
                let g = store.lease_token(&pool, &a).await.unwrap();
                store
                    .release_lease(
                        &bench(),
                        &pool,
                        &g.lease_id,
                        &Report {
                            outcome: Outcome::Ok,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    collect(tasks, RUN).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>, run: Duration) -> Figures {
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    Figures {
        cycles_per_s: all.len() as f64 / run.as_secs_f64(),
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
    }
}

async fn http_cycle(client: &reqwest::Client, base: &str) -> (u64, u64) {
    let t = Instant::now();
    let token = TOKEN.get().expect("token minted");
    let r = client
        .post(format!("{base}/v1/pools/bench/leases"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let lease_us = t.elapsed().as_micros() as u64;
    let lid = v["lease_id"].as_str().unwrap();
    let r = client
        .post(format!("{base}/v1/pools/bench/leases/{lid}/release"))
        .bearer_auth(token)
        .json(&json!({"outcome": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (lease_us, t.elapsed().as_micros() as u64)
}

/// Closed loop over HTTP, tasks spread over the replicas.
async fn http_closed(bases: &[String]) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let stop = Instant::now() + RUN;
    let mut tasks = vec![];
    for i in 0..CONCURRENCY {
        let client = client.clone();
        let base = bases[i % bases.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < stop {
                lat.push(http_cycle(&client, &base).await.1);
            }
            lat
        }));
    }
    collect(tasks, RUN).await
}

/// Open loop at `rate` cycles/s; returns lease (acquire) latency p50/p99.
async fn http_open(bases: &[String], rate: f64) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut tasks = vec![];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while begin.elapsed() < RUN {
        tick.tick().await;
        let due = (begin.elapsed().as_secs_f64() * rate) as u64;
        while started.load(Ordering::Relaxed) < due {
            let n = started.fetch_add(1, Ordering::Relaxed);
            let client = client.clone();
            let base = bases[n as usize % bases.len()].clone();
            let lat = lat.clone();
            tasks.push(tokio::spawn(async move {
                let (lease_us, _) = http_cycle(&client, &base).await;
                lat.lock().unwrap().push(lease_us);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = std::mem::take(&mut *lat.lock().unwrap());
    all.sort_unstable();
    Figures {
        cycles_per_s: all.len() as f64 / RUN.as_secs_f64(),
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
    }
}

/// A field of the transition command's line (`FCALL`, or `EVALSHA` on older builds) of
/// `INFO commandstats`.
fn fcall_stat(stats: &str, field: &str) -> Option<f64> {
    testkit::command_stat(stats, "fcall", field)
        .or_else(|| testkit::command_stat(stats, "evalsha", field))
}

/// Redis's own time (`INFO commandstats`) since the last `CONFIG RESETSTAT`: µs per call of the
/// transition command (`FCALL`, or `EVALSHA` on older builds). Prints the other commands: those
/// run inside the functions, and any round trip that is not the work itself.
fn redis_time(redis: &RedisServer) -> f64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let per_call = fcall_stat(&stats, "usec_per_call").unwrap_or(f64::NAN);
    let others: Vec<String> = stats
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_fcall:")
                && !l.starts_with("cmdstat_evalsha:")
        })
        .filter(|l| !l.starts_with("cmdstat_config") && !l.starts_with("cmdstat_info"))
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
        .collect();
    if !others.is_empty() {
        println!("    the commands they ran: {}", others.join("; "));
    }
    per_call
}

/// The cost of the lease path, one client, no concurrency.
struct LeaseCost {
    /// Client-side µs per acquire+release cycle.
    client_us: f64,
    /// Redis µs per acquire call and per release call (`INFO commandstats`; a function's time
    /// includes the commands it runs, so their sum is Redis's time per cycle).
    acquire_us: f64,
    release_us: f64,
}

/// `cycles` acquires (leases held), then their releases, each phase measured apart.
async fn acquire_cost(redis: &RedisServer, store: &Store, pool: &str, cycles: usize) -> LeaseCost {
    let acquire = || AcquireArgs {
        lease_id: uuid::Uuid::new_v4().to_string(),
        units: 1,
        ..Default::default()
    };
    for _ in 0..200 {
        let g = store.lease_token(pool, &acquire()).await.unwrap();
        store
            .release_lease(&bench(), pool, &g.lease_id, &Report::default())
            .await
            .unwrap();
    }
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let t = Instant::now();
    let mut leases = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        leases.push(store.lease_token(pool, &acquire()).await.unwrap().lease_id);
    }
    let acquire_us = redis_time(redis);
    redis.cli(&["CONFIG", "RESETSTAT"]);
    for l in &leases {
        store
            .release_lease(&bench(), pool, l, &Report::default())
            .await
            .unwrap();
    }
    let client_us = t.elapsed().as_micros() as f64 / cycles as f64;
    let release_us = redis_time(redis);
    LeaseCost {
        client_us,
        acquire_us,
        release_us,
    }
}

/// Redis time of the function calls of deposits of a full request (`MAX_DEPOSIT` tokens) into
/// a pool growing to 20,000 tokens: per request (`INFO commandstats`), and the longest single
/// call (`SLOWLOG`).
async fn deposit_cost(redis: &RedisServer, store: &Store, cipher: &Cipher) {
    let per_request = vault_core::model::MAX_DEPOSIT;
    make_pool(store, cipher, "deposits", 0).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut request_us = Vec::new();
    let mut longest_call_us = 0;
    for n in 0..20 {
        let sealed: Vec<_> = (0..per_request)
            .map(|i| {
                let t: TokenInput = serde_json::from_value(
                    json!({"id": format!("d{n}-{i}"), "secret": format!("secret-{n}-{i}")}),
                )
                .unwrap();
                t.seal(cipher, "deposits", None).unwrap()
            })
            .collect();
        // Commands inside functions are logged too: only what takes over 200 µs.
        redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "200"]);
        redis.cli(&["CONFIG", "SET", "slowlog-max-len", "1000"]);
        redis.cli(&["SLOWLOG", "RESET"]);
        redis.cli(&["CONFIG", "RESETSTAT"]);
        store
            .deposit_tokens(&bench(), "deposits", &sealed)
            .await
            .unwrap();
        // Entries: [id, time, duration µs, [command, args...], ...]: the FCALLs' durations.
        let calls: Vec<i64> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(1000)
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|entry| {
                let redis::Value::Array(f) = entry else {
                    return None;
                };
                let command = redis::from_redis_value::<Vec<String>>(f.get(3)?.clone()).ok()?;
                command
                    .first()?
                    .eq_ignore_ascii_case("fcall")
                    .then_some(())?;
                redis::from_redis_value::<i64>(f.get(2)?.clone()).ok()
            })
            .collect();
        let total = fcall_stat(&redis.cli(&["INFO", "commandstats"]), "usec")
            .unwrap_or_else(|| panic!("no FCALL in INFO commandstats"));
        request_us.push(total as i64);
        longest_call_us = longest_call_us.max(calls.into_iter().max().unwrap_or(0));
    }
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]);
    request_us.sort_unstable();
    println!(
        "(deposit) {per_request} tokens per request, 20 requests: Redis {:.1} ms per request (median, all its calls), the longest single call {:.2} ms",
        request_us[request_us.len() / 2] as f64 / 1000.0,
        longest_call_us as f64 / 1000.0
    );
}

/// A freeze with `revoke_leases` on pools of 250 and 2,000 live leases: how long the whole
/// operation takes (ending the leases in batches, announcing each, the audit entry), median of
/// three.
async fn freeze_cost(store: &Store, cipher: &Cipher) {
    let actor = vault_core::ops::Actor::process("bench");
    for leases in [250, 2000] {
        let mut took = Vec::new();
        for run in 0..3 {
            let pool = format!("freeze-{leases}-{run}");
            make_pool(store, cipher, &pool, 10).await;
            for _ in 0..leases {
                let args = AcquireArgs {
                    lease_id: uuid::Uuid::new_v4().to_string(),
                    units: 1,
                    ..Default::default()
                };
                store.lease_token(&pool, &args).await.unwrap();
            }
            let t = Instant::now();
            let ended = store
                .freeze_pool(&actor, &pool, true, "bench")
                .await
                .unwrap();
            took.push(t.elapsed());
            assert_eq!(ended.len(), leases);
        }
        took.sort_unstable();
        println!(
            "(freeze) ending and announcing {leases} leases: {:.1} ms (median of 3)",
            took[1].as_secs_f64() * 1000.0
        );
    }
}

fn start_vault(
    redis: &RedisServer,
    prefix: &str,
    key: &str,
    keys_dir: &std::path::Path,
) -> (Child, String) {
    start_vault_with(redis, prefix, key, keys_dir, &[])
}

fn start_vault_with(
    redis: &RedisServer,
    prefix: &str,
    key: &str,
    keys_dir: &std::path::Path,
    extra: &[(&str, String)],
) -> (Child, String) {
    let port = free_port();
    let mut env = vec![
        ("TV_REDIS_URL", redis.url()),
        ("TV_PREFIX", prefix.to_string()),
        ("TV_MASTER_KEY", key.to_string()),
        ("TV_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("TV_SIGNING_KEYS", keys_dir.display().to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    env.extend(extra.iter().cloned());
    let child = Child::spawn(&bin_path("vault-api"), &[], &env);
    let base = format!("http://127.0.0.1:{port}");
    assert!(testkit::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    (child, base)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let redis = RedisServer::start();
    let key = MasterKey::generate();
    let cipher = Cipher::new(&key);
    let store = store_for(&redis, "bench");
    store.load_scripts().await.unwrap();
    make_pool(&store, &cipher, "bench", 100).await;

    // TV_BENCH_ONLY=c measures only the Redis cost of the lease path (c), in seconds;
    // TV_BENCH_ONLY=c100 only its 100-token half, five times (to compare two builds quickly).
    match std::env::var("TV_BENCH_ONLY").as_deref() {
        Ok("c") => return lease_cost(&redis, &store, &cipher).await,
        Ok("c100") => {
            for _ in 0..5 {
                let c = acquire_cost(&redis, &store, "bench", 5000).await;
                println!(
                    "(c) acquire+release, 100 tokens: {:.1} µs per cycle (client); Redis: acquire {:.2} µs + release {:.2} µs = {:.2} µs per cycle",
                    c.client_us, c.acquire_us, c.release_us, c.acquire_us + c.release_us
                );
            }
            return;
        }
        Ok("deposit") => return deposit_cost(&redis, &store, &cipher).await,
        Ok("freeze") => return freeze_cost(&store, &cipher).await,
        _ => {}
    }
    println!("concurrency {CONCURRENCY}, {RUN:?} per measurement\n");
    let keys_dir = signing_keys();
    if std::env::var("TV_BENCH_ONLY").as_deref() == Ok("trace") {
        return tracing_cost(&redis, &key.to_base64(), keys_dir.path()).await;
    }
    let raw = raw_ceiling(&store, "bench").await;
    println!(
        "(a) raw transitions (acquire+release called from the store, no HTTP): {:.0} cycles/s, p50 {:.2} ms, p99 {:.2} ms",
        raw.cycles_per_s, raw.p50_ms, raw.p99_ms
    );

    let (mut v1, b1) = start_vault(&redis, "bench", &key.to_base64(), keys_dir.path());
    let one = http_closed(std::slice::from_ref(&b1)).await;
    println!(
        "(b) HTTP, 1 replica:  {:.0} cycles/s ({:.0}% of raw), p50 {:.2} ms, p99 {:.2} ms",
        one.cycles_per_s,
        100.0 * one.cycles_per_s / raw.cycles_per_s,
        one.p50_ms,
        one.p99_ms
    );
    let (mut v2, b2) = start_vault(&redis, "bench", &key.to_base64(), keys_dir.path());
    let both = [b1.clone(), b2.clone()];
    let two = http_closed(&both).await;
    println!(
        "(b) HTTP, 2 replicas: {:.0} cycles/s ({:.0}% of raw), p50 {:.2} ms, p99 {:.2} ms",
        two.cycles_per_s,
        100.0 * two.cycles_per_s / raw.cycles_per_s,
        two.p50_ms,
        two.p99_ms
    );
    let peak = one.cycles_per_s.max(two.cycles_per_s);
    // Three samples: on a 2-core machine shared by the load generator, Redis and both
    // replicas, one sample's tail is mostly scheduling noise.
    let mut p99s = vec![];
    for run in 1..=3 {
        let half = http_open(&both, peak / 2.0).await;
        println!(
            "(b) HTTP at half the peak, run {run} ({:.0} cycles/s offered, {:.0} done): lease p50 {:.2} ms, p99 {:.2} ms",
            peak / 2.0,
            half.cycles_per_s,
            half.p50_ms,
            half.p99_ms
        );
        p99s.push(half.p99_ms);
    }
    p99s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("(b) HTTP at half the peak: median p99 {:.2} ms", p99s[1]);
    let (mut v3, b3) = start_vault(&redis, "bench", &key.to_base64(), keys_dir.path());
    behind_haproxy(&[b1, b2, b3]).await;
    v1.kill();
    v2.kill();
    v3.kill();
    lease_cost(&redis, &store, &cipher).await;
}

/// A signing key for the replicas, and the lease-scoped client token every HTTP request of the
/// benchmark carries (workers authenticate like real ones).
fn signing_keys() -> tempfile::TempDir {
    let keys_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        keys_dir.path().join("k1.pem"),
        vault_core::auth::generate_key_pem(),
    )
    .unwrap();
    let mut ring = vault_core::auth::KeyRing::empty("tokenvault", "tokenvault", 86_400);
    ring.load(keys_dir.path()).unwrap();
    let token = ring
        .mint(
            "bench",
            &[vault_core::auth::Scope::Lease],
            None,
            3600,
            vault_core::time::now_ms() / 1000,
        )
        .unwrap()
        .0;
    TOKEN.set(token).unwrap();
    keys_dir
}

/// What tracing costs the lease path: one replica with tracing off (`OTEL_SDK_DISABLED`), one
/// making spans without exporting them (the default), one exporting over OTLP/HTTP to a sink
/// on this machine; measured in turn, three rounds, so drift hits all three alike.
async fn tracing_cost(redis: &RedisServer, key: &str, keys_dir: &std::path::Path) {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", sink.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        axum::serve(sink, app).await
    });
    let variants: [(&str, Vec<(&str, String)>); 3] = [
        ("off", vec![("OTEL_SDK_DISABLED", "true".into())]),
        ("spans, no export", vec![]),
        (
            "spans exported",
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", sink_url)],
        ),
    ];
    let mut replicas = vec![];
    for (name, env) in &variants {
        let (child, base) = start_vault_with(redis, "bench", key, keys_dir, env);
        replicas.push((*name, child, base));
    }
    let mut results: Vec<Vec<f64>> = vec![vec![]; replicas.len()];
    for _round in 0..3 {
        for (i, (_, _, base)) in replicas.iter().enumerate() {
            results[i].push(http_closed(std::slice::from_ref(base)).await.cycles_per_s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let off = median(&mut results[0].clone());
    for (i, (name, _, _)) in replicas.iter().enumerate() {
        let m = median(&mut results[i]);
        println!(
            "(trace) HTTP, 1 replica, tracing {name}: median {m:.0} cycles/s of {:?} ({:.1}% of off)",
            results[i].iter().map(|c| c.round()).collect::<Vec<_>>(),
            100.0 * m / off
        );
    }
    for (_, mut child, _) in replicas {
        child.kill();
    }
}

/// (e): cycles/s through haproxy (the project's `deploy/haproxy.cfg`) in front of 1, 2 and 3
/// replicas. Every process shares this machine's cores, so this shows what the balancer costs
/// and how replicas share one Redis, not how far more machines would scale.
async fn behind_haproxy(replicas: &[String]) {
    let ports: Vec<u16> = replicas
        .iter()
        .map(|b| b.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    for n in 1..=ports.len() {
        let lb = testkit::Haproxy::start(&ports[..n]);
        // Until every backend passed its health check and takes requests.
        let http = reqwest::Client::new();
        let mut ok = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while ok < 10 && Instant::now() < deadline {
            let up = http
                .get(format!("{}/readyz", lb.url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ok = if up { ok + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let f = http_closed(&[lb.url()]).await;
        println!(
            "(e) HTTP through haproxy, {n} replica(s): {:.0} cycles/s, p50 {:.2} ms, p99 {:.2} ms",
            f.cycles_per_s, f.p50_ms, f.p99_ms
        );
    }
}

/// Redis's `used_memory` in bytes.
fn used_memory(redis: &RedisServer) -> f64 {
    redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// (c): the lease path's cost with 100 and with 100,000 tokens in the pool; (d) memory per token.
async fn lease_cost(redis: &RedisServer, store: &Store, cipher: &Cipher) {
    let (redis, store) = (redis, store);
    let before = used_memory(redis);
    make_pool(store, cipher, "big", 100_000).await;
    println!(
        "(d) Redis memory per token at 100,000 tokens: {:.0} bytes (each token with its hash, its \
         index entries and a {}-byte secret sealed; a longer secret adds about 4/3 of its length)",
        (used_memory(redis) - before) / 100_000.0,
        "secret-99999".len()
    );
    let small = acquire_cost(redis, store, "bench", 5000).await;
    let big = acquire_cost(redis, store, "big", 5000).await;
    for (what, c) in [("100 tokens:    ", &small), ("100,000 tokens:", &big)] {
        println!(
            "(c) acquire+release, {what} {:.1} µs per cycle (client); Redis: acquire {:.2} µs + release {:.2} µs = {:.2} µs per cycle",
            c.client_us, c.acquire_us, c.release_us, c.acquire_us + c.release_us
        );
    }
    println!(
        "(c) ratio 100k/100: {:.2}x client, {:.2}x Redis per cycle",
        big.client_us / small.client_us,
        (big.acquire_us + big.release_us) / (small.acquire_us + small.release_us)
    );
}

/// Who the bench acts as in the audit trail.
fn bench() -> vault_core::ops::Actor {
    vault_core::ops::Actor::process("bench")
}
