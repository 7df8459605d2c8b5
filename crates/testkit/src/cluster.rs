//! Redis Cluster.

use std::process::Command;
use std::time::Duration;

use crate::ports::{free_cluster_port, wait_until};
use crate::redis::RedisServer;

/// A Redis Cluster of `n` primaries (no replicas) on loopback ports, every slot assigned (one
/// primary holds them all when `n` is 1).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    fn node() -> RedisServer {
        RedisServer::start_on(
            free_cluster_port,
            &[
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                // Generous: a node starved of CPU (tests on one core) must not be taken for failed.
                "cluster-node-timeout 5000",
            ],
        )
    }

    pub fn start(n: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..n).map(|_| Self::node()).collect();
        if n == 1 {
            // `redis-cli --cluster create` wants three primaries; one takes every slot itself.
            nodes[0].cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
        } else {
            let addrs: Vec<String> = nodes
                .iter()
                .map(|s| format!("127.0.0.1:{}", s.port))
                .collect();
            let mut args: Vec<&str> = addrs.iter().map(String::as_str).collect();
            args.push("--cluster-yes");
            Self::cluster_cli("create", &args);
        }
        let c = RedisCluster { nodes };
        assert!(
            wait_until(Duration::from_secs(30), || c
                .nodes
                .iter()
                .all(|s| s.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))),
            "the cluster did not become ok"
        );
        c
    }

    /// Add an empty primary (no slots, no data, no function library), as an operator scaling
    /// out would with `redis-cli --cluster add-node`; returns its index in `nodes`.
    pub fn add_node(&mut self) -> usize {
        let node = Self::node();
        Self::cluster_cli(
            "add-node",
            &[
                &format!("127.0.0.1:{}", node.port),
                &format!("127.0.0.1:{}", self.nodes[0].port),
            ],
        );
        self.nodes.push(node);
        // Every node knows every other, and the newcomer has learnt the slot map (until then it
        // answers CLUSTERDOWN, also to the MIGRATE of a reshard).
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        assert!(
            wait_until(Duration::from_secs(60), || self.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&known)
            })),
            "the cluster did not take the new node in"
        );
        self.nodes.len() - 1
    }

    /// `redis-cli --cluster <command> <args>`, which must succeed; its output.
    pub fn cluster_cli(command: &str, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--cluster", command])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster {command} does not run: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "redis-cli --cluster {command} failed:\n{text}"
        );
        text
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }
}
