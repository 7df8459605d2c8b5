//! Ports for servers the tests start, and waiting for a condition.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A port for a cluster node: free, and so is its cluster bus port (port + 10000). Both lie below
/// the kernel's ephemeral range, where no outgoing connection can take them between this check
/// and redis-server's bind (ports found by binding port 0 lie inside it).
pub(crate) fn free_cluster_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low >= 21024 {
        (ephemeral_low - 20000, ephemeral_low - 10000)
    } else {
        (1024, 55535)
    };
    let bindable = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = low + (random % u64::from(high - low)) as u16;
        if bindable(port) && bindable(port + 10000) {
            return port;
        }
    }
}

/// Start something on a port `pick` chooses, again on another when it could not serve there
/// (at most 5 tries): a port found free can be taken before the server binds it (by a parallel
/// test, or an outgoing connection's ephemeral port). Err lists every try's failure.
pub(crate) fn start_on_free_port<T>(
    pick: fn() -> u16,
    mut start: impl FnMut(u16) -> Result<T, String>,
) -> Result<T, String> {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = pick();
        match start(port) {
            Ok(started) => return Ok(started),
            Err(why) => failures.push(format!("port {port}: {why}")),
        }
    }
    Err(failures.join("\n---\n"))
}

/// Poll `f` until it returns true or `deadline` passes; returns whether it became true.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
