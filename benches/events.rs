//! Revocation propagation benchmark (reported, not asserted): 100 subscribers spread over two
//! vault-api replicas, half on SSE (`/v1/events`) and half on gRPC `Watch`; tokens are revoked
//! one at a time through the first replica, and each subscriber records when the
//! `token.revoked` event arrives. The delay is measured from just before the revoke call to
//! delivery, per transport.
//!
//!   cargo build --release --workspace --bins && cargo bench --bench events

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{bin_path, free_port, Child, RedisServer};
use vault_core::auth::{generate_key_pem, KeyRing, Scope};
use vault_core::crypto::MasterKey;

const SUBSCRIBERS: usize = 100;
const REVOCATIONS: usize = 50;

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
    let (mut v1, b1, g1) = start_vault(&redis, &key, keys_dir.path());
    let (mut v2, b2, g2) = start_vault(&redis, &key, keys_dir.path());
    let http = reqwest::Client::new();
    http.put(format!("{b1}/v1/pools/p"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let tokens: Vec<_> = (0..REVOCATIONS)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    let r = http
        .post(format!("{b1}/v1/pools/p/tokens"))
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
    for i in 0..SUBSCRIBERS {
        let arrivals = arrivals.clone();
        if i % 4 < 2 {
            let base = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            let mut stream = vault_client::Client::new(&base, &admin)
                .events(&["p"], None)
                .await
                .unwrap();
            subs.push(tokio::spawn(async move {
                let mut seen = 0;
                while let Some(Ok(e)) = stream.next().await {
                    if e.kind == "token.revoked" {
                        let id = e.data["token_id"].as_str().unwrap_or_default().to_string();
                        record(&arrivals, "SSE", id);
                        seen += 1;
                        if seen == REVOCATIONS {
                            return;
                        }
                    }
                }
            }));
        } else {
            let url = if i % 2 == 0 { g1.clone() } else { g2.clone() };
            let channel = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = vault_api::grpc::pb::vault_client::VaultClient::new(channel);
            let mut req = tonic::Request::new(vault_api::grpc::pb::WatchRequest {
                pools: vec!["p".into()],
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
    let mut sent = HashMap::new();
    for i in 0..REVOCATIONS {
        let id = format!("t{i}");
        sent.insert(id.clone(), Instant::now());
        let r = http
            .post(format!("{b1}/v1/pools/p/tokens/{id}/revoke"))
            .bearer_auth(&admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in subs {
        tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("every subscriber got every event")
            .unwrap();
    }
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
            "revocation propagation, {} {transport} subscribers on 2 replicas, {REVOCATIONS} revocations ({} deliveries): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            SUBSCRIBERS / 2,
            delays.len(),
            p(0.5),
            p(0.99),
            delays[delays.len() - 1]
        );
    }
    v1.kill();
    v2.kill();
}
