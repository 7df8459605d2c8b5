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
use common::{bin_dir, call_stats, deposit, random_text, BenchVault};

const TOKENS: usize = 200;
/// Leases held at once in a round (under the 100 tokens of each side).
const HELD: usize = 80;
const ROUNDS: usize = 20;
const BIG: usize = 20_500;

/// FCALL µs per lease and per release, [through the pipeline, free].
async fn lease_time(v: &BenchVault, redis: &RedisServer) -> [(f64, f64); 2] {
    let mut sums = [[(0.0, 0.0); 2]; 2];
    let fcall = |r: &RedisServer| call_stats(r)[0];
    for _ in 0..ROUNDS {
        for (side, body) in [json!({"pipeline": "job"}), json!({})]
            .into_iter()
            .enumerate()
        {
            let before = fcall(redis);
            let mut lids = Vec::with_capacity(HELD);
            for _ in 0..HELD {
                let l = v.post("/v1/pools/p/leases", body.clone()).await;
                lids.push(l["lease_id"].as_str().unwrap().to_string());
            }
            let mid = fcall(redis);
            for lid in &lids {
                v.post(
                    &format!("/v1/pools/p/leases/{lid}/release"),
                    json!({"outcome": "ok"}),
                )
                .await;
            }
            let after = fcall(redis);
            for (phase, (a, b)) in [(before, mid), (mid, after)].into_iter().enumerate() {
                sums[side][phase].0 += b.0 - a.0;
                sums[side][phase].1 += b.1 - a.1;
            }
        }
    }
    let per = |(calls, us): (f64, f64)| us / calls;
    [0, 1].map(|s| (per(sums[s][0]), per(sums[s][1])))
}

/// The longest call SLOWLOG kept (µs), then reset it.
fn slowest(redis: &RedisServer) -> u64 {
    let log = redis.cli(&["SLOWLOG", "GET", "100000"]);
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let max = lines
        .windows(3)
        .filter(|w| w[0].parse::<u64>().is_ok() && w[1].len() == 10 && w[1].parse::<u64>().is_ok())
        .filter_map(|w| w[2].parse::<u64>().ok())
        .max()
        .unwrap_or(0);
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
    let [inside, free] = lease_time(&v, &redis).await;
    let cycle = |(a, r): (f64, f64)| a + r;
    for (what, t) in [("through a pipeline", inside), ("free leasing", free)] {
        println!(
            "(l) {what}: lease {:.1} µs + release {:.1} µs = {:.1} µs of Redis per cycle",
            t.0,
            t.1,
            cycle(t)
        );
    }
    println!(
        "(l) pipeline / free: lease {:.2}x, release {:.2}x, cycle {:.2}x",
        inside.0 / free.0,
        inside.1 / free.1,
        cycle(inside) / cycle(free)
    );
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
