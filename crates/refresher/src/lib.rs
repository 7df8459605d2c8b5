//! refresher: claims refresh jobs across every pool and performs them — OAuth2 refresh_token
//! and client_credentials grants, each through the token's bound proxy — then stores the new
//! credential or records the failure. Several refreshers run side by side safely: a claim
//! hides its job for a visibility timeout, and completions are checked against the claim.
//!
//! # Layout
//! - [`RefresherConfig`]: settings (clap + env).
//! - [`providers`]: one module per grant behind the `Provider` trait, one shared exchange.
//! - [`Refresher`]: the claim loop, job handling with backoff, and health probes.

pub mod providers;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;
use vault_core::config::{MasterKeyArgs, RedisArgs};
use vault_core::crypto::{Cipher, Sealed};
use vault_core::model::{Outcome, ProbeConfig, RefreshPublic, Report};
use vault_core::ops::Actor;
use vault_core::refresh::{RefreshResult, RefreshSecrets, RetryPolicy};
use vault_core::store::{AcquireArgs, ClaimedJob, PoolDue, RefreshedToken, Sweeper};
use vault_core::{Store, VaultError};

use crate::providers::{RefreshError, Refreshed};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "refresher",
    version,
    about = "tokenvault refresher: OAuth2 refresh jobs and health probes",
    after_help = "Logging: RUST_LOG (e.g. info, refresher=debug), TV_LOG_FORMAT=json for JSON lines."
)]
pub struct RefresherConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    /// Refresh jobs this process runs at once (over all pools; each pool also has its own
    /// `refresh_concurrency` limit shared by every refresher).
    #[arg(long, env = "TV_REFRESHER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// How long a claimed job stays hidden; a refresher that dies loses it to another after this.
    #[arg(
        long = "visibility-ms",
        env = "TV_REFRESH_VISIBILITY_MS",
        default_value_t = 30_000
    )]
    pub visibility_ms: u64,
    /// Timeout of one request to an identity provider (or probe URL).
    #[arg(
        long = "http-timeout-ms",
        env = "TV_REFRESH_HTTP_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub http_timeout_ms: u64,
    /// Failed attempts before a token is quarantined.
    #[arg(
        long = "max-attempts",
        env = "TV_REFRESH_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter, up to the maximum.
    #[arg(
        long = "backoff-ms",
        env = "TV_REFRESH_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub backoff_ms: u64,
    #[arg(
        long = "backoff-max-ms",
        env = "TV_REFRESH_BACKOFF_MAX_MS",
        default_value_t = 300_000
    )]
    pub backoff_max_ms: u64,
    /// How often to look for due and queued jobs.
    #[arg(long = "poll-ms", env = "TV_REFRESHER_POLL_MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// Serve Prometheus metrics (`tv_refresh_results_total`, ...) on this address; none when
    /// unset.
    #[arg(long = "metrics-addr", env = "TV_REFRESHER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub log: vault_core::config::LogArgs,
}

impl RefresherConfig {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.visibility_ms > self.http_timeout_ms + 1000,
            "TV_REFRESH_VISIBILITY_MS ({}) must exceed TV_REFRESH_HTTP_TIMEOUT_MS ({}) by more than a second, \
             or a slow job would be taken over while it still runs",
            self.visibility_ms,
            self.http_timeout_ms
        );
        anyhow::ensure!(
            self.concurrency >= 1 && self.max_attempts >= 1,
            "concurrency and max attempts must be at least 1"
        );
        Ok(())
    }

    /// How this refresher retries failed attempts.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            backoff_ms: self.backoff_ms,
            backoff_max_ms: self.backoff_max_ms,
            max_attempts: self.max_attempts,
        }
    }
}

/// One refresher process.
pub struct Refresher {
    store: Store,
    cipher: Cipher,
    cfg: RefresherConfig,
    slots: Arc<Semaphore>,
    /// HTTP clients by bound proxy ("" = direct): a token's requests always leave through
    /// its own proxy, never directly.
    clients: Mutex<HashMap<String, reqwest::Client>>,
    last_probe: Mutex<HashMap<String, Instant>>,
}

impl Refresher {
    pub fn new(store: Store, cipher: Cipher, cfg: RefresherConfig) -> anyhow::Result<Arc<Self>> {
        cfg.check()?;
        Ok(Arc::new(Self {
            slots: Arc::new(Semaphore::new(cfg.concurrency)),
            store,
            cipher,
            cfg,
            clients: Mutex::new(HashMap::new()),
            last_probe: Mutex::new(HashMap::new()),
        }))
    }

    fn http_for(&self, proxy: &str) -> Result<reqwest::Client, RefreshError> {
        let mut clients = self.clients.lock().expect("client cache lock");
        if let Some(c) = clients.get(proxy) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_millis(self.cfg.http_timeout_ms))
            .connect_timeout(Duration::from_millis(self.cfg.http_timeout_ms));
        b = if proxy.is_empty() {
            b.no_proxy()
        } else {
            let p = reqwest::Proxy::all(proxy).map_err(|_| {
                RefreshError::Permanent("the token's bound proxy is not a valid proxy URL".into())
            })?;
            b.proxy(p)
        };
        let c = b
            .build()
            .map_err(|e| RefreshError::Transient(format!("http client: {e}")))?;
        clients.insert(proxy.to_string(), c.clone());
        Ok(c)
    }

    /// Run until `shutdown` resolves; in-flight jobs finish first.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms.max(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.clone().poll_once().await {
                        tracing::warn!(error = %e, "refresher poll failed");
                    }
                }
            }
        }
        tracing::info!("refresher stopping: waiting for jobs in flight");
        let _ = self.slots.acquire_many(self.cfg.concurrency as u32).await;
    }

    /// One pass: queue due refreshes, claim what this process has room for, start probes.
    pub async fn poll_once(self: Arc<Self>) -> vault_core::Result<()> {
        // What is due is read for many pools at once with cheap commands: the scripts run only
        // in pools with a refresh due, a job waiting or probes to run.
        for chunk in self.store.pool_names().await?.chunks(500) {
            let due = self.store.pools_due(chunk, Sweeper::Refresher).await?;
            for (pool, due) in chunk.iter().zip(due) {
                if due.refresh || due.jobs || due.probe {
                    self.clone().poll_pool(pool, due).await?;
                }
            }
        }
        Ok(())
    }

    /// Queue the pool's due refreshes, claim what this process has room for, start probes.
    async fn poll_pool(self: Arc<Self>, pool: &str, due: PoolDue) -> vault_core::Result<()> {
        if due.refresh {
            self.store.enqueue_due_refreshes(pool, 1000).await?;
        }
        let pcfg = match self.store.pool_config(pool).await {
            Ok(c) => c,
            Err(VaultError::PoolNotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Claim while jobs are there and this process has room.
        if due.refresh || due.jobs {
            while let Ok(permit) = self.slots.clone().try_acquire_owned() {
                let claimed = self
                    .store
                    .claim_refresh_job(
                        pool,
                        false,
                        self.cfg.visibility_ms,
                        Some(pcfg.refresh_concurrency),
                    )
                    .await?;
                let Some(job) = claimed else { break };
                let (me, pool) = (self.clone(), pool.to_string());
                tokio::spawn(async move {
                    me.handle(&pool, job).await;
                    drop(permit);
                });
            }
        }
        if let Some(probe) = pcfg.probe {
            self.clone().maybe_probe(pool, probe);
        }
        Ok(())
    }

    /// Who the refresher acts as in the audit trail.
    fn actor() -> Actor {
        Actor::process("refresher")
    }

    /// Perform one claimed job and record its result.
    pub async fn handle(&self, pool: &str, job: ClaimedJob) {
        let span = tracing::info_span!("refresh", pool, token_id = %job.token_id, attempt = job.attempts + 1);
        self.handle_in_span(pool, job).instrument(span).await
    }

    async fn handle_in_span(&self, pool: &str, job: ClaimedJob) {
        let retry = self.cfg.retry();
        let recorded = match self.refresh(pool, &job).await {
            Ok((refreshed, secrets)) => self.complete(pool, &job, refreshed, secrets).await,
            Err(RefreshError::Transient(msg)) => {
                let delay = retry.backoff(job.attempts + 1).as_millis() as u64;
                self.store
                    .fail_refresh_job(
                        &Self::actor(),
                        pool,
                        &job.job_id,
                        &msg,
                        Some(delay),
                        retry.max_attempts,
                    )
                    .await
            }
            Err(RefreshError::Permanent(msg)) => {
                self.store
                    .fail_refresh_job(
                        &Self::actor(),
                        pool,
                        &job.job_id,
                        &msg,
                        None,
                        retry.max_attempts,
                    )
                    .await
            }
        };
        match recorded {
            Ok(r) => match (&r.error, r.quarantined()) {
                (None, _) => {
                    tracing::info!(fingerprint = ?r.fingerprint, generation = ?r.generation, "token refreshed")
                }
                (Some(e), true) if job.attempts + 1 >= retry.max_attempts => {
                    tracing::warn!(error = %e, attempts = job.attempts + 1, "refresh failed on its last attempt: quarantining")
                }
                (Some(e), true) => {
                    tracing::warn!(error = %e, "refresh failed permanently: quarantining")
                }
                (Some(e), false) => {
                    tracing::warn!(error = %e, attempts = job.attempts + 1, "refresh failed, will retry")
                }
            },
            Err(VaultError::StaleJob(_)) | Err(VaultError::JobGone) => {
                tracing::info!(
                    "job was taken over or its token changed meanwhile; result discarded"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record the refresh result; the job will reappear")
            }
        }
    }

    async fn refresh(
        &self,
        pool: &str,
        job: &ClaimedJob,
    ) -> Result<(Refreshed, RefreshSecrets), RefreshError> {
        let provider = providers::for_kind(job.refresh_kind).ok_or_else(|| {
            RefreshError::Permanent(format!(
                "refresh kind {} is not run by the refresher",
                job.refresh_kind.as_str()
            ))
        })?;
        // The token's own credentials (what a rotated refresh token is stored with) and, for
        // the exchange, those with what it inherits from its pool filled in.
        let own = job.secrets(&self.cipher, pool).map_err(|e| {
            RefreshError::Permanent(format!("cannot read refresh credentials: {}", e.code()))
        })?;
        let (settings, secrets) = self
            .with_pool_defaults(
                pool,
                job.settings()
                    .map_err(|e| RefreshError::Permanent(e.to_string()))?,
                own.clone(),
            )
            .await?;
        let proxy = job.proxy_url(&self.cipher, pool).map_err(|e| {
            RefreshError::Permanent(format!("cannot read the bound proxy: {}", e.code()))
        })?;
        let http = self.http_for(&proxy)?;
        let r = providers::exchange(
            &http,
            provider,
            &settings,
            &secrets,
            Duration::from_millis(self.cfg.http_timeout_ms),
        )
        .await?;
        Ok((r, own))
    }

    /// A token that inherits its pool's refresh settings takes what it leaves out from the
    /// pool's current ones (read now, so a new pool client secret applies at once).
    async fn with_pool_defaults(
        &self,
        pool: &str,
        settings: RefreshPublic,
        mut secrets: RefreshSecrets,
    ) -> Result<(RefreshPublic, RefreshSecrets), RefreshError> {
        if !settings.inherits_pool {
            return Ok((settings, secrets));
        }
        let pool_refresh = self
            .store
            .pool_config(pool)
            .await
            .map_err(|e| {
                RefreshError::Transient(format!("cannot read the pool's refresh settings: {e}"))
            })?
            .refresh
            .filter(|r| r.settings.kind == settings.kind)
            .ok_or_else(|| {
                RefreshError::Permanent(format!(
                    "the token takes its refresh settings from the pool, which has none for {}",
                    settings.kind.as_str()
                ))
            })?;
        if secrets.client_secret.is_none() {
            secrets.client_secret = pool_refresh
                .open_client_secret(&self.cipher, pool)
                .map_err(|e| {
                    RefreshError::Permanent(format!(
                        "cannot read the pool's client secret: {}",
                        e.code()
                    ))
                })?
                .map(|s| s.expose().to_string());
        }
        Ok((settings.over(&pool_refresh.settings), secrets))
    }

    async fn complete(
        &self,
        pool: &str,
        job: &ClaimedJob,
        r: Refreshed,
        mut secrets: RefreshSecrets,
    ) -> vault_core::Result<RefreshResult> {
        let now = self.store.now_ms().await?;
        let expires_at = r
            .expires_in_s
            .map(|s| now.saturating_add((s.min(i64::MAX as u64 / 1000) as i64) * 1000));
        let rotated = match r.refresh_token {
            Some(rt) => {
                secrets.refresh_token = Some(rt.expose().to_string());
                Some(&secrets)
            }
            None => None,
        };
        let sealed = RefreshedToken::seal(
            &self.cipher,
            pool,
            &job.token_id,
            &r.access_token,
            expires_at,
            rotated,
        )?;
        self.store
            .complete_refresh_job(
                &Self::actor(),
                pool,
                &job.job_id,
                job.attempts,
                &sealed,
                &self.cfg.retry(),
            )
            .await
    }

    /// Start a probe of `pool` when its interval has passed (at most one at a time per pool).
    fn maybe_probe(self: Arc<Self>, pool: &str, probe: ProbeConfig) {
        {
            let mut last = self.last_probe.lock().expect("probe lock");
            let due = last
                .get(pool)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(probe.interval_s));
            if !due {
                return;
            }
            last.insert(pool.to_string(), Instant::now());
        }
        let pool = pool.to_string();
        tokio::spawn(async move {
            if let Err(e) = self.probe(&pool, &probe).await {
                tracing::warn!(pool, error = %e, "probe could not run");
            }
        });
    }

    /// Lease an idle token like a worker would, call the probe URL through its bound proxy,
    /// and report: the expected status is `ok`, anything else is a strike (`suspect`). A
    /// network failure is not the token's fault and is reported as unused.
    #[tracing::instrument(name = "probe", skip_all, fields(pool = %pool))]
    pub async fn probe(&self, pool: &str, probe: &ProbeConfig) -> vault_core::Result<()> {
        let ttl_ms = self.cfg.http_timeout_ms + 5000;
        let args = AcquireArgs {
            lease_id: format!("probe-{}", rand::thread_rng().gen::<u64>()),
            worker: "tokenvault-probe".into(),
            units: 1,
            ttl_ms: Some(ttl_ms),
            ..Default::default()
        };
        let lease = match self.store.lease_token(pool, &args).await {
            Ok(l) => l,
            Err(VaultError::PoolExhausted { .. }) | Err(VaultError::PoolFrozen) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sealed = Sealed {
            key_id: lease.key_id.clone(),
            data: lease.secret_ct.clone(),
        };
        let report = match self.cipher.open_secret(pool, &lease.token_id, &sealed) {
            Err(e) => {
                tracing::error!(pool, token_id = %lease.token_id, error = %e, "probe cannot decrypt the token");
                Report {
                    used: Some(0),
                    ..Default::default()
                }
            }
            Ok(secret) => match lease
                .binding(&self.cipher, pool)
                .map_err(|_| RefreshError::Permanent("cannot read the bound proxy".into()))
                .and_then(|b| self.http_for(b.proxy.as_deref().unwrap_or_default()))
            {
                Err(_) => Report {
                    used: Some(0),
                    ..Default::default()
                },
                Ok(http) => match providers::with_trace_context(http.get(&probe.url))
                    .bearer_auth(secret.expose())
                    .send()
                    .instrument(tracing::info_span!(
                        "probe.call",
                        otel.kind = "client",
                        server.address = %providers::host_of(&probe.url),
                    ))
                    .await
                {
                    Ok(res) if res.status().as_u16() == probe.expect_status => Report::default(),
                    Ok(res) => {
                        tracing::warn!(pool, token_id = %lease.token_id, status = res.status().as_u16(), "probe failed: strike");
                        Report {
                            outcome: Outcome::Suspect,
                            detail: Some(format!("probe answered {}", res.status())),
                            ..Default::default()
                        }
                    }
                    Err(_) => Report {
                        used: Some(0),
                        ..Default::default()
                    },
                },
            },
        };
        // Released like a worker's report, so a strike that quarantines is announced and
        // audited the same way.
        match self
            .store
            .release_lease(&Self::actor(), pool, &lease.lease_id, &report)
            .await
        {
            Ok(_) | Err(VaultError::LeaseGone) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The refresher binary.
pub async fn run(cfg: RefresherConfig) -> anyhow::Result<()> {
    let cipher = cfg.master_key.cipher().map_err(anyhow::Error::msg)?;
    let store = Store::connect(&cfg.redis)?;
    match store.prepare().await {
        Err(e) if e.refuses_start() => {
            return Err(anyhow::Error::new(e).context("refusing to start"))
        }
        Err(e) => tracing::warn!(error = %e, "redis not reachable at start-up; will keep trying"),
        Ok(()) => {}
    }
    let r = Refresher::new(store, cipher, cfg.clone()).context("invalid configuration")?;
    if let Some(addr) = cfg.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(%addr, "serving metrics");
    }
    tracing::info!(
        concurrency = cfg.concurrency,
        visibility_ms = cfg.visibility_ms,
        "refresher running"
    );
    r.run(vault_core::config::shutdown_signal()).await;
    Ok(())
}
