//! A region's follower: the global log applied here through the operations, in order, with a
//! persisted resume point; a resync from the global state when the log was trimmed past it.

use std::future::Future;
use std::time::Duration;

use super::client::{on_primary, Link};
use super::*;
use crate::error::VaultError;
use crate::ops::Actor;
use crate::{Result, Store};

/// Where a region stands with the global state, as its follower last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Global time (ms) up to which every action is applied here; None: never caught up.
    pub as_of_ms: Option<i64>,
    /// The last entry applied here.
    pub applied: Option<String>,
}

impl Store {
    /// This region's freshness (one GET on the region's Redis).
    pub async fn global_freshness(&self) -> Result<Freshness> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.global_keys().fresh()).clone())
            .await?;
        let Some(v) = v else {
            return Ok(Freshness::default());
        };
        let (ms, applied) = v.split_once(' ').unwrap_or((&v, ""));
        Ok(Freshness {
            as_of_ms: ms.parse().ok(),
            applied: (!applied.is_empty()).then(|| applied.to_string()),
        })
    }

    pub fn global_keys(&self) -> GlobalKeys {
        GlobalKeys {
            prefix: self.keys().prefix().to_string(),
        }
    }

    /// Apply one global action in this region, through the operations a local call uses.
    /// Idempotent: what is already in effect here is left as it is, unannounced.
    pub async fn apply_global(&self, id: &str, e: &GlobalEntry) -> Result<()> {
        let actor = Actor {
            name: format!("{} (global, from {})", e.actor, e.region),
            jti: e.actor_jti.clone(),
        };
        match &e.action {
            GlobalAction::CredentialRevoke { fingerprint } => {
                let done = self
                    .revoke_credential(&actor, fingerprint, &e.reason)
                    .await?;
                tracing::info!(entry_id = id, fingerprint = %fingerprint, tokens = done.len(), "global credential revocation applied");
            }
            GlobalAction::ClientRevoke { jti, until_s } => {
                self.revoke_client_token(&actor, jti, *until_s).await?;
            }
            GlobalAction::PoolFreeze {
                pool,
                revoke_leases,
            } => match self.pool_get(pool).await {
                Ok(v) => {
                    self.mark_frozen_here(pool, true).await?;
                    if !v.frozen {
                        self.freeze_pool(&actor, pool, *revoke_leases, &e.reason)
                            .await?;
                    }
                }
                Err(VaultError::PoolNotFound) => {}
                Err(err) => return Err(err),
            },
            GlobalAction::PoolUnfreeze { pool } => {
                match self.pool_get(pool).await {
                    Ok(v) if v.frozen => self.unfreeze_pool(&actor, pool).await?,
                    Ok(_) | Err(VaultError::PoolNotFound) => {}
                    Err(err) => return Err(err),
                }
                self.mark_frozen_here(pool, false).await?;
            }
        }
        Ok(())
    }

    /// Record (or forget) that this region's pool is frozen by a global freeze.
    async fn mark_frozen_here(&self, pool: &str, frozen: bool) -> Result<()> {
        let key = self.global_keys().frozen_here();
        let cmd = if frozen { "SADD" } else { "SREM" };
        self.cmd(redis::cmd(cmd).arg(key).arg(pool).clone()).await
    }

    /// Whether this process holds (or now takes) the region's follower lock for `ttl`.
    async fn hold_follower_lock(&self, me: &str, ttl: Duration) -> Result<bool> {
        const HOLD: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
            if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0";
        let held: i64 = self
            .cmd(
                redis::cmd("EVAL")
                    .arg(HOLD)
                    .arg(1)
                    .arg(self.global_keys().follower())
                    .arg(me)
                    .arg(ttl.as_millis() as u64)
                    .clone(),
            )
            .await?;
        Ok(held == 1)
    }
}

/// Entries applied per read of the log.
const FOLLOW_BATCH: usize = 100;
/// How long one blocking read waits for a new entry; the loop re-reads the beat after it.
const FOLLOW_BLOCK: Duration = Duration::from_millis(500);
/// The follower lock's life: a follower that died is replaced within it.
const FOLLOWER_LOCK: Duration = Duration::from_secs(5);

/// Follow the global log on the region's replica and apply every entry here, in order, with
/// a persisted resume point, until `stop` resolves. Any number of janitors may run it: one
/// holds the region's lock and follows, the others wait to take over. Errors are logged and
/// retried with a backoff (the replica or the region's Redis may be down for a while).
pub async fn follow(store: Store, global: Global, stop: impl Future<Output = ()>) {
    let me = uuid::Uuid::new_v4().to_string();
    // The blocking read gets a connection of its own: it holds it while it waits.
    let blocking = Link::new(&global.read_url);
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let step = follow_step(&store, &global, &blocking, &me);
        tokio::select! {
            _ = &mut stop => return,
            r = step => match r {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "global follower: retrying");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// One round: take or keep the lock, catch up to the beat the replica holds, record how
/// fresh the region is, then wait briefly for the next entry and apply what came.
async fn follow_step(store: &Store, global: &Global, blocking: &Link, me: &str) -> Result<()> {
    if !store.hold_follower_lock(me, FOLLOWER_LOCK).await? {
        tokio::time::sleep(FOLLOWER_LOCK / 5).await;
        return Ok(());
    }
    let keys = store.global_keys();
    let mut applied: String = store
        .cmd::<Option<String>>(redis::cmd("GET").arg(keys.applied()).clone())
        .await?
        .unwrap_or_else(|| "0-0".into());
    // Read first: every entry made before this beat is on the replica already.
    let beat = global.read_beat().await?;
    // Entries older than the log's start were trimmed: if the resume point is among them,
    // some this region never applied may be too. (When it was the very last one trimmed, the
    // resync was not needed: harmless, it applies nothing new.)
    let start = global.log_start_if_trimmed().await?;
    if start.is_some_and(|start| after(&start, &applied)) {
        applied = resync(store, global, &applied).await?;
    }
    loop {
        let entries = global.read_log(&applied, FOLLOW_BATCH).await?;
        let full = entries.len() == FOLLOW_BATCH;
        applied = apply_entries(store, &applied, entries).await?;
        if !full {
            break;
        }
    }
    if let Some(b) = beat {
        store
            .cmd::<()>(
                redis::cmd("SET")
                    .arg(keys.fresh())
                    .arg(format!("{b} {applied}"))
                    .clone(),
            )
            .await?;
    }
    let next = global
        .wait_log(blocking, &applied, FOLLOW_BATCH, FOLLOW_BLOCK)
        .await?;
    apply_entries(store, &applied, next).await?;
    Ok(())
}

/// Apply entries in order, moving the resume point past each once it is applied. Returns the
/// new resume point.
async fn apply_entries(
    store: &Store,
    from: &str,
    entries: Vec<(String, Option<GlobalEntry>)>,
) -> Result<String> {
    let mut applied = from.to_string();
    for (id, e) in entries {
        if !after(&id, &applied) {
            continue;
        }
        // An entry this version could not read was logged as such: only the resume point moves.
        if let Some(e) = e {
            store.apply_global(&id, &e).await?;
        }
        set_applied(store, &id).await?;
        applied = id;
    }
    Ok(applied)
}

/// The log was trimmed past this region's resume point (a partition longer than the log
/// holds): apply the whole global state instead — every revoked credential, every revoked
/// client token, every global freeze, and the unfreeze of every pool frozen here by a global
/// freeze that is no longer in force — and resume after the newest entry. Returns it.
async fn resync(store: &Store, global: &Global, applied: &str) -> Result<String> {
    tracing::error!(applied, "the global log was trimmed past this region's resume point; resyncing from the global state");
    let k = &global.keys;
    // The newest entry first: everything up to it is in the state read with it.
    let mut p = redis::pipe();
    p.cmd("XREVRANGE")
        .arg(k.log())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    p.cmd("HKEYS").arg(k.credentials());
    p.cmd("ZRANGE")
        .arg(k.clients())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    p.cmd("HKEYS").arg(k.frozen());
    #[allow(clippy::type_complexity)]
    let (last, credentials, clients, frozen): (
        Vec<(String, Vec<(String, String)>)>,
        Vec<String>,
        Vec<(String, i64)>,
        Vec<String>,
    ) = global.read.pipe(p).await.map_err(on_primary)?;
    let Some((last_id, _)) = last.into_iter().next() else {
        return Ok(applied.to_string());
    };
    let e = |action| GlobalEntry {
        action,
        reason: "global resync".into(),
        // Who did it and where is in the trimmed entry, not in the state: said as such.
        actor: "resync".into(),
        actor_jti: None,
        region: "the global state".into(),
    };
    for fingerprint in credentials {
        store
            .apply_global(&last_id, &e(GlobalAction::CredentialRevoke { fingerprint }))
            .await?;
    }
    for (jti, until_s) in clients {
        store
            .apply_global(&last_id, &e(GlobalAction::ClientRevoke { jti, until_s }))
            .await?;
    }
    // Pools frozen here by a global freeze whose unfreeze was trimmed away: unfrozen.
    let here: Vec<String> = store
        .cmd(
            redis::cmd("SMEMBERS")
                .arg(store.global_keys().frozen_here())
                .clone(),
        )
        .await?;
    for pool in here.into_iter().filter(|p| !frozen.contains(p)) {
        store
            .apply_global(&last_id, &e(GlobalAction::PoolUnfreeze { pool }))
            .await?;
    }
    for pool in frozen {
        store
            .apply_global(
                &last_id,
                &e(GlobalAction::PoolFreeze {
                    pool,
                    revoke_leases: false,
                }),
            )
            .await?;
    }
    set_applied(store, &last_id).await?;
    Ok(last_id)
}

/// Move the region's resume point to entry `id`.
async fn set_applied(store: &Store, id: &str) -> Result<()> {
    store
        .cmd(
            redis::cmd("SET")
                .arg(store.global_keys().applied())
                .arg(id)
                .clone(),
        )
        .await
}
