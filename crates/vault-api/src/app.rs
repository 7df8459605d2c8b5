//! Shared state and the router.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::trace::TraceLayer;
use vault_core::crypto::Cipher;
use vault_core::Store;

use crate::auth::{authorize, Revocations};
use crate::error::ApiError;
use crate::routes::{audit, clients, health, jobs, leases, pools, tokens};
use vault_core::auth::KeyRing;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

pub struct App {
    pub store: Store,
    /// Decrypts secrets for lease answers and encrypts deposits; the only place plaintext exists.
    pub cipher: Cipher,
    /// Verifies (and mints) client tokens.
    pub keys: KeyRing,
    /// Revoked client-token ids, kept current from Redis.
    pub revocations: Revocations,
    /// Fan-out of events to this replica's SSE clients.
    pub events: crate::events::EventHub,
    /// Failed authentications per client address.
    pub auth_failures: crate::auth::AuthFailures,
    /// Client tokens already verified (signature and claims), by token text.
    pub verified: std::sync::RwLock<std::collections::HashMap<String, vault_core::auth::Principal>>,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, cipher: Cipher, keys: KeyRing, auth_failure_limit: u32) -> Self {
        Self(Arc::new(App {
            store,
            cipher,
            keys,
            revocations: Revocations::default(),
            events: Default::default(),
            auth_failures: crate::auth::AuthFailures::new(auth_failure_limit),
            verified: Default::default(),
        }))
    }
}

/// Count and time every answer by route template (never the raw path: hostile paths must not
/// create new series), method and status.
async fn measure(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::histogram!("tv_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("tv_http_responses_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    res
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/pools", get(pools::list))
        .route(
            "/pools/{pool}",
            put(pools::upsert).get(pools::get).delete(pools::delete),
        )
        .route("/pools/{pool}/status", get(pools::status))
        .route("/pools/{pool}/freeze", post(pools::freeze))
        .route("/pools/{pool}/unfreeze", post(pools::unfreeze))
        .route("/pools/{pool}/rotate", post(pools::rotate))
        .route("/pools/{pool}/rotate/cancel", post(pools::rotate_cancel))
        .route(
            "/pools/{pool}/tokens",
            post(tokens::deposit).get(tokens::list),
        )
        .route(
            "/pools/{pool}/tokens/{id}",
            get(tokens::get).delete(tokens::delete),
        )
        .route("/pools/{pool}/tokens/{id}/revoke", post(tokens::revoke))
        .route(
            "/pools/{pool}/tokens/{id}/deprecate",
            post(tokens::deprecate),
        )
        .route("/pools/{pool}/tokens/{id}/restore", post(tokens::restore))
        .route("/pools/{pool}/tokens/{id}/refresh", post(tokens::refresh))
        .route("/pools/{pool}/leases", post(leases::acquire))
        .route("/pools/{pool}/leases/{lease}/renew", post(leases::renew))
        .route(
            "/pools/{pool}/leases/{lease}/release",
            post(leases::release),
        )
        .route("/pools/{pool}/leases/{lease}/rotate", post(leases::rotate))
        .route("/pools/{pool}/refresh-jobs/claim", post(jobs::claim))
        .route(
            "/pools/{pool}/refresh-jobs/{job}/complete",
            post(jobs::complete),
        )
        .route("/pools/{pool}/refresh-jobs/{job}/fail", post(jobs::fail))
        .route("/clients", post(clients::mint))
        .route("/clients/revoke", post(clients::revoke))
        .route("/introspect", post(clients::introspect))
        .route("/audit", get(audit::read))
        .route("/events", get(crate::events::stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/.well-known/jwks.json", get(clients::jwks))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(measure))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
