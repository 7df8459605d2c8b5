//! What several quotas cost, through the REST API, as users lease and report (figures are
//! reported, never asserted):
//!   (f) Redis time per `acquire` and per `release` (`INFO commandstats`) on a pool with one quota
//!       and on a pool with three (60 requests a sliding minute, 90,000 `llm_tokens` a minute,
//!       1,000 requests a UTC day), measured in alternating rounds in one run; the three-quota
//!       leases report what they cost and the target's headers, as the SDKs send them;
//!   (m) memory per token of 10,000 tokens (40-byte secrets, a label, an expiry, audit on) with one
//!       quota and with three, after each token was leased and released once (so every counter
//!       exists), and what one such token's hash takes (`MEMORY USAGE`).
//!
//!   cargo build --release -p vault-api && cargo bench --bench quotas
//!
//! `TV_BENCH_BIN=<dir>` takes `vault-api` from there (e.g. `target/debug`: Redis's time does not
//! depend on how the vault was compiled).

use std::time::Instant;

use serde_json::{json, Value};
use testkit::RedisServer;

mod common;
use common::{
    bin_dir, deposit, lease_cycle_time, memory_usage, print_cycles, random_text, used_memory,
    BenchVault, CycleSide,
};

const TOKENS: usize = 100;
/// Leases held at once in a measuring round (under the pools' 100 tokens).
const HELD: usize = 90;
const ROUNDS: usize = 20;
const MEMORY_TOKENS: usize = 10_000;

fn one_quota() -> Value {
    json!({"quota_limit": 1_000_000, "quota_window_s": 3600})
}

fn three_quotas() -> Value {
    json!({
        "quotas": [
            {"name": "rpm", "limit": 1_000_000, "window_s": 60, "kind": "sliding", "sync": "requests"},
            {"name": "tpm", "limit": 1_000_000_000, "window_s": 60, "cost": "llm_tokens", "sync": "tokens"},
            {"name": "rpd", "limit": 1_000_000, "window_s": 86_400, "kind": "clock_aligned"},
        ],
        "cost_estimates": {"llm_tokens": 1500},
    })
}

/// The report a worker sends: with three quotas, what the call cost and the target's headers.
fn report(three: bool, i: usize) -> Value {
    let reset = vault_core::time::now_ms() + 30_000;
    if three {
        json!({"outcome": "ok", "costs": {"llm_tokens": 900 + (i % 7) * 100},
               "rate_limit": {"requests": {"remaining": 999_000, "reset_at": reset},
                              "tokens": {"remaining": 999_000_000, "reset_at": reset}}})
    } else {
        json!({"outcome": "ok", "remaining": 999_000, "reset_at": reset})
    }
}

/// Memory per token of `MEMORY_TOKENS` tokens in pool `name`, each leased and released once,
/// and one such token's hash.
async fn memory(v: &BenchVault, redis: &RedisServer, name: &str, cfg: Value) -> (f64, f64) {
    v.put(&format!("/v1/pools/{name}"), cfg).await;
    let before = used_memory(redis);
    deposit(v, name, MEMORY_TOKENS, 1000, || random_text(40)).await;
    for i in 0..MEMORY_TOKENS {
        let l = v.post(&format!("/v1/pools/{name}/leases"), json!({})).await;
        let lid = l["lease_id"].as_str().unwrap().to_string();
        v.post(
            &format!("/v1/pools/{name}/leases/{lid}/release"),
            report(name == "mem3", i),
        )
        .await;
    }
    let per_token = (used_memory(redis) - before) / MEMORY_TOKENS as f64;
    let hash = memory_usage(redis, &format!("tv:{{{name}}}:t:#1"));
    (per_token, hash)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let started = Instant::now();
    let redis = RedisServer::start();
    let bin = std::env::var("TV_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| bin_dir());
    let v = BenchVault::start(&bin, &redis.url()).await;
    v.put("/v1/pools/one", one_quota()).await;
    v.put("/v1/pools/three", three_quotas()).await;
    deposit(&v, "one", TOKENS, 1000, || random_text(40)).await;
    deposit(&v, "three", TOKENS, 1000, || random_text(40)).await;
    let (r1, r3) = (|i| report(false, i), |i| report(true, i));
    let t = lease_cycle_time(
        &v,
        &redis,
        ROUNDS,
        HELD,
        &[
            CycleSide {
                pool: "three",
                lease: json!({}),
                report: &r3,
            },
            CycleSide {
                pool: "one",
                lease: json!({}),
                report: &r1,
            },
        ],
    )
    .await;
    print_cycles("f", ("three quotas", t[0]), ("one quota", t[1]));
    let (m1, h1) = memory(&v, &redis, "mem1", one_quota()).await;
    let (m3, h3) = memory(&v, &redis, "mem3", three_quotas()).await;
    println!(
        "(m) memory per token, {MEMORY_TOKENS} tokens used once: one quota {m1:.0} B (its hash {h1:.0} B), \
         three quotas {m3:.0} B (its hash {h3:.0} B)"
    );
    eprintln!("({:.0} s)", started.elapsed().as_secs_f64());
}
