//! What the storage layout costs Redis, through the REST API, as users deposit and lease
//! (figures are reported, never asserted):
//!   (m) memory per token: 100,000 tokens with 40-byte secrets, a label and an expiry, deposited
//!       1,000 per request with the audit trail on (`INFO memory` delta), with where it goes
//!       (`MEMORY USAGE`); and 10,000 tokens whose secrets are 1 KB JWTs (500 per request);
//!   (f) Redis time per call of `acquire` and of `release` (`INFO commandstats`, each measured
//!       alone), with 100 and with 100,000 tokens in the pool, next to the no-rule floor: a
//!       lease-shaped pair of scripts that enforce nothing, each called right after the vault's
//!       call of its kind, on the same Redis.
//!
//!   cargo build -p vault-api && cargo bench --bench layout
//!
//! `TV_BENCH_BEFORE=<dir>` also measures the `vault-api` binary in that directory (an older
//! build), side by side, each on a Redis of its own. Redis's time does not depend on how the vault
//! was compiled, so debug builds measure it as well as release ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use testkit::RedisServer;

mod common;
use common::{bin_dir, call_stats, deposit, memory_usage, random_text, used_memory, BenchVault};

const BIG: usize = 100_000;
const JWTS: usize = 10_000;
/// Leases held at once in a measuring round (under the small pool's 100 tokens).
const HELD: usize = 90;
const ROUNDS: usize = 20;
/// Leases held at once to measure what a live lease costs.
const LEASES: usize = 10_000;
/// Empty pools created to measure what a pool costs.
const POOLS: usize = 1_000;

/// The no-rule floor, as issue 12's measurements defined it (docs/BENCHMARKS.md, "the floor"): a
/// lease-shaped pair that enforces nothing. Acquire reads 4 config fields, `TIME`, the first
/// ready token and 7 of its fields, writes one `HSET` on it, an 8-field lease hash and the
/// deadline, and answers JSON; release reads the lease hash, deletes it and its deadline, reads
/// and writes the token, and answers JSON. Scripts (`EVALSHA`), not functions, so that `INFO
/// commandstats` counts them apart from the vault's `FCALL`s while both run interleaved.
const LEAN_ACQUIRE: &str = r#"
  local c = redis.call('HMGET', KEYS[1], 'lease_ttl_s', 'max_leases_per_token', 'quota_limit', 'frozen')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local id = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  local f = redis.call('HMGET', KEYS[4] .. id, 'state', 'expires_at', 'used', 'reserved', 'leases', 'key_id', 'id')
  redis.call('HSET', KEYS[4] .. id, 'leases', 1, 'last_leased_at', now)
  redis.call('HSET', KEYS[5] .. ARGV[1], 'token', id, 'worker', 'w', 'units', 1, 'granted_at', now,
    'deadline', now + 60000, 'ttl_ms', 60000, 'idem', '', 'idem_fp', '')
  redis.call('ZADD', KEYS[3], now + 60000, ARGV[1])
  return cjson.encode({ lease_id = ARGV[1], token_id = f[7], deadline = now + 60000 })
"#;
const LEAN_RELEASE: &str = r#"
  local c = redis.call('HMGET', KEYS[1], 'lease_ttl_s', 'max_leases_per_token', 'quota_limit', 'frozen')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local raw = redis.call('HGETALL', KEYS[5] .. ARGV[1])
  local l = {}
  for i = 1, #raw, 2 do l[raw[i]] = raw[i + 1] end
  redis.call('DEL', KEYS[5] .. ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  local f = redis.call('HMGET', KEYS[4] .. l.token, 'state', 'used', 'reserved', 'leases')
  redis.call('HSET', KEYS[4] .. l.token, 'leases', 0, 'used', 1)
  return cjson.encode({ token_id = l.token, state = 'active' })
"#;
const LEAN_KEYS: [&str; 5] = [
    "lean:{p}:cfg",
    "lean:{p}:ready",
    "lean:{p}:leases",
    "lean:{p}:t:",
    "lean:{p}:l:",
];

/// A JWT of about `len` bytes with an `exp` a month ahead.
fn jwt(len: usize) -> String {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let exp = vault_core::time::now_ms() / 1000 + 30 * 86_400;
    let head = b64(&json!({"alg": "RS256", "typ": "JWT"}));
    let claims = b64(&json!({"sub": random_text(12), "exp": exp, "scope": random_text(len / 2)}));
    let sig = random_text(len.saturating_sub(head.len() + claims.len() + 2).max(16));
    format!("{head}.{claims}.{sig}")
}

/// The lean pair's keys (100 tokens of its own, in the same Redis) and its scripts' SHAs.
async fn lean_setup(c: &mut redis::aio::MultiplexedConnection) -> (String, String) {
    let _: () = redis::cmd("HSET")
        .arg(LEAN_KEYS[0])
        .arg(&[
            "lease_ttl_s",
            "60",
            "max_leases_per_token",
            "1",
            "frozen",
            "0",
        ])
        .query_async(c)
        .await
        .unwrap();
    for i in 0..100 {
        let id = format!("#{i}");
        let _: () = redis::cmd("HSET")
            .arg(format!("{}{id}", LEAN_KEYS[3]))
            .arg(&["id", &random_text(32), "state", "active", "key_id", "k1"])
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(LEAN_KEYS[1])
            .arg(0)
            .arg(&id)
            .query_async(c)
            .await
            .unwrap();
    }
    let load = |src: &str| redis::cmd("SCRIPT").arg("LOAD").arg(src).clone();
    (
        load(LEAN_ACQUIRE).query_async(c).await.unwrap(),
        load(LEAN_RELEASE).query_async(c).await.unwrap(),
    )
}

/// Redis µs per call of acquire and of release on `pool` through the REST API, and of the lean
/// pair, each lean call right after the vault's call of its kind: on a machine where the vault
/// shares the cores with Redis, a call right after an HTTP request runs slower than one in a
/// tight loop, and this way both meet Redis alike. Rounds of HELD leases, then their releases.
/// Returns [vault (acquire, release), lean (acquire, release)], µs per call.
async fn function_time(v: &BenchVault, redis: &RedisServer, pool: &str) -> [(f64, f64); 2] {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let (lean_acquire, lean_release) = lean_setup(&mut c).await;
    let lean = |sha: &str, lid: &str| {
        redis::cmd("EVALSHA")
            .arg(sha)
            .arg(LEAN_KEYS.len())
            .arg(&LEAN_KEYS)
            .arg(lid)
            .clone()
    };
    // [acquire phase, release phase] x [fcall, evalsha]: (calls, µs).
    let mut sums = [[(0.0, 0.0); 2]; 2];
    let add = |sum: &mut [(f64, f64); 2], a: [(f64, f64); 2], b: [(f64, f64); 2]| {
        for k in 0..2 {
            sum[k].0 += b[k].0 - a[k].0;
            sum[k].1 += b[k].1 - a[k].1;
        }
    };
    for round in 0..ROUNDS {
        let before = call_stats(redis);
        let mut lids = Vec::with_capacity(HELD);
        for i in 0..HELD {
            let l = v.post(&format!("/v1/pools/{pool}/leases"), json!({})).await;
            lids.push(l["lease_id"].as_str().unwrap().to_string());
            let _: String = lean(&lean_acquire, &format!("l{round}-{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let mid = call_stats(redis);
        for (i, lid) in lids.iter().enumerate() {
            v.post(
                &format!("/v1/pools/{pool}/leases/{lid}/release"),
                json!({"outcome": "ok"}),
            )
            .await;
            let _: String = lean(&lean_release, &format!("l{round}-{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let after = call_stats(redis);
        add(&mut sums[0], before, mid);
        add(&mut sums[1], mid, after);
    }
    let per = |(calls, us): (f64, f64)| us / calls;
    [
        (per(sums[0][0]), per(sums[1][0])),
        (per(sums[0][1]), per(sums[1][1])),
    ]
}

struct Measured {
    per_lease: f64,
    per_pool: f64,
    per_token: f64,
    parts: Vec<(String, f64)>,
    jwt_per_token: f64,
    small: (f64, f64),
    big: (f64, f64),
    /// The lean pair, alongside the small pool's calls and alongside the big pool's.
    floor: (f64, f64),
    floor_big: (f64, f64),
}

async fn measure(bin_dir: &Path) -> Measured {
    let redis = RedisServer::start();
    let v = BenchVault::start(bin_dir, &redis.url()).await;
    v.put("/v1/pools/small", json!({})).await;
    deposit(&v, "small", 100, 1000, || random_text(40)).await;
    v.put("/v1/pools/big", json!({})).await;

    let before = used_memory(&redis);
    deposit(&v, "big", BIG, 1000, || random_text(40)).await;
    let per_token = (used_memory(&redis) - before) / BIG as f64;
    let pk = |k: &str| format!("tv:{{big}}:{k}");
    let mut parts = vec![];
    // One token's own keys: its hash (and its secret's key, where the layout has one).
    let one = redis
        .cli(&["SRANDMEMBER", &pk("v:active")])
        .trim()
        .to_string();
    parts.push((
        "token hash".into(),
        memory_usage(&redis, &pk(&format!("t:{one}"))),
    ));
    let secret = memory_usage(&redis, &pk(&format!("sec:{one}")));
    if secret > 0.0 {
        parts.push(("sealed secret key".into(), secret));
    }
    for index in ["tokens", "ids", "ready", "exp", "v:active", "audit"] {
        let total = memory_usage(&redis, &pk(index));
        if total > 0.0 {
            parts.push((format!("`{index}` per token"), total / BIG as f64));
        }
    }

    v.put("/v1/pools/jwt", json!({})).await;
    let before = used_memory(&redis);
    deposit(&v, "jwt", JWTS, 500, || jwt(1024)).await;
    let jwt_per_token = (used_memory(&redis) - before) / JWTS as f64;

    let [small, floor] = function_time(&v, &redis, "small").await;
    let [big, floor_big] = function_time(&v, &redis, "big").await;

    // A live lease: LEASES held on the big pool at once.
    let before = used_memory(&redis);
    for _ in 0..LEASES {
        v.post("/v1/pools/big/leases", json!({"worker": "worker-1"}))
            .await;
    }
    let per_lease = (used_memory(&redis) - before) / LEASES as f64;
    // An empty pool.
    let before = used_memory(&redis);
    for p in 0..POOLS {
        v.put(&format!("/v1/pools/empty{p}"), json!({})).await;
    }
    let per_pool = (used_memory(&redis) - before) / POOLS as f64;
    Measured {
        per_lease,
        per_pool,
        per_token,
        parts,
        jwt_per_token,
        small,
        big,
        floor,
        floor_big,
    }
}

fn report(label: &str, m: &Measured) {
    println!("== {label}");
    println!(
        "(m) memory per token, 100,000 tokens (40-byte secrets, a label, an expiry, audit on): {:.0} B",
        m.per_token
    );
    for (what, bytes) in &m.parts {
        println!("      {what}: {bytes:.0} B");
    }
    println!(
        "(m) memory per token, 10,000 tokens with 1 KB JWT secrets: {:.0} B",
        m.jwt_per_token
    );
    println!(
        "(m) memory per live lease ({LEASES} held): {:.0} B; per empty pool ({POOLS} created): {:.0} B",
        m.per_lease, m.per_pool
    );
    let cycle = |(a, r): (f64, f64)| a + r;
    for (what, t, floor) in [
        ("100 tokens", m.small, m.floor),
        ("100,000 tokens", m.big, m.floor_big),
    ] {
        println!(
            "(f) {what}: acquire {:.1} µs + release {:.1} µs = {:.1} µs per cycle; \
             the floor (no rule) alongside: {:.1} + {:.1} = {:.1} µs; {:.2}x the floor",
            t.0,
            t.1,
            cycle(t),
            floor.0,
            floor.1,
            cycle(floor),
            cycle(t) / cycle(floor)
        );
    }
    println!(
        "(f) acquire, 100,000 / 100 tokens: {:.2}x",
        m.big.0 / m.small.0
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let started = Instant::now();
    let this = std::env::var("TV_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| bin_dir());
    let before = std::env::var("TV_BENCH_BEFORE").ok().map(PathBuf::from);
    // Alternate the builds so that a slower minute of the machine does not favour one.
    if let Some(dir) = &before {
        report(&format!("before: {}", dir.display()), &measure(dir).await);
    }
    report(
        &format!("this build: {}", this.display()),
        &measure(&this).await,
    );
    if let Some(dir) = &before {
        report(
            &format!("before, again: {}", dir.display()),
            &measure(dir).await,
        );
    }
    eprintln!("({:.0} s)", started.elapsed().as_secs_f64());
}
