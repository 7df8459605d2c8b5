//! A worker's lease+release cycle over gRPC against REST, on the same vault in one run (figures
//! are reported, never asserted): cycles/s at saturation (`WORKERS` concurrent workers), the
//! vault-api CPU per cycle (from /proc), and p50/p99 of a cycle at half that load. Rounds
//! alternate between the transports so both see the same machine.
//!
//!   cargo build --release -p vault-api && cargo bench --bench grpc
//!
//! `TV_BENCH_BIN=<dir>` takes `vault-api` from there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{free_port, RedisServer};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vault_api::grpc::pb;

mod common;
use common::{bin_dir, deposit, random_text, BenchVault};

const WORKERS: usize = 32;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;
/// gRPC connections the workers share (REST's client pool opens one per worker in flight).
const CONNECTIONS: usize = 8;

#[derive(Clone)]
enum Transport {
    Rest(reqwest::Client, String),
    /// Connections to spread the workers over (HTTP/2 multiplexes calls on one, but one
    /// connection is served by one task: a fleet opens several, as REST's pool does).
    Grpc(Vec<Channel>),
}

impl Transport {
    /// This transport as worker `n` uses it.
    fn for_worker(&self, n: usize) -> Transport {
        match self {
            Transport::Grpc(all) => Transport::Grpc(vec![all[n % all.len()].clone()]),
            rest => rest.clone(),
        }
    }

    /// The transport's own cost, nearly alone: a health check (no Redis, no auth).
    async fn health(&mut self) {
        match self {
            Transport::Rest(http, base) => {
                let r = http.get(format!("{base}/healthz")).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
            Transport::Grpc(clients) => {
                let mut h = tonic_health::pb::health_client::HealthClient::new(clients[0].clone());
                h.check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .unwrap();
            }
        }
    }

    async fn cycle(&mut self, token: &str) {
        match self {
            Transport::Rest(http, base) => {
                let l: serde_json::Value = http
                    .post(format!("{base}/v1/pools/p/leases"))
                    .bearer_auth(token)
                    .json(&json!({"worker": "bench"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = l["lease_id"].as_str().expect("a lease");
                let r = http
                    .post(format!("{base}/v1/pools/p/leases/{id}/release"))
                    .bearer_auth(token)
                    .json(&json!({"outcome": "ok"}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            Transport::Grpc(clients) => {
                let mut g = pb::vault_client::VaultClient::new(clients[0].clone());
                let auth = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
                let mut req = tonic::Request::new(pb::LeaseRequest {
                    pool: "p".into(),
                    worker: "bench".into(),
                    ..Default::default()
                });
                req.metadata_mut().insert("authorization", auth.clone());
                let l = g.lease(req).await.unwrap().into_inner().lease.unwrap();
                let mut req = tonic::Request::new(pb::ReleaseRequest {
                    pool: "p".into(),
                    lease_id: l.lease_id,
                    report: None,
                });
                req.metadata_mut().insert("authorization", auth);
                g.release(req).await.unwrap();
            }
        }
    }
}

/// CPU seconds process `pid` used so far (user + system).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// `workers` looping cycles for `d` (each waiting `pause` between cycles): cycles done and each
/// cycle's duration.
async fn run(
    t: &Transport,
    token: &str,
    workers: usize,
    d: Duration,
    pause: Duration,
) -> Vec<Duration> {
    run_calls(t, token, workers, d, pause, false).await
}

async fn run_calls(
    t: &Transport,
    token: &str,
    workers: usize,
    d: Duration,
    pause: Duration,
    health: bool,
) -> Vec<Duration> {
    let token = Arc::new(token.to_string());
    let end = Instant::now() + d;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..workers {
        let (mut t, token) = (t.for_worker(n), token.clone());
        tasks.spawn(async move {
            let mut took = vec![];
            while Instant::now() < end {
                let s = Instant::now();
                if health {
                    t.health().await;
                } else {
                    t.cycle(&token).await;
                }
                took.push(s.elapsed());
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            took
        });
    }
    let mut all = vec![];
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let redis = RedisServer::start();
    let bin = std::env::var("TV_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| bin_dir());
    let grpc_port = free_port();
    let v = BenchVault::start_with(
        &bin,
        &redis.url(),
        &[("TV_GRPC_LISTEN_ADDR", format!("127.0.0.1:{grpc_port}"))],
    )
    .await;
    v.put("/v1/pools/p", json!({"max_leases_per_token": 100}))
        .await;
    deposit(&v, "p", 200, 200, || random_text(40)).await;
    let mut clients = vec![];
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(channel);
    }
    let transports = [
        (
            "REST",
            Transport::Rest(reqwest::Client::new(), v.base.clone()),
        ),
        ("gRPC", Transport::Grpc(clients)),
    ];
    let pid = v.child.id();
    // Saturation: cycles/s and vault-api CPU per cycle, rounds alternating.
    let mut sat = [(0usize, 0.0f64, 0.0f64); 2];
    for _ in 0..ROUNDS {
        for (i, (_, t)) in transports.iter().enumerate() {
            let cpu0 = cpu_s(pid);
            let s = Instant::now();
            let n = run(t, &v.token, WORKERS, ROUND, Duration::ZERO).await.len();
            sat[i].0 += n;
            sat[i].1 += s.elapsed().as_secs_f64();
            sat[i].2 += cpu_s(pid) - cpu0;
        }
    }
    for (i, (name, _)) in transports.iter().enumerate() {
        let (n, secs, cpu) = sat[i];
        println!(
            "{name}: {:.0} cycles/s with {WORKERS} workers, vault-api CPU {:.0} µs per cycle ({:.0} cycles/s per vault-api core)",
            n as f64 / secs,
            cpu / n as f64 * 1e6,
            n as f64 / cpu
        );
    }
    let per_core = |i: usize| sat[i].0 as f64 / sat[i].2;
    println!(
        "gRPC / REST: cycles/s {:.2}x, per vault-api core {:.2}x",
        (sat[1].0 as f64 / sat[1].1) / (sat[0].0 as f64 / sat[0].1),
        per_core(1) / per_core(0)
    );
    // The floor: what the transport alone costs a call (a health check: no Redis, no auth),
    // beside what a cycle's two calls cost in all.
    let mut floor = [(0usize, 0.0f64); 2];
    for _ in 0..ROUNDS {
        for (i, (_, t)) in transports.iter().enumerate() {
            let cpu0 = cpu_s(pid);
            let n = run_calls(t, &v.token, WORKERS, ROUND, Duration::ZERO, true)
                .await
                .len();
            floor[i].0 += n;
            floor[i].1 += cpu_s(pid) - cpu0;
        }
    }
    for (i, (name, _)) in transports.iter().enumerate() {
        let per_call = floor[i].1 / floor[i].0 as f64 * 1e6;
        let cycle_call = sat[i].2 / sat[i].0 as f64 / 2.0 * 1e6;
        println!(
            "{name}: a health check costs vault-api {per_call:.0} µs; a cycle's call {cycle_call:.0} µs, of which {:.0} µs is past the transport",
            cycle_call - per_call
        );
    }
    // Latency at half the REST saturation rate, the same offered load for both.
    let rate = sat[0].0 as f64 / sat[0].1 / 2.0;
    let pause = Duration::from_secs_f64(WORKERS as f64 / rate);
    for (name, t) in &transports {
        let mut took = run(t, &v.token, WORKERS, ROUND, pause).await;
        println!(
            "{name} at {rate:.0} cycles/s offered: p50 {:?}, p99 {:?}",
            pct(&mut took, 0.5),
            pct(&mut took, 0.99)
        );
    }
}
