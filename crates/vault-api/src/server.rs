//! Start-up, the accept loop, and graceful shutdown.
//!
//! The accept loop is hyper-util's rather than `axum::serve` because it lets us bound how long
//! a client may take to send its request headers (slowloris) and how large they may be, and it
//! gives every request the peer address (for the auth-failure limit).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use vault_core::{Store, VaultError};

use crate::{router, ApiConfig, AppState};

/// Connect, load the scripts (failing closed when Redis refuses them) and build the state.
/// An unreachable Redis is not fatal: the server starts and `/readyz` says 503 until it is back.
pub async fn prepare(cfg: &ApiConfig) -> anyhow::Result<AppState> {
    crate::routes::health::install_metrics();
    let cipher = cfg.master_key.cipher().map_err(anyhow::Error::msg)?;
    let store = Store::connect(&cfg.redis)?;
    match store.load_scripts().await {
        Ok(()) => tracing::info!("lua scripts loaded"),
        Err(e @ VaultError::ScriptsUnavailable(_)) => {
            return Err(anyhow::Error::new(e).context("refusing to start"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "redis not reachable at start-up; /readyz reports 503 until it is")
        }
    }
    let keys = cfg.auth.key_ring()?;
    tracing::info!(signer = keys.signer_kid().unwrap_or("none (verify only)"), kids = ?keys.kids(), "client-token keys loaded");
    let state = AppState::new(store, cipher, keys, cfg.auth.failure_limit);
    crate::auth::Revocations::spawn_listener(state.clone(), cfg.redis.clone());
    Ok(state)
}

/// Limits of the HTTP connection itself.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client gets to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest header block accepted.
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serve until `shutdown` resolves, then give in-flight requests `grace` to finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let app = router(state.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let svc = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests, ending event streams");
    state.events.close();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    Ok(())
}

/// The vault-api binary.
pub async fn run(cfg: ApiConfig) -> anyhow::Result<()> {
    let state = prepare(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "vault-api listening");
    let limits = ConnLimits {
        header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms.max(1)),
        ..Default::default()
    };
    serve(
        state,
        listener,
        vault_core::config::shutdown_signal(),
        Duration::from_secs(cfg.shutdown_grace_s),
        limits,
    )
    .await
}
