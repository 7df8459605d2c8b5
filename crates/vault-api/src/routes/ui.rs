//! The dashboard (`GET /ui`): one self-contained page (`ui/index.html`, built into the binary; no
//! CDN, no build step) that signs in with a client token and reads everything through the
//! `/v1` API with it. `GET /` sends browsers there.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use base64::Engine;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("../../ui/index.html");

/// The page's Content-Security-Policy: its one inline script by hash, nothing from elsewhere.
/// Values are put on the page as text, and even so a script injected somehow would not run.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let script = inline_script(PAGE);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// The text between the page's `<script>` and `</script>`.
fn inline_script(page: &str) -> &str {
    let start = page.find("<script>").map(|i| i + "<script>".len());
    let end = page.rfind("</script>");
    match (start, end) {
        (Some(s), Some(e)) if s <= e => &page[s..e],
        _ => "",
    }
}

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

pub async fn root() -> Redirect {
    Redirect::temporary("/ui")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_names_the_pages_one_script() {
        let script = super::inline_script(super::PAGE);
        assert!(script.contains("async function signIn"), "{script:.80}");
        assert_eq!(super::PAGE.matches("<script").count(), 1);
        assert!(super::CSP.contains("script-src 'sha256-"));
    }
}
