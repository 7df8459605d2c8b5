//! Private redis-server processes, and the test process's shared one.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::netns::Netns;
use crate::ports::{free_port, start_on_free_port, wait_until};
use crate::process::{listens_on, send_signal};

/// A private redis-server process.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    pub(crate) child: Option<std::process::Child>,
    /// Where it listens: loopback, or its namespace's address.
    host: Ipv4Addr,
    netns: Option<Arc<Netns>>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra config directives, e.g. `["rename-command FCALL \"\""]` lines.
    pub fn start_with(extra_config: &[&str]) -> Self {
        Self::start_on(free_port, extra_config)
    }

    /// Start one, or say why it could not (not installed, never served): for a program that
    /// reports errors instead of panicking (`tokenvault dev`).
    pub fn try_start() -> Result<Self, String> {
        Self::try_start_with_net(free_port, &[], None)
    }

    /// Start inside network namespace `ns`, listening on its address (and its loopback), open
    /// to other hosts (no protected mode).
    /// (In this namespace, on loopback, when `ns` is None.)
    pub fn start_in(ns: Option<&Arc<Netns>>, extra_config: &[&str]) -> Self {
        Self::start_with_net(free_port, extra_config, ns.cloned())
    }

    /// Start on a port `pick` chooses (see [`start_on_free_port`]).
    pub(crate) fn start_on(pick: fn() -> u16, extra_config: &[&str]) -> Self {
        Self::start_with_net(pick, extra_config, None)
    }

    fn start_with_net(pick: fn() -> u16, extra_config: &[&str], netns: Option<Arc<Netns>>) -> Self {
        Self::try_start_with_net(pick, extra_config, netns)
            .unwrap_or_else(|why| panic!("redis-server did not start:\n{why}"))
    }

    fn try_start_with_net(
        pick: fn() -> u16,
        extra_config: &[&str],
        netns: Option<Arc<Netns>>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let mut s = Self {
            port: 0,
            dir,
            extra: extra_config.iter().map(|s| s.to_string()).collect(),
            child: None,
            host: netns.as_ref().map_or(Ipv4Addr::LOCALHOST, |ns| ns.addr),
            netns,
        };
        start_on_free_port(pick, |port| {
            s.port = port;
            s.spawn()
        })?;
        Ok(s)
    }

    /// Start redis-server on `self.port`; the reason when it does not serve there.
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("redis.conf");
        let log = self.dir.path().join("redis.log");
        let bind = match &self.netns {
            Some(ns) => format!("bind {} 127.0.0.1\nprotected-mode no", ns.addr),
            None => "bind 127.0.0.1\nprotected-mode yes".to_string(),
        };
        let mut text = format!(
            "port {}\n{bind}\ndir {}\nlogfile {}\nsave \"\"\nappendonly no\nloglevel warning\n",
            self.port,
            self.dir.path().display(),
            log.display()
        );
        for line in &self.extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).map_err(|e| format!("cannot write redis.conf: {e}"))?;
        let mut command = match &self.netns {
            Some(ns) => ns.command("redis-server"),
            None => Command::new("redis-server"),
        };
        let mut child = command
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}); install it: apt-get install -y redis-server"
                )
            })?;
        if let Err(why) = await_serving(&mut child, self.host, self.port) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{why}: {}", tail.join(" | ")));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
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
        redis_cli(self.host, self.port, args)
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
        redis_cli(Ipv4Addr::LOCALHOST, self.port, args)
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
                    await_serving(&mut child, Ipv4Addr::LOCALHOST, port).map(|()| port)
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

/// Run a command with redis-cli against `host`:`port` and return its stdout.
pub(crate) fn redis_cli(host: Ipv4Addr, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", &host.to_string(), "-p"])
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `child`, a redis-server, serves on `port`; the reason when it does not (it exited,
/// most often because the port was taken, or it never answered). A PING answered on the port is
/// not enough: another test's server may hold it.
pub(crate) fn await_serving(
    child: &mut std::process::Child,
    host: Ipv4Addr,
    port: u16,
) -> Result<(), String> {
    let pid = child.id();
    let mut exited = None;
    let serving = wait_until(Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        listens_on(pid, host, port) && redis_ping(host, port)
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

/// A bare-bones RESP PING, so the helper needs no Redis client crate.
pub(crate) fn redis_ping(host: Ipv4Addr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::free_port;
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
        assert!(crate::listens(pid, server.port));
        assert!(redis_ping(Ipv4Addr::LOCALHOST, server.port));
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
}
