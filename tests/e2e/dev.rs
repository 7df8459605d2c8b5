//! `tokenvault dev`, the README's first command: it starts its own Redis, prints an admin token
//! and a working lease example against the seeded demo pool, and stops cleanly on SIGTERM.

use std::time::Duration;

use serde_json::json;
use testkit::{bin_path, free_port, Child};

use crate::harness::{eventually, Api};

#[tokio::test]
async fn dev_mode_serves_the_demo_pool_with_the_printed_token() {
    let port = free_port();
    let mut dev = Child::spawn(
        &bin_path("tokenvault"),
        &["dev", "--listen-addr", &format!("127.0.0.1:{port}")],
        &[("RUST_LOG", "warn".into())],
    );
    let started = eventually(crate::harness::PATIENCE, async || {
        dev.output().contains("export TV_TOKEN=")
    })
    .await;
    assert!(started, "dev mode did not start:\n{}", dev.output());
    let out = dev.output();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("export TV_TOKEN="))
        .unwrap()
        .trim()
        .to_string();
    assert!(out.contains(&format!("http://127.0.0.1:{port}/v1/pools/demo/leases")));
    // The dashboard it names is served.
    let ui = format!("http://127.0.0.1:{port}/ui");
    assert!(out.contains(&ui), "{out}");
    let page = reqwest::get(&ui).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<title>tokenvault</title>"));
    let api = Api::new(&format!("http://127.0.0.1:{port}")).with_token(&token);
    let l = api
        .post("/v1/pools/demo/leases", json!({"worker": "me"}))
        .await;
    assert_eq!(l.status, 201, "{l:?}");
    assert!(l.str("secret").starts_with("demo-secret-"));
    assert_eq!(l.body["binding"]["fingerprint"], "chrome-120-linux");
    let r = api
        .post(
            &format!("/v1/pools/demo/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200);
    Api::new(&format!("http://127.0.0.1:{port}"))
        .get("/v1/pools/demo/status")
        .await
        .problem(401, "unauthorized");
    let status = dev.terminate(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "{}", dev.output());
}

#[tokio::test]
async fn dev_mode_without_redis_server_says_how_to_install_it() {
    // A PATH with nothing on it: redis-server cannot be found.
    let empty = tempfile::tempdir().unwrap();
    let mut dev = Child::spawn(
        &bin_path("tokenvault"),
        &[
            "dev",
            "--listen-addr",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[("PATH", empty.path().display().to_string())],
    );
    let exited =
        crate::harness::eventually(crate::harness::PATIENCE, async || dev.try_wait().is_some())
            .await;
    assert!(exited, "dev mode kept running:\n{}", dev.output());
    let status = dev.try_wait().unwrap();
    assert!(!status.success());
    let out = dev.output();
    assert!(out.contains("redis-server is not installed"), "{out}");
    assert!(out.contains("apt-get install -y redis-server"), "{out}");
    assert!(out.contains("TV_REDIS_URL"), "{out}");
}
