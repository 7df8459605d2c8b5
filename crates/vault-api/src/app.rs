//! Shared state and the router.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::crypto::Cipher;
use vault_core::Store;

use crate::auth::{authorize, Revocations};
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::routes::{audit, clients, credentials, health, jobs, leases, pipelines, pools, tokens};
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
    /// Set at SIGTERM when a drain period is configured: `/readyz` answers 503 so the load
    /// balancer stops sending new requests while this replica still serves them.
    pub draining: std::sync::atomic::AtomicBool,
    /// This region's freshness with the global plane, when configured.
    pub global: Option<Arc<vault_core::global::GlobalWatch>>,
    /// Verify-only keys other regions published to the global plane (see
    /// `auth::spawn_global_keys`); tried when a token's `kid` is not one of ours.
    pub other_regions_keys: std::sync::RwLock<Option<Arc<KeyRing>>>,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, cipher: Cipher, keys: KeyRing, auth_failure_limit: u32) -> Self {
        Self::with_global(store, cipher, keys, auth_failure_limit, None)
    }

    pub fn with_global(
        store: Store,
        cipher: Cipher,
        keys: KeyRing,
        auth_failure_limit: u32,
        global: Option<Arc<vault_core::global::GlobalWatch>>,
    ) -> Self {
        Self(Arc::new(App {
            store,
            cipher,
            keys,
            revocations: Revocations::default(),
            events: Default::default(),
            auth_failures: crate::auth::AuthFailures::new(auth_failure_limit),
            verified: Default::default(),
            draining: Default::default(),
            global,
            other_regions_keys: Default::default(),
        }))
    }
}

/// `tv_http_requests_in_flight`: up while a request is handled, down when it is done or
/// dropped (a client that hangs up cancels the handler).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!("tv_http_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("tv_http_requests_in_flight").decrement(1.0);
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
    let _in_flight = InFlight::enter();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::histogram!("tv_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("tv_http_responses_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    res
}

/// The documented routes: `/v1` (behind client-token authorization) and the public ones.
fn documented_routes(state: Option<AppState>) -> OpenApiRouter<AppState> {
    let mut v1 = OpenApiRouter::new()
        .routes(routes!(pools::list))
        .routes(routes!(pools::upsert, pools::get, pools::delete))
        .routes(routes!(pools::status))
        .routes(routes!(pools::rotations))
        .routes(routes!(pools::freeze))
        .routes(routes!(pools::unfreeze))
        .routes(routes!(pools::rotate))
        .routes(routes!(pools::rotate_cancel))
        .routes(routes!(tokens::deposit, tokens::list))
        .routes(routes!(tokens::get, tokens::delete))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::deprecate))
        .routes(routes!(tokens::restore))
        .routes(routes!(tokens::refresh))
        .routes(routes!(leases::acquire))
        .routes(routes!(leases::renew))
        .routes(routes!(leases::release))
        .routes(routes!(leases::rotate))
        .routes(routes!(pipelines::put, pipelines::get, pipelines::delete))
        .routes(routes!(pipelines::list))
        .routes(routes!(jobs::claim))
        .routes(routes!(jobs::complete))
        .routes(routes!(jobs::fail))
        .routes(routes!(clients::mint))
        .routes(routes!(clients::revoke))
        .routes(routes!(credentials::revoke_credential))
        .routes(routes!(clients::introspect))
        .routes(routes!(audit::read))
        .routes(routes!(crate::events::stream));
    if let Some(state) = state {
        v1 = v1.route_layer(axum::middleware::from_fn_with_state(state, authorize));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/v1", v1)
        .routes(routes!(clients::jwks))
        .routes(routes!(health::healthz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document served at `/openapi.json`, from the same handlers the router serves.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut api = documented_routes(None).into_openapi();
    crate::openapi::finish(&mut api);
    api
}

/// The whole HTTP surface, and its OpenAPI document built from the same handlers.
pub fn router(state: AppState) -> Router {
    let (router, mut api) = documented_routes(Some(state.clone())).split_for_parts();
    crate::openapi::finish(&mut api);
    // Rendered once: the document never changes while the process runs.
    let doc = axum::body::Bytes::from(serde_json::to_vec(&api).unwrap_or_default());
    router
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) }),
        )
        .route("/ui", get(crate::routes::ui::page))
        .route("/docs", get(crate::routes::docs::root))
        .route("/docs/", get(crate::routes::docs::page))
        .route("/docs/{*file}", get(crate::routes::docs::asset))
        .route("/", get(crate::routes::ui::root))
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
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::trace::request_span)
                .on_response(crate::trace::record_status)
                // A 5xx is an answer (`pool_exhausted`, `redis_unavailable`), counted in
                // /metrics and problem codes; not an error line each.
                .on_failure(()),
        )
        .with_state(state)
}
