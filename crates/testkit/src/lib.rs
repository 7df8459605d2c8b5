//! Test and bench helpers: real `redis-server` processes on free ports (each in its own temp
//! dir, killed on drop) and child processes of our own binaries. No test depends on a Redis
//! someone else started.
//!
//! # Layout
//! - [`RedisServer`]: a private redis-server; restartable, pausable (SIGSTOP) for outage tests;
//!   also as a replica of another.
//! - [`shared_redis`]: one redis-server per test process, for tests that need nothing of a
//!   server but its keys (each uses a key prefix of its own).
//! - [`Sentinel`]: a Redis Sentinel watching a primary.
//! - [`Haproxy`]: the project's `deploy/haproxy.cfg` in front of replicas on loopback ports.
//! - [`DelayProxy`]: a TCP link with a fixed delay each way that can be cut and healed (regions'
//!   latency and partitions without netem).
//! - [`Child`]: a spawned process killed on drop, with its output captured to a file.
//! - [`Answer`]: an HTTP answer as the tests check it (status, problem+json, JSON body), whether
//!   it came over a socket or from the router in-process.
//! - [`free_port`], [`listens`], [`bin_path`], [`wait_until`].

mod delay_proxy;
pub use delay_proxy::DelayProxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
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
fn free_cluster_port() -> u16 {
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
fn start_on_free_port<T>(
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

/// A private redis-server process.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra config directives, e.g. `["rename-command FCALL \"\""]` lines.
    pub fn start_with(extra_config: &[&str]) -> Self {
        Self::start_on(free_port, extra_config)
    }

    /// Start on a port `pick` chooses (see [`start_on_free_port`]).
    fn start_on(pick: fn() -> u16, extra_config: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self {
            port: 0,
            dir,
            extra: extra_config.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        start_on_free_port(pick, |port| {
            s.port = port;
            s.spawn()
        })
        .unwrap_or_else(|why| panic!("redis-server did not start:\n{why}"));
        s
    }

    /// Start redis-server on `self.port`; the reason when it does not serve there.
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("redis.conf");
        let log = self.dir.path().join("redis.log");
        let mut text = format!(
            "port {}\nbind 127.0.0.1\ndir {}\nlogfile {}\nsave \"\"\nappendonly no\nprotected-mode yes\nloglevel warning\n",
            self.port,
            self.dir.path().display(),
            log.display()
        );
        for line in &self.extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).expect("write redis.conf");
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it: apt-get install -y redis-server"
                )
            });
        if let Err(why) = await_serving(&mut child, self.port) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{why}: {}", tail.join(" | ")));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A replica of `primary`, waited for until its first sync is done.
    pub fn replica_of(primary: &RedisServer) -> Self {
        let r = Self::start_with(&[&format!("replicaof 127.0.0.1 {}", primary.port)]);
        assert!(
            wait_until(Duration::from_secs(20), || r
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")),
            "the replica on port {} did not sync with {}",
            r.port,
            primary.port
        );
        r
    }

    /// Kill the server (SIGKILL) — an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and directory: the data is gone unless the server was
    /// started with persistence (`appendonly yes`), which then reloads it.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn() {
            panic!("redis-server did not restart on port {}: {why}", self.port);
        }
    }

    fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            send_signal(c.id(), name);
        }
    }

    /// Raise the server's CPU priority where the OS allows it (root): a test that bounds how
    /// long a command runs (SLOWLOG) then measures the command, not the time the OS gave the
    /// test's own busy processes instead. Returns whether it could.
    pub fn prioritize(&self) -> bool {
        self.child.as_ref().is_some_and(|c| {
            std::process::Command::new("renice")
                .args(["-n", "-10", "-p", &c.id().to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    /// SIGSTOP: the server accepts connections but never answers (a stalled Redis).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Run a command with redis-cli and return its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// From now on, log every command that takes `us` µs or more (and keep them all), for
    /// [`RedisServer::calls_were_short`].
    pub fn log_calls_over(&self, us: u64) {
        self.cli(&["CONFIG", "SET", "slowlog-log-slower-than", &us.to_string()]);
        self.cli(&["CONFIG", "SET", "slowlog-max-len", "100000"]);
        self.cli(&["SLOWLOG", "RESET"]);
    }

    /// Whether work made of `calls` commands ran in short calls, as SLOWLOG saw it since
    /// [`RedisServer::log_calls_over`]: at most `per_mille` ‰ of them logged, none taking
    /// `ceiling_us` or more. SLOWLOG is wall time, and on a busy machine the scheduler stretches
    /// a few short calls past any target, while work done in one long call (a whole pool's) takes
    /// seconds whatever the load. Err says what was logged.
    pub fn calls_were_short(
        &self,
        calls: u64,
        per_mille: u64,
        ceiling_us: u64,
    ) -> Result<(), String> {
        let (longest, logged) = self.slowlog_longest();
        if logged * 1000 <= calls * per_mille && longest < ceiling_us {
            return Ok(());
        }
        Err(format!(
            "{logged} of {calls} calls logged as slow (at most {per_mille} per mille allowed), the longest {longest} µs (ceiling {ceiling_us}):\n{}",
            self.cli(&["SLOWLOG", "GET", "10"])
        ))
    }

    /// The longest call SLOWLOG kept, in µs (0: none), and how many it kept.
    pub fn slowlog_longest(&self) -> (u64, u64) {
        // An entry is its id, its unix time (10 digits), its duration in µs, then its arguments.
        let log = self.cli(&["SLOWLOG", "GET", "100000"]);
        let lines: Vec<&str> = log.lines().map(str::trim).collect();
        let longest = lines
            .windows(3)
            .filter(|w| {
                w[0].parse::<u64>().is_ok() && w[1].len() == 10 && w[1].parse::<u64>().is_ok()
            })
            .filter_map(|w| w[2].parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let kept = self.cli(&["SLOWLOG", "LEN"]).trim().parse().unwrap_or(0);
        (longest, kept)
    }

    /// One field (`calls`, `usec`, `usec_per_call`) of `command`'s line in
    /// `INFO commandstats` (since the last `CONFIG RESETSTAT`); None before it first ran.
    pub fn command_stat(&self, command: &str, field: &str) -> Option<f64> {
        command_stat(&self.cli(&["INFO", "commandstats"]), command, field)
    }
}

/// One field of `command`'s line (`cmdstat_<command>:calls=..,usec=..,...`) in the text of
/// `INFO commandstats`.
pub fn command_stat(info: &str, command: &str, field: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))?
        .split(',')
        .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))?
        .trim()
        .parse()
        .ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}

/// The test process's shared redis-server (see [`shared_redis`]).
pub struct SharedRedis {
    pub port: u16,
}

impl SharedRedis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

/// One redis-server for the whole test process, started on first use, for tests that need
/// nothing of a server but its keys (each test uses a key prefix of its own): a test binary
/// full of them starts one server instead of one per test.
///
/// It dies with the process, however the process ends (a static's destructor never runs):
/// `setpriv --pdeathsig` starts it with a parent-death signal, from a thread that lives as long
/// as the process, since that signal fires when the spawning *thread* ends.
pub fn shared_redis() -> &'static SharedRedis {
    static SHARED: OnceLock<SharedRedis> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-redis".into())
            .spawn(move || {
                let started = start_on_free_port(free_port, |port| {
                    // setpriv (util-linux) arms the signal, then execs the server.
                    let mut child = Command::new("setpriv")
                        .args(["--pdeathsig", "KILL", "--", "redis-server"])
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                        .arg("--dir")
                        .arg(std::env::temp_dir())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| format!(
                            "cannot start setpriv redis-server ({e}); install them: apt-get install -y util-linux redis-server"
                        ))?;
                    await_serving(&mut child, port).map(|()| port)
                });
                let serving = started.is_ok();
                let _ = tx.send(started);
                if serving {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("spawn the shared-redis thread");
        let port = rx
            .recv()
            .expect("the shared-redis thread answers")
            .unwrap_or_else(|why| panic!("the shared redis-server did not start: {why}"));
        SharedRedis { port }
    })
}

/// Run a command with redis-cli against `port` and return its stdout.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `child`, a redis-server, serves on `port`; the reason when it does not (it exited,
/// most often because the port was taken, or it never answered). A PING answered on the port is
/// not enough: another test's server may hold it.
fn await_serving(child: &mut std::process::Child, port: u16) -> Result<(), String> {
    let pid = child.id();
    let mut exited = None;
    let serving = wait_until(Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        listens(pid, port) && redis_ping(port)
    });
    if let Some(status) = exited {
        return Err(format!("redis-server exited ({status})"));
    }
    if !serving {
        let _ = child.kill();
        let _ = child.wait();
        return Err("redis-server did not answer PING in 30 s".into());
    }
    Ok(())
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: tells a server just
/// started from a stranger that took the port it was given.
pub fn listens(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
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

/// A bare-bones RESP PING, so the helper needs no Redis client crate.
fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG")
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
fn send_signal(pid: u32, name: &str) {
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
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("out.log");
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(program);
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
            await_serving(&mut child, port).map(|()| (port, child))
        })
        .map(|(port, child)| Sentinel {
            port,
            _dir: dir,
            child,
        })
        .unwrap_or_else(|why| panic!("sentinel did not start:\n{why}"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
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
            &Self::binary(),
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

    /// Debian installs haproxy in /usr/sbin, which a non-root PATH may lack.
    fn binary() -> PathBuf {
        let on_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("haproxy"))
                .find(|f| f.is_file())
        });
        on_path.unwrap_or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/haproxy");
            assert!(
                sbin.is_file(),
                "haproxy is not installed: run scripts/setup.sh (apt-get install -y haproxy)"
            );
            sbin
        })
    }
}

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

/// An HTTP answer as the tests check it: status, the headers they look at, JSON body (Null when
/// empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub content_type: String,
    pub retry_after: Option<u64>,
    pub www_authenticate: Option<String>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn new(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Answer {
            status,
            content_type: h("content-type").unwrap_or_default(),
            retry_after: h("retry-after").and_then(|v| v.parse().ok()),
            www_authenticate: h("www-authenticate"),
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The problem's `code` ("" when there is none).
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }

    /// A string field of the body ("" when absent).
    pub fn str(&self, field: &str) -> String {
        self.body
            .get(field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Assert a problem+json answer with this status and code.
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert!(!self.str("detail").is_empty(), "{self:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU16, Ordering};

    /// A port found free can be taken before redis-server binds it; the server must not take a
    /// stranger answering there for itself, and starts on another port.
    #[test]
    fn a_server_whose_port_is_taken_meanwhile_starts_on_another() {
        static TAKEN: AtomicU16 = AtomicU16::new(0);
        fn taken_first() -> u16 {
            match TAKEN.swap(0, Ordering::SeqCst) {
                0 => free_port(),
                port => port,
            }
        }
        let holder = RedisServer::start();
        TAKEN.store(holder.port, Ordering::SeqCst);
        let server = RedisServer::start_on(taken_first, &[]);
        assert_ne!(server.port, holder.port);
        assert_eq!(TAKEN.load(Ordering::SeqCst), 0, "the taken port was tried");
        let pid = server.child.as_ref().unwrap().id();
        assert!(listens(pid, server.port));
        assert!(redis_ping(server.port));
    }

    #[test]
    fn command_stat_reads_one_field_of_one_command() {
        let info = "# Commandstats\r\n\
            cmdstat_fcall_ro:calls=9,usec=90,usec_per_call=10.00\r\n\
            cmdstat_fcall:calls=4,usec=50,usec_per_call=12.50,rejected_calls=0\r\n";
        assert_eq!(command_stat(info, "fcall", "calls"), Some(4.0));
        assert_eq!(command_stat(info, "fcall", "usec"), Some(50.0));
        assert_eq!(command_stat(info, "fcall", "usec_per_call"), Some(12.5));
        assert_eq!(command_stat(info, "evalsha", "calls"), None);
        let server = RedisServer::start();
        assert_eq!(server.command_stat("fcall", "calls"), None);
        server.cli(&["SET", "k", "v"]);
        assert_eq!(server.command_stat("set", "calls"), Some(1.0));
    }

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
