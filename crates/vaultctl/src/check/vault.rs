//! The checker's HTTP side: every request to the vaults, timed and logged with its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::transport::{GrpcWorkers, WorkerCall};
use super::verify::{Op, Rec};

/// The vault URLs, one admin token, and the run's clock.
pub(crate) struct Vault {
    http: reqwest::Client,
    urls: Vec<String>,
    token: String,
    /// Workers' calls go over gRPC when set (the operator and the final read stay on REST).
    grpc: Option<GrpcWorkers>,
    next: AtomicUsize,
    t0: Instant,
    log: Mutex<Vec<Rec>>,
    /// Worker requests whose answer was lost and that were sent once more.
    pub(crate) retried: std::sync::atomic::AtomicU64,
    /// Of those, the ones whose second attempt was lost too.
    pub(crate) gave_up: std::sync::atomic::AtomicU64,
}

/// One answer (or none).
pub(crate) struct Answer {
    pub(crate) sent: u64,
    pub(crate) acked: Option<u64>,
    pub(crate) status: u16,
    pub(crate) code: String,
    /// The transport error when there was no answer.
    pub(crate) error: String,
    pub(crate) body: Value,
}

impl Answer {
    /// The body read as the type `T` the vault writes; None when it is not one.
    pub(crate) fn read<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        read(&self.body)
    }

    pub(super) fn rec(&self, op: Op) -> Rec {
        Rec {
            sent: self.sent,
            acked: self.acked,
            status: self.status,
            code: self.code.clone(),
            error: self.error.clone(),
            op,
        }
    }
    pub(super) fn lost(&self) -> bool {
        super::verify::answer_lost(self.status, &self.code)
    }
}

impl Vault {
    pub(crate) fn new(
        urls: Vec<String>,
        token: String,
        timeout: Duration,
        grpc: Option<GrpcWorkers>,
    ) -> anyhow::Result<Self> {
        Ok(Vault {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            token,
            grpc,
            next: AtomicUsize::new(0),
            t0: Instant::now(),
            log: Mutex::new(vec![]),
            retried: Default::default(),
            gave_up: Default::default(),
        })
    }

    pub(super) fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Send one request to the next URL (round robin), with `token` or the admin token.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        token: Option<&str>,
    ) -> Answer {
        let url = &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()];
        self.call_at(url, method, path, body, idempotency_key, token)
            .await
    }

    pub(super) async fn call_at(
        &self,
        url: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        token: Option<&str>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{url}{path}"))
            .bearer_auth(token.unwrap_or(&self.token));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let sent = self.now();
        let (status, body, error) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(b) => (
                        status,
                        serde_json::from_slice(&b).unwrap_or(Value::Null),
                        String::new(),
                    ),
                    // The answer was cut off: as good as no answer.
                    Err(e) => (0, Value::Null, transport_error(&e)),
                }
            }
            Err(e) => (0, Value::Null, transport_error(&e)),
        };
        self.answer(sent, status, body, error)
    }

    /// An answer received now to a request sent at `sent`.
    pub(super) fn answer(&self, sent: u64, status: u16, body: Value, error: String) -> Answer {
        let acked = (status != 0).then(|| self.now());
        let code = read::<vault_wire::Problem>(&body)
            .map(|p| p.code)
            .unwrap_or_default();
        Answer {
            sent,
            acked,
            status,
            code,
            error,
            body,
        }
    }

    /// A worker's call, over the run's transport.
    pub(super) async fn work(
        &self,
        call: &WorkerCall<'_>,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let Some(grpc) = &self.grpc else {
            return self
                .call(
                    Method::POST,
                    &call.path(),
                    Some(body),
                    idempotency_key,
                    None,
                )
                .await;
        };
        let sent = self.now();
        let (status, body, error) = grpc.call(call, body, idempotency_key, &self.token).await;
        self.answer(sent, status, body, error)
    }

    /// POST `body` to `path` with the admin token.
    pub(super) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&body), None, None).await
    }

    pub(super) fn record(&self, a: &Answer, op: Op) {
        self.log.lock().unwrap().push(a.rec(op));
    }

    pub(crate) fn take_log(&self) -> Vec<Rec> {
        let mut log = std::mem::take(&mut *self.log.lock().unwrap());
        log.sort_by_key(|r| r.sent);
        log
    }
}

/// An answer read as the type `T` the vault writes; None when it is not one.
pub(crate) fn read<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// A transport error with its causes: reqwest's own message ("error sending request") says
/// nothing of whether the connection was refused, reset or timed out.
pub(super) fn transport_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
