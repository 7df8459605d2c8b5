//! What the script tests share: a real redis-server per test, the store on it with a pinned
//! clock, and a pool configured by the test.

#![allow(dead_code)]

mod quotas;
mod schedule;
mod scripts;
mod status;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::config::RedisArgs;
use crate::crypto::{Cipher, MasterKey};
use crate::model::{Outcome, PoolConfigInput, Report, TokenInput};
use crate::refresh::RetryPolicy;
use crate::store::AcquireArgs;
use crate::{Store, VaultError};
use testkit::RedisServer;

pub(crate) const T0: i64 = 1_800_000_000_000;

/// Retries after 1-2 s (jittered), quarantine at the third failure.
pub(crate) const RETRY: RetryPolicy = RetryPolicy {
    backoff_ms: 2_000,
    backoff_max_ms: 2_000,
    max_attempts: 3,
};

pub(crate) struct Env {
    pub(crate) redis: RedisServer,
    pub(crate) store: Store,
    pub(crate) clock: Arc<AtomicI64>,
    pub(crate) cipher: Cipher,
    pub(crate) pool: String,
    pub(crate) prefix: String,
}

impl Env {
    pub(crate) async fn new(cfg: serde_json::Value) -> Self {
        let redis = RedisServer::start();
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let args = RedisArgs {
            redis_pool_size: 4,
            ..RedisArgs::new(redis.url(), prefix.clone())
        };
        let clock = Arc::new(AtomicI64::new(T0));
        let store = Store::connect(&args).unwrap().with_clock(clock.clone());
        store.load_scripts().await.unwrap();
        let cfg: PoolConfigInput = serde_json::from_value(cfg).unwrap();
        let cipher = Cipher::new(&MasterKey::generate());
        store
            .pool_upsert("p", &cfg.validate(&cipher, "p").unwrap())
            .await
            .unwrap();
        Env {
            redis,
            store,
            clock,
            cipher,
            pool: "p".into(),
            prefix,
        }
    }

    pub(crate) fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    pub(crate) async fn deposit(&self, tokens: serde_json::Value) -> Vec<String> {
        let inputs: Vec<TokenInput> = serde_json::from_value(tokens).unwrap();
        let sealed: Vec<_> = inputs
            .iter()
            .map(|t| t.seal(&self.cipher, &self.pool, None).unwrap())
            .collect();
        self.store.deposit(&self.pool, &sealed).await.unwrap().ids
    }

    pub(crate) async fn lease(&self, units: u64) -> Result<crate::model::LeaseGrant, VaultError> {
        self.lease_with(AcquireArgs {
            units,
            ..Default::default()
        })
        .await
    }

    pub(crate) async fn lease_with(
        &self,
        mut a: AcquireArgs,
    ) -> Result<crate::model::LeaseGrant, VaultError> {
        a.lease_id = uuid::Uuid::new_v4().to_string();
        a.units = a.units.max(1);
        self.store.acquire(&self.pool, &a).await
    }

    pub(crate) async fn release(
        &self,
        lease: &str,
        used: Option<u64>,
        outcome: Outcome,
    ) -> Result<String, VaultError> {
        let r = Report {
            used,
            outcome,
            ..Default::default()
        };
        self.store
            .release(&self.pool, lease, &r)
            .await
            .map(|r| r.state)
    }

    /// The next visible refresh job (external queue or the refresher's), if any.
    pub(crate) async fn claim(&self, external: bool) -> Option<crate::store::ClaimedJob> {
        self.store
            .job_claim(&self.pool, external, 60_000, None)
            .await
            .unwrap()
    }

    /// Complete `job` with a new secret that expires `lives_ms` from now.
    pub(crate) async fn complete(
        &self,
        job: &crate::store::ClaimedJob,
        secret: &str,
        lives_ms: i64,
    ) -> crate::refresh::RefreshResult {
        let done = crate::store::RefreshedToken::seal(
            &self.cipher,
            &self.pool,
            &job.token_id,
            &crate::crypto::Secret::new(secret),
            Some(self.clock.load(Ordering::SeqCst) + lives_ms),
            None,
        )
        .unwrap();
        self.store
            .job_complete(&self.pool, &job.job_id, job.attempts, &done, &RETRY)
            .await
            .unwrap()
    }

    pub(crate) async fn meta(&self, id: &str) -> crate::model::TokenMeta {
        self.store.token_get(&self.pool, id).await.unwrap()
    }
}

pub(crate) fn exhausted(r: Result<crate::model::LeaseGrant, VaultError>) -> Option<u64> {
    match r {
        Err(VaultError::PoolExhausted { retry_after_ms }) => retry_after_ms,
        other => panic!("expected pool_exhausted, got {other:?}"),
    }
}
