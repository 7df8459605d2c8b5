//! Refresher benchmark (reported, not asserted): how many refreshes per second one refresher
//! process sustains against a local OAuth2 token endpoint, and the lag from a token's due time
//! to its refresh when the load is below that rate.
//!
//!   cargo build --release --workspace --bins && cargo bench --bench refresh
//!
//! The token endpoint is a small axum server in this process answering at once; Redis, the
//! refresher and this process share the machine.

// The operations' futures (a deposit checks the global plane, writes, announces) nest deeply.
#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use testkit::{bin_path, Child, RedisServer};
use vault_core::config::RedisArgs;
use vault_core::crypto::{Cipher, MasterKey};
use vault_core::model::{PoolConfigInput, TokenInput};
use vault_core::Store;

async fn token_endpoint() -> String {
    let app = Router::new().route(
        "/token",
        post(|| async {
            Json(json!({"access_token": format!("at-{}", rand_u64()), "expires_in": 3600}))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/token")
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn deposit(store: &Store, cipher: &Cipher, pool: &str, url: &str, expiries: &[i64]) {
    for (c, chunk) in expiries.chunks(1000).enumerate() {
        let sealed: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, exp)| {
                let t: TokenInput = serde_json::from_value(json!({
                    "id": format!("t{}", c * 1000 + i), "secret": "s", "expires_at": exp,
                    "refresh": {"kind": "oauth2_refresh_token", "token_url": url, "refresh_token": "rt"}}))
                .unwrap();
                t.seal(cipher, pool, None).unwrap()
            })
            .collect();
        store.deposit_tokens(&bench(), pool, &sealed).await.unwrap();
    }
}

/// Poll until every token of `pool` has been refreshed; returns their metadata.
async fn wait_refreshed(store: &Store, pool: &str, n: usize) -> Vec<vault_core::model::TokenMeta> {
    loop {
        let mut all = vec![];
        let mut cursor = 0;
        loop {
            let (page, next) = store.token_list(pool, None, 1000, cursor).await.unwrap();
            all.extend(page);
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        if all.len() == n && all.iter().all(|m| m.generation >= 2) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let redis = RedisServer::start();
    let key = MasterKey::generate();
    let cipher = Cipher::new(&key);
    let store = Store::connect(&RedisArgs {
        redis_timeout_ms: 5000,
        redis_pool_size: 8,
        ..RedisArgs::new(redis.url(), "bench")
    })
    .unwrap();
    store.load_scripts().await.unwrap();
    let url = token_endpoint().await;
    let margin_s = 60;
    let cfg: PoolConfigInput =
        serde_json::from_value(json!({"refresh_margin_s": margin_s, "lease_ttl_s": 1, "min_token_ttl_s": 5, "refresh_concurrency": 64})).unwrap();
    for p in ["burst", "steady"] {
        store
            .upsert_pool(&bench(), p, &cfg.clone().validate(&cipher, p).unwrap())
            .await
            .unwrap();
    }
    let refresher = || {
        Child::spawn(
            &bin_path("refresher"),
            &[],
            &[
                ("TV_REDIS_URL", redis.url()),
                ("TV_PREFIX", "bench".into()),
                ("TV_MASTER_KEY", key.to_base64()),
                ("TV_REFRESHER_CONCURRENCY", "64".into()),
                ("TV_REFRESHER_POLL_MS", "50".into()),
                ("RUST_LOG", "warn".into()),
            ],
        )
    };

    // Throughput: 5,000 tokens all due at once.
    let now = store.now_ms().await.unwrap();
    let n = 5000;
    deposit(
        &store,
        &cipher,
        "burst",
        &url,
        &vec![now + (margin_s - 5) * 1000; n],
    )
    .await;
    let t0 = Instant::now();
    let mut r = refresher();
    wait_refreshed(&store, "burst", n).await;
    let secs = t0.elapsed().as_secs_f64();
    println!("refresh throughput, one refresher (concurrency 64): {n} tokens in {secs:.2} s = {:.0} refreshes/s", n as f64 / secs);

    // Lag: 2,000 tokens coming due evenly over 10 s (200/s), with the refresher already running.
    let now = store.now_ms().await.unwrap();
    let m = 2000;
    let expiries: Vec<i64> = (0..m)
        .map(|i| now + 2000 + (margin_s * 1000) + (i as i64) * 5)
        .collect();
    deposit(&store, &cipher, "steady", &url, &expiries).await;
    let metas = wait_refreshed(&store, "steady", m).await;
    let mut lags: Vec<i64> = metas
        .iter()
        .map(|t| {
            let idx: usize = t.id[1..].parse().unwrap();
            let due = expiries[idx] - margin_s * 1000;
            ms(t.refreshed_at.as_deref().unwrap()) - due
        })
        .collect();
    lags.sort_unstable();
    let p = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "lag from due time to refreshed at 200 due/s: p50 {} ms, p99 {} ms, max {} ms",
        p(0.5),
        p(0.99),
        lags[lags.len() - 1]
    );
    r.kill();
}

/// Who the bench acts as in the audit trail.
fn bench() -> vault_core::ops::Actor {
    vault_core::ops::Actor::process("bench")
}
