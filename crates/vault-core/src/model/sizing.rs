//! Pool sizing: how many tokens a demand needs. One rule, used by pool status (from the observed
//! lease rate) and by `vaultctl pool size` (before a job starts).

use serde::{Deserialize, Serialize};

/// A demand on a pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Quota units taken per second (a lease of `units` takes that many).
    pub units_per_s: f64,
    /// Leases held at once (workers holding a token at the same moment).
    pub concurrent: f64,
    /// How long the demand lasts; `None` = as long as the pool lives (steady state).
    pub duration_s: Option<u64>,
}

/// The pool's rules that bound what one token serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCapacity {
    /// Units one token serves per window: `quota_limit − quota_reserve`; `None` = unlimited.
    pub quota_per_window: Option<u64>,
    pub window_s: u64,
    pub max_leases_per_token: u64,
}

/// Tokens needed, and which limit asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokensNeeded {
    /// The larger of the two below.
    pub tokens_needed: u64,
    /// For the quota: `rate × window / quota per token`, the window cut to the demand's duration
    /// when that is shorter (a token's quota renews once per window).
    pub tokens_for_quota: u64,
    /// For concurrency: leases held at once / `max_leases_per_token`.
    pub tokens_for_concurrency: u64,
}

/// N = rate × window / quota per token (and enough tokens for the leases held at once).
pub fn tokens_needed(d: Demand, cap: TokenCapacity) -> TokensNeeded {
    let tokens_for_quota = match cap.quota_per_window {
        Some(q) if d.units_per_s > 0.0 => {
            let horizon = d.duration_s.map_or(cap.window_s, |s| s.min(cap.window_s));
            let units = d.units_per_s * horizon as f64;
            // A token with no quota left over the reserve serves nothing.
            if q == 0 {
                u64::MAX
            } else {
                ceil_u64(units / q as f64)
            }
        }
        _ => 0,
    };
    let tokens_for_concurrency = ceil_u64(d.concurrent / cap.max_leases_per_token.max(1) as f64);
    TokensNeeded {
        tokens_needed: tokens_for_quota.max(tokens_for_concurrency),
        tokens_for_quota,
        tokens_for_concurrency,
    }
}

impl super::PoolConfig {
    /// N over every quota of the pool: each quota's need for the demand (its cost dimension's
    /// rate: requests are `units_per_s`, a cost is `leases_per_s` × the pool's estimate), the
    /// largest kept, with the name of the quota it comes from.
    pub fn tokens_needed(&self, d: Demand, leases_per_s: f64) -> (TokensNeeded, Option<String>) {
        let max_leases_per_token = self.max_leases_per_token as u64;
        let mut quotas: Vec<(&str, Option<u64>, u64, f64)> = vec![(
            super::DEFAULT_QUOTA,
            self.quota_limit
                .map(|l| l.saturating_sub(self.quota_reserve)),
            self.quota_window_s,
            d.units_per_s,
        )];
        for q in &self.quotas {
            let rate = if q.cost == super::REQUESTS {
                d.units_per_s
            } else {
                leases_per_s * self.cost_estimates.get(&q.cost).copied().unwrap_or(0) as f64
            };
            quotas.push((&q.name, Some(q.limit - q.reserve), q.window_s, rate));
        }
        let mut best = (
            tokens_needed(
                Demand {
                    units_per_s: 0.0,
                    ..d
                },
                TokenCapacity {
                    quota_per_window: None,
                    window_s: self.quota_window_s,
                    max_leases_per_token,
                },
            ),
            None,
        );
        for (name, quota_per_window, window_s, units_per_s) in quotas {
            let n = tokens_needed(
                Demand { units_per_s, ..d },
                TokenCapacity {
                    quota_per_window,
                    window_s,
                    max_leases_per_token,
                },
            );
            if n.tokens_for_quota > best.0.tokens_for_quota {
                best = (n, Some(name.to_string()));
            }
        }
        best
    }
}

fn ceil_u64(x: f64) -> u64 {
    // Rates are measured: a hair over a whole number is that number, not one more token.
    let x = (x - 1e-9).ceil();
    if x.is_finite() && x > 0.0 {
        x.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(q: Option<u64>) -> TokenCapacity {
        TokenCapacity {
            quota_per_window: q,
            window_s: 3600,
            max_leases_per_token: 2,
        }
    }

    #[test]
    fn quota_sets_the_count_in_steady_state() {
        // 5 units/s over an hour is 18,000 units; 5,000 per token: 4 tokens.
        let d = Demand {
            units_per_s: 5.0,
            concurrent: 3.0,
            duration_s: None,
        };
        let n = tokens_needed(d, cap(Some(5000)));
        assert_eq!((n.tokens_for_quota, n.tokens_for_concurrency), (4, 2));
        assert_eq!(n.tokens_needed, 4);
    }

    #[test]
    fn a_job_shorter_than_the_window_needs_only_its_own_units() {
        // 10 minutes at 5 units/s: 3,000 units fit in one token's 5,000.
        let d = Demand {
            units_per_s: 5.0,
            concurrent: 1.0,
            duration_s: Some(600),
        };
        assert_eq!(tokens_needed(d, cap(Some(5000))).tokens_needed, 1);
        // A job longer than the window needs no more than a window's worth.
        let long = Demand {
            duration_s: Some(86_400),
            ..d
        };
        assert_eq!(tokens_needed(long, cap(Some(5000))).tokens_for_quota, 4);
    }

    #[test]
    fn the_quota_that_needs_most_tokens_sizes_the_pool() {
        let cfg: crate::model::PoolConfigInput = serde_json::from_value(serde_json::json!({
            "quota_limit": 5000,
            "quotas": [
                {"name": "rpm", "limit": 60, "window_s": 60},
                {"name": "tpm", "limit": 90000, "window_s": 60, "cost": "llm_tokens"},
            ],
            "cost_estimates": {"llm_tokens": 2000},
        }))
        .unwrap();
        let cfg = cfg
            .validate(
                &crate::crypto::Cipher::new(&crate::crypto::MasterKey::generate()),
                "p",
            )
            .unwrap();
        // 2 leases/s: 120 requests a minute (rpm: 2 tokens), 240,000 llm_tokens a minute
        // (tpm: 3 tokens), 7,200 requests an hour (default: 2 tokens).
        let d = Demand {
            units_per_s: 2.0,
            concurrent: 1.0,
            duration_s: None,
        };
        let (n, by) = cfg.tokens_needed(d, 2.0);
        assert_eq!((n.tokens_needed, by.as_deref()), (3, Some("tpm")));
        // Nothing measured: no quota needs a token.
        let idle = Demand {
            units_per_s: 0.0,
            concurrent: 0.0,
            duration_s: None,
        };
        assert_eq!(
            cfg.tokens_needed(idle, 0.0),
            (tokens_needed(idle, cap(None)), None)
        );
    }

    #[test]
    fn unlimited_quota_leaves_only_concurrency() {
        let d = Demand {
            units_per_s: 100.0,
            concurrent: 7.0,
            duration_s: None,
        };
        let n = tokens_needed(d, cap(None));
        assert_eq!((n.tokens_for_quota, n.tokens_needed), (0, 4));
        let idle = Demand {
            units_per_s: 0.0,
            concurrent: 0.0,
            duration_s: None,
        };
        assert_eq!(tokens_needed(idle, cap(Some(10))).tokens_needed, 0);
        assert_eq!(tokens_needed(idle, cap(Some(0))).tokens_needed, 0);
    }
}
