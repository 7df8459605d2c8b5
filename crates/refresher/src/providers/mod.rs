//! Refresh providers: each OAuth2 grant is a small module implementing [`Provider`], which
//! only says what form to send; the exchange itself (client auth, timeouts, error
//! classification) is [`exchange`], written once. `external` jobs are done by login workers
//! through the API and `none` tokens simply expire, so neither has a provider here.

mod oauth2_client_credentials;
mod oauth2_refresh_token;

use std::time::Duration;

use vault_core::crypto::Secret;
use vault_core::model::{ClientAuth, RefreshKind, RefreshPublic};
use vault_core::refresh::RefreshSecrets;

pub use oauth2_client_credentials::ClientCredentials;
pub use oauth2_refresh_token::RefreshTokenGrant;

/// What a refresh produced.
#[derive(Debug)]
pub struct Refreshed {
    pub access_token: Secret,
    pub expires_in_s: Option<u64>,
    /// The server rotated the refresh token.
    pub refresh_token: Option<Secret>,
}

/// Why a refresh failed. Messages never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// Worth retrying: timeouts, connection errors, 5xx, 429.
    Transient(String),
    /// Retrying cannot help: invalid_grant, invalid_client, other 4xx, bad settings.
    Permanent(String),
}

/// One grant type.
pub trait Provider: Sync {
    /// The `grant_type` and grant-specific form fields (client auth is added by [`exchange`]).
    fn form(
        &self,
        settings: &RefreshPublic,
        secrets: &RefreshSecrets,
    ) -> Result<Vec<(&'static str, String)>, RefreshError>;
}

/// The provider for a refresh kind, if the refresher performs that kind itself.
pub fn for_kind(kind: RefreshKind) -> Option<&'static dyn Provider> {
    match kind {
        RefreshKind::Oauth2RefreshToken => Some(&RefreshTokenGrant),
        RefreshKind::Oauth2ClientCredentials => Some(&ClientCredentials),
        RefreshKind::External | RefreshKind::None => None,
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error with its causes: reqwest's own message ("error sending request") drops the reason
/// ("Connection refused") that a `last_error` must show.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let reason = c.to_string();
        if !text.contains(&reason) {
            text = format!("{text}: {reason}");
        }
        cause = c.source();
    }
    text
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `req` with the current span's trace context as its `traceparent` (W3C), so a provider that
/// traces joins the refresh's trace. Nothing else of the span travels.
pub fn with_trace_context(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.headers(vault_wire::trace::headers())
}

/// The host of `url`, for a span (never the path or query, which may carry credentials).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_default()
}

/// POST the grant to the token endpoint (RFC 6749 §3.2) and classify the answer.
#[tracing::instrument(
    name = "idp.token",
    skip_all,
    fields(otel.kind = "client", server.address = %settings.token_url.as_deref().map(host_of).unwrap_or_default())
)]
pub async fn exchange(
    http: &reqwest::Client,
    provider: &dyn Provider,
    settings: &RefreshPublic,
    secrets: &RefreshSecrets,
    timeout: Duration,
) -> Result<Refreshed, RefreshError> {
    let url = settings
        .token_url
        .as_deref()
        .ok_or_else(|| RefreshError::Permanent("no token_url configured".into()))?;
    let mut form = provider.form(settings, secrets)?;
    if let Some(scope) = &settings.scope {
        form.push(("scope", scope.clone()));
    }
    let mut req = http
        .post(url)
        .timeout(timeout)
        .header("accept", "application/json");
    match (
        &settings.client_id,
        &secrets.client_secret,
        settings.client_auth.unwrap_or_default(),
    ) {
        // RFC 6749 §2.3.1: id and secret are each form-urlencoded before they are joined with
        // `:` and base64-encoded (a secret with `+ / = %` or non-ASCII is otherwise refused).
        (Some(id), Some(secret), ClientAuth::Basic) => {
            req = req.basic_auth(form_encoded(id), Some(form_encoded(secret)))
        }
        (Some(id), secret, _) => {
            form.push(("client_id", id.clone()));
            if let Some(s) = secret {
                form.push(("client_secret", s.clone()));
            }
        }
        (None, _, _) => {}
    }
    let res = with_trace_context(req)
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            // reqwest's message names the URL, never the form body.
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            RefreshError::Transient(format!(
                "token endpoint {what}: {}",
                clip(&with_causes(&e.without_url()))
            ))
        })?;
    let status = res.status();
    let body = res
        .bytes()
        .await
        .map_err(|_| RefreshError::Transient("token endpoint answer was cut off".into()))?;
    if status.is_success() {
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            RefreshError::Transient(format!(
                "token endpoint answered {status} with a body that is not JSON"
            ))
        })?;
        let access_token = t.access_token.filter(|a| !a.is_empty()).ok_or_else(|| {
            RefreshError::Permanent("token endpoint answered without access_token".into())
        })?;
        let expires_in_s = t.expires_in.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        return Ok(Refreshed {
            access_token: Secret::new(access_token),
            expires_in_s,
            refresh_token: t.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
        });
    }
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        return Err(RefreshError::Transient(format!(
            "token endpoint answered {status}"
        )));
    }
    let err: ErrorResponse = serde_json::from_slice(&body).unwrap_or(ErrorResponse {
        error: None,
        error_description: None,
    });
    let code = err
        .error
        .map(|e| clip(&e))
        .unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let desc = err
        .error_description
        .map(|d| format!(": {}", clip(&d)))
        .unwrap_or_default();
    Err(RefreshError::Permanent(format!("{code}{desc}")))
}
