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
        let body = whole_numbers_as_integers(&self.0);
        let mut de = serde_json::Deserializer::from_slice(&body);
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

/// Largest whole number a JSON float spells exactly (2^53).
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// The body with every whole number written with a fraction or an exponent (`3.0`, `1e3`)
/// written as an integer. JSON Schema counts `3.0` as an `integer`, which is what the API
/// document says those fields are; serde would refuse it. Strings are left as they are, and
/// so is a number that is not whole or not exact (past 2^53). Works on the bytes, not on a
/// parsed value, so the strict parse that follows still sees every duplicate key.
fn whole_numbers_as_integers(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied, mut in_string) = (0, 0, false);
    while i < body.len() {
        let c = body[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if !(c == b'-' || c.is_ascii_digit()) {
            i += 1;
            continue;
        }
        let start = i;
        while i < body.len() && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            i += 1;
        }
        let token = &body[start..i];
        if !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            continue;
        }
        let whole = std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT);
        if let Some(f) = whole {
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            out.extend_from_slice(&body[copied..start]);
            out.extend_from_slice((f as i64).to_string().as_bytes());
            copied = i;
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            std::borrow::Cow::Owned(out)
        }
        None => std::borrow::Cow::Borrowed(body),
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
    fn whole_numbers_are_integers_and_strings_are_untouched() {
        let norm = |s: &str| {
            String::from_utf8(super::whole_numbers_as_integers(s.as_bytes()).into_owned()).unwrap()
        };
        assert_eq!(
            norm(r#"{"a":1970.0,"b":-2.0e3}"#),
            r#"{"a":1970,"b":-2000}"#
        );
        assert_eq!(
            norm(r#"{"a":1.5,"b":1e300,"c":7}"#),
            r#"{"a":1.5,"b":1e300,"c":7}"#
        );
        assert_eq!(
            norm(r#"{"s":"3.0 \"4.0\"","n":[0.0, -0.0]}"#),
            r#"{"s":"3.0 \"4.0\"","n":[0, 0]}"#
        );
        // Not JSON stays not JSON: the parse that follows refuses it.
        assert_eq!(norm("{1.0.0"), "{1.0.0");
        #[derive(serde::Deserialize, Debug, Default)]
        struct T {
            #[allow(dead_code)]
            n: u64,
        }
        let body = super::JsonBytes(r#"{"n":3.0,"n":4}"#.into());
        assert!(
            body.parse::<T>("body").is_err(),
            "a duplicate key still refused"
        );
        let body = super::JsonBytes(r#"{"n":3.0}"#.into());
        assert_eq!(body.parse::<T>("body").unwrap().n, 3);
    }

    #[test]
    fn error_messages_lose_their_values() {
        let m =
            super::without_values(r#"invalid type: string "sk-live-123", expected u64 at line 1"#);
        assert_eq!(m, r#"invalid type: string "…", expected u64 at line 1"#);
    }
}
