//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Redis answers and runs our scripts: this replica can serve leases.
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    s.store.check_ready().await?;
    Ok(Json(json!({"status": "ready"})))
}
