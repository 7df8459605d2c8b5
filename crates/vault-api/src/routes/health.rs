//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use crate::error::{ApiError, Problem};
use crate::AppState;

static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls are no-ops).
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "tv_revocation_propagation_seconds".into(),
                ),
                &[
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .ok()?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "tv_http_request_duration_seconds".into(),
                ),
                &[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .ok()?;
        builder.install_recorder().ok()
    });
}

/// Prometheus text format. Counts and timings only: nothing here carries a secret.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
    ),
    security(())
)]
pub async fn metrics(State(s): State<AppState>) -> String {
    // Seconds since a janitor last finished a sweep (absent when none was seen for long). A
    // stalled Redis must not stall the scrape: it gets a quarter second.
    let beat = tokio::time::timeout(Duration::from_millis(250), s.store.janitor_beat()).await;
    if let Ok(Ok(Some(beat))) = beat {
        let age_ms = (vault_core::time::now_ms() - beat.last_sweep_ms).max(0);
        metrics::gauge!("tv_janitor_last_sweep_age_seconds").set(age_ms as f64 / 1000.0);
    }
    PROMETHEUS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "the process is up", body = crate::answers::Health)),
    security(())
)]
pub async fn healthz() -> Json<crate::answers::Health> {
    Json(crate::answers::Health {
        status: "ok".into(),
        global: None,
    })
}

/// Redis answers and runs our scripts: this replica can serve leases.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Redis answers, the function library is loaded, revocations are subscribed", body = crate::answers::Health),
        (status = 503, description = "`redis_unavailable`, `redis_busy`, `scripts_unavailable`, `not_subscribed`, `draining`", body = Problem),
    ),
    security(())
)]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<crate::answers::Health>, ApiError> {
    if s.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the replica is shutting down; it serves what it is sent until the drain period ends",
        ));
    }
    s.store.check_ready().await?;
    if !s
        .events
        .subscribed
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_subscribed",
            "the replica is not yet subscribed to revocations and events",
        ));
    }
    Ok(Json(crate::answers::Health {
        status: "ready".into(),
        global: s.global.as_ref().map(|g| g.report()),
    }))
}
