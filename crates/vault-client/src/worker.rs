//! [`Worker`]: one lease kept across requests, dropped the moment the vault announces it revoked.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::*;

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
            "token.revoked" | "token.quarantined" => e.data.token_id.as_deref(),
            "lease.revoked" => e.data.lease_id.as_deref(),
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
