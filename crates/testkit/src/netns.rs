//! Network namespaces: hosts apart on one machine. Each [`Netns`] is a namespace of its own
//! (loopback up) joined to the test's namespace by one veth pair on a /30 of its own, and
//! nothing else: no forwarding, no route beyond that link. A process inside reaches its own
//! addresses and the test namespace's end of the link, where the test puts whatever it wants
//! the namespace to reach (a [`crate::DelayProxy`] standing for a long-distance link); the test
//! reaches the namespace's address. Two namespaces cannot reach each other except through the
//! test's namespace.
//!
//! Making one needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`;
//! [`Netns::create`] says why not where it cannot.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::process::system_binary;

/// Subnets are /30s in 10.213.0.0/16: 16,384 of them.
const SUBNETS: usize = 16_384;

/// A network namespace joined to the test's by a veth pair; deleted (with its link) on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// The namespace's address on its link (its processes listen here; the test connects here).
    pub addr: Ipv4Addr,
    /// The test namespace's end of the link: what a process inside can reach of the outside.
    pub host_addr: Ipv4Addr,
    host_if: String,
    ip: PathBuf,
}

impl Netns {
    /// A new namespace, or why this machine or user cannot make one.
    pub fn create() -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let ip = system_binary("ip").ok_or("iproute2's `ip` is not installed")?;
        let first = std::process::id() as usize * 7919;
        for _ in 0..64 {
            let n = (first + NEXT.fetch_add(1, Ordering::Relaxed)) % SUBNETS;
            let (host_if, ns_if) = (format!("tvh{n}"), format!("tvn{n}"));
            // Creating the host end claims subnet n: it fails when another process holds it.
            match run(
                &ip,
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
                ],
            ) {
                Err(why) if why.contains("File exists") => continue,
                Err(why) => return Err(why),
                Ok(()) => {}
            }
            let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + (n as u32) * 4;
            let ns = Netns {
                name: format!("tv{n}"),
                addr: Ipv4Addr::from(base + 2),
                host_addr: Ipv4Addr::from(base + 1),
                host_if,
                ip,
            };
            // From here on, dropping `ns` removes whatever was made.
            let (name, host, inner) = (
                ns.name.as_str(),
                format!("{}/30", ns.host_addr),
                format!("{}/30", ns.addr),
            );
            let steps: [&[&str]; 7] = [
                &["netns", "add", name],
                &["link", "set", &ns_if, "netns", name],
                &["addr", "add", &host, "dev", &ns.host_if],
                &["link", "set", &ns.host_if, "up"],
                &["-n", name, "addr", "add", &inner, "dev", &ns_if],
                &["-n", name, "link", "set", &ns_if, "up"],
                &["-n", name, "link", "set", "lo", "up"],
            ];
            for step in steps {
                run(&ns.ip, step)?;
            }
            return Ok(ns);
        }
        Err("no free subnet in 10.213.0.0/16 after 64 tries".into())
    }

    /// A command that runs `program` inside this namespace (`ip netns exec` execs it: the
    /// process id is the program's own).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = run(&self.ip, &["link", "del", &self.host_if]);
        let _ = run(&self.ip, &["netns", "del", &self.name]);
    }
}

fn run(ip: &PathBuf, args: &[&str]) -> Result<(), String> {
    let out = Command::new(ip)
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::RedisServer;
    use std::sync::Arc;

    /// Two namespaces: each reaches its own server and the test's end of its link, never the
    /// other's server; the test reaches both.
    #[test]
    fn namespaces_reach_the_test_and_not_each_other() {
        let (a, b) = match (Netns::create(), Netns::create()) {
            (Ok(a), Ok(b)) => (Arc::new(a), Arc::new(b)),
            (Err(why), _) | (_, Err(why)) => {
                // Not root: the tests that use namespaces run on loopback and say so.
                eprintln!("network namespaces unavailable here: {why}");
                return;
            }
        };
        assert_ne!(a.addr, b.addr);
        let in_a = RedisServer::start_in(Some(&a), &[]);
        let in_b = RedisServer::start_in(Some(&b), &[]);
        assert!(in_a.cli(&["PING"]).contains("PONG"));
        assert!(in_b.cli(&["PING"]).contains("PONG"));
        let ping_from_a = |host: Ipv4Addr, port: u16| {
            let out = a
                .command("redis-cli")
                .args(["-h", &host.to_string(), "-p", &port.to_string(), "PING"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("PONG")
        };
        assert!(ping_from_a(a.addr, in_a.port));
        assert!(!ping_from_a(b.addr, in_b.port), "a reached b directly");
        // Through the test's namespace, where a proxy joins them.
        let link = crate::DelayProxy::start_at(
            a.host_addr.into(),
            &in_b.addr(),
            std::time::Duration::ZERO,
        );
        assert!(ping_from_a(a.host_addr, link.port));
        let name = a.name.clone();
        drop((in_a, link));
        drop(a);
        let list = Command::new(system_binary("ip").unwrap())
            .args(["netns", "list"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout)
            .split_whitespace()
            .any(|n| n == name));
    }
}
