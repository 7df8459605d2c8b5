//! Revocation propagation benchmark (reported, not asserted): subscribers spread over the
//! vault-api replicas, half on SSE (`/v1/events`) and half on gRPC `Watch`; tokens are revoked
//! one at a time through the first replica, and each subscriber records when the
//! `token.revoked` event arrives. The delay is measured from just before the revoke call to
//! delivery, per transport, and per revocation from its first subscriber to its last. Two
//! configurations: 100 subscribers on 2 replicas, 1,000 on 3.
//!
//! Also the CPU each delivery costs, server side (the vault-api processes) and subscriber side
//! (this bench's own clients), from `/proc`: with every process on the same cores, the last of
//! N subscribers cannot get an event sooner than N deliveries' CPU divided by the cores.
//!
//!   cargo build --release --workspace --bins && cargo bench --bench events

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{bin_path, free_port, Child, RedisServer};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::crypto::MasterKey;

const REVOCATIONS: usize = 50;

/// CPU time (ms, user + system) process `pid` ("self" for this one) has used so far.
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        rest.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime (fields 14 and 15 of stat), in clock ticks of 10 ms (CLK_TCK 100).
    (ticks(11) + ticks(12)) * 10.0
}
/// (subscribers, replicas) of each run.
const RUNS: [(usize, usize); 2] = [(100, 2), (1000, 3)];

fn start_vault(
    redis: &RedisServer,
    key: &str,
    keys_dir: &std::path::Path,
) -> (Child, String, String) {
    let port = free_port();
    let grpc = format!("127.0.0.1:{}", free_port());
    let child = Child::spawn(
        &bin_path("vault-api"),
        &[],
        &[
            ("TV_REDIS_URL", redis.url()),
            ("TV_MASTER_KEY", key.to_string()),
            ("TV_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("TV_SIGNING_KEYS", keys_dir.display().to_string()),
            ("TV_GRPC_LISTEN_ADDR", grpc.clone()),
            // Every subscriber connects from this one address.
            ("TV_MAX_CONNECTIONS_PER_ADDR", "4096".to_string()),
            ("RUST_LOG", "warn".to_string()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = testkit::wait_until(Duration::from_secs(20), || {
        std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{base}/readyz")])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ready, "vault-api did not become ready");
    (child, base, format!("http://{grpc}"))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let redis = RedisServer::start();
    let key = MasterKey::generate().to_base64();
    let keys_dir = tempfile::tempdir().unwrap();
    std::fs::write(keys_dir.path().join("k1.pem"), generate_key_pem()).unwrap();
    let mut ring = KeyRing::empty("tokenvault", "tokenvault", 86_400);
    ring.load(keys_dir.path()).unwrap();
    let now = vault_core::time::now_ms() / 1000;
    let admin = ring
        .mint("bench", &[Scope::Admin], None, 3600, now)
        .unwrap()
        .0;
    let mut vaults: Vec<(Child, String, String)> = vec![];
    for (run, (subscribers, replicas)) in RUNS.into_iter().enumerate() {
        while vaults.len() < replicas {
            vaults.push(start_vault(&redis, &key, keys_dir.path()));
        }
        let bases: Vec<(String, String)> = vaults[..replicas]
            .iter()
            .map(|(_, b, g)| (b.clone(), g.clone()))
            .collect();
        let pids: Vec<String> = vaults[..replicas]
            .iter()
            .map(|(c, _, _)| c.id().to_string())
            .collect();
        propagation(&admin, &format!("p{run}"), subscribers, &bases, &pids).await;
    }
    for (mut v, _, _) in vaults {
        v.kill();
    }
}

/// Revoke [`REVOCATIONS`] tokens of a new pool `pool` through the first replica while
/// `subscribers` follow it over the `replicas` (REST base, gRPC URL), and print the delays.
async fn propagation(
    admin: &str,
    pool: &str,
    subscribers: usize,
    replicas: &[(String, String)],
    pids: &[String],
) {
    let b1 = replicas[0].0.clone();
    let admin = admin.to_string();
    let http = reqwest::Client::new();
    http.put(format!("{b1}/v1/pools/{pool}"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let tokens: Vec<_> = (0..REVOCATIONS)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    let r = http
        .post(format!("{b1}/v1/pools/{pool}/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "tokens": tokens }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // (transport, token id) -> arrival instants, from every subscriber.
    type Arrivals = Arc<Mutex<HashMap<(&'static str, String), Vec<Instant>>>>;
    let arrivals: Arrivals = Arc::default();
    let record = |arrivals: &Arrivals, transport: &'static str, id: String| {
        arrivals
            .lock()
            .unwrap()
            .entry((transport, id))
            .or_default()
            .push(Instant::now());
    };
    let mut subs = vec![];
    for i in 0..subscribers {
        let arrivals = arrivals.clone();
        let (base, url) = replicas[i % replicas.len()].clone();
        if (i / replicas.len()) % 2 == 0 {
            let mut stream = vault_client::Client::new(&base, &admin)
                .events(&[pool], None)
                .await
                .unwrap();
            subs.push(tokio::spawn(async move {
                let mut seen = 0;
                while let Some(Ok(e)) = stream.next().await {
                    if e.kind == "token.revoked" {
                        let id = e.data.token_id.unwrap_or_default();
                        record(&arrivals, "SSE", id);
                        seen += 1;
                        if seen == REVOCATIONS {
                            return;
                        }
                    }
                }
            }));
        } else {
            let channel = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = vault_api::grpc::pb::vault_client::VaultClient::new(channel);
            let mut req = tonic::Request::new(vault_api::grpc::pb::WatchRequest {
                pools: vec![pool.into()],
                last_event_id: String::new(),
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {admin}").parse().unwrap());
            let mut stream = client.watch(req).await.unwrap().into_inner();
            subs.push(tokio::spawn(async move {
                let mut seen = 0;
                while let Ok(Some(e)) = stream.message().await {
                    if e.r#type == "token.revoked" {
                        record(&arrivals, "gRPC Watch", e.token_id);
                        seen += 1;
                        if seen == REVOCATIONS {
                            return;
                        }
                    }
                }
            }));
        }
    }
    let servers_cpu = || pids.iter().map(|p| cpu_ms(p)).sum::<f64>();
    let (servers0, self0) = (servers_cpu(), cpu_ms("self"));
    let mut sent = HashMap::new();
    for i in 0..REVOCATIONS {
        let id = format!("t{i}");
        sent.insert(id.clone(), Instant::now());
        let r = http
            .post(format!("{b1}/v1/pools/{pool}/tokens/{id}/revoke"))
            .bearer_auth(&admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in subs {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("every subscriber got every event")
            .unwrap();
    }
    let deliveries = (REVOCATIONS * subscribers) as f64;
    let server_us = (servers_cpu() - servers0) * 1000.0 / deliveries;
    let client_us = (cpu_ms("self") - self0) * 1000.0 / deliveries;
    println!(
        "  CPU per delivery: {server_us:.1} µs in the vault-api replicas, {client_us:.1} µs in this bench's subscribers; {subscribers} deliveries of one event take {:.1} ms of CPU, {:.1} ms on this machine's {} cores at best",
        (server_us + client_us) * subscribers as f64 / 1000.0,
        (server_us + client_us) * subscribers as f64 / 1000.0 / cores() as f64,
        cores()
    );
    let arrivals = arrivals.lock().unwrap();
    for transport in ["SSE", "gRPC Watch"] {
        let mut delays: Vec<f64> = arrivals
            .iter()
            .filter(|((t, _), _)| *t == transport)
            .flat_map(|((_, id), times)| {
                times
                    .iter()
                    .map(|t| t.duration_since(sent[id]).as_secs_f64() * 1000.0)
            })
            .collect();
        delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
        println!(
            "revocation propagation, {} {transport} subscribers on {} replicas, {REVOCATIONS} revocations ({} deliveries): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            delays.len() / REVOCATIONS,
            replicas.len(),
            delays.len(),
            p(0.5),
            p(0.99),
            delays[delays.len() - 1]
        );
    }
    // Per revocation, over every subscriber: when the first got it, and when the last did.
    let (mut first, mut last): (Vec<f64>, Vec<f64>) = sent
        .iter()
        .map(|(id, at)| {
            let got = ["SSE", "gRPC Watch"]
                .iter()
                .flat_map(|t| arrivals.get(&(*t, id.clone())).into_iter().flatten())
                .map(|t| t.duration_since(*at).as_secs_f64() * 1000.0);
            got.fold((f64::MAX, 0.0f64), |(lo, hi), d| (lo.min(d), hi.max(d)))
        })
        .unzip();
    first.sort_by(|a, b| a.partial_cmp(b).unwrap());
    last.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "  each revocation, {subscribers} subscribers: first got it after {:.2} ms (median), the last after {:.2} ms (median), {:.2} ms (worst)",
        median(&first),
        median(&last),
        last[last.len() - 1]
    );
}
