//! Start-up, the accept loop, and graceful shutdown.
//!
//! The accept loop is hyper-util's rather than `axum::serve` because it lets us bound how long
//! a client may take to send its request headers (slowloris) and how large they may be, and it
//! gives every request the peer address (for the auth-failure limit).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use vault_core::Store;

use crate::config::ConnLimits;
use crate::{router, ApiConfig, AppState};

/// Connect, load the scripts (failing closed when Redis refuses them) and build the state.
/// An unreachable Redis is not fatal: the server starts and `/readyz` says 503 until it is back.
pub async fn prepare(cfg: &ApiConfig) -> anyhow::Result<AppState> {
    crate::routes::health::install_metrics();
    let cipher = cfg.master_key.cipher().map_err(anyhow::Error::msg)?;
    let global = vault_core::global::Global::from_args(&cfg.global, &cfg.redis)?;
    let store = Store::connect(&cfg.redis)?.with_global(global);
    match store.prepare().await {
        Ok(()) => {
            tracing::info!(library = %vault_core::scripts::LIBRARY.name, "function library loaded");
            match store.complete_pool_configs().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pools = n, "pool configs completed with their defaults"),
                Err(e) => tracing::warn!(error = %e, "pool configs could not be completed"),
            }
        }
        Err(e) if e.refuses_start() => {
            return Err(anyhow::Error::new(e).context("refusing to start"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "redis not reachable at start-up; /readyz reports 503 until it is")
        }
    }
    let keys = cfg.auth.key_ring()?;
    tracing::info!(signer = keys.signer_kid().unwrap_or("none (verify only)"), kids = ?keys.kids(), "client-token keys loaded");
    let watch = store.global().map(|g| {
        tracing::info!(region = %g.args().region, when_stale = ?g.args().when_stale, "global control plane on");
        vault_core::global::GlobalWatch::spawn(store.clone(), g.args())
    });
    let state = AppState::with_global(store, cipher, keys, cfg.auth.failure_limit, watch);
    crate::auth::Revocations::spawn_listener(state.clone(), cfg.redis.clone());
    crate::auth::spawn_global_keys(state.clone());
    crate::background::spawn_tally_flush(state.store.clone());
    crate::background::spawn_pool_gauges(
        state.store.clone(),
        Duration::from_secs(cfg.pool_metrics_interval_s),
        cfg.pool_metrics_max_pools,
    );
    Ok(state)
}

/// The body-read deadline, handed to the body extractors through each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// Open connections, in total and per client address: admission against the caps.
struct Admission {
    limits: ConnLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place in [`Admission`], given back on drop.
struct Admitted {
    adm: Arc<Admission>,
    ip: IpAddr,
}

/// Which cap a refused connection met.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Total,
    PerAddr,
}

impl Cap {
    /// The `reason` label of `tv_http_connections_refused_total` (named after the setting).
    fn reason(self) -> &'static str {
        match self {
            Cap::Total => "max_connections",
            Cap::PerAddr => "max_connections_per_addr",
        }
    }

    /// What the cap counts, as the refusal's answer says it.
    fn counts(self) -> &'static str {
        match self {
            Cap::Total => "in total",
            Cap::PerAddr => "from one address",
        }
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Cap> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= self.limits.max_connections.max(1) {
            return Err(Cap::Total);
        }
        let from_ip = open.1.entry(ip).or_default();
        if *from_ip >= self.limits.max_connections_per_addr.max(1) {
            return Err(Cap::PerAddr);
        }
        *from_ip += 1;
        open.0 += 1;
        metrics::gauge!("tv_http_connections_open").increment(1.0);
        Ok(Admitted {
            adm: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.adm.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        metrics::gauge!("tv_http_connections_open").decrement(1.0);
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("tv_http_connections_refused_total", "reason" => reason).increment(1);
}

/// Over-cap connections being answered at once; past this many, the rest are closed without an
/// answer, so refusing cannot itself hold the replica's descriptors.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long an over-cap connection gets to send its first request head, and how much of it is
/// read: the refusal reads that one head and nothing more.
const REFUSAL_READ: Duration = Duration::from_secs(2);
const REFUSAL_HEAD_MAX: usize = 16 * 1024;
/// When an over-cap client may try again: connections come free as others close.
const REFUSAL_RETRY_AFTER_S: u64 = 2;

/// A place among the refusals in flight, given back on drop.
struct Refusing(Arc<std::sync::atomic::AtomicUsize>);

impl Refusing {
    fn take(in_flight: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        in_flight
            .fetch_update(SeqCst, SeqCst, |n| {
                (n < MAX_REFUSALS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Refusing(in_flight.clone()))
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Answer a connection over a cap with a short 503 `too_many_connections` (with `Retry-After`)
/// and close it, so the client can tell the cap from a crash. Only an HTTP/1 request head that
/// arrives within [`REFUSAL_READ`] is answered; anything else (silence, HTTP/2, a head over
/// [`REFUSAL_HEAD_MAX`]) is just closed.
async fn refuse(mut stream: tokio::net::TcpStream, cap: Cap) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if head.len() >= REFUSAL_HEAD_MAX {
                return None;
            }
        }
    };
    if !matches!(
        tokio::time::timeout(REFUSAL_READ, read_head).await,
        Ok(Some(()))
    ) {
        return;
    }
    if head.starts_with(b"PRI * HTTP/2.0") {
        return; // HTTP/2 with prior knowledge: an HTTP/1 answer would be garbage to it
    }
    let detail = format!(
        "this replica is at its cap of open connections {}; close idle ones or retry in {REFUSAL_RETRY_AFTER_S} s",
        cap.counts()
    );
    let mut problem = crate::error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        detail,
    );
    problem.retry_after_s = Some(REFUSAL_RETRY_AFTER_S);
    let answer = axum::response::IntoResponse::into_response(problem);
    let mut text = format!("HTTP/1.1 {}\r\n", answer.status());
    for (name, value) in answer.headers() {
        text.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    let Ok(body) = axum::body::to_bytes(answer.into_body(), 64 * 1024).await else {
        return;
    };
    text.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let written = async {
        stream.write_all(text.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    if !matches!(
        tokio::time::timeout(REFUSAL_READ, written).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // Read (and drop) what the client still sends, such as a request body, before closing:
    // closing with unread data resets the connection, which can destroy the answer in flight.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// How a replica stops once told to.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    /// Still serving, `/readyz` failing, so a load balancer moves away first.
    pub drain: Duration,
    /// Then, with the listener closed, what in-flight requests get to finish.
    pub grace: Duration,
}

/// Serve REST on `listener` (and gRPC on `grpc`, when given) until `shutdown` resolves, drain,
/// then give in-flight requests their grace to finish. Both listeners share one accept loop, so
/// gRPC connections meet the same caps, first-byte timeout, idle limit and drain as REST's.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    grpc: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stopping: Stopping,
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let rest_app = router(state.clone());
    let grpc_app = match &grpc {
        Some(_) => Some(crate::grpc::app(state.clone())?),
        None => None,
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        // Streams per connection, and dead peers found by pings.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let body_timeout = BodyReadTimeout(limits.body_read_timeout());
    let first_byte = limits.first_byte_timeout();
    let idle = limits.idle_timeout();
    let admission = Arc::new(Admission {
        limits,
        open: Mutex::new((0, HashMap::new())),
    });
    let refusing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Connections hold a receiver each: told to close gracefully, and counted until they end.
    let (close_all, closing) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut drain_end: Option<tokio::time::Instant> = None;
    let accept_grpc = || async {
        match &grpc {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let (accepted, grpc_conn) = tokio::select! {
            accepted = listener.accept() => (accepted, false),
            accepted = accept_grpc() => (accepted, true),
            _ = &mut shutdown, if drain_end.is_none() => {
                if stopping.drain.is_zero() {
                    break;
                }
                tracing::info!(drain = ?stopping.drain, "draining: /readyz answers 503, still serving");
                state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
                drain_end = Some(tokio::time::Instant::now() + stopping.drain);
                continue;
            }
            _ = tokio::time::sleep_until(drain_end.unwrap_or_else(tokio::time::Instant::now)), if drain_end.is_some() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out as written: Nagle's algorithm would hold a small write (an HTTP/2
        // frame after another stream's) until the client's delayed ACK, up to 40 ms.
        let _ = stream.set_nodelay(true);
        // Over a cap: answered 503 and closed, within a bounded budget of its own, so one
        // client cannot hold the replica's descriptors.
        let admitted = match admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(cap) => {
                refused(cap.reason());
                if let Some(place) = Refusing::take(&refusing) {
                    tokio::spawn(async move {
                        let _place = place;
                        refuse(stream, cap).await;
                    });
                }
                continue;
            }
        };
        let app = match (&grpc_app, grpc_conn) {
            (Some(g), true) => g.clone(),
            _ => rest_app.clone(),
        };
        let local = stream.local_addr().ok();
        let activity = crate::conn::Activity::new();
        let calls = activity.clone();
        let svc = app
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                // The peer as gRPC calls read it (`Request::remote_addr`).
                req.extensions_mut()
                    .insert(tonic::transport::server::TcpConnectInfo {
                        local_addr: local,
                        remote_addr: Some(peer),
                    });
                req.extensions_mut().insert(body_timeout);
                req
            })
            .map_future(move |answer| {
                // The call counts as in progress until its answer's body is sent or dropped.
                let call = calls.begin();
                async move {
                    answer.await.map(|res: axum::response::Response| {
                        res.map(|b| crate::conn::GuardedBody::wrap(b, call))
                    })
                }
            });
        let (builder, stopping_rx) = (builder.clone(), closing.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            // A connection that never sends a byte is closed (hyper's header timeout only
            // starts with the first byte).
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    refused("first_byte_timeout");
                    return;
                }
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
                .into_owned();
            let close = |c: std::pin::Pin<&mut _>| {
                hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(c)
            };
            if let Err(e) = crate::conn::drive(conn, close, activity, idle, stopping_rx).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop((listener, grpc));
    tracing::info!("shutting down: finishing in-flight requests, ending event streams");
    state.events.close();
    drop(closing);
    let _ = close_all.send(true);
    tokio::select! {
        _ = close_all.closed() => {}
        _ = tokio::time::sleep(stopping.grace) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    // The last lease counts (best effort: the rate is an estimate).
    if let Err(e) = state.store.flush_lease_tally().await {
        tracing::debug!(error = %e, "last lease counts not flushed");
    }
    Ok(())
}

/// Streams one HTTP/2 connection may have open at once (gRPC calls, event streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The vault-api binary.
pub async fn run(cfg: ApiConfig) -> anyhow::Result<()> {
    // Every connection is a descriptor: take what the hard limit allows, and say when the
    // connection cap cannot be reached under it.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < cfg.conn.max_connections + 256 => tracing::warn!(
            nofile = n,
            max_connections = cfg.conn.max_connections,
            "the descriptor limit is below TV_MAX_CONNECTIONS: raise `ulimit -n` or lower the cap"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let state = prepare(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, limits = ?cfg.conn, "vault-api listening");
    let grpc = match cfg.grpc_listen_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (TV_GRPC_LISTEN_ADDR)"))?;
            tracing::info!(addr = %l.local_addr()?, "gRPC listening");
            Some(l)
        }
        None => None,
    };
    serve(
        state,
        listener,
        grpc,
        vault_core::config::shutdown_signal(),
        Stopping {
            drain: Duration::from_millis(cfg.shutdown_drain_ms),
            grace: Duration::from_secs(cfg.shutdown_grace_s),
        },
        cfg.conn.clone(),
    )
    .await
}
