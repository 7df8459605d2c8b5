//! haproxy in front of vault-api replicas, with the project's own config.

use std::time::Duration;

use crate::ports::{free_port, start_on_free_port, wait_until};
use crate::process::{listens, system_binary, Child};

/// haproxy with the project's `deploy/haproxy.cfg`, its addresses adapted to loopback ports (and
/// its global connection cap to a test machine's descriptor limit), in front of 1 to 3 replicas.
pub struct Haproxy {
    pub port: u16,
    /// The gRPC frontend's port.
    pub grpc_port: u16,
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(replica_ports: &[u16]) -> Self {
        Self::start_with_grpc(replica_ports, &[])
    }

    /// With the gRPC frontend balancing `grpc_ports` (the same replicas' gRPC listeners, in
    /// the order of `replica_ports`).
    pub fn start_with_grpc(replica_ports: &[u16], grpc_ports: &[u16]) -> Self {
        assert!(
            (1..=3).contains(&replica_ports.len()),
            "deploy/haproxy.cfg names three replicas"
        );
        start_on_free_port(free_port, |port| {
            Self::start_on(port, free_port(), replica_ports, grpc_ports)
        })
        .unwrap_or_else(|why| panic!("haproxy did not start:\n{why}"))
    }

    fn start_on(
        port: u16,
        grpc_port: u16,
        replica_ports: &[u16],
        grpc_ports: &[u16],
    ) -> Result<Self, String> {
        let mut cfg = include_str!("../../../deploy/haproxy.cfg")
            .replace("bind *:8080", &format!("bind 127.0.0.1:{port}"))
            .replace("bind *:8081", &format!("bind 127.0.0.1:{grpc_port}"))
            .replace("  maxconn 10000\n", "  maxconn 2000\n");
        for n in 1..=3 {
            let grpc = format!("vault-api-{n}:8081 proto h2 check port 8080");
            cfg = match (replica_ports.get(n - 1), grpc_ports.get(n - 1)) {
                (Some(p), Some(g)) => {
                    cfg.replace(&grpc, &format!("127.0.0.1:{g} proto h2 check port {p}"))
                }
                _ => cfg
                    .lines()
                    .filter(|l| !l.contains(&grpc))
                    .map(|l| format!("{l}\n"))
                    .collect(),
            };
            let name = format!("vault-api-{n}:8080");
            cfg = match replica_ports.get(n - 1) {
                Some(p) => cfg.replace(&name, &format!("127.0.0.1:{p}")),
                None => cfg
                    .lines()
                    .filter(|l| !l.contains(&name))
                    .map(|l| format!("{l}\n"))
                    .collect(),
            };
        }
        assert!(
            !cfg.contains("vault-api-"),
            "an address was not adapted:\n{cfg}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let mut child = Child::spawn(
            &system_binary("haproxy").expect(
                "haproxy is not installed: run scripts/setup.sh (apt-get install -y haproxy)",
            ),
            &["-db", "-f", path.to_str().expect("utf-8 path")],
            &[],
        );
        let mut exited = false;
        let listening = wait_until(Duration::from_secs(10), || {
            exited = child.try_wait().is_some();
            exited || listens(child.id(), port)
        });
        if exited || !listening {
            return Err(child.output());
        }
        Ok(Haproxy {
            port,
            grpc_port,
            child,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
