//! A TCP proxy that delays every byte by a fixed time each way, and can cut its link: the
//! latency and partitions between regions, on one machine whose kernel has no netem.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards connections on `port` (of 127.0.0.1, or the address it was started at) to an upstream address, each chunk delivered
/// `delay` after it was read, in order, in both directions. [`DelayProxy::cut`] drops every
/// connection and refuses new ones until [`DelayProxy::heal`].
pub struct DelayProxy {
    pub port: u16,
    ip: IpAddr,
    link: Arc<Link>,
}

#[derive(Default)]
struct Link {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every open connection, to shut when the link is cut.
    open: Mutex<Vec<TcpStream>>,
}

impl Link {
    fn drop_all(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl DelayProxy {
    /// Start forwarding to `upstream` (`host:port`) with `delay` each way.
    pub fn start(upstream: &str, delay: Duration) -> Self {
        Self::start_at(Ipv4Addr::LOCALHOST.into(), upstream, delay)
    }

    /// Listen on address `ip` (e.g. a [`crate::Netns`]'s `host_addr`, for processes inside it).
    pub fn start_at(ip: IpAddr, upstream: &str, delay: Duration) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("a port for the proxy");
        let port = listener.local_addr().unwrap().port();
        let link = Arc::new(Link::default());
        let (l, upstream) = (link.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if l.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if l.cut.load(Ordering::SeqCst) {
                    continue; // dropped: the link is down
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = l.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    delay,
                );
                pump(server, client, delay);
            }
        });
        DelayProxy { port, ip, link }
    }

    /// `<ip>:<port>`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Take the link down: every connection through it is closed, new ones are refused.
    pub fn cut(&self) {
        self.link.cut.store(true, Ordering::SeqCst);
        self.link.drop_all();
    }

    /// Bring the link back up.
    pub fn heal(&self) {
        self.link.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.link.stopped.store(true, Ordering::SeqCst);
        self.link.drop_all();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to`, each chunk written `delay` after it was read (a reader thread stamps
/// chunks, a writer thread waits for each one's time).
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return, // the channel closes: the writer ends the other side
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: a round trip takes at least two delays, bytes arrive in
    /// order, and a cut link closes the connection and refuses new ones until healed.
    #[test]
    fn delays_each_way_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let delay = Duration::from_millis(50);
        let proxy = DelayProxy::start(&echo_addr, delay);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let sent = Instant::now();
        c.write_all(b"one").unwrap();
        c.write_all(b"two").unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 16];
        while got.len() < 6 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"onetwo");
        assert!(
            sent.elapsed() >= 2 * delay,
            "a round trip took {:?}",
            sent.elapsed()
        );

        // Closed by the other side (not a read timeout).
        let closed = |s: &mut TcpStream| {
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        };
        proxy.cut();
        assert!(closed(&mut c), "the open connection survived the cut");
        let mut d = TcpStream::connect(proxy.addr()).unwrap();
        d.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = d.write_all(b"x");
        assert!(closed(&mut d), "a cut link passed a new connection");

        proxy.heal();
        let mut e = TcpStream::connect(proxy.addr()).unwrap();
        e.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        e.write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        e.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
    }
}
