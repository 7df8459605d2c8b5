//! Extractors whose rejections are problem+json like every other error.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The raw request body, read within the body deadline (`TV_BODY_READ_TIMEOUT_MS`, carried in
/// the request's extensions; 10 s where none is set): a trickled body gets 408, not a held
/// connection. Every body is read through here.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let deadline = req
            .extensions()
            .get::<crate::server::BodyReadTimeout>()
            .map(|t| t.0)
            .unwrap_or(std::time::Duration::from_secs(10));
        match tokio::time::timeout(deadline, Bytes::from_request(req, state)).await {
            Ok(bytes) => Ok(RawBody(bytes?)),
            Err(_) => {
                metrics::counter!("tv_http_body_timeouts_total").increment(1);
                Err(ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} ms",
                        deadline.as_millis()
                    ),
                ))
            }
        }
    }
}

/// The bytes of a JSON body, unparsed: empty (or blank) when none was sent; a body with a
/// content type other than JSON is refused with 415.
pub struct JsonBytes(pub Bytes);

impl JsonBytes {
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }

    /// Deserialize, with errors that say where the body is wrong and never what it held. The
    /// body is one JSON value and nothing else: anything but whitespace after it is refused
    /// (`invalid_json`), never silently dropped.
    pub fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(what, e))?;
        de.end().map_err(|e| {
            ApiError::invalid_json(format!(
                "{what}: {} (a body is one JSON value)",
                without_values(&e.to_string())
            ))
        })?;
        Ok(value)
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        let body = JsonBytes(bytes);
        if !body.is_blank() && json_type != Some(true) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies are JSON: send Content-Type: application/json",
            ));
        }
        Ok(body)
    }
}

/// A JSON body. An empty body means `T::default()` (so `POST .../leases` needs no `{}`).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = JsonBytes::from_request(req, state).await?;
        if body.is_blank() {
            return Ok(Body(T::default()));
        }
        body.parse("invalid JSON body").map(Body)
    }
}

/// A body that does not deserialize: where it is wrong (the field path), never what it held.
/// A body that is not JSON at all (a syntax error, cut short) is `invalid_json`; JSON of the
/// wrong shape or with values out of bounds is `invalid_request`.
pub(crate) fn json_error(what: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let detail = format!(
        "{what} at `{}`: {}",
        e.path(),
        without_values(&e.inner().to_string())
    );
    if e.inner().is_syntax() || e.inner().is_eof() {
        ApiError::invalid_json(detail)
    } else {
        ApiError::invalid(detail)
    }
}

/// An error message with every quoted value left out: say where the body is wrong, never
/// what it held (a misplaced secret must not come back in an error).
fn without_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = false;
    for c in msg.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_messages_lose_their_values() {
        let m =
            super::without_values(r#"invalid type: string "sk-live-123", expected u64 at line 1"#);
        assert_eq!(m, r#"invalid type: string "…", expected u64 at line 1"#);
    }
}
