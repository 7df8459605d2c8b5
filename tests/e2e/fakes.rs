//! Small real HTTP servers the tests start: an OAuth2 token endpoint and a target API in one
//! axum app. It also serves as a plain HTTP proxy: requests sent through it arrive in absolute
//! form (`POST http://idp.invalid/token`), which the log records, so a test can prove a call
//! left through the token's bound proxy.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

/// How the token endpoint answers.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// 200 with a new access token (and a rotated refresh token when `rotate`).
    Ok { rotate: bool, expires_in: u64 },
    /// 400 invalid_grant.
    InvalidGrant,
    /// 500 for the first `n` calls, then like `Ok`.
    FailFirst(u64),
    /// The first call answers only after `Duration`, later ones at once.
    SlowFirst(Duration),
    /// The first call waits until `release()` is called.
    HoldFirst,
}

/// One request the token endpoint received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub form: HashMap<String, String>,
    pub authorization: Option<String>,
    /// The W3C trace context the caller sent.
    pub traceparent: Option<String>,
    /// Absolute-form request target: the call came through a proxy.
    pub via_proxy: bool,
    pub at_ms: i64,
}

pub(crate) struct FakeState {
    pub mode: Mutex<Mode>,
    pub calls: Mutex<Vec<Call>>,
    /// Access tokens issued by answers that were built (the last one is what the vault must hold).
    pub issued: Mutex<Vec<String>>,
    pub seq: AtomicU64,
    hold: tokio::sync::Notify,
    /// Target API: bearer tokens it refuses with 401, and with 429 (`Retry-After: 7`).
    pub burned: Mutex<HashSet<String>>,
    pub limited: Mutex<HashSet<String>>,
    pub target_calls: Mutex<Vec<(String, bool)>>,
    /// Token requests being answered right now, and the most ever at once.
    inflight: AtomicU64,
    pub max_inflight: AtomicU64,
}

/// Counts a token request as in flight while alive.
struct InFlight<'a>(&'a FakeState);

impl<'a> InFlight<'a> {
    fn new(s: &'a FakeState) -> Self {
        let now = s.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_inflight.fetch_max(now, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl Fake {
    pub(crate) async fn start(mode: Mode) -> Fake {
        let state = Arc::new(FakeState {
            mode: Mutex::new(mode),
            calls: Mutex::new(vec![]),
            issued: Mutex::new(vec![]),
            seq: AtomicU64::new(0),
            hold: tokio::sync::Notify::new(),
            burned: Mutex::new(HashSet::new()),
            limited: Mutex::new(HashSet::new()),
            target_calls: Mutex::new(vec![]),
            inflight: AtomicU64::new(0),
            max_inflight: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/api", get(target))
            .route("/probe", get(target))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, state }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub(crate) fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    pub(crate) fn release(&self) {
        self.state.hold.notify_waiters();
    }

    pub(crate) fn burn(&self, secret: &str) {
        self.state.burned.lock().unwrap().insert(secret.to_string());
    }
}

fn issue(
    state: &FakeState,
    form: &HashMap<String, String>,
    rotate: bool,
    expires_in: u64,
) -> Response {
    let n = state.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let who = form
        .get("refresh_token")
        .cloned()
        .unwrap_or_else(|| "cc".into());
    let access = format!("at-{who}-{n}");
    state.issued.lock().unwrap().push(access.clone());
    let mut body =
        json!({"access_token": access, "token_type": "Bearer", "expires_in": expires_in});
    if rotate {
        body["refresh_token"] = json!(format!("{who}-r{n}"));
    }
    Json(body).into_response()
}

async fn token(
    State(state): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let _inflight = InFlight::new(&state);
    // A little work per call, so concurrent refreshes overlap as they would against a real IdP.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let first = {
        let mut calls = state.calls.lock().unwrap();
        calls.push(Call {
            form: form.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            traceparent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            via_proxy: uri.scheme().is_some(),
            at_ms: vault_core::time::now_ms(),
        });
        calls.len() == 1
    };
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        Mode::Ok { rotate, expires_in } => issue(&state, &form, rotate, expires_in),
        Mode::InvalidGrant => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "refresh token revoked"})),
        )
            .into_response(),
        Mode::FailFirst(n) => {
            if (state.calls.lock().unwrap().len() as u64) <= n {
                (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
            } else {
                issue(&state, &form, false, 3600)
            }
        }
        Mode::SlowFirst(d) => {
            if first {
                tokio::time::sleep(d).await;
            }
            issue(&state, &form, false, 3600)
        }
        Mode::HoldFirst => {
            if first {
                state.hold.notified().await;
            }
            issue(&state, &form, false, 3600)
        }
    }
}

/// The target API: 401 for a burned token, 429 for a limited one, 200 otherwise; every answer
/// says 41 calls remain until an hour from now (`X-RateLimit-*`).
async fn target(State(state): State<Arc<FakeState>>, uri: Uri, headers: HeaderMap) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    state
        .target_calls
        .lock()
        .unwrap()
        .push((bearer.clone(), uri.scheme().is_some()));
    let reset = (vault_core::time::now_ms() / 1000 + 3600).to_string();
    let limits = [
        ("x-ratelimit-remaining", "41".to_string()),
        ("x-ratelimit-reset", reset),
    ];
    if bearer.is_empty() || state.burned.lock().unwrap().contains(&bearer) {
        (StatusCode::UNAUTHORIZED, limits).into_response()
    } else if state.limited.lock().unwrap().contains(&bearer) {
        let mut res = (StatusCode::TOO_MANY_REQUESTS, limits).into_response();
        res.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("7"));
        res
    } else {
        (StatusCode::OK, limits).into_response()
    }
}
