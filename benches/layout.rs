//! What the storage layout costs Redis, through the REST API, as users deposit and lease
//! (figures are reported, never asserted):
//!   (m) memory per token: 100,000 tokens with 40-byte secrets, a label and an expiry, deposited
//!       1,000 per request with the audit trail on (`INFO memory` delta), with where it goes
//!       (`MEMORY USAGE`); and 10,000 tokens whose secrets are 1 KB JWTs;
//!   (f) Redis time per call of `acquire` and of `release` (`INFO commandstats`, each measured
//!       alone), with 100 and with 100,000 tokens in the pool, next to the no-rule floor measured
//!       on the same Redis in the same run: a lease-shaped pair of functions that enforce nothing.
//!
//!   cargo build -p vault-api && cargo bench --bench layout
//!
//! `TV_BENCH_BEFORE=<dir>` also measures the `vault-api` binary in that directory (an older
//! build), side by side, each on a Redis of its own. Redis's time does not depend on how the vault
//! was compiled, so debug builds measure it as well as release ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{free_port, Child, RedisServer};
use vault_core::auth::{KeyRing, Scope};
use vault_core::crypto::MasterKey;

const BIG: usize = 100_000;
const JWTS: usize = 10_000;
/// Leases held at once in a measuring round (under the small pool's 100 tokens).
const HELD: usize = 90;
const ROUNDS: usize = 20;

/// The lean pair: what a lease needs with no rule at all — the pool's settings, the clock, the
/// first ready token, its fields, a lease record with its deadline, an answer — and its release.
const LEAN: &str = r#"#!lua name=lean
redis.register_function('lean_acquire', function(keys, args)
  local c = redis.call('HMGET', keys[1], 'lease_ttl_s', 'max_leases_per_token', 'quota_limit', 'frozen')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local id = redis.call('ZRANGE', keys[2], 0, 0)[1]
  local f = redis.call('HMGET', keys[4] .. id, 'state', 'expires_at', 'used', 'reserved', 'leases', 'key_id', 'id')
  redis.call('HSET', keys[4] .. id, 'leases', 1, 'last_leased_at', now)
  redis.call('ZREM', keys[2], id)
  redis.call('HSET', keys[5], args[1], id .. ' 1 ' .. now .. ' ' .. (now + 60000) .. ' 60000   w')
  redis.call('ZADD', keys[3], now + 60000, args[1])
  return cjson.encode({ lease_id = args[1], token_id = f[7], deadline = now + 60000 })
end)
redis.register_function('lean_release', function(keys, args)
  local c = redis.call('HMGET', keys[1], 'lease_ttl_s', 'max_leases_per_token', 'quota_limit', 'frozen')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local l = redis.call('HGET', keys[5], args[1])
  local id = string.match(l, '^(%S+)')
  redis.call('HDEL', keys[5], args[1])
  redis.call('ZREM', keys[3], args[1])
  local f = redis.call('HMGET', keys[4] .. id, 'state', 'used', 'reserved', 'leases')
  redis.call('HSET', keys[4] .. id, 'leases', 0, 'used', 1)
  redis.call('ZADD', keys[2], now, id)
  return cjson.encode({ token_id = id, state = 'active' })
end)
"#;

struct Vault {
    _redis_child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Vault {
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.send(reqwest::Method::POST, path, body).await;
        assert!(status < 300, "{path}: {status} {v}");
        v
    }
    async fn put(&self, path: &str, body: Value) {
        let (status, v) = self.send(reqwest::Method::PUT, path, body).await;
        assert!(status < 300, "{path}: {status} {v}");
    }
}

fn info_field(redis: &RedisServer, section: &str, line_prefix: &str) -> String {
    redis
        .cli(&["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix).map(str::to_string))
        .unwrap_or_default()
}

fn used_memory(redis: &RedisServer) -> f64 {
    info_field(redis, "memory", "used_memory:")
        .trim()
        .parse()
        .unwrap()
}

/// (calls, µs) of FCALL so far.
fn fcall_stats(redis: &RedisServer) -> (f64, f64) {
    let line = info_field(redis, "commandstats", "cmdstat_fcall:");
    let get = |k: &str| -> f64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (get("calls="), get("usec="))
}

fn memory_usage(redis: &RedisServer, key: &str) -> f64 {
    redis
        .cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn random_text(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[r.gen_range(0..CHARS.len())] as char)
        .collect()
}

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

async fn deposit(v: &Vault, pool: &str, n: usize, secret: impl Fn() -> String) {
    let expires = vault_core::time::now_ms() + 30 * 86_400_000;
    for start in (0..n).step_by(1000) {
        let tokens: Vec<Value> = (start..(start + 1000).min(n))
            .map(|_| {
                json!({"secret": secret(), "labels": {"team": "crawl"},
                       "expires_at": vault_core::time::rfc3339(expires)})
            })
            .collect();
        v.post(
            &format!("/v1/pools/{pool}/tokens"),
            json!({ "tokens": tokens }),
        )
        .await;
    }
}

fn start(bin_dir: &Path, keys_dir: &Path, master: &str) -> (RedisServer, Child, String) {
    let redis = RedisServer::start();
    let port = free_port();
    let child = Child::spawn(
        &bin_dir.join("vault-api"),
        &[],
        &[
            ("TV_REDIS_URL", redis.url()),
            ("TV_MASTER_KEY", master.to_string()),
            ("TV_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("TV_SIGNING_KEYS", keys_dir.display().to_string()),
            ("RUST_LOG", "warn".to_string()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(testkit::wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    (redis, child, base)
}

/// Redis µs per call of acquire and of release on `pool`: rounds of HELD leases, then their
/// releases, each phase's FCALL time read apart.
async fn function_time(v: &Vault, redis: &RedisServer, pool: &str) -> (f64, f64) {
    let (mut acq, mut rel) = ((0.0, 0.0), (0.0, 0.0));
    for _ in 0..ROUNDS {
        let before = fcall_stats(redis);
        let mut lids = Vec::with_capacity(HELD);
        for _ in 0..HELD {
            let l = v.post(&format!("/v1/pools/{pool}/leases"), json!({})).await;
            lids.push(l["lease_id"].as_str().unwrap().to_string());
        }
        let mid = fcall_stats(redis);
        for lid in &lids {
            v.post(
                &format!("/v1/pools/{pool}/leases/{lid}/release"),
                json!({"outcome": "ok"}),
            )
            .await;
        }
        let after = fcall_stats(redis);
        acq = (acq.0 + mid.0 - before.0, acq.1 + mid.1 - before.1);
        rel = (rel.0 + after.0 - mid.0, rel.1 + after.1 - mid.1);
    }
    (acq.1 / acq.0, rel.1 / rel.0)
}

/// The lean pair's Redis µs per call, on 100 tokens of its own, in the same Redis.
async fn floor(redis: &RedisServer) -> (f64, f64) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LEAN)
        .query_async(&mut c)
        .await
        .unwrap();
    let keys = [
        "lean:{p}:cfg",
        "lean:{p}:ready",
        "lean:{p}:leases",
        "lean:{p}:t:",
        "lean:{p}:leasedata",
    ];
    let _: () = redis::cmd("HSET")
        .arg(keys[0])
        .arg(&[
            "lease_ttl_s",
            "60",
            "max_leases_per_token",
            "1",
            "frozen",
            "0",
        ])
        .query_async(&mut c)
        .await
        .unwrap();
    for i in 0..100 {
        let id = format!("#{i}");
        let _: () = redis::cmd("HSET")
            .arg(format!("{}{id}", keys[3]))
            .arg(&["id", &random_text(32), "state", "active", "key_id", "k1"])
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(keys[1])
            .arg(0)
            .arg(&id)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let call = |f: &str, lid: &str| {
        redis::cmd("FCALL")
            .arg(f)
            .arg(keys.len())
            .arg(&keys)
            .arg(lid)
            .clone()
    };
    let (mut acq, mut rel) = ((0.0, 0.0), (0.0, 0.0));
    for round in 0..ROUNDS {
        let before = fcall_stats(redis);
        for i in 0..HELD {
            let _: String = call("lean_acquire", &format!("l{round}-{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let mid = fcall_stats(redis);
        for i in 0..HELD {
            let _: String = call("lean_release", &format!("l{round}-{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let after = fcall_stats(redis);
        acq = (acq.0 + mid.0 - before.0, acq.1 + mid.1 - before.1);
        rel = (rel.0 + after.0 - mid.0, rel.1 + after.1 - mid.1);
    }
    (acq.1 / acq.0, rel.1 / rel.0)
}

struct Measured {
    per_token: f64,
    parts: Vec<(String, f64)>,
    jwt_per_token: f64,
    small: (f64, f64),
    big: (f64, f64),
    floor: (f64, f64),
}

async fn measure(bin_dir: &Path) -> Measured {
    let keys_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        keys_dir.path().join("k1.pem"),
        vault_core::auth::generate_key_pem(),
    )
    .unwrap();
    let mut ring = KeyRing::empty("tokenvault", "tokenvault", 86_400);
    ring.load(keys_dir.path()).unwrap();
    let token = ring
        .mint(
            "bench",
            &[Scope::Admin, Scope::Lease, Scope::Deposit],
            None,
            3600,
            vault_core::time::now_ms() / 1000,
        )
        .unwrap()
        .0;
    let master = MasterKey::generate().to_base64();
    let (redis, child, base) = start(bin_dir, keys_dir.path(), &master);
    let v = Vault {
        _redis_child: child,
        base,
        token,
        http: reqwest::Client::new(),
    };
    v.put("/v1/pools/small", json!({})).await;
    deposit(&v, "small", 100, || random_text(40)).await;
    v.put("/v1/pools/big", json!({})).await;

    let before = used_memory(&redis);
    deposit(&v, "big", BIG, || random_text(40)).await;
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
    deposit(&v, "jwt", JWTS, || jwt(1024)).await;
    let jwt_per_token = (used_memory(&redis) - before) / JWTS as f64;

    let small = function_time(&v, &redis, "small").await;
    let big = function_time(&v, &redis, "big").await;
    let floor = floor(&redis).await;
    Measured {
        per_token,
        parts,
        jwt_per_token,
        small,
        big,
        floor,
    }
}

fn default_bin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let release = root.join("release/vault-api");
    if release.exists() {
        root.join("release")
    } else {
        root.join("debug")
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
    let cycle = |(a, r): (f64, f64)| a + r;
    for (what, t) in [("100 tokens", m.small), ("100,000 tokens", m.big)] {
        println!(
            "(f) {what}: acquire {:.1} µs + release {:.1} µs = {:.1} µs per cycle, {:.2}x the floor",
            t.0,
            t.1,
            cycle(t),
            cycle(t) / cycle(m.floor)
        );
    }
    println!(
        "(f) floor (no rule): acquire {:.1} µs + release {:.1} µs = {:.1} µs per cycle",
        m.floor.0,
        m.floor.1,
        cycle(m.floor)
    );
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
        .unwrap_or_else(|_| default_bin_dir());
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
