//! Child processes of our own binaries (killed on drop, output captured), and telling which
//! process holds a port.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: tells a server just
/// started from a stranger that took the port it was given.
pub fn listens(pid: u32, port: u16) -> bool {
    listens_on(pid, Ipv4Addr::LOCALHOST, port)
}

/// Whether process `pid` holds the socket listening on `host`:`port`, in its own network
/// namespace (the table read is the process's).
pub fn listens_on(pid: u32, host: Ipv4Addr, port: u16) -> bool {
    // The kernel prints the address as the u32 it stores (network order) in host order.
    let local = format!("{:08X}:{port:04X}", u32::from_le_bytes(host.octets()));
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

/// A system program by name: on PATH, else in /usr/sbin or /sbin, where Debian installs
/// haproxy and ip and a non-root PATH may not look.
pub(crate) fn system_binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|f| f.is_file())
    })
}

/// Path of one of the workspace's binaries (built by `cargo build --workspace --bins`,
/// which `scripts/test.sh` and `cargo test --workspace` do).
pub fn bin_path(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "binary {} not found; build it first: cargo build --workspace --bins",
        p.display()
    );
    p
}

/// Send process `pid` the signal `name` (`"INT"`, `"TERM"`, `"STOP"`, ...) with kill(1).
pub(crate) fn send_signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A child process killed on drop; stdout+stderr go to a file readable with [`Child::output`].
pub struct Child {
    child: Option<std::process::Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Child {
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn_in(None, program, args, env)
    }

    /// Spawn it inside network namespace `netns` (in this one when None).
    pub fn spawn_in(
        netns: Option<&Netns>,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("out.log");
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = match netns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        cmd.args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Self {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait (polling) until it exits; panics with its output past `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "the process did not finish within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send it a signal by name (`"INT"`, `"TERM"`), without waiting for anything.
    pub fn signal(&self, name: &str) {
        if let Some(c) = self.child.as_ref() {
            send_signal(c.id(), name);
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let c = self.child.as_mut()?;
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::RedisServer;
    use std::net::TcpListener;

    #[test]
    fn listens_tells_the_process_holding_a_port_from_others() {
        let mine = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = mine.local_addr().unwrap().port();
        let redis = RedisServer::start();
        let redis_pid = redis.child.as_ref().unwrap().id();
        assert!(listens(std::process::id(), port));
        assert!(!listens(redis_pid, port));
        assert!(listens(redis_pid, redis.port));
        assert!(!listens(std::process::id(), redis.port));
    }
}
