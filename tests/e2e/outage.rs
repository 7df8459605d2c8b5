//! Redis down, stalled, or refusing scripts: clear 503s within the timeout, never a hang, and
//! never a fallback to non-atomic commands.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{bin_path, Child, RedisServer};

use crate::harness::{one, sample, Deployment};

#[tokio::test]
async fn redis_down_or_stalled_is_503_within_the_timeout() {
    let mut t = one(&[("TV_REDIS_TIMEOUT_MS", "400")]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s"}))
        .await;
    assert_eq!(
        t.api.post("/v1/pools/p/leases", json!({})).await.status,
        201
    );

    // Stalled: connections open, no answers. That is "busy" (it may answer later), not "down".
    t.redis.pause();
    let start = Instant::now();
    t.api
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "redis_busy");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    let r = t.api.get("/readyz").await;
    r.problem(503, "redis_busy");
    assert_eq!(r.retry_after, Some(1));
    t.redis.resume();

    // Down: connection refused.
    t.redis.stop();
    let start = Instant::now();
    t.api
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "redis_unavailable");
    t.api
        .get("/v1/pools/p")
        .await
        .problem(503, "redis_unavailable");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        t.api.get("/healthz").await.status,
        200,
        "liveness does not depend on Redis"
    );
    // Each kind is counted.
    let m = crate::harness::metrics_text(&t.vault.base).await;
    for kind in ["busy", "unavailable"] {
        assert!(
            sample(&m, "tv_redis_errors_total", &[&format!("kind=\"{kind}\"")]) >= Some(1.0),
            "{kind}: {m}"
        );
    }

    // Back (empty: no persistence in tests), scripts reload by themselves.
    t.redis.restart();
    let api = t.api.clone();
    let mut ready = false;
    for _ in 0..100 {
        if api.get("/readyz").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "readyz did not recover");
    assert_eq!(t.api.put("/v1/pools/p", json!({})).await.status, 201);
}

#[tokio::test]
async fn refuses_to_start_when_redis_refuses_scripts() {
    let redis =
        RedisServer::start_with(&["rename-command FCALL \"\"", "rename-command FUNCTION \"\""]);
    let dep = Deployment::new(&redis);
    let mut child = Child::spawn(
        &bin_path("vault-api"),
        &[],
        &[
            ("TV_REDIS_URL", dep.redis_url.clone()),
            ("TV_MASTER_KEY", dep.master_key.clone()),
            (
                "TV_LISTEN_ADDR",
                format!("127.0.0.1:{}", testkit::free_port()),
            ),
        ],
    );
    assert!(
        crate::harness::eventually(crate::harness::PATIENCE, async || child
            .try_wait()
            .is_some())
        .await,
        "vault-api kept running"
    );
    let status = child.try_wait().unwrap();
    assert!(!status.success());
    let out = child.output();
    assert!(
        out.contains("refuses Lua scripts") && out.contains("never falls back"),
        "{out}"
    );
}

#[tokio::test]
async fn fails_closed_when_scripts_are_forbidden_at_run_time() {
    let t = one(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s"}))
        .await;
    let keys_before = t.redis.cli(&["DBSIZE"]);
    assert!(t
        .redis
        .cli(&["ACL", "SETUSER", "default", "-@scripting"])
        .contains("OK"));
    t.api
        .get("/readyz")
        .await
        .problem(503, "scripts_unavailable");
    t.api
        .post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "scripts_unavailable");
    assert_eq!(
        t.redis.cli(&["DBSIZE"]),
        keys_before,
        "nothing changed without the scripts"
    );
    assert!(t
        .redis
        .cli(&["ACL", "SETUSER", "default", "+@all"])
        .contains("OK"));
    assert_eq!(t.api.get("/readyz").await.status, 200);
    assert_eq!(
        t.api.post("/v1/pools/p/leases", json!({})).await.status,
        201
    );
}

#[tokio::test]
async fn help_lists_the_settings() {
    for bin in ["vault-api", "janitor", "refresher"] {
        let out = std::process::Command::new(bin_path(bin))
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for var in [
            "TV_REDIS_URL",
            "TV_PREFIX",
            "TV_REDIS_TIMEOUT_MS",
            "RUST_LOG",
        ] {
            assert!(text.contains(var), "{bin} --help lacks {var}");
        }
    }
    let out = std::process::Command::new(bin_path("vault-api"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TV_LISTEN_ADDR") && text.contains("TV_MASTER_KEY"));
}

/// Redis Functions persist with the data, but a server can still come back without them (an
/// empty restart, `FUNCTION FLUSH`, a failover to a replica that never had them): the next
/// call loads the library again and succeeds, and the library is named after its version.
#[tokio::test]
async fn a_lost_function_library_is_loaded_again_on_the_next_call() {
    let t = one(&[]).await;
    assert_eq!(t.api.put("/v1/pools/p", json!({})).await.status, 201);
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s", "id": "a"}))
        .await;
    let name = &vault_core::scripts::LIBRARY.name;
    assert!(t.redis.cli(&["FUNCTION", "LIST"]).contains(name.as_str()));
    assert!(t.redis.cli(&["FUNCTION", "FLUSH"]).contains("OK"));
    assert!(!t.redis.cli(&["FUNCTION", "LIST"]).contains(name.as_str()));
    let l = t.api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    assert!(t.redis.cli(&["FUNCTION", "LIST"]).contains(name.as_str()));
    // Readiness reloads it too.
    t.redis.cli(&["FUNCTION", "FLUSH"]);
    assert_eq!(t.api.get("/readyz").await.status, 200);
    assert!(t.redis.cli(&["FUNCTION", "LIST"]).contains(name.as_str()));
}

/// The functions read every pool setting and invent none. A pool written by an older vault
/// (derived settings stored empty, some missing) is completed by vault-api at start-up with the
/// defaults that validation applies.
#[tokio::test]
async fn a_pool_written_by_an_older_vault_is_completed_at_start_up() {
    let t = one(&[]).await;
    assert_eq!(
        t.api
            .put("/v1/pools/p", json!({"lease_ttl_s": 20}))
            .await
            .status,
        201
    );
    t.api
        .post("/v1/pools/p/tokens", json!({"secret": "s"}))
        .await;
    let cfg = format!("{}:{{p}}:cfg", t.dep.prefix);
    t.redis
        .cli(&["HSET", &cfg, "min_token_ttl_s", "", "refresh_margin_s", ""]);
    t.redis.cli(&["HDEL", &cfg, "session_ttl_s"]);
    // Nothing is guessed: the lease fails instead of using a default nobody wrote.
    let refused = t.api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(refused.status, 500, "{refused:?}");

    let _upgraded = t.dep.vault(&[]).await;
    let get = |f: &str| t.redis.cli(&["HGET", &cfg, f]).trim().to_string();
    assert_eq!(
        (
            get("min_token_ttl_s"),
            get("refresh_margin_s"),
            get("session_ttl_s")
        ),
        ("50".into(), "80".into(), "600".into())
    );
    assert_eq!(
        t.api.post("/v1/pools/p/leases", json!({})).await.status,
        201
    );
}
