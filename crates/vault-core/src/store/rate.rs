//! The lease rate of each pool, for sizing: every replica counts the leases it grants in memory
//! (nothing added to the lease path's Redis work) and adds its counts to a per-minute hash of the
//! pool every few seconds (`flush_lease_tally`). Status reads the last few minutes.

use super::*;

/// Minutes of counts status averages over (plus the minute running).
pub const RATE_MINUTES: i64 = 5;
/// Minutes of counts kept in the hash; older fields are deleted as new ones come.
const RATE_KEEP_MINUTES: i64 = 15;

/// Leases and units granted by this process since the last flush, by pool.
#[derive(Debug, Default)]
pub(super) struct LeaseTally(std::sync::Mutex<HashMap<String, (u64, u64)>>);

impl LeaseTally {
    fn record(&self, pool: &str, units: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(pool.to_string()).or_default();
        e.0 += 1;
        e.1 += units;
    }

    fn take(&self) -> HashMap<String, (u64, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put_back(&self, counts: HashMap<String, (u64, u64)>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (pool, (l, u)) in counts {
            let e = m.entry(pool).or_default();
            e.0 += l;
            e.1 += u;
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
    /// Count a lease this process granted (for the pool's observed rate); an idempotent replay
    /// of one granted before is not a new lease.
    pub(crate) fn tally_lease(&self, pool: &str, grant: &crate::model::LeaseGrant) {
        if !grant.replayed {
            self.tally.record(pool, grant.units);
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
            .map(|(pool, (l, u))| {
                let key = self.keys.pool(pool).rate();
                let mut p = redis::pipe();
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{minute}:l"))
                    .arg(*l);
                p.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{minute}:u"))
                    .arg(*u);
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
