//! The shared redis-server dies with the test process that started it.

use std::process::Command;
use std::time::Duration;

const CHILD: &str = "TESTKIT_SHARED_REDIS_CHILD";

#[test]
fn the_shared_redis_dies_with_its_process() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start the server, say where, and end without any cleanup.
        let redis = testkit::shared_redis();
        assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
        println!("shared-redis-port={}", redis.port);
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_shared_redis_dies_with_its_process",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run this test as a child process");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let port: u16 = text
        .lines()
        .find_map(|l| l.split("shared-redis-port=").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in the child's output: {text}"));
    let gone = testkit::wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(
        gone,
        "the shared redis-server on port {port} outlived its process"
    );
}
