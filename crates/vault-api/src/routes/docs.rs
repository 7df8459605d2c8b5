//! `GET /docs`: the API reference, Swagger UI over `/openapi.json`, its assets bundled in the
//! binary (no CDN). Public like the document it shows: it holds no data, and its "Authorize"
//! button sends a client token only to this vault.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config;

use crate::error::ApiError;

static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::from("/openapi.json")
            // Lists every operation with its answers, not just the tags.
            .doc_expansion("list")
            .try_it_out_enabled(false),
    )
});

/// `/docs` → `/docs/` (the page's assets are relative to it).
pub async fn root() -> Redirect {
    Redirect::permanent("/docs/")
}

/// The page (`/docs/`) and its assets (`/docs/<file>`).
pub async fn page() -> Response {
    file("")
}

pub async fn asset(Path(tail): Path<String>) -> Response {
    file(&tail)
}

fn file(tail: &str) -> Response {
    match utoipa_swagger_ui::serve(tail, CONFIG.clone()) {
        Ok(Some(f)) => (
            [
                (header::CONTENT_TYPE, f.content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                (header::REFERRER_POLICY, "no-referrer".to_string()),
                (header::X_FRAME_OPTIONS, "DENY".to_string()),
            ],
            f.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => ApiError::not_found().into_response(),
        Err(e) => ApiError::from(vault_core::VaultError::Internal(format!(
            "the reference page cannot be served: {e}"
        )))
        .into_response(),
    }
}
