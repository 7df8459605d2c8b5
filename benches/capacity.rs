//! The capacity model of docs/OPERATIONS.md, derived from measured figures and checked
//! (figures are reported; the check is a verdict printed, never a test):
//!
//! 1. Calibration, one plain Redis: a closed loop of lease+release cycles through one vault-api,
//!    `WORKERS` tasks over `POOLS` pools of 100 tokens (40-byte secrets, a label, an expiry; the
//!    audit trail on). Per cycle: Redis CPU (`INFO cpu`), vault-api CPU and the load generator's
//!    CPU (`/proc/<pid>/stat`), in µs: r, a, g. Then the same with `FEW_WORKERS`: a Redis that
//!    is less busy handles fewer requests per wake-up and spends more CPU on each. The Redis cost
//!    of a cycle at c cycles/s is r(c) = r∞ + k / c (a cost per wake-up shared by the requests
//!    that arrive together, and a cost per request), through the two calibration points.
//!    Redis's CPU while idle (the vault attached, no load: cron, the cluster bus) is measured
//!    first, for 5 s, and left out of r.
//! 2. The model. Every process shares this machine's `cores`, so
//!    cycles/s = cores × 10⁶ / (r + a + g), unless one process is the limit first: a Redis
//!    primary runs commands on one thread (≤ 10⁶ / (r × its share of the pools) cycles/s).
//!    Redis CPU of a primary = its idle CPU + c × r(c), c = cycles/s × its share of the pools.
//! 3. The check: a Redis Cluster of 1 and of 3 primaries under the same load. The measured
//!    cycles/s and Redis CPU per node must land within 25 % of the model's prediction.
//!
//!   cargo build --release -p vault-api && cargo bench --bench capacity
//!   (or benches/cluster.sh, which runs this)

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{RedisCluster, RedisServer};

mod common;
use common::{bin_dir, random_text, BenchVault};

const POOLS: usize = 30;
const WORKERS: usize = 32;
const FEW_WORKERS: usize = 1;
const RUN: Duration = Duration::from_secs(10);
/// How far a measurement may land from the model's prediction.
const TOLERANCE: f64 = 0.25;

fn clock_ticks() -> f64 {
    // USER_HZ: 100 on every Linux this runs on (`getconf CLK_TCK`).
    100.0
}

/// CPU seconds (user + system) of process `pid` so far.
fn process_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn redis_cpu(port: u16) -> f64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "cpu"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

async fn make_pools(s: &BenchVault) {
    let expires = vault_core::time::rfc3339(vault_core::time::now_ms() + 30 * 86_400_000);
    for p in 0..POOLS {
        s.put(&format!("/v1/pools/cap{p}"), json!({})).await;
        let tokens: Vec<Value> = (0..100)
            .map(|_| json!({"secret": random_text(40), "labels": {"team": "crawl"}, "expires_at": expires}))
            .collect();
        s.post(
            &format!("/v1/pools/cap{p}/tokens"),
            json!({ "tokens": tokens }),
        )
        .await;
    }
}

/// Each node's CPU (fraction of a core) with the vault attached and no load.
async fn idle(ports: &[u16]) -> Vec<f64> {
    const QUIET: Duration = Duration::from_secs(5);
    let before: Vec<f64> = ports.iter().map(|p| redis_cpu(*p)).collect();
    tokio::time::sleep(QUIET).await;
    ports
        .iter()
        .zip(before)
        .map(|(p, b)| (redis_cpu(*p) - b) / QUIET.as_secs_f64())
        .collect()
}

/// What one run measured: cycles/s, and CPU µs per cycle of each Redis node (beyond its idle
/// CPU), of vault-api and of this load generator.
struct Run {
    cycles_per_s: f64,
    redis_cpu_per_node: Vec<f64>,
    redis_us: f64,
    api_us: f64,
    gen_us: f64,
}

async fn load(s: &BenchVault, ports: &[u16], idle: &[f64], workers: usize) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap();
    let redis0: Vec<f64> = ports.iter().map(|p| redis_cpu(*p)).collect();
    let vault_pid = s.child.id().to_string();
    let api0 = process_cpu(&vault_pid);
    let gen0 = process_cpu("self");
    let started = Instant::now();
    let stop = started + RUN;
    let mut tasks = vec![];
    for w in 0..workers {
        let (http, base, token) = (http.clone(), s.base.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let pool = format!("cap{}", w % POOLS);
            let mut n = 0u64;
            while Instant::now() < stop {
                let l: Value = http
                    .post(format!("{base}/v1/pools/{pool}/leases"))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let lid = l["lease_id"].as_str().expect("a lease").to_string();
                http.post(format!("{base}/v1/pools/{pool}/leases/{lid}/release"))
                    .bearer_auth(&token)
                    .json(&json!({"outcome": "ok"}))
                    .send()
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut cycles = 0;
    for t in tasks {
        cycles += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let redis: Vec<f64> = ports
        .iter()
        .zip(&redis0)
        .map(|(p, before)| redis_cpu(*p) - before)
        .collect();
    let per_cycle = |cpu_s: f64| cpu_s * 1e6 / cycles as f64;
    let idle_s: f64 = idle.iter().sum::<f64>() * secs;
    Run {
        cycles_per_s: cycles as f64 / secs,
        redis_cpu_per_node: redis.iter().map(|c| c / secs).collect(),
        redis_us: per_cycle(redis.iter().sum::<f64>() - idle_s),
        api_us: per_cycle(process_cpu(&vault_pid) - api0),
        gen_us: per_cycle(process_cpu("self") - gen0),
    }
}

/// Each node's share of the pools (the load is spread evenly over the pools).
fn pool_shares(ports: &[u16]) -> Vec<f64> {
    let counts: Vec<f64> = ports
        .iter()
        .map(|p| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "--scan", "--pattern", "tv:{cap*}:cfg"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count() as f64
        })
        .collect();
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

fn verdict(measured: f64, predicted: f64) -> String {
    let off = measured / predicted - 1.0;
    format!(
        "{:+.0} % {}",
        off * 100.0,
        if off.abs() <= TOLERANCE {
            "ok"
        } else {
            "OUTSIDE 25 %"
        }
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "{POOLS} pools of 100 tokens, {WORKERS} workers, {RUN:?} per run, {cores} cores, binaries in {}",
        bin_dir().display()
    );

    // 1. Calibration on one plain Redis.
    let redis = RedisServer::start();
    let s = BenchVault::start(&bin_dir(), &redis.url()).await;
    make_pools(&s).await;
    let cal_idle = idle(&[redis.port]).await;
    let cal = load(&s, &[redis.port], &cal_idle, WORKERS).await;
    let light = load(&s, &[redis.port], &cal_idle, FEW_WORKERS).await;
    drop(s);
    let (r, a, g) = (cal.redis_us, cal.api_us, cal.gen_us);
    println!(
        "calibration (one Redis), {WORKERS} workers: {:.0} cycles/s; CPU per cycle: Redis {r:.1} µs, vault-api {a:.1} µs, load generator {g:.1} µs; Redis idle {:.1} % of a core",
        cal.cycles_per_s,
        cal_idle[0] * 100.0
    );
    println!(
        "calibration, {FEW_WORKERS} workers: {:.0} cycles/s; Redis {:.1} µs per cycle",
        light.cycles_per_s, light.redis_us
    );
    // Redis µs per cycle at `rate` cycles/s on one node: r∞ + k / rate through both points.
    let k = (light.redis_us - r) / (1.0 / light.cycles_per_s - 1.0 / cal.cycles_per_s);
    let r_inf = r - k / cal.cycles_per_s;
    let r_at = |rate: f64| r_inf + k / rate.max(1.0);
    println!("Redis per cycle at c cycles/s: r(c) = {r_inf:.1} µs + {k:.0} / c");
    println!(
        "model: a Redis primary serves at most {:.0} cycles/s (one thread at 100 %); on this machine cycles/s = {cores} × 10⁶ / {:.1} µs = {:.0}",
        1e6 / r,
        r + a + g,
        cores * 1e6 / (r + a + g)
    );

    // 3. The check on clusters of 1 and 3 primaries.
    for n in [1, 3] {
        let cluster = RedisCluster::start(n);
        let ports: Vec<u16> = cluster.nodes.iter().map(|s| s.port).collect();
        let s = BenchVault::start(&bin_dir(), &cluster.url()).await;
        make_pools(&s).await;
        let shares = pool_shares(&ports);
        let idle = idle(&ports).await;
        let run = load(&s, &ports, &idle, WORKERS).await;
        let busiest = shares.iter().cloned().fold(0.0, f64::max);
        let predicted = (cores * 1e6 / (r + a + g)).min(1e6 / (r_at(1e6 / r) * busiest));
        println!(
            "cluster of {n}: {:.0} cycles/s, predicted {predicted:.0}: {}; CPU per cycle here: Redis {:.1} µs, vault-api {:.1} µs, load generator {:.1} µs",
            run.cycles_per_s,
            verdict(run.cycles_per_s, predicted),
            run.redis_us,
            run.api_us,
            run.gen_us
        );
        for (i, (cpu, share)) in run.redis_cpu_per_node.iter().zip(&shares).enumerate() {
            let rate = run.cycles_per_s * share;
            let predicted_cpu = idle[i] + rate * r_at(rate) / 1e6;
            println!(
                "  node {i} ({:.0} % of the pools, idle {:.1} %): Redis CPU {:.1} % of a core, predicted {:.1} %: {}",
                share * 100.0,
                idle[i] * 100.0,
                cpu * 100.0,
                predicted_cpu * 100.0,
                verdict(*cpu, predicted_cpu)
            );
        }
        drop(s);
    }
}
