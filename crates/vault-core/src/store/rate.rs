//! The lease rate of each pool, for sizing: every replica counts the leases it grants in memory
//! (nothing added to the lease path's Redis work) and adds its counts to a per-minute hash of the
//! pool every few seconds (`flush_lease_tally`). Status reads the last few minutes. The same
//! flush adds each token's count to a per-minute zset of the pool, from which status tells how
//! much busier the busiest token was than the median one (`lease_skew`).

use super::*;

/// Minutes of counts status averages over (plus the minute running).
pub const RATE_MINUTES: i64 = 5;
/// Minutes of counts kept in the hash; older fields are deleted as new ones come.
const RATE_KEEP_MINUTES: i64 = 15;

/// Minutes a pool's per-token lease counts are kept (status reads the last full minute).
const HEAT_KEEP_MINUTES: i64 = 3;

/// What this process granted of one pool since the last flush.
#[derive(Debug, Default)]
struct PoolTally {
    leases: u64,
    units: u64,
    /// Leases by token id.
    by_token: HashMap<String, u64>,
}

/// Leases and units granted by this process since the last flush, by pool.
#[derive(Debug, Default)]
pub(super) struct LeaseTally(std::sync::Mutex<HashMap<String, PoolTally>>);

impl LeaseTally {
    fn record(&self, pool: &str, token_id: &str, units: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(pool.to_string()).or_default();
        e.leases += 1;
        e.units += units;
        *e.by_token.entry(token_id.to_string()).or_default() += 1;
    }

    fn take(&self) -> HashMap<String, PoolTally> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put_back(&self, counts: HashMap<String, PoolTally>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (pool, t) in counts {
            let e = m.entry(pool).or_default();
            e.leases += t.leases;
            e.units += t.units;
            for (id, n) in t.by_token {
                *e.by_token.entry(id).or_default() += n;
            }
        }
    }
}

/// A pool's observed rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LeaseRate {
    pub leases_per_s: f64,
    pub units_per_s: f64,
    /// The span the rate is measured over, in seconds.
    pub observed_s: f64,
}

impl LeaseRate {
    /// The rate from a pool's rate hash (`<minute>:l` / `<minute>:u` fields) at `now_ms`.
    pub fn from_hash(h: &HashMap<String, u64>, now_ms: i64) -> Self {
        let minute = now_ms.div_euclid(60_000);
        let (mut leases, mut units) = (0u64, 0u64);
        for m in minute - RATE_MINUTES..=minute {
            leases += h.get(&format!("{m}:l")).copied().unwrap_or(0);
            units += h.get(&format!("{m}:u")).copied().unwrap_or(0);
        }
        let observed_s = (RATE_MINUTES * 60) as f64 + now_ms.rem_euclid(60_000) as f64 / 1000.0;
        Self {
            leases_per_s: leases as f64 / observed_s,
            units_per_s: units as f64 / observed_s,
            observed_s,
        }
    }
}

impl Store {
    /// The lease skew of `pool` over the last full minute before `now_ms` (None: no lease in it).
    pub(crate) async fn lease_skew(
        &self,
        pool: &str,
        now_ms: i64,
    ) -> Result<Option<crate::model::LeaseSkew>> {
        let minute = now_ms.div_euclid(60_000) - 1;
        let heat = self.keys.pool(pool).heat(minute);
        let mut p = redis::pipe();
        p.cmd("ZCARD").arg(&heat);
        p.cmd("ZRANGE").arg(&heat).arg(-1).arg(-1).arg("WITHSCORES");
        let (n, top): (u64, Vec<(String, f64)>) = self.pipe(p).await?;
        let Some((busiest_token, busiest)) = top.into_iter().next() else {
            return Ok(None);
        };
        let mid = (n / 2) as i64;
        let mut p = redis::pipe();
        p.cmd("ZRANGE")
            .arg(&heat)
            .arg(mid)
            .arg(mid)
            .arg("WITHSCORES");
        let (median,): (Vec<(String, f64)>,) = self.pipe(p).await?;
        Ok(Some(crate::model::LeaseSkew {
            minute_at: crate::time::rfc3339(minute * 60_000),
            tokens_leased: n,
            busiest_token,
            busiest_leases: busiest as u64,
            median_leases: median.first().map_or(busiest, |m| m.1) as u64,
        }))
    }

    /// Count a lease this process granted (for the pool's observed rate); an idempotent replay
    /// of one granted before is not a new lease.
    pub(crate) fn tally_lease(&self, pool: &str, grant: &crate::model::LeaseGrant) {
        if !grant.replayed {
            self.tally.record(pool, &grant.token_id, grant.units);
        }
    }

    /// Add this process's lease counts to the pools' rate hashes. Counts that could not be
    /// written (Redis down) are kept for the next flush.
    pub async fn flush_lease_tally(&self) -> Result<()> {
        let counts = self.tally.take();
        if counts.is_empty() {
            return Ok(());
        }
        let now = match self.now_ms().await {
            Ok(n) => n,
            Err(e) => {
                self.tally.put_back(counts);
                return Err(e);
            }
        };
        let minute = now.div_euclid(60_000);
        let groups = counts
            .iter()
            .map(|(pool, t)| {
                let pk = self.keys.pool(pool);
                let key = pk.rate();
                let mut p = redis::pipe();
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{minute}:l"))
                    .arg(t.leases);
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{minute}:u"))
                    .arg(t.units);
                let heat = pk.heat(minute);
                for (id, n) in &t.by_token {
                    p.cmd("ZINCRBY").arg(&heat).arg(*n).arg(id);
                }
                p.cmd("EXPIRE").arg(&heat).arg(HEAT_KEEP_MINUTES * 60);
                let old: Vec<String> = (minute - RATE_KEEP_MINUTES - 5..minute - RATE_KEEP_MINUTES)
                    .flat_map(|m| [format!("{m}:l"), format!("{m}:u")])
                    .collect();
                p.cmd("HDEL").arg(&key).arg(old);
                p.cmd("EXPIRE").arg(&key).arg(RATE_KEEP_MINUTES * 60 + 300);
                p
            })
            .collect();
        if let Err(e) = self.pipes(groups).await {
            self.tally.put_back(counts);
            return Err(e);
        }
        Ok(())
    }
}
