//! vault-client: the Rust SDK for tokenvault workers.
//!
//! # Layout
//! - [`Client`]: the calls a worker makes (lease, renew, release, rotate), over REST
//!   ([`Client::new`]) or gRPC ([`Client::grpc`], feature `grpc`),
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

#[cfg(feature = "grpc")]
mod grpc;
mod guard;
pub use guard::{duration_s, rate_limit_families, Family, LeaseGuard, Report};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
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

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub data: Value,
}

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
/// or gRPC ([`Client::grpc`]). Every method answers the same over either.
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
            .bearer_auth(&self.token);
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
        let v: Value = self
            .send(reqwest::Method::DELETE, &path, None)
            .await?
            .json()
            .await?;
        Ok(v["tokens_returned"].as_u64().unwrap_or(0))
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
                inner: Inner::Grpc(Box::new(s)),
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

type SseStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A live event stream: server-sent events parsed by `eventsource-stream` (every line ending
/// the standard allows, multi-line `data`, characters split across chunks), or a gRPC `Watch`.
pub struct EventStream {
    inner: Inner,
}

enum Inner {
    Sse(SseStream),
    #[cfg(feature = "grpc")]
    Grpc(Box<tonic::Streaming<vault_wire::grpc::pb::Event>>),
}

impl EventStream {
    fn over<B: AsRef<[u8]>>(
        bytes: impl futures_util::Stream<Item = std::result::Result<B, reqwest::Error>> + Send + 'static,
    ) -> Self {
        EventStream {
            inner: Inner::Sse(Box::pin(bytes.eventsource())),
        }
    }

    /// The next event; `None` when the server closed the stream. Keep-alive comments and
    /// events without a type are skipped.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        let sse = match &mut self.inner {
            Inner::Sse(s) => s,
            #[cfg(feature = "grpc")]
            Inner::Grpc(s) => return grpc::next_event(s).await,
        };
        loop {
            let ev = match sse.next().await? {
                Ok(ev) => ev,
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    return Some(Err(e.into()))
                }
                Err(e) => return Some(Err(Error::Stream(e.to_string()))),
            };
            if ev.event.is_empty() || ev.event == "message" {
                continue;
            }
            return Some(Ok(Event {
                id: ev.id,
                kind: ev.event,
                data: serde_json::from_str(&ev.data).unwrap_or(Value::Null),
            }));
        }
    }
}

/// Events for as long as the caller reads them: [`Client::follow`]. When the stream ends or
/// breaks, it is opened again with `Last-Event-ID` (backing off from 200 ms up to 30 s), so
/// nothing the vault still keeps is missed. Notices such as `events.lost` carry no id: the
/// resume point stays at the last real event.
pub struct EventFeed {
    client: Client,
    pools: Vec<String>,
    stream: Option<EventStream>,
    last_id: Option<String>,
    backoff: Duration,
    reconnects: u64,
    /// A stream was opened once: opening another is a reconnection, after the backoff.
    opened: bool,
}

const FEED_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

impl Client {
    /// Subscribe to events of `pools` (all the token may see when empty) and keep following
    /// them. The first subscription is made here: from the moment this returns, nothing published
    /// is missed.
    pub async fn follow(&self, pools: &[&str]) -> Result<EventFeed> {
        let mut feed = self.feed(pools);
        feed.stream = Some(self.events(pools, None).await?);
        feed.opened = true;
        Ok(feed)
    }

    /// As [`Client::follow`], but subscribing at the first [`EventFeed::next`], where an
    /// unreachable vault is retried like a lost stream.
    pub fn feed(&self, pools: &[&str]) -> EventFeed {
        EventFeed {
            client: self.clone(),
            pools: pools.iter().map(|p| p.to_string()).collect(),
            stream: None,
            last_id: None,
            backoff: FEED_BACKOFF.0,
            reconnects: 0,
            opened: false,
        }
    }
}

impl EventFeed {
    /// The next event. An error is a reconnection the vault refused (a 4xx: the client token is
    /// revoked, expired or not allowed); calling again tries again, after the backoff.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(stream) = self.stream.as_mut() {
                if let Some(Ok(e)) = stream.next().await {
                    if !e.id.is_empty() {
                        self.last_id = Some(e.id.clone());
                    }
                    return Ok(e);
                }
                self.stream = None;
            }
            if self.opened {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(FEED_BACKOFF.1);
                self.reconnects += 1;
            }
            self.opened = true;
            let pools: Vec<&str> = self.pools.iter().map(String::as_str).collect();
            match self.client.events(&pools, self.last_id.as_deref()).await {
                Ok(s) => {
                    self.stream = Some(s);
                    self.backoff = FEED_BACKOFF.0;
                }
                Err(e @ Error::Api { status, .. }) if (400..500).contains(&status) => {
                    return Err(e)
                }
                Err(e) => tracing::warn!(error = %e, "event stream lost; retrying"),
            }
        }
    }

    /// How often the stream had to be opened again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

/// Token and lease ids the vault announced revoked.
#[derive(Default)]
struct Revoked {
    ids: Mutex<HashSet<String>>,
    /// The vault said events were lost (`events.lost`): a revocation may have been among
    /// them, so the current lease is checked with the vault before it is used again.
    recheck: AtomicBool,
}

impl Revoked {
    fn hit(&self, lease: &Lease) -> bool {
        let ids = self.ids.lock().expect("revoked lock");
        ids.contains(&lease.lease_id) || ids.contains(&lease.token_id)
    }
}

/// One worker's lease, kept across requests and dropped as soon as it is revoked.
pub struct Worker {
    client: Client,
    pool: String,
    /// Leases come from this pipeline's share (None: the free part of the pool).
    pipeline: Option<String>,
    name: String,
    current: tokio::sync::Mutex<Option<Lease>>,
    revoked: Arc<Revoked>,
    listener: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Start a worker on `pool`: subscribes to the pool's events first (so no revocation
    /// between now and the first lease can be missed), reconnecting with `Last-Event-ID`.
    pub async fn start(client: Client, pool: &str, name: &str) -> Result<Worker> {
        Self::start_in(client, pool, None, name).await
    }

    /// As [`Worker::start`], leasing through `pipeline` when given.
    pub async fn start_in(
        client: Client,
        pool: &str,
        pipeline: Option<&str>,
        name: &str,
    ) -> Result<Worker> {
        let feed = client.follow(&[pool]).await?;
        let revoked: Arc<Revoked> = Arc::default();
        let listener = tokio::spawn(listen(feed, revoked.clone()));
        Ok(Worker {
            client,
            pool: pool.to_string(),
            pipeline: pipeline.map(String::from),
            name: name.to_string(),
            current: Default::default(),
            revoked,
            listener,
        })
    }

    /// The lease for the next request: the current one unless the vault revoked it, else a
    /// new one.
    pub async fn lease(&self) -> Result<Lease> {
        let mut cur = self.current.lock().await;
        // The flag is only consumed while a lease is held, and the lease only copied then.
        let recheck = cur.is_some() && self.revoked.recheck.swap(false, Ordering::SeqCst);
        if let Some(held) = cur.as_ref().filter(|_| recheck).cloned() {
            match self.client.renew(&held, None).await {
                Ok(renewed) => *cur = Some(renewed),
                Err(Error::LeaseGone) => {
                    tracing::info!(token_id = %held.token_id, "lease ended while events were lost; taking a new one");
                    *cur = None;
                }
                Err(e) => {
                    self.revoked.recheck.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        if let Some(l) = cur.as_ref() {
            if !self.revoked.hit(l) {
                return Ok(l.clone());
            }
            tracing::info!(token_id = %l.token_id, "lease revoked by the vault; taking a new one");
            *cur = None;
        }
        let l = match &self.pipeline {
            Some(p) => self.client.lease_in(&self.pool, p, &self.name).await?,
            None => self.client.lease(&self.pool, &self.name).await?,
        };
        *cur = Some(l.clone());
        Ok(l)
    }

    /// Has the vault announced this lease (or its token) revoked?
    pub fn is_revoked(&self, lease: &Lease) -> bool {
        self.revoked.hit(lease)
    }

    /// Report a request made with `lease`. `Unauthorized` rotates at once to a different token
    /// (the caller retries the same request with [`Worker::lease`]); other outcomes other than
    /// `Ok` give the lease back with the report.
    pub async fn report(&self, lease: &Lease, outcome: Outcome) -> Result<()> {
        let mut cur = self.current.lock().await;
        let is_current = cur.as_ref().is_some_and(|c| c.lease_id == lease.lease_id);
        match outcome {
            Outcome::Ok => Ok(()),
            Outcome::Unauthorized if is_current => {
                *cur = None;
                let next = self.client.rotate(lease, outcome).await;
                *cur = next.as_ref().ok().cloned();
                next.map(drop)
            }
            _ => {
                if is_current {
                    *cur = None;
                }
                match self.client.release(lease, outcome).await {
                    Ok(()) | Err(Error::LeaseGone) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Give the current lease back and stop listening.
    pub async fn finish(self) -> Result<()> {
        self.listener.abort();
        if let Some(l) = self.current.lock().await.take() {
            match self.client.release(&l, Outcome::Ok).await {
                Ok(()) | Err(Error::LeaseGone) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Mark what the pool's events revoke, for as long as the worker lives.
async fn listen(mut feed: EventFeed, revoked: Arc<Revoked>) {
    loop {
        let e = match feed.next().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "the vault refused the event stream; retrying");
                continue;
            }
        };
        if e.kind == "events.lost" {
            tracing::warn!("the vault lost events for this worker; re-checking the lease");
            revoked.recheck.store(true, Ordering::SeqCst);
            continue;
        }
        let id = match e.kind.as_str() {
            "token.revoked" | "token.quarantined" => e.data["token_id"].as_str(),
            "lease.revoked" => e.data["lease_id"].as_str(),
            _ => None,
        };
        if let Some(id) = id {
            revoked
                .ids
                .lock()
                .expect("revoked lock")
                .insert(id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hand-written parser got wrong: a character split across chunks, `\r\n` line
    /// endings, multi-line `data`, comments.
    #[tokio::test]
    async fn events_are_parsed_by_the_standard() {
        let text = ": keep-alive\r\n\r\nid: 1-0\r\nevent: token.revoked\r\ndata: {\"reason\":\r\ndata: \"caf\u{e9}\"}\r\n\r\nid: 2-0\nevent: pool.frozen\ndata: {}\n\n";
        let bytes = text.as_bytes();
        // Split inside the two bytes of "é".
        let cut = text.find('\u{e9}').unwrap() + 1;
        let chunks: Vec<std::result::Result<Vec<u8>, reqwest::Error>> =
            vec![Ok(bytes[..cut].to_vec()), Ok(bytes[cut..].to_vec())];
        let mut s = EventStream::over(futures_util::stream::iter(chunks));
        let e = s.next().await.unwrap().unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("1-0", "token.revoked"));
        assert_eq!(e.data["reason"], "caf\u{e9}");
        let e = s.next().await.unwrap().unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("2-0", "pool.frozen"));
        assert!(s.next().await.is_none());
    }
}
