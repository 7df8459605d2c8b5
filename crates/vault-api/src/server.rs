//! Start-up and graceful shutdown.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use vault_core::{Store, VaultError};

use crate::{router, ApiConfig, AppState};

/// Connect, load the scripts (failing closed when Redis refuses them) and build the state.
/// An unreachable Redis is not fatal: the server starts and `/readyz` says 503 until it is back.
pub async fn prepare(cfg: &ApiConfig) -> anyhow::Result<AppState> {
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
    let state = AppState::new(store, cipher, keys);
    crate::auth::Revocations::spawn_listener(state.clone(), cfg.redis.redis_url.clone());
    Ok(state)
}

/// Serve until `shutdown` resolves, then give in-flight requests `grace` to finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => return r.context("server failed"),
        _ = rx => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    match tokio::time::timeout(grace, server).await {
        Ok(r) => r.context("server failed"),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

/// The vault-api binary.
pub async fn run(cfg: ApiConfig) -> anyhow::Result<()> {
    let state = prepare(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "vault-api listening");
    serve(
        state,
        listener,
        vault_core::config::shutdown_signal(),
        Duration::from_secs(cfg.shutdown_grace_s),
    )
    .await
}
