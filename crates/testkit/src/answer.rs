//! HTTP answers as the tests check them.

/// An HTTP answer as the tests check it: status, the headers they look at, JSON body (Null when
/// empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub content_type: String,
    pub retry_after: Option<u64>,
    pub www_authenticate: Option<String>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn new(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Answer {
            status,
            content_type: h("content-type").unwrap_or_default(),
            retry_after: h("retry-after").and_then(|v| v.parse().ok()),
            www_authenticate: h("www-authenticate"),
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The problem's `code` ("" when there is none).
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }

    /// A string field of the body ("" when absent).
    pub fn str(&self, field: &str) -> String {
        self.body
            .get(field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Assert a problem+json answer with this status and code.
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert!(!self.str("detail").is_empty(), "{self:?}");
    }
}
