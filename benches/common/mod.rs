//! What the REST benches (layout, capacity, quotas) share: a vault-api process with an operator's client
//! token, random secrets, deposits through the API, and what Redis reports of its memory and time.

// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{free_port, Child, RedisServer};
use vault_core::auth::{KeyRing, Scope};
use vault_core::crypto::MasterKey;

/// A running vault-api and a client token that may create pools, deposit and lease.
pub(crate) struct BenchVault {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
    _keys: tempfile::TempDir,
}

impl BenchVault {
    /// Start `bin_dir`'s vault-api on `redis_url` and wait until it is ready.
    pub(crate) async fn start(bin_dir: &Path, redis_url: &str) -> Self {
        Self::start_with(bin_dir, redis_url, &[]).await
    }

    /// As [`BenchVault::start`], with more environment.
    pub(crate) async fn start_with(
        bin_dir: &Path,
        redis_url: &str,
        extra: &[(&str, String)],
    ) -> Self {
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(
            keys.path().join("k1.pem"),
            vault_core::auth::generate_key_pem(),
        )
        .unwrap();
        let mut ring = KeyRing::empty("tokenvault", "tokenvault", 86_400);
        ring.load(keys.path()).unwrap();
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
        let port = free_port();
        let mut env = vec![
            ("TV_REDIS_URL", redis_url.to_string()),
            ("TV_MASTER_KEY", MasterKey::generate().to_base64()),
            ("TV_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("TV_SIGNING_KEYS", keys.path().display().to_string()),
            ("TV_MAX_CONNECTIONS_PER_ADDR", "4096".to_string()),
            ("RUST_LOG", "warn".to_string()),
        ];
        env.extend(extra.iter().cloned());
        let child = Child::spawn(&bin_dir.join("vault-api"), &[], &env);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "vault-api not ready:\n{}",
                child.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        BenchVault {
            child,
            base,
            token,
            http,
            _keys: keys,
        }
    }

    /// Send a JSON request; its answer, which must be a success.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::PUT, path, body).await
    }
}

/// The directory of the binaries to measure: `target/release` when vault-api is built there,
/// else `target/debug`.
pub(crate) fn bin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    if root.join("release/vault-api").exists() {
        root.join("release")
    } else {
        root.join("debug")
    }
}

/// `len` random letters and digits (a secret's worth of entropy for a bench).
pub(crate) fn random_text(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[r.gen_range(0..CHARS.len())] as char)
        .collect()
}

pub(crate) fn info_field(redis: &RedisServer, section: &str, line_prefix: &str) -> String {
    redis
        .cli(&["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix).map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn used_memory(redis: &RedisServer) -> f64 {
    info_field(redis, "memory", "used_memory:")
        .trim()
        .parse()
        .unwrap()
}

/// (calls, µs) of FCALL and of EVALSHA so far.
pub(crate) fn call_stats(redis: &RedisServer) -> [(f64, f64); 2] {
    let info = redis.cli(&["INFO", "commandstats"]);
    ["cmdstat_fcall:", "cmdstat_evalsha:"].map(|name| {
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default();
        let get = |k: &str| -> f64 {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (get("calls="), get("usec="))
    })
}

pub(crate) fn memory_usage(redis: &RedisServer, key: &str) -> f64 {
    redis
        .cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .trim()
        .parse()
        .unwrap_or(0.0)
}

/// Deposit `n` tokens, `per` per request (1,000 at most; 1 KB secrets fit 500 in a request's
/// 1 MiB).
pub(crate) async fn deposit(
    v: &BenchVault,
    pool: &str,
    n: usize,
    per: usize,
    secret: impl Fn() -> String,
) {
    let expires = vault_core::time::now_ms() + 30 * 86_400_000;
    for start in (0..n).step_by(per) {
        let tokens: Vec<Value> = (start..(start + per).min(n))
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

/// One side of a lease-cycle comparison: leases of `pool` with body `lease`, each released with
/// `report(i)` (the i-th lease of a round).
pub(crate) struct CycleSide<'a> {
    pub(crate) pool: &'a str,
    pub(crate) lease: Value,
    pub(crate) report: &'a dyn Fn(usize) -> Value,
}

/// FCALL µs per lease and per release of each side, measured in `rounds` alternating rounds of
/// `held` leases held at once (so the sides see the same machine): one (lease, release) a side.
pub(crate) async fn lease_cycle_time(
    v: &BenchVault,
    redis: &RedisServer,
    rounds: usize,
    held: usize,
    sides: &[CycleSide<'_>],
) -> Vec<(f64, f64)> {
    let mut sums = vec![[(0.0, 0.0); 2]; sides.len()];
    let fcall = |r: &RedisServer| call_stats(r)[0];
    for _ in 0..rounds {
        for (s, side) in sides.iter().enumerate() {
            let before = fcall(redis);
            let mut lids = Vec::with_capacity(held);
            for _ in 0..held {
                let l = v
                    .post(
                        &format!("/v1/pools/{}/leases", side.pool),
                        side.lease.clone(),
                    )
                    .await;
                lids.push(l["lease_id"].as_str().unwrap().to_string());
            }
            let mid = fcall(redis);
            for (i, lid) in lids.iter().enumerate() {
                let path = format!("/v1/pools/{}/leases/{lid}/release", side.pool);
                v.post(&path, (side.report)(i)).await;
            }
            let after = fcall(redis);
            for (phase, (a, b)) in [(before, mid), (mid, after)].into_iter().enumerate() {
                sums[s][phase].0 += b.0 - a.0;
                sums[s][phase].1 += b.1 - a.1;
            }
        }
    }
    let per = |(calls, us): (f64, f64)| us / calls;
    sums.iter().map(|s| (per(s[0]), per(s[1]))).collect()
}

/// Print two sides' (lease, release) Redis µs and the first over the second, tagged `tag`.
pub(crate) fn print_cycles(tag: &str, a: (&str, (f64, f64)), b: (&str, (f64, f64))) {
    let cycle = |(l, r): (f64, f64)| l + r;
    for (what, t) in [a, b] {
        println!(
            "({tag}) {what}: lease {:.1} µs + release {:.1} µs = {:.1} µs of Redis per cycle",
            t.0,
            t.1,
            cycle(t)
        );
    }
    println!(
        "({tag}) {} / {}: lease {:.2}x, release {:.2}x, cycle {:.2}x",
        a.0,
        b.0,
        a.1 .0 / b.1 .0,
        a.1 .1 / b.1 .1,
        cycle(a.1) / cycle(b.1)
    );
}
