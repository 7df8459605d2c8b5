//! Pools: config, listing, whole-pool operations, layout, freeze. (Status: `status.rs`.)

use super::status::view_counts;
use super::*;

/// A pool's view from its config hash; None when the hash is empty (no such pool).
fn pool_view(name: &str, f: &HashMap<String, String>) -> Option<PoolView> {
    // A pool whose deletion has started is gone (as `load_cfg` has it in Lua).
    if f.is_empty() || f.get("op").map(String::as_str) == Some("delete") {
        return None;
    }
    let config = PoolConfig::from_fields(f);
    let issued_ttl_s = f.get("issued_ttl_s").and_then(|v| v.parse().ok());
    Some(PoolView {
        warnings: config.margin_warnings(issued_ttl_s),
        issued_ttl_s,
        name: name.to_string(),
        config,
        frozen: f.get("frozen").map(String::as_str) == Some("1"),
        frozen_reason: f.get("frozen_reason").filter(|r| !r.is_empty()).cloned(),
        tokens: None,
    })
}

impl Store {
    /// Create or replace a pool's config. Returns true when it was created.
    pub(crate) async fn pool_upsert(&self, name: &str, cfg: &PoolConfig) -> Result<bool> {
        let fields = serde_json::to_string(&cfg.to_fields()).expect("config serializes");
        let v: reply::Upserted = self.call(name, &scripts::PoolUpsert { fields }).await?;
        // The name set is a separate slot; the cfg hash is the truth, this is the index.
        self.cmd::<()>(redis::cmd("SADD").arg(self.keys.pools()).arg(name).clone())
            .await?;
        if !v.created {
            self.pool_op_finish(name, &v.op_id).await?;
        }
        Ok(v.created)
    }

    /// What `who`'s sweeps would find in each of `pools`, read in one pipeline of cheap
    /// commands (the earliest entry of each time index it serves, a few config fields), so
    /// that a sweep runs a pool's scripts only where something is due. Fields of the other
    /// sweeper are left false.
    pub async fn pools_due(&self, pools: &[String], who: Sweeper) -> Result<Vec<PoolDue>> {
        if pools.is_empty() {
            return Ok(vec![]);
        }
        let janitor = who == Sweeper::Janitor;
        let mut groups = vec![redis::pipe().cmd("TIME").clone()];
        for name in pools {
            let mut p = redis::pipe();
            let pk = self.keys.pool(name);
            let indexes = if janitor {
                vec![
                    pk.leases(),
                    pk.cool(),
                    pk.exp(),
                    pk.sunset(),
                    pk.due(),
                    pk.aged(),
                ]
            } else {
                vec![pk.due(), pk.jobs()]
            };
            for key in indexes {
                p.cmd("ZRANGE").arg(key).arg(0).arg(0).arg("WITHSCORES");
            }
            if janitor {
                // Pipelines: the first deadline, and any under strength, being worked, or news.
                p.cmd("ZRANGE")
                    .arg(pk.pipelines())
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
                p.cmd("SCARD").arg(pk.pipelines_short());
                p.cmd("SCARD").arg(pk.pipelines_work());
                p.cmd("LLEN").arg(pk.pipeline_news());
            }
            p.cmd("HMGET").arg(pk.cfg()).arg(&[
                "op",
                "lease_ttl_s",
                "min_token_ttl_s",
                "probe",
                "scheduled_max_age_s",
            ]);
            groups.push(p);
        }
        let mut rows = self.pipes(groups).await?;
        let time: (i64, i64) = redis::from_redis_value(rows.remove(0))
            .map_err(|e| VaultError::Internal(format!("TIME: {e}")))?;
        let now = match &self.clock {
            Some(c) => c.load(Ordering::SeqCst),
            None => time.0 * 1000 + time.1 / 1000,
        } as f64;
        let first = |v: &redis::Value| -> Option<f64> {
            let r: Vec<(String, f64)> = redis::from_redis_value(v.clone()).ok()?;
            r.first().map(|(_, s)| *s)
        };
        let due = |v: &redis::Value| first(v).is_some_and(|s| s <= now);
        let per = if janitor { 11 } else { 3 };
        Ok(rows
            .chunks(per)
            .map(|r| {
                let cfg: Vec<Option<String>> =
                    redis::from_redis_value(r[per - 1].clone()).unwrap_or_default();
                let field = |i: usize| cfg.get(i).cloned().flatten();
                if !janitor {
                    return PoolDue {
                        refresh: due(&r[0]),
                        jobs: due(&r[1]),
                        probe: field(3).is_some_and(|p| !p.is_empty() && p != "null"),
                        ..Default::default()
                    };
                }
                let fields: HashMap<String, String> = [
                    ("lease_ttl_s", 1),
                    ("min_token_ttl_s", 2),
                    ("scheduled_max_age_s", 4),
                ]
                .into_iter()
                .filter_map(|(k, i)| field(i).map(|v| (k.to_string(), v)))
                .collect();
                let cfg = PoolConfig::from_fields(&fields);
                let min_ttl_ms = cfg.min_token_ttl_s as f64 * 1000.0;
                PoolDue {
                    operation: field(0).is_some_and(|o| !o.is_empty()),
                    leases: due(&r[0]),
                    cooled: due(&r[1]),
                    expiring: first(&r[2]).is_some_and(|s| s < now + min_ttl_ms),
                    sunset: due(&r[3]),
                    refresh: due(&r[4]),
                    aged: cfg.rotation.as_ref().is_some_and(|s| {
                        first(&r[5])
                            .is_some_and(|from| s.rotation_due_at(from as i64) as f64 <= now)
                    }),
                    pipelines: due(&r[6])
                        || r[7..10]
                            .iter()
                            .any(|v| redis::from_redis_value::<u64>(v.clone()).unwrap_or(0) > 0),
                    ..Default::default()
                }
            })
            .collect())
    }

    /// One batch of the pool's running whole-pool operation (see `lua/pool_op.lua`).
    /// `op_id`: the operation the caller drives ("" = whichever runs).
    pub(crate) async fn pool_op_step(&self, pool: &str, op_id: &str) -> Result<PoolOp> {
        let v: reply::Batch = self
            .call(
                pool,
                &scripts::PoolOp {
                    batch: POOL_OP_BATCH as u64,
                    op_id: op_id.to_string(),
                },
            )
            .await?;
        let op = PoolOp {
            op: v.op,
            done: v.done,
            affected: v.affected,
        };
        if op.op == "delete" && op.done {
            // The name set is another slot: the index goes once the pool's keys are gone,
            // unless the pool was created again in between (then it stays listed).
            self.cmd::<()>(redis::cmd("SREM").arg(self.keys.pools()).arg(pool).clone())
                .await?;
            let again: bool = self
                .cmd(redis::cmd("EXISTS").arg(self.keys.pool(pool).cfg()).clone())
                .await?;
            if again {
                self.cmd::<()>(redis::cmd("SADD").arg(self.keys.pools()).arg(pool).clone())
                    .await?;
            }
        }
        Ok(op)
    }

    /// Run the pool's operation to its end, batch after batch, each a short script of its own
    /// (other pools' calls go between them). It runs in a task of its own, so a caller that
    /// goes away (a client hanging up) does not stop it half-way; a replica that dies leaves
    /// it to the janitors, who drive every unfinished operation on.
    pub(crate) async fn pool_op_finish(&self, pool: &str, op_id: &str) -> Result<PoolOp> {
        let (store, pool, op_id) = (self.clone(), pool.to_string(), op_id.to_string());
        tokio::spawn(async move {
            loop {
                let op = store.pool_op_step(&pool, &op_id).await?;
                if op.done {
                    return Ok(op);
                }
            }
        })
        .await
        .map_err(|e| VaultError::Internal(format!("pool operation task: {e}")))?
    }

    pub async fn pool_get(&self, name: &str) -> Result<PoolView> {
        let f: HashMap<String, String> = self
            .cmd(
                redis::cmd("HGETALL")
                    .arg(self.keys.pool(name).cfg())
                    .clone(),
            )
            .await?;
        pool_view(name, &f).ok_or(VaultError::PoolNotFound)
    }

    pub async fn pool_config(&self, name: &str) -> Result<PoolConfig> {
        Ok(self.pool_get(name).await?.config)
    }

    /// Pools stored in an older layout (their config's `layout_version` is absent — before
    /// internal ids — or older than [`LAYOUT_VERSION`]): this vault does not read them. Every
    /// process checks at start-up and refuses to run ([`VaultError::LayoutOutdated`], naming
    /// `vaultctl migrate`) rather than misread them.
    pub async fn check_layout(&self) -> Result<()> {
        let outdated: Vec<String> = self
            .config_fields_of_every_pool(&["frozen", "layout_version"])
            .await?
            .into_iter()
            // No `frozen`: the pool's config is gone (deleted), nothing to read.
            .filter(|(_, row)| row[0].is_some() && row[1].as_deref() != Some(LAYOUT_VERSION))
            .map(|(pool, _)| pool)
            .collect();
        if outdated.is_empty() {
            return Ok(());
        }
        Err(VaultError::LayoutOutdated(format!(
            "{} pool(s) ({}{}) are stored in the layout of an older tokenvault (before internal \
             token ids, or before the fingerprint index), which this version does not read: \
             stop every vault process of the old version, then run `vaultctl migrate` once with \
             this deployment's TV_REDIS_URL and TV_PREFIX (it converts in short batches and can \
             be run again after a stop)",
            outdated.len(),
            outdated
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if outdated.len() > 5 { ", ..." } else { "" }
        )))
    }

    /// Convert `pool` from an older layout, `batch` tokens per call (a call of
    /// 50 tokens holds Redis for about 2.5 ms), calling `progress` with the tokens
    /// converted so far and those left after each call. Returns how many it converted.
    pub(crate) async fn migrate_layout(
        &self,
        pool: &str,
        batch: u64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64> {
        let mut converted = 0;
        loop {
            let v: reply::Migrated = self.call(pool, &scripts::MigrateLayout { batch }).await?;
            converted += v.converted;
            progress(converted, v.left);
            if v.done {
                return Ok(converted);
            }
        }
    }

    /// Complete every pool written by an older vault: the settings its config lacks (the
    /// functions read settings and never invent them) and this version's config layout (see
    /// `write_cfg` in lua/rules/base.lua). Returns how many pools were completed. Safe to run
    /// from several processes at once (each writes the same values).
    pub async fn complete_pool_configs(&self) -> Result<u64> {
        // Settings derived from others when a pool is written, and the layout field.
        const WRITTEN_SINCE: [&str; 3] = ["min_token_ttl_s", "refresh_margin_s", "layout"];
        let mut done = 0;
        for (pool, row) in self.config_fields_of_every_pool(&WRITTEN_SINCE).await? {
            if row
                .iter()
                .all(|v| v.as_deref().is_some_and(|v| !v.is_empty()))
            {
                continue;
            }
            let Ok(cfg) = self.pool_config(&pool).await else {
                continue;
            };
            // Settings only: the refresh record is the pool's own (a legacy one may still
            // hold its client secret for `vaultctl keys reencrypt` to seal).
            let mut fields = cfg.to_fields();
            fields.retain(|k, _| {
                !matches!(*k, "refresh" | "refresh_ct" | "refresh_key_id" | "probe")
            });
            let fields = serde_json::to_string(&fields).expect("config serializes");
            let v: reply::Completed = self.call(&pool, &scripts::PoolComplete { fields }).await?;
            done += u64::from(v.completed);
        }
        Ok(done)
    }

    /// `fields` of every pool's config (None where absent), read 500 pools per pipeline.
    async fn config_fields_of_every_pool(
        &self,
        fields: &[&str],
    ) -> Result<Vec<(String, Vec<Option<String>>)>> {
        let mut out = Vec::new();
        for chunk in self.pool_names().await?.chunks(500) {
            let groups = chunk
                .iter()
                .map(|pool| {
                    redis::pipe()
                        .cmd("HMGET")
                        .arg(self.keys.pool(pool).cfg())
                        .arg(fields)
                        .clone()
                })
                .collect();
            for (pool, row) in chunk.iter().zip(self.pipes(groups).await?) {
                let mut row: Vec<Option<String>> = redis::from_redis_value(row).unwrap_or_default();
                row.resize(fields.len(), None);
                out.push((pool.clone(), row));
            }
        }
        Ok(out)
    }

    /// Every pool name, sorted.
    pub async fn pool_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .cmd(redis::cmd("SMEMBERS").arg(self.keys.pools()).clone())
            .await?;
        names.sort();
        Ok(names)
    }

    /// One page of pools with their token counts: up to `limit` names from `cursor` (SSCAN of
    /// the pool set), or, for a client limited to some pools, from its own list (the cursor is
    /// then an offset). Every pool of the page is read in one pipeline. Returns the page and
    /// the next cursor (None at the end).
    pub async fn pool_page(
        &self,
        only: Option<&[String]>,
        limit: usize,
        cursor: u64,
    ) -> Result<(Vec<PoolView>, Option<u64>)> {
        let (names, next) = match only {
            Some(own) => {
                let mut own = own.to_vec();
                own.sort();
                own.dedup();
                let from = (cursor as usize).min(own.len());
                let to = (from + limit).min(own.len());
                (
                    own[from..to].to_vec(),
                    (to < own.len()).then_some(to as u64),
                )
            }
            None => self.sscan_page(&self.keys.pools(), cursor, limit).await?,
        };
        if names.is_empty() {
            return Ok((vec![], next));
        }
        let mut groups = vec![];
        for name in &names {
            let mut p = redis::pipe();
            let pk = self.keys.pool(name);
            p.cmd("HGETALL").arg(pk.cfg());
            for st in VIEW_STATES {
                p.cmd("SCARD").arg(pk.view(st));
            }
            groups.push(p);
        }
        let rows = self.pipes(groups).await?;
        let per = 1 + VIEW_STATES.len();
        let mut views = Vec::with_capacity(names.len());
        for (name, row) in names.iter().zip(rows.chunks(per)) {
            let f: HashMap<String, String> = redis::from_redis_value(row[0].clone())
                .map_err(|e| VaultError::Internal(format!("pool config: {e}")))?;
            // Deleted since it was listed (or a name without a config): skipped.
            let Some(mut view) = pool_view(name, &f) else {
                continue;
            };
            let cards = row[1..]
                .iter()
                .map(|v| {
                    redis::from_redis_value(v.clone())
                        .map_err(|e| VaultError::Internal(format!("token count: {e}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            view.tokens = Some(view_counts(&cards));
            views.push(view);
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((views, next))
    }

    /// Delete a pool. Without `force` it must hold no tokens. Returns the tokens deleted.
    pub(crate) async fn pool_delete(&self, name: &str, force: bool) -> Result<u64> {
        let v: reply::Deleting = self.call(name, &scripts::PoolDelete { force }).await?;
        self.pool_op_finish(name, &v.op_id).await?;
        Ok(v.tokens)
    }

    /// Record that a janitor finished a sweep. The record expires after ten intervals (at
    /// least a minute), so a janitor gone for long shows as none at all.
    pub async fn janitor_beat_write(&self, interval: Duration) -> Result<()> {
        let interval_ms = interval.as_millis() as u64;
        let now = self.now_ms().await?;
        self.cmd(
            redis::cmd("SET")
                .arg(self.keys.janitor())
                .arg(format!("{now} {interval_ms}"))
                .arg("PX")
                .arg((interval_ms * 10).max(60_000))
                .clone(),
        )
        .await
    }

    /// The last janitor heartbeat, if one is recent enough to be kept.
    pub async fn janitor_beat(&self) -> Result<Option<crate::model::JanitorBeat>> {
        let v: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.keys.janitor()).clone())
            .await?;
        Ok(v.and_then(|v| {
            let (at, iv) = v.split_once(' ')?;
            Some(crate::model::JanitorBeat {
                last_sweep_ms: at.parse().ok()?,
                interval_ms: iv.parse().ok()?,
            })
        }))
    }

    pub(crate) async fn freeze(
        &self,
        pool: &str,
        revoke_leases: bool,
        reason: &str,
    ) -> Result<Vec<EndedLease>> {
        // Live leases end in batches (each a short script); the pool is frozen from the first.
        let mut all = vec![];
        loop {
            let v: reply::LeasesEnded = self
                .call(
                    pool,
                    &scripts::Freeze {
                        end_leases: revoke_leases,
                        reason: reason.into(),
                        batch: POOL_OP_BATCH as u64,
                    },
                )
                .await?;
            let ended = v.leases_ended;
            let full = ended.len() >= POOL_OP_BATCH;
            all.extend(ended);
            if !full {
                return Ok(all);
            }
        }
    }

    pub(crate) async fn unfreeze(&self, pool: &str) -> Result<()> {
        self.call::<_, Value>(pool, &scripts::Unfreeze {})
            .await
            .map(drop)
    }
}
