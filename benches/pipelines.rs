//! What pipelines cost, through the REST API (figures are reported, never asserted):
//!   (l) Redis time per lease and per release inside a pipeline and by free leasing on the same
//!       pool (half its tokens in the pipeline), in alternating rounds of one run;
//!   (a) assigning a pipeline of 1,000 and of 20,000 tokens (out of 20,500) and giving it back:
//!       the wall time of the `PUT` and the `DELETE`, the function calls they made, their
//!       Redis time, and the longest single call (`SLOWLOG` from 1 ms).
//!
//! Tokens have 40-byte secrets, a label and an expiry; audit is on.
//!
//!   cargo build --release -p vault-api && cargo bench --bench pipelines
//!
//! `TV_BENCH_BIN=<dir>` takes `vault-api` from there.

use std::time::Instant;

use serde_json::json;
use testkit::RedisServer;

mod common;
use common::{
    bin_dir, call_stats, deposit, lease_cycle_time, print_cycles, random_text, BenchVault,
    CycleSide,
};

const TOKENS: usize = 200;
/// Leases held at once in a round (under the 100 tokens of each side).
const HELD: usize = 80;
const ROUNDS: usize = 20;
const BIG: usize = 20_500;

/// The longest call SLOWLOG kept (µs), then reset it.
fn slowest(redis: &RedisServer) -> u64 {
    let (max, _) = redis.slowlog_longest();
    redis.cli(&["SLOWLOG", "RESET"]);
    max
}

/// Assign a pipeline of `n` tokens of pool `big`, then end it: for each, (wall ms, calls,
/// Redis ms, longest call µs).
async fn assign(v: &BenchVault, redis: &RedisServer, n: usize) -> [(f64, f64, f64, u64); 2] {
    let mut out = [(0.0, 0.0, 0.0, 0); 2];
    for (i, method) in [reqwest::Method::PUT, reqwest::Method::DELETE]
        .into_iter()
        .enumerate()
    {
        slowest(redis);
        let (c0, t0) = call_stats(redis)[0];
        let started = Instant::now();
        let body = json!({"tokens": n, "duration_s": 3600});
        let a = v.send(method, "/v1/pools/big/pipelines/share", body).await;
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        if i == 0 {
            assert_eq!(a["tokens"], n, "{a}");
        }
        let (c1, t1) = call_stats(redis)[0];
        out[i] = (wall, c1 - c0, (t1 - t0) / 1000.0, slowest(redis));
    }
    out
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let started = Instant::now();
    let redis = RedisServer::start();
    let bin = std::env::var("TV_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| bin_dir());
    let v = BenchVault::start(&bin, &redis.url()).await;
    v.put(
        "/v1/pools/p",
        json!({"quota_limit": 1_000_000, "quota_window_s": 3600}),
    )
    .await;
    deposit(&v, "p", TOKENS, 1000, || random_text(40)).await;
    v.put(
        "/v1/pools/p/pipelines/job",
        json!({"tokens": TOKENS / 2, "duration_s": 3600}),
    )
    .await;
    let ok = |_| json!({"outcome": "ok"});
    let t = lease_cycle_time(
        &v,
        &redis,
        ROUNDS,
        HELD,
        &[
            CycleSide {
                pool: "p",
                lease: json!({"pipeline": "job"}),
                report: &ok,
            },
            CycleSide {
                pool: "p",
                lease: json!({}),
                report: &ok,
            },
        ],
    )
    .await;
    print_cycles("l", ("through a pipeline", t[0]), ("free leasing", t[1]));
    v.put("/v1/pools/big", json!({})).await;
    deposit(&v, "big", BIG, 1000, || random_text(40)).await;
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "1000"]);
    redis.cli(&["CONFIG", "SET", "slowlog-max-len", "100000"]);
    for n in [1_000, 20_000] {
        let [put, end] = assign(&v, &redis, n).await;
        for (what, (wall, calls, ms, max)) in [("assign", put), ("give back", end)] {
            println!(
                "(a) {what} {n} tokens of {BIG}: {wall:.0} ms, {calls:.0} calls, {ms:.0} ms of Redis \
                 ({:.1} µs a token), the longest call {max} µs (0: none over 1 ms)",
                ms * 1000.0 / n as f64
            );
        }
    }
    eprintln!("({:.0} s)", started.elapsed().as_secs_f64());
}
