//! Redis Sentinel.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ports::{free_port, start_on_free_port};
use crate::redis::{await_serving, redis_cli};

/// A Redis Sentinel (`redis-server --sentinel`) watching the primary `mymaster`, with short
/// timeouts so a failover takes seconds: down after 1 s, failover timeout 4 s.
pub struct Sentinel {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Sentinel {
    pub const SERVICE: &'static str = "mymaster";

    pub fn start(primary_port: u16, quorum: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Sentinel rewrites its config file, so it lives in the temp dir.
        let conf = dir.path().join("sentinel.conf");
        start_on_free_port(free_port, |port| {
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nprotected-mode no\nloglevel warning\n\
                     sentinel monitor {} 127.0.0.1 {primary_port} {quorum}\n\
                     sentinel down-after-milliseconds {} 1000\n\
                     sentinel failover-timeout {} 4000\n",
                    dir.path().display(),
                    Self::SERVICE,
                    Self::SERVICE,
                    Self::SERVICE
                ),
            )
            .expect("write sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            await_serving(&mut child, Ipv4Addr::LOCALHOST, port).map(|()| (port, child))
        })
        .map(|(port, child)| Sentinel {
            port,
            _dir: dir,
            child,
        })
        .unwrap_or_else(|why| panic!("sentinel did not start:\n{why}"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(Ipv4Addr::LOCALHOST, self.port, args)
    }

    /// The port of the primary this sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", Self::SERVICE])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
