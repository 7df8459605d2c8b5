//! The invariants, proved from the checker's log of acknowledged operations and a final read of
//! the vault. Every request is logged with when it was sent and when its answer arrived (one
//! monotonic clock in the checker); the vault acted somewhere in between. So "A happened before B"
//! is only claimed when A's answer arrived before B was sent, and a violation is only reported
//! when it is certain: a lost answer (timeout, dropped connection, 5xx) makes an operation
//! *ambiguous*, and each check takes both possibilities into account.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

mod rules;
use rules::{acknowledged, concurrency, quota, revocation, shares, ttl_margin};

/// One request and what came of it. Times are µs since the run started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rec {
    pub(crate) sent: u64,
    /// None: no answer (transport error or timeout).
    pub(crate) acked: Option<u64>,
    /// HTTP status; 0 without an answer.
    pub(crate) status: u16,
    /// The problem `code` of a refusal ("" otherwise).
    #[serde(default)]
    pub(crate) code: String,
    /// Why there was no answer (the transport error), "" when there was one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) error: String,
    pub(crate) op: Op,
}

impl Rec {
    /// The vault certainly did it (a 2xx answer).
    pub(crate) fn done(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The vault may or may not have done it ([`answer_lost`]).
    pub(crate) fn ambiguous(&self) -> bool {
        answer_lost(self.status, &self.code)
    }
    fn acked_at(&self) -> u64 {
        self.acked.unwrap_or(u64::MAX)
    }
}

/// Whether an answer (HTTP `status`, 0 for none; problem `code`) leaves open whether the vault
/// did it: no answer, or a 5xx other than `pool_exhausted` (a replica that timed out on Redis,
/// or a load balancer that lost its backend, cannot tell whether the call ran).
pub(crate) fn answer_lost(status: u16, code: &str) -> bool {
    status == 0 || (status >= 500 && code != "pool_exhausted")
}

/// What a lease or renew answer said (times are the vault's, unix ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) lease_id: String,
    pub(crate) token_id: String,
    pub(crate) units: u64,
    /// What it reserved of the pools' cost dimension (`work`).
    #[serde(default)]
    pub(crate) cost: u64,
    pub(crate) ttl_ms: i64,
    pub(crate) lease_expires_at: i64,
    /// 0 = the token never expires.
    pub(crate) token_expires_at: i64,
    /// The pipeline it was leased through (None: the free part of the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pipeline: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Op {
    Lease {
        pool: String,
        units: u64,
        /// What it asked of the cost dimension (its estimate, or the pool's).
        #[serde(default)]
        cost: u64,
        grant: Option<Grant>,
    },
    Renew {
        pool: String,
        lease_id: String,
        token_id: String,
        grant: Option<Grant>,
    },
    Release {
        pool: String,
        lease_id: String,
        token_id: String,
        used: u64,
        /// What the call cost (never above the lease's reservation); None: not reported, the
        /// reservation counts.
        #[serde(default)]
        cost_used: Option<u64>,
        /// ok | unauthorized | rate_limited
        outcome: String,
        retry_after_ms: u64,
    },
    Revoke {
        pool: String,
        token_id: String,
    },
    Freeze {
        pool: String,
        revoke_leases: bool,
    },
    Unfreeze {
        pool: String,
    },
    Deposit {
        pool: String,
        ids: Vec<String>,
    },
    RefreshDone {
        pool: String,
        token_id: String,
    },
    ClientRevoke {
        jti: String,
    },
}

impl Op {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Lease { .. } => "lease",
            Op::Renew { .. } => "renew",
            Op::Release { .. } => "release",
            Op::Revoke { .. } => "revoke",
            Op::Freeze { .. } => "freeze",
            Op::Unfreeze { .. } => "unfreeze",
            Op::Deposit { .. } => "deposit",
            Op::RefreshDone { .. } => "refresh",
            Op::ClientRevoke { .. } => "client_revoke",
        }
    }
}

/// The rules a checker pool was created with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Rules {
    pub(crate) max_leases_per_token: u64,
    pub(crate) quota_limit: u64,
    pub(crate) quota_reserve: u64,
    /// The second quota, `work`, counting the cost dimension `work`.
    #[serde(default)]
    pub(crate) work_limit: u64,
    #[serde(default)]
    pub(crate) work_reserve: u64,
    pub(crate) min_token_ttl_ms: i64,
}

/// The vault's state at the end, read after every worker stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Final {
    pub(crate) pools: BTreeMap<String, FinalPool>,
    /// Revoked client tokens (by jti) and whether every vault URL refused them at the end.
    pub(crate) clients_refused: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FinalPool {
    pub(crate) frozen: bool,
    pub(crate) tokens: BTreeMap<String, FinalToken>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FinalToken {
    pub(crate) state: String,
    pub(crate) used: u64,
    pub(crate) reserved: u64,
    /// The `work` quota's count.
    #[serde(default)]
    pub(crate) work_used: u64,
    #[serde(default)]
    pub(crate) work_reserved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Violation {
    pub(crate) invariant: &'static str,
    pub(crate) detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// Every invariant; empty when the run kept every promise.
pub(crate) fn verify(rules: &HashMap<String, Rules>, log: &[Rec], fin: &Final) -> Vec<Violation> {
    let leases = LeaseHistory::of(log);
    let mut out = vec![];
    out.extend(concurrency(rules, &leases));
    out.extend(quota(rules, &leases, fin));
    out.extend(ttl_margin(rules, log));
    out.extend(revocation(log, &leases));
    out.extend(acknowledged(log, fin));
    out.extend(shares(log, &leases));
    out
}

/// Each granted lease and what later happened to it.
struct LeaseLife<'a> {
    pool: &'a str,
    grant: &'a Grant,
    granted: &'a Rec,
    /// Successful renews and the release(s), in log order.
    later: Vec<&'a Rec>,
}

struct LeaseHistory<'a> {
    leases: Vec<LeaseLife<'a>>,
    /// Lease requests without an answer: they may have granted `units` (and `cost`) on an
    /// unknown token.
    unknown_units: BTreeMap<&'a str, u64>,
    unknown_cost: BTreeMap<&'a str, u64>,
}

impl<'a> LeaseHistory<'a> {
    fn of(log: &'a [Rec]) -> Self {
        let mut leases = vec![];
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut unknown_units = BTreeMap::new();
        let mut unknown_cost = BTreeMap::new();
        for r in log {
            match &r.op {
                Op::Lease {
                    pool,
                    units,
                    cost,
                    grant,
                } => match grant {
                    Some(g) if r.done() => {
                        by_id.insert(&g.lease_id, leases.len());
                        leases.push(LeaseLife {
                            pool,
                            grant: g,
                            granted: r,
                            later: vec![],
                        });
                    }
                    _ if r.ambiguous() => {
                        *unknown_units.entry(pool.as_str()).or_default() += units;
                        *unknown_cost.entry(pool.as_str()).or_default() += cost;
                    }
                    _ => {}
                },
                Op::Renew { lease_id, .. } | Op::Release { lease_id, .. } => {
                    if let Some(&i) = by_id.get(lease_id.as_str()) {
                        leases[i].later.push(r);
                    }
                }
                _ => {}
            }
        }
        LeaseHistory {
            leases,
            unknown_units,
            unknown_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HashMap<String, Rules> {
        HashMap::from([(
            "p".to_string(),
            Rules {
                max_leases_per_token: 1,
                quota_limit: 10,
                quota_reserve: 2,
                work_limit: 10,
                work_reserve: 2,
                min_token_ttl_ms: 30_000,
            },
        )])
    }

    fn rec(sent: u64, acked: u64, status: u16, op: Op) -> Rec {
        Rec {
            sent,
            acked: Some(acked),
            status,
            code: String::new(),
            error: String::new(),
            op,
        }
    }

    fn lease(sent: u64, acked: u64, id: &str, token: &str, units: u64) -> Rec {
        rec(
            sent,
            acked,
            201,
            Op::Lease {
                pool: "p".into(),
                units,
                cost: 0,
                grant: Some(Grant {
                    lease_id: id.into(),
                    token_id: token.into(),
                    units,
                    cost: 0,
                    ttl_ms: 10_000,
                    lease_expires_at: 1_000_010_000,
                    token_expires_at: 1_000_040_000,
                    pipeline: None,
                }),
            },
        )
    }

    fn release(
        sent: u64,
        acked: u64,
        status: u16,
        id: &str,
        token: &str,
        used: u64,
        outcome: &str,
    ) -> Rec {
        rec(
            sent,
            acked,
            status,
            Op::Release {
                pool: "p".into(),
                lease_id: id.into(),
                token_id: token.into(),
                used,
                cost_used: None,
                outcome: outcome.into(),
                retry_after_ms: 1_000,
            },
        )
    }

    fn fin(tokens: &[(&str, &str, u64)]) -> Final {
        let mut p = FinalPool::default();
        for (id, state, used) in tokens {
            p.tokens.insert(
                id.to_string(),
                FinalToken {
                    state: state.to_string(),
                    used: *used,
                    reserved: 0,
                    work_used: 0,
                    work_reserved: 0,
                },
            );
        }
        Final {
            pools: BTreeMap::from([("p".to_string(), p)]),
            ..Default::default()
        }
    }

    fn kinds(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.invariant).collect()
    }

    /// `lease` through pipeline `share`.
    fn lease_in(sent: u64, acked: u64, id: &str, token: &str, share: &str) -> Rec {
        let mut r = lease(sent, acked, id, token, 1);
        if let Op::Lease { grant: Some(g), .. } = &mut r.op {
            g.pipeline = Some(share.into());
        }
        r
    }

    #[test]
    fn a_token_crossing_between_a_share_and_the_free_pool_needs_a_reason() {
        let rel = |sent, id: &str, tok: &str, outcome: &str| {
            release(sent, sent + 5, 200, id, tok, 1, outcome)
        };
        // Through the pipeline, then free with nothing in between: broken.
        let log = vec![
            lease_in(0, 10, "l1", "t1", "a"),
            rel(20, "l1", "t1", "ok"),
            lease(30, 40, "l2", "t1", 1),
            rel(50, "l2", "t1", "ok"),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("t1", "active", 2)]))),
            vec!["shares"]
        );
        // A 401 of its own took it out (and a refresh brought it back free): fine.
        let log = vec![
            lease_in(0, 10, "l1", "t1", "a"),
            rel(20, "l1", "t1", "unauthorized"),
            lease(30, 40, "l2", "t1", 1),
            rel(50, "l2", "t1", "ok"),
        ];
        assert!(!kinds(&verify(&rules(), &log, &fin(&[("t1", "active", 2)]))).contains(&"shares"));
        // Free, then in the share as another token's replacement: fine after that one's 401.
        let log = vec![
            lease(0, 10, "l1", "t1", 1),
            rel(20, "l1", "t1", "ok"),
            lease_in(21, 22, "l3", "t2", "a"),
            rel(23, "l3", "t2", "unauthorized"),
            lease_in(30, 40, "l2", "t1", "a"),
            rel(50, "l2", "t1", "ok"),
        ];
        assert!(!kinds(&verify(
            &rules(),
            &log,
            &fin(&[("t1", "active", 2), ("t2", "active", 1)])
        ))
        .contains(&"shares"));
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let log = vec![
            lease(0, 10, "l1", "a", 2),
            release(20, 30, 200, "l1", "a", 1, "ok"),
            lease(40, 50, "l2", "a", 3),
            release(60, 70, 200, "l2", "a", 3, "ok"),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 4)])), vec![]);
    }

    #[test]
    fn two_surely_overlapping_leases_break_concurrency_but_uncertain_ones_do_not() {
        // l2 was granted (answer at 25) before l1's release was sent (30): both live at 25.
        let log = vec![
            lease(0, 10, "l1", "a", 1),
            lease(20, 25, "l2", "a", 1),
            release(30, 40, 200, "l1", "a", 1, "ok"),
            release(50, 60, 200, "l2", "a", 1, "ok"),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 2)]))),
            ["concurrency"]
        );
        // l2's answer arrived after l1's release was sent: the vault may have ended l1 first.
        let log = vec![
            lease(0, 10, "l1", "a", 1),
            lease(20, 35, "l2", "a", 1),
            release(30, 40, 200, "l1", "a", 1, "ok"),
            release(50, 60, 200, "l2", "a", 1, "ok"),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 2)])), vec![]);
    }

    #[test]
    fn a_cost_quota_is_checked_like_requests() {
        // Leases reserving 4 of `work` each, released reporting 1: 3 reported + 4 unreleased.
        let costly = |sent, id: &str| {
            let mut r = lease(sent, sent + 1, id, "a", 1);
            if let Op::Lease { cost, grant, .. } = &mut r.op {
                *cost = 4;
                grant.as_mut().unwrap().cost = 4;
            }
            r
        };
        let reported = |sent, id: &str, c| {
            let mut r = release(sent, sent + 1, 200, id, "a", 1, "ok");
            if let Op::Release { cost_used, .. } = &mut r.op {
                *cost_used = Some(c);
            }
            r
        };
        let fin_work = |work_used| {
            let mut f = fin(&[("a", "active", 2)]);
            f.pools
                .get_mut("p")
                .unwrap()
                .tokens
                .get_mut("a")
                .unwrap()
                .work_used = work_used;
            f
        };
        let log = vec![costly(0, "l1"), reported(2, "l1", 3), costly(4, "l2")];
        assert!(verify(&rules(), &log, &fin_work(7)).is_empty());
        // The vault counts the reservation, not what the release reported.
        assert_eq!(kinds(&verify(&rules(), &log, &fin_work(8))), ["quota"]);
        // The vault lost the acknowledged release's 3.
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin_work(4))),
            ["lost_acknowledgement"]
        );
        // 3 + 4 + 4 > 10 − 2: past the `work` quota.
        let mut log = log;
        log.push(costly(6, "l3"));
        let v = verify(&rules(), &log, &fin_work(11));
        assert!(
            v.iter()
                .any(|v| v.invariant == "quota" && v.detail.contains("quota work")),
            "{v:?}"
        );
    }

    #[test]
    fn quota_counts_unreleased_leases_whole_and_catches_lost_releases() {
        // 3 + 3 + 3 units never released: 9 > 10 − 2.
        let log = vec![
            lease(0, 1, "l1", "a", 3),
            lease(2, 3, "l2", "a", 3),
            lease(4, 5, "l3", "a", 3),
        ];
        assert!(kinds(&verify(&rules(), &log, &fin(&[("a", "active", 9)]))).contains(&"quota"));
        // A release the vault acknowledged (used 1), but the vault counts the whole 3.
        let log = vec![
            lease(0, 1, "l1", "a", 3),
            release(2, 3, 200, "l1", "a", 1, "ok"),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 3)]))),
            ["quota"]
        );
        // The vault counts less than acknowledged: a grant was lost.
        let log = vec![lease(0, 1, "l1", "a", 3)];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 1)]))),
            ["lost_acknowledgement"]
        );
        // An unanswered release: anything from `used` to the units is right.
        let mut r = release(2, 3, 0, "l1", "a", 1, "ok");
        r.acked = None;
        let log = vec![lease(0, 1, "l1", "a", 3), r];
        for used in [1, 2, 3] {
            assert_eq!(
                verify(&rules(), &log, &fin(&[("a", "active", used)])),
                vec![]
            );
        }
    }

    #[test]
    fn a_grant_too_close_to_expiry_breaks_the_margin() {
        let mut l = lease(0, 1, "l1", "a", 1);
        if let Op::Lease { grant: Some(g), .. } = &mut l.op {
            g.token_expires_at = g.lease_expires_at + 19_999; // 29,999 ms after the grant
        }
        assert_eq!(
            kinds(&verify(&rules(), &[l], &fin(&[("a", "active", 1)]))),
            ["ttl_margin"]
        );
    }

    #[test]
    fn grants_after_a_revocation_a_freeze_or_a_401_are_caught() {
        let revoke = rec(
            10,
            20,
            200,
            Op::Revoke {
                pool: "p".into(),
                token_id: "a".into(),
            },
        );
        // Requested before the revoke's answer arrived: may have been first.
        let log = vec![revoke.clone(), lease(15, 25, "l1", "a", 1)];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "revoked", 1)])), vec![]);
        let log = vec![revoke.clone(), lease(21, 25, "l1", "a", 1)];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "revoked", 1)]))),
            ["revocation"]
        );
        // An acknowledged revocation the final read does not show.
        assert_eq!(
            kinds(&verify(&rules(), &[revoke], &fin(&[("a", "active", 0)]))),
            ["lost_acknowledgement"]
        );

        let freeze = rec(
            10,
            20,
            200,
            Op::Freeze {
                pool: "p".into(),
                revoke_leases: true,
            },
        );
        let unfreeze = rec(40, 50, 200, Op::Unfreeze { pool: "p".into() });
        let log = vec![
            freeze.clone(),
            lease(30, 35, "l1", "a", 1),
            unfreeze.clone(),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 1)]))),
            ["freeze"]
        );
        let log = vec![freeze, unfreeze, lease(45, 55, "l1", "a", 1)];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 1)])), vec![]);

        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 3, 200, "l1", "a", 1, "unauthorized"),
            lease(4, 5, "l2", "a", 1),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 2)]))),
            ["unauthorized"]
        );
        let done = rec(
            4,
            5,
            200,
            Op::RefreshDone {
                pool: "p".into(),
                token_id: "a".into(),
            },
        );
        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 3, 200, "l1", "a", 1, "unauthorized"),
            done,
            lease(6, 7, "l2", "a", 1),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 2)])), vec![]);

        // A report answered after a refresh completed, but sent before: the vault may have run
        // it first (finding the token already out of rotation) and the refresh after it.
        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 20, 200, "l1", "a", 1, "unauthorized"),
            rec(
                4,
                10,
                200,
                Op::RefreshDone {
                    pool: "p".into(),
                    token_id: "a".into(),
                },
            ),
            lease(30, 31, "l2", "a", 1),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 2)])), vec![]);
        // A 429 report on a token out of rotation (refreshing) changes nothing: after the refresh
        // the token is leasable at once.
        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 3, 200, "l1", "a", 1, "rate_limited"),
            rec(
                4,
                5,
                200,
                Op::RefreshDone {
                    pool: "p".into(),
                    token_id: "a".into(),
                },
            ),
            lease(6, 7, "l2", "a", 1),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 2)])), vec![]);

        // rate_limited with 1 s retry-after: a grant 0.5 s later is too early, 1.1 s later fine.
        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 3, 200, "l1", "a", 1, "rate_limited"),
            lease(500_000, 500_010, "l2", "a", 1),
        ];
        assert_eq!(
            kinds(&verify(&rules(), &log, &fin(&[("a", "active", 2)]))),
            ["cooldown"]
        );
        let log = vec![
            lease(0, 1, "l1", "a", 1),
            release(2, 3, 200, "l1", "a", 1, "rate_limited"),
            lease(1_100_000, 1_100_010, "l2", "a", 1),
        ];
        assert_eq!(verify(&rules(), &log, &fin(&[("a", "active", 2)])), vec![]);
    }

    #[test]
    fn lost_deposits_and_accepted_revoked_clients_are_caught() {
        let log = vec![
            rec(
                0,
                1,
                201,
                Op::Deposit {
                    pool: "p".into(),
                    ids: vec!["a".into(), "b".into()],
                },
            ),
            rec(2, 3, 200, Op::ClientRevoke { jti: "j1".into() }),
        ];
        let mut f = fin(&[("a", "active", 0)]);
        f.clients_refused.insert("j1".into(), false);
        assert_eq!(
            kinds(&verify(&rules(), &log, &f)),
            ["lost_acknowledgement", "lost_acknowledgement"]
        );
    }
}
