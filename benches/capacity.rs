//! The capacity model of docs/OPERATIONS.md, derived from measured figures and checked
//! (figures are reported; the check is a verdict printed, never a test):
//!
//! 1. Calibration, one plain Redis: a closed loop of lease+release cycles through one vault-api,
//!    `WORKERS` tasks over `POOLS` pools of 100 tokens (40-byte secrets, a label, an expiry; the
//!    audit trail on). Per cycle: Redis CPU (`INFO cpu`), vault-api CPU and the load generator's
//!    CPU (`/proc/<pid>/stat`), in µs: r, a, g. Then the same with `FEW_WORKERS`: a Redis that
//!    is less busy handles fewer requests per wake-up and spends more CPU on each, so the Redis
//!    cost of a cycle is a line through the two (rate, r) points, r(rate).
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
use testkit::{free_port, Child, RedisCluster, RedisServer};
use vault_core::auth::{KeyRing, Scope};
use vault_core::crypto::MasterKey;

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

fn random_text(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[r.gen_range(0..CHARS.len())] as char)
        .collect()
}

struct Setup {
    _vault: Child,
    vault_pid: String,
    base: String,
    token: String,
    _keys: tempfile::TempDir,
}

async fn start_vault(redis_url: &str) -> Setup {
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
    let bin = bin_dir().join("vault-api");
    let vault = Child::spawn(
        &bin,
        &[],
        &[
            ("TV_REDIS_URL", redis_url.to_string()),
            ("TV_MASTER_KEY", MasterKey::generate().to_base64()),
            ("TV_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("TV_SIGNING_KEYS", keys.path().display().to_string()),
            ("TV_MAX_CONNECTIONS_PER_ADDR", "4096".to_string()),
            ("RUST_LOG", "warn".to_string()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "vault-api not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vault_pid = vault.id().to_string();
    Setup {
        _vault: vault,
        vault_pid,
        base,
        token,
        _keys: keys,
    }
}

async fn send(
    http: &reqwest::Client,
    s: &Setup,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(&s.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn make_pools(s: &Setup) {
    let http = reqwest::Client::new();
    let expires = vault_core::time::rfc3339(vault_core::time::now_ms() + 30 * 86_400_000);
    for p in 0..POOLS {
        send(
            &http,
            s,
            reqwest::Method::PUT,
            &format!("/v1/pools/cap{p}"),
            json!({}),
        )
        .await;
        let tokens: Vec<Value> = (0..100)
            .map(|_| json!({"secret": random_text(40), "labels": {"team": "crawl"}, "expires_at": expires}))
            .collect();
        send(
            &http,
            s,
            reqwest::Method::POST,
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

async fn load(s: &Setup, ports: &[u16], idle: &[f64], workers: usize) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap();
    let redis0: Vec<f64> = ports.iter().map(|p| redis_cpu(*p)).collect();
    let api0 = process_cpu(&s.vault_pid);
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
        api_us: per_cycle(process_cpu(&s.vault_pid) - api0),
        gen_us: per_cycle(process_cpu("self") - gen0),
    }
}

fn bin_dir() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    if root.join("release/vault-api").exists() {
        root.join("release")
    } else {
        root.join("debug")
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
    let s = start_vault(&redis.url()).await;
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
    // Redis µs per cycle at `rate` cycles/s on one node: the line through the two points,
    // held at their values outside them.
    let points = [(light.cycles_per_s, light.redis_us), (cal.cycles_per_s, r)];
    let r_at = |rate: f64| {
        let (x0, y0) = points[0];
        let (x1, y1) = points[1];
        let t = ((rate - x0) / (x1 - x0)).clamp(0.0, 1.0);
        y0 + t * (y1 - y0)
    };
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
        let s = start_vault(&cluster.url()).await;
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
