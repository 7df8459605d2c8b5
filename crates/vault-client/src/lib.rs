//! vault-client: the Rust SDK for tokenvault workers.
//!
//! # Layout
//! - [`Client`]: the calls a worker makes (lease, renew, release, rotate), over REST
//!   ([`Client::new`]) or gRPC (`Client::grpc`, feature `grpc`),
//!   [`Client::events`], a server-sent-events stream, and [`Client::follow`], an
//!   [`EventFeed`] that reopens it with `Last-Event-ID` whenever it ends.
//! - [`Worker`]: keeps one lease for a worker, renews nothing behind its back, rotates on a
//!   401, and drops a lease the moment the vault announces its token or lease revoked: a
//!   request already in flight with it finishes, the next one gets a new lease.
//! - [`LeaseGuard`] ([`Client::guard`]): one lease that sends requests itself
//!   ([`LeaseGuard::send`]: bound proxy, lease headers, 401 → rotate, 429 → cool down, the
//!   target's rate-limit headers in the report), renews in the background and is released on
//!   drop. `examples/worker.rs` runs one.
//! - [`Error`]: what went wrong; [`Error::retry_after`] says whether the same call may succeed
//!   later (an exhausted pool, a 503 while Redis stalls, fails over or moves the pool's slot, no
//!   answer) and when.
//!
//! # Connections
//! A replica admits at most `TV_MAX_CONNECTIONS_PER_ADDR` (256 by default) open connections
//! from one address, and every event stream holds one. A connection over the cap is answered
//! `503 too_many_connections` with `Retry-After` (an [`Error::Unavailable`] here) and closed.
//! So share one [`Client`] (its connection pool) and one [`EventFeed`] per process, rather than
//! one per task: 2,000 streams from one host get 256.

mod events;
#[cfg(feature = "grpc")]
mod grpc;
mod guard;
mod worker;
pub use events::{Event, EventFeed, EventStream};
pub use guard::{duration_s, rate_limit_families, Family, LeaseGuard, Report};
pub use worker::Worker;

use std::time::Duration;

use serde_json::{json, Value};

/// Errors of the SDK. `detail` is the vault's problem+json detail (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no token is eligible; retry in {retry_after_s} s")]
    Exhausted { retry_after_s: u64 },
    /// 503 other than `pool_exhausted`: the vault or its Redis cannot serve now (`redis_busy`,
    /// `redis_unavailable`, `not_replicated`, a pool's slot moving); it passes by itself.
    #[error("the vault cannot serve now ({code}): {detail}; retry in {retry_after_s} s")]
    Unavailable {
        code: String,
        detail: String,
        retry_after_s: u64,
    },
    #[error("the lease has ended")]
    LeaseGone,
    /// A pipeline could not get its tokens: how many it could have, how many are missing, and
    /// when the next free up. Nothing stayed assigned.
    #[error("the pool is short of eligible tokens for this pipeline ({} missing)", .0.missing)]
    InsufficientCapacity(CapacityShort),
    #[error("vault answered {status} {code}: {detail}")]
    Api {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("cannot reach the vault: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the event stream is malformed: {0}")]
    Stream(String),
    /// A gRPC call that never reached the vault (no connection, a balancer's refusal, a
    /// deadline); the vault's own errors are the variants above, as over REST.
    #[cfg(feature = "grpc")]
    #[error("gRPC call failed: {0}")]
    Grpc(Box<tonic::Status>),
    /// A call this transport does not offer (pipeline management is REST only).
    #[error("{0} is not offered over this transport; use a REST client")]
    Unsupported(&'static str),
}

impl Error {
    /// When to try the same call again, for errors that pass by themselves: no eligible token,
    /// the vault or its Redis unable to serve now, or no answer at all (a replica restarting).
    /// None when retrying cannot help (a bad request, a missing pool, an ended lease...).
    /// Retry with a backoff of your own on top: never in a tight loop.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Exhausted { retry_after_s } | Error::Unavailable { retry_after_s, .. } => {
                Some(Duration::from_secs(*retry_after_s))
            }
            Error::Http(e) if e.is_connect() || e.is_timeout() => Some(Duration::from_secs(1)),
            #[cfg(feature = "grpc")]
            Error::Grpc(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The wire types, shared with the server (`vault-wire`): a lease (its `Debug` leaves the secret
/// out), its binding and ready-made headers, the outcome a worker reports, an error answer.
pub use vault_wire::{
    Binding, CapacityShort, Lease, LeaseHeaders, Outcome, PipelineInput, Problem,
};

/// A vault error as the SDK names it, whichever transport brought it: REST's status and problem
/// code (over gRPC, from the status's `ErrorInfo`).
fn classify(status: u16, code: String, detail: String, retry_after_s: u64) -> Error {
    match (status, code.as_str()) {
        (_, "pool_exhausted") => Error::Exhausted { retry_after_s },
        (_, "lease_gone") => Error::LeaseGone,
        (503, _) => Error::Unavailable {
            code,
            detail,
            retry_after_s,
        },
        _ => Error::Api {
            status,
            code,
            detail,
        },
    }
}

/// What a lease asks for.
#[derive(Default)]
pub(crate) struct LeaseAsk<'a> {
    pub(crate) worker: &'a str,
    pub(crate) pipeline: Option<&'a str>,
    pub(crate) costs: std::collections::BTreeMap<String, u64>,
}

/// How a [`Client`]'s worker calls travel.
#[derive(Clone)]
enum Transport {
    Rest,
    #[cfg(feature = "grpc")]
    Grpc(grpc::Stub),
}

/// The client, authenticated with a client token (scope `lease`): over REST ([`Client::new`])
/// or gRPC (`Client::grpc`). Every method answers the same over either.
#[derive(Clone)]
pub struct Client {
    /// The REST base URL (empty: a gRPC client without REST).
    base: String,
    http: reqwest::Client,
    token: String,
    transport: Transport,
}

impl Client {
    /// Over gRPC (`http://host:port` or `https://...`), on one HTTP/2 connection for every call
    /// and event stream, connected at the first call. Pipeline management is REST only: add a
    /// REST URL with [`Client::with_rest`] for it.
    #[cfg(feature = "grpc")]
    pub fn grpc(url: &str, client_token: &str) -> Result<Self> {
        let mut c = Self::new("", client_token);
        c.transport = Transport::Grpc(grpc::channel(url)?);
        Ok(c)
    }

    /// The REST base URL for the calls gRPC does not offer (pipeline management).
    pub fn with_rest(mut self, base_url: &str) -> Self {
        self.base = base_url.trim_end_matches('/').to_string();
        self
    }

    pub fn new(base_url: &str, client_token: &str) -> Self {
        // Idle connections are dropped before the vault's own idle limit (30 s by default), so
        // a request never goes out on a connection the server is closing.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            token: client_token.to_string(),
            transport: Transport::Rest,
        }
    }

    /// The REST URL of `path`, or `Unsupported` on a gRPC client without one.
    fn rest_url(&self, path: &str, call: &'static str) -> Result<String> {
        if self.base.is_empty() {
            return Err(Error::Unsupported(call));
        }
        Ok(format!("{}{path}", self.base))
    }

    async fn post(&self, path: &str, body: Value) -> Result<reqwest::Response> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, self.rest_url(path, "pipeline management")?)
            .bearer_auth(&self.token)
            .headers(vault_wire::trace::headers());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        if res.status().is_success() {
            return Ok(res);
        }
        let retry_after_s = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Err(match problem(res).await {
            Error::Api {
                status,
                code,
                detail,
            } => classify(status, code, detail, retry_after_s),
            e => e,
        })
    }

    pub async fn lease(&self, pool: &str, worker: &str) -> Result<Lease> {
        self.lease_costing(pool, worker, &Default::default()).await
    }

    /// Lease a token of pipeline `pipeline`'s share (see [`Client::put_pipeline`]).
    pub async fn lease_in(&self, pool: &str, pipeline: &str, worker: &str) -> Result<Lease> {
        let ask = LeaseAsk {
            worker,
            pipeline: Some(pipeline),
            ..Default::default()
        };
        self.lease_asking(pool, &ask).await
    }

    async fn lease_asking(&self, pool: &str, ask: &LeaseAsk<'_>) -> Result<Lease> {
        match &self.transport {
            #[cfg(feature = "grpc")]
            Transport::Grpc(stub) => grpc::lease(stub, &self.token, pool, ask).await,
            Transport::Rest => {
                let mut body = json!({ "worker": ask.worker });
                if let Some(p) = ask.pipeline {
                    body["pipeline"] = json!(p);
                }
                if !ask.costs.is_empty() {
                    body["costs"] = json!(ask.costs);
                }
                let path = format!("/v1/pools/{pool}/leases");
                Ok(self.post(&path, body).await?.json().await?)
            }
        }
    }

    /// Create (or resize, and restart the deadline of) pipeline `name`: a share of `pool` sized
    /// for `demand`, assigned before this returns. Its status as the vault answers it (`tokens`,
    /// `tokens_wanted`, `under_strength`, `deadline`, ...). A pool short of eligible tokens:
    /// [`Error::InsufficientCapacity`] (unless `demand.allow_partial`).
    pub async fn put_pipeline(
        &self,
        pool: &str,
        name: &str,
        demand: &PipelineInput,
    ) -> Result<Value> {
        let body = serde_json::to_value(demand).expect("a demand serializes");
        let path = format!("/v1/pools/{pool}/pipelines/{name}");
        Ok(self
            .send(reqwest::Method::PUT, &path, Some(body))
            .await?
            .json()
            .await?)
    }

    /// Pipeline `name`'s status.
    pub async fn pipeline(&self, pool: &str, name: &str) -> Result<Value> {
        let path = format!("/v1/pools/{pool}/pipelines/{name}");
        Ok(self
            .send(reqwest::Method::GET, &path, None)
            .await?
            .json()
            .await?)
    }

    /// End pipeline `name` now: its tokens go back to the pool (leases out keep their
    /// deadlines). Returns how many it held.
    pub async fn end_pipeline(&self, pool: &str, name: &str) -> Result<u64> {
        let path = format!("/v1/pools/{pool}/pipelines/{name}");
        let ended: vault_wire::PipelineEnded = self
            .send(reqwest::Method::DELETE, &path, None)
            .await?
            .json()
            .await?;
        Ok(ended.tokens_returned)
    }

    /// Lease a token for a call expected to cost `costs` by cost dimension (pools whose quotas
    /// count, say, `llm_tokens`); report what it really cost in [`Report::costs`].
    pub async fn lease_costing(
        &self,
        pool: &str,
        worker: &str,
        costs: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Lease> {
        let ask = LeaseAsk {
            worker,
            costs: costs.clone(),
            ..Default::default()
        };
        self.lease_asking(pool, &ask).await
    }

    pub async fn renew(&self, lease: &Lease, ttl_s: Option<u64>) -> Result<Lease> {
        match &self.transport {
            #[cfg(feature = "grpc")]
            Transport::Grpc(stub) => grpc::renew(stub, &self.token, lease, ttl_s).await,
            Transport::Rest => {
                let body = ttl_s
                    .map(|t| json!({ "ttl_s": t }))
                    .unwrap_or_else(|| json!({}));
                let path = format!("/v1/pools/{}/leases/{}/renew", lease.pool, lease.lease_id);
                Ok(self.post(&path, body).await?.json().await?)
            }
        }
    }

    pub async fn release(&self, lease: &Lease, outcome: Outcome) -> Result<()> {
        let report = Report {
            outcome,
            ..Default::default()
        };
        self.release_with(lease, &report).await
    }

    /// Report and get a different token in one call (the 401-mid-job path).
    pub async fn rotate(&self, lease: &Lease, outcome: Outcome) -> Result<Lease> {
        let report = Report {
            outcome,
            ..Default::default()
        };
        self.rotate_with(lease, &report).await
    }

    /// Subscribe to events of `pools` (all the token may see when empty), resuming after
    /// `last_event_id` when given.
    pub async fn events(&self, pools: &[&str], last_event_id: Option<&str>) -> Result<EventStream> {
        #[cfg(feature = "grpc")]
        if let Transport::Grpc(stub) = &self.transport {
            let s = grpc::watch(stub, &self.token, pools, last_event_id).await?;
            return Ok(EventStream {
                inner: events::Inner::Grpc(Box::new(s)),
            });
        }
        let query = if pools.is_empty() {
            String::new()
        } else {
            format!("?pools={}", pools.join(","))
        };
        let mut req = self
            .http
            .get(self.rest_url(&format!("/v1/events{query}"), "events")?)
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await?;
        if !res.status().is_success() {
            return Err(problem(res).await);
        }
        Ok(EventStream::over(res.bytes_stream()))
    }
}

/// The error a failed answer carries: its problem details, or only its status when the body is
/// not one (a proxy's error page).
async fn problem(res: reqwest::Response) -> Error {
    let status = res.status().as_u16();
    match res.json::<Problem>().await {
        Ok(Problem {
            capacity: Some(c), ..
        }) => Error::InsufficientCapacity(c),
        Ok(p) => Error::Api {
            status,
            code: p.code,
            detail: p.detail,
        },
        Err(_) => Error::Api {
            status,
            code: String::new(),
            detail: String::new(),
        },
    }
}
