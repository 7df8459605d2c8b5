//! Pools: config, listing, status, whole-pool operations, freeze.

use super::*;

/// The status pipeline's answer: live leases, tokens with an expiry, stats hash, Redis TIME,
/// sampled token ids.
type StatusRow = (
    u64,
    u64,
    HashMap<String, i64>,
    (i64, i64),
    Vec<String>,
    Vec<Option<String>>,
    HashMap<String, u64>,
);

/// Tokens pool status reads to estimate how much of the quota is used.
const STATUS_SAMPLE: usize = 1000;

/// The rotation fields of the pool config, as status shows them.
fn rotation_status(f: &[Option<String>], deprecated: u64, now_ms: i64) -> Option<RotationStatus> {
    let get = |i: usize| f.get(i).cloned().flatten().unwrap_or_default();
    let id = get(0);
    if id.is_empty() {
        return None;
    }
    let ms = |i: usize| get(i).parse::<i64>().unwrap_or(0);
    Some(RotationStatus {
        id,
        started_at: crate::time::rfc3339(ms(1)),
        sunset_at: crate::time::rfc3339(ms(2)),
        reason: get(3),
        tokens: ms(4).max(0) as u64,
        refreshed: ms(5).max(0) as u64,
        deprecated_remaining: deprecated,
        done: ms(2) <= now_ms,
    })
}

/// Token counts by view state from the sizes of the view sets (`SCARD`, in `VIEW_STATES`
/// order). `v:active` holds every token whose state is active, `leased` and `cooling` included
/// (so a lease moves a token in one set, not two: `move_view` in lua/rules/placement.lua); the
/// `active` view is what is left of it.
fn view_counts(cards: &[u64]) -> BTreeMap<String, u64> {
    let card = |state: &str| {
        VIEW_STATES
            .iter()
            .position(|s| *s == state)
            .and_then(|i| cards.get(i).copied())
            .unwrap_or(0)
    };
    VIEW_STATES
        .iter()
        .map(|s| {
            let n = match *s {
                "active" => card("active").saturating_sub(card("leased") + card("cooling")),
                other => card(other),
            };
            (s.to_string(), n)
        })
        .collect()
}

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
                vec![pk.leases(), pk.cool(), pk.exp(), pk.sunset(), pk.due()]
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
            p.cmd("HMGET")
                .arg(pk.cfg())
                .arg(&["op", "lease_ttl_s", "min_token_ttl_s", "probe"]);
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
        let per = if janitor { 10 } else { 3 };
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
                let fields: HashMap<String, String> = [("lease_ttl_s", 1), ("min_token_ttl_s", 2)]
                    .into_iter()
                    .filter_map(|(k, i)| field(i).map(|v| (k.to_string(), v)))
                    .collect();
                let min_ttl_ms = PoolConfig::from_fields(&fields).min_token_ttl_s as f64 * 1000.0;
                PoolDue {
                    operation: field(0).is_some_and(|o| !o.is_empty()),
                    leases: due(&r[0]),
                    cooled: due(&r[1]),
                    expiring: first(&r[2]).is_some_and(|s| s < now + min_ttl_ms),
                    sunset: due(&r[3]),
                    refresh: due(&r[4]),
                    pipelines: due(&r[5])
                        || r[6..9]
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

    /// Token counts by view state.
    pub async fn token_counts(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        for s in VIEW_STATES {
            p.cmd("SCARD").arg(pk.view(s));
        }
        let cards: Vec<u64> = self.pipe(p).await?;
        Ok(view_counts(&cards))
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

    pub async fn pool_status(&self, name: &str) -> Result<PoolStatus> {
        self.pool_status_sampled(name, STATUS_SAMPLE).await
    }

    /// Status with the quota ratio estimated from `sample` random tokens (the Redis time of a
    /// status grows with it: about 6 ms at 1,000 tokens).
    pub async fn pool_status_sampled(&self, name: &str, sample: usize) -> Result<PoolStatus> {
        let view = self.pool_get(name).await?;
        let tokens = self.token_counts(name).await?;
        let pk = self.keys.pool(name);
        let mut p = redis::pipe();
        p.cmd("ZCARD").arg(pk.leases());
        p.cmd("ZCARD").arg(pk.exp());
        p.cmd("HGETALL").arg(pk.stats());
        p.cmd("TIME");
        p.cmd("HRANDFIELD").arg(pk.ids()).arg(sample.max(1));
        p.cmd("HMGET").arg(pk.cfg()).arg(&[
            "rotation_id",
            "rotation_started_at",
            "rotation_sunset_at",
            "rotation_reason",
            "rotation_total",
            "rotation_refreshed",
            "op",
            "op_started_at",
            "op_affected",
        ]);
        p.cmd("HGETALL").arg(pk.rate());
        let (leases, exp_n, stats, time, sample, rot, rate): StatusRow = self.pipe(p).await?;
        let now_ms = match &self.clock {
            Some(c) => c.load(Ordering::SeqCst),
            None => time.0 * 1000 + time.1 / 1000,
        };
        let avg_ttl_remaining_s = (exp_n > 0).then(|| {
            let sum = *stats.get("exp_sum_s").unwrap_or(&0) as f64;
            (sum / exp_n as f64 - now_ms as f64 / 1000.0).max(0.0)
        });
        let tokens_deprecated = tokens["deprecated"];
        let leasable: u64 = crate::model::in_rotation_views().map(|s| tokens[s]).sum();
        let capacity = leasable * view.config.max_leases_per_token as u64;
        let rate = super::LeaseRate::from_hash(&rate, now_ms);
        let cfg = &view.config;
        let (needed, sized_by_quota) = cfg.tokens_needed(
            crate::model::Demand {
                units_per_s: rate.units_per_s,
                concurrent: leases as f64,
                duration_s: None,
            },
            rate.leases_per_s,
        );
        let sizing = crate::model::PoolSizing {
            lease_rate_per_s: rate.leases_per_s,
            units_rate_per_s: rate.units_per_s,
            observed_s: rate.observed_s,
            needed,
            sized_by_quota,
            tokens_in_rotation: leasable,
            headroom_tokens: (leasable as i64)
                .saturating_sub(needed.tokens_needed.min(i64::MAX as u64) as i64),
        };
        let utilization = if capacity == 0 {
            0.0
        } else {
            leases as f64 / capacity as f64
        };
        let ok = *stats.get("refresh_ok").unwrap_or(&0) as f64;
        let failed = *stats.get("refresh_fail").unwrap_or(&0) as f64;
        let refresh_success_rate = (ok + failed > 0.0).then(|| ok / (ok + failed));
        let ratios = self.quota_ratios(name, &sample).await?;
        let quotas: Vec<crate::model::QuotaStatus> =
            std::iter::once((crate::model::DEFAULT_QUOTA, crate::model::REQUESTS))
                .chain(
                    cfg.quotas
                        .iter()
                        .map(|q| (q.name.as_str(), q.cost.as_str())),
                )
                .enumerate()
                .map(|(i, (name, cost))| crate::model::QuotaStatus {
                    name: name.to_string(),
                    cost: cost.to_string(),
                    used_ratio: ratios.get(i).copied().flatten(),
                    binds: stats
                        .get(&format!("binds:{name}"))
                        .copied()
                        .unwrap_or(0)
                        .max(0) as u64,
                })
                // `default` only when something limits it.
                .filter(|q| {
                    q.name != crate::model::DEFAULT_QUOTA
                        || cfg.quota_limit.is_some()
                        || q.used_ratio.is_some()
                })
                .collect();
        let quota_used_ratio = quotas
            .iter()
            .filter_map(|q| q.used_ratio)
            .max_by(f64::total_cmp);
        let binding_quota = quotas
            .iter()
            .filter(|q| q.binds > 0)
            .max_by_key(|q| q.binds)
            .map(|q| q.name.clone());
        let janitor = self.janitor_beat().await?.map(|b| b.status(now_ms));
        // Pipelines by size only (their own status reads their tokens).
        let pipelines = self.pipeline_status_sampled(name, cfg, &[], 0).await?;
        let field = |i: usize| rot.get(i).cloned().flatten().unwrap_or_default();
        let operation = (!field(6).is_empty()).then(|| crate::model::OperationStatus {
            kind: field(6),
            started_at: crate::time::rfc3339(field(7).parse().unwrap_or(0)),
            tokens_done: field(8).parse().unwrap_or(0),
        });
        Ok(PoolStatus {
            janitor,
            operation,
            pipelines,
            pool: name.to_string(),
            tokens,
            leases_active: leases,
            avg_ttl_remaining_s,
            utilization,
            refresh_success_rate,
            quota_used_ratio,
            quotas,
            binding_quota,
            frozen: view.frozen,
            refresh_failures: failed as u64,
            refresh_short_lived: *stats.get("refresh_short_lived").unwrap_or(&0) as u64,
            warnings: view.warnings,
            rotation: rotation_status(&rot, tokens_deprecated, now_ms),
            sizing,
            global: None,
        })
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

    /// Used share of each quota (`default` first, then the pool's others in order) over limited
    /// tokens in rotation: exact up to 1,000 tokens, a random sample of 1,000 above that (status
    /// must not walk a 100k-token pool).
    async fn quota_ratios(&self, name: &str, ids: &[String]) -> Result<Vec<Option<f64>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let rows = self.token_rows(name, &["state"], ids).await?;
        // (used, limit) per quota.
        let mut sums: Vec<(f64, f64)> = vec![];
        for (values, quotas) in rows.into_iter().flatten() {
            let state = values.first().cloned().flatten().unwrap_or_default();
            if !matches!(state.as_str(), "active" | "deprecated") {
                continue;
            }
            sums.resize(sums.len().max(quotas.len()), (0.0, 0.0));
            for (i, q) in quotas.iter().enumerate() {
                let Some(lim) = q.limit else {
                    continue;
                };
                sums[i].0 += (q.used.max(0) + q.reserved.max(0)) as f64;
                sums[i].1 += lim as f64;
            }
        }
        Ok(sums
            .into_iter()
            .map(|(used, limit)| (limit > 0.0).then(|| (used / limit).min(1.0)))
            .collect())
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
