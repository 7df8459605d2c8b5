//! Pool sizing and the pool gauges: leases granted by two replicas make the pool's observed rate,
//! status turns it into the tokens the pool needs, `/metrics` shows it per pool, and
//! `vaultctl pool size` answers by the same rule before a job starts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{metrics_text, sample, wait_json, Deployment};
use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread")]
async fn leases_of_every_replica_make_the_rate_status_sizes_the_pool_and_metrics_show_it() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let fast = [("TV_POOL_METRICS_INTERVAL_S", "1")];
    let (va, vb) = (dep.vault(&fast).await, dep.vault(&fast).await);
    let (a, b) = (dep.api(&va), dep.api(&vb));
    let cfg = json!({"quota_limit": 110, "quota_reserve": 10, "quota_window_s": 600,
                     "max_leases_per_token": 2});
    assert_eq!(a.put("/v1/pools/sz", cfg).await.status, 201);
    let tokens: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    assert_eq!(
        a.post("/v1/pools/sz/tokens", json!({ "tokens": tokens }))
            .await
            .status,
        201
    );
    // 20 one-unit leases through each replica, 10 more of two units through the first.
    for (api, n, units) in [(&a, 20, 1), (&b, 20, 1), (&a, 10, 2)] {
        for _ in 0..n {
            let l = api
                .post("/v1/pools/sz/leases", json!({ "units": units }))
                .await;
            assert_eq!(l.status, 201, "{}", l.body);
            let r = api
                .post(
                    &format!("/v1/pools/sz/leases/{}/release", l.str("lease_id")),
                    json!({"outcome": "ok", "used": 0}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    // Each replica writes its counts every few seconds: poll until both are in.
    let counted = |v: &Value, field: &str| {
        let s = &v["sizing"];
        (s[field].as_f64().unwrap_or(0.0) * s["observed_s"].as_f64().unwrap_or(0.0)).round()
    };
    let st = wait_json(&a, "/v1/pools/sz/status", crate::harness::PATIENCE, |v| {
        counted(v, "lease_rate_per_s") == 50.0
    })
    .await;
    assert_eq!(counted(&st, "units_rate_per_s"), 60.0, "{st}");
    let s = &st["sizing"];
    // N = units/s × window / (limit − reserve), rounded up; concurrency needs nothing now.
    let units_per_s = s["units_rate_per_s"].as_f64().unwrap();
    let want = (units_per_s * 600.0 / 100.0 - 1e-9).ceil() as u64;
    assert!(want >= 1, "{st}");
    assert_eq!(s["tokens_for_quota"].as_u64(), Some(want), "{st}");
    assert_eq!(s["tokens_for_concurrency"].as_u64(), Some(0), "{st}");
    assert_eq!(s["tokens_needed"].as_u64(), Some(want), "{st}");
    assert_eq!(s["tokens_in_rotation"].as_u64(), Some(3), "{st}");
    assert_eq!(s["headroom_tokens"].as_i64(), Some(3 - want as i64), "{st}");
    // Leases held at once count too: four held, two per token at most, need two tokens.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            a.post("/v1/pools/sz/leases", json!({}))
                .await
                .str("lease_id"),
        );
    }
    let st = a.get("/v1/pools/sz/status").await.body;
    assert_eq!(
        st["sizing"]["tokens_for_concurrency"].as_u64(),
        Some(2),
        "{st}"
    );
    for l in held {
        a.post(&format!("/v1/pools/sz/leases/{l}/release"), json!({}))
            .await;
    }

    // The gauges: both replicas compute them, every second here.
    for base in [&va.base, &vb.base] {
        metrics_until(base, |text| {
            sample(
                text,
                "tv_pool_tokens{",
                &["pool=\"sz\"", "state=\"active\""],
            ) == Some(3.0)
                && sample(text, "tv_pool_tokens_needed{", &["pool=\"sz\""]).is_some()
                && sample(text, "tv_pool_lease_rate{", &["pool=\"sz\""]).is_some_and(|r| r > 0.0)
                && sample(
                    text,
                    "tv_pool_quota_ratio{",
                    &["pool=\"sz\"", "quota=\"default\""],
                )
                .is_some_and(|r| r > 0.0)
        })
        .await;
    }
    // A deleted pool's gauges fall to zero, its quotas' too.
    assert_eq!(a.delete("/v1/pools/sz?force=true").await.status, 204);
    metrics_until(&va.base, |text| {
        sample(
            text,
            "tv_pool_tokens{",
            &["pool=\"sz\"", "state=\"active\""],
        ) == Some(0.0)
            && sample(
                text,
                "tv_pool_quota_ratio{",
                &["pool=\"sz\"", "quota=\"default\""],
            ) == Some(0.0)
    })
    .await;
}

/// Poll `/metrics` of `base` until `pred` holds for its text; panics with the last text.
async fn metrics_until(base: &str, pred: impl Fn(&str) -> bool) {
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let text = metrics_text(base).await;
        if pred(&text) {
            return;
        }
        assert!(std::time::Instant::now() < end, "not reached:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn vaultctl_pool_size_applies_the_same_rule() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(testkit::bin_path("vaultctl"))
            .args(["pool", "size"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // 10 rps for an hour-long window at 5,000 per token: 36,000 / 5,000 → 8 tokens.
    let (ok, out, _) = run(&["--rps", "10", "--quota", "5000", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tokens_needed"], 8);
    // A 5-minute job needs only its 3,000 units: 1 token; 20 workers at once, 4 each: 5.
    let (ok, out, _) = run(&[
        "--rps",
        "10",
        "--quota",
        "5000",
        "--duration",
        "5m",
        "--concurrent",
        "20",
        "--max-leases-per-token",
        "4",
    ]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "tokens needed: 5 (for the quota: 1, for concurrency: 5)"
    );
    // Several quotas: 2 rps against 5,000 an hour (2 tokens), 60 a minute (2), and 90,000
    // tokens a minute at 1,500 a request (3,000/s: 180,000 a minute, 2 tokens) and 1,000 a day
    // (172,800 a day: 173 tokens, which sizes the pool).
    let (ok, out, err) = run(&[
        "--rps",
        "2",
        "--quota",
        "5000",
        "--also",
        "60/1m",
        "--also",
        "90000/1m@1500",
        "--also",
        "1000/1d",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "tokens needed: 173 (for the quota 1000/1d: 173, for concurrency: 0)"
    );
    let (ok, _, err) = run(&["--rps", "1", "--also", "60"]);
    assert!(!ok && err.contains("LIMIT/WINDOW"), "{err}");
    let (ok, _, err) = run(&["--rps=-1", "--quota", "10"]);
    assert!(!ok && err.contains("non-negative"), "{err}");
    let (ok, _, err) = run(&["--rps", "1", "--quota", "10", "--reserve", "10"]);
    assert!(!ok && err.contains("must exceed"), "{err}");
}
