//! One function per invariant, each judging the whole log (and the final read) on its own.

use std::collections::{BTreeMap, HashMap};

use super::*;

/// Concurrency: a lease is surely live from its grant's answer until the last renew or release
/// the vault accepted was sent. No token may have more surely-live leases at once than
/// `max_leases_per_token`.
pub(super) fn concurrency(rules: &HashMap<String, Rules>, h: &LeaseHistory) -> Vec<Violation> {
    // token -> (time, +1 start / -1 end)
    let mut edges: BTreeMap<(&str, &str), Vec<(u64, i64)>> = BTreeMap::new();
    for l in &h.leases {
        let Some(end) = l.later.iter().filter(|r| r.done()).map(|r| r.sent).max() else {
            continue;
        };
        let start = l.granted.acked_at();
        if end > start {
            let e = edges.entry((l.pool, &l.grant.token_id)).or_default();
            e.push((start, 1));
            e.push((end, -1));
        }
    }
    let mut out = vec![];
    for ((pool, token), mut e) in edges {
        let Some(r) = rules.get(pool) else { continue };
        // Ends before starts at the same instant: only a certain overlap counts.
        e.sort();
        let (mut live, mut peak) = (0i64, 0i64);
        for (_, d) in e {
            live += d;
            peak = peak.max(live);
        }
        if peak as u64 > r.max_leases_per_token {
            out.push(violation(
                "concurrency",
                format!(
                    "{pool}/{token}: {peak} leases live at once, max_leases_per_token is {}",
                    r.max_leases_per_token
                ),
            ));
        }
    }
    out
}

/// Shares: a token assigned to a pipeline is leased only through it, and a token of the free
/// part of the pool never through one. A token moves between the two only when something takes
/// a token of the pipeline out of rotation (an `unauthorized` report or a revocation; the
/// checker's pipeline takes no token that expires during a run): it leaves the share after such
/// an event of its own (then comes back free after its refresh), and joins a share as the
/// replacement of another's. So for each token, a lease through the pipeline followed by a free
/// one needs such an event of that token in between, and a free lease followed by one through
/// the pipeline needs such an event of some token of the pool before.
pub(super) fn shares(log: &[Rec], h: &LeaseHistory) -> Vec<Violation> {
    // (pool, token) -> the times (sent, acked) its removal events may have taken effect.
    let mut removals: HashMap<(&str, &str), Vec<(u64, u64)>> = HashMap::new();
    for r in log.iter().filter(|r| r.done() || r.ambiguous()) {
        let key = match &r.op {
            Op::Release {
                pool,
                token_id,
                outcome,
                ..
            } if outcome == "unauthorized" => (pool.as_str(), token_id.as_str()),
            Op::Revoke { pool, token_id } | Op::RefreshDone { pool, token_id } => {
                (pool.as_str(), token_id.as_str())
            }
            _ => continue,
        };
        removals
            .entry(key)
            .or_default()
            .push((r.sent, r.acked_at()));
    }
    let mut first_in_pool: HashMap<&str, u64> = HashMap::new();
    for ((pool, _), times) in &removals {
        for (sent, _) in times {
            let e = first_in_pool.entry(pool).or_insert(u64::MAX);
            *e = (*e).min(*sent);
        }
    }
    let piped: std::collections::HashSet<&str> = h
        .leases
        .iter()
        .filter(|l| l.grant.pipeline.is_some())
        .map(|l| l.pool)
        .collect();
    let mut by_token: BTreeMap<(&str, &str), Vec<&LeaseLife>> = BTreeMap::new();
    for l in h.leases.iter().filter(|l| piped.contains(l.pool)) {
        by_token
            .entry((l.pool, &l.grant.token_id))
            .or_default()
            .push(l);
    }
    let mut out = vec![];
    for ((pool, token), mut ls) in by_token {
        ls.sort_by_key(|l| l.granted.sent);
        for w in ls.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (from, to) = (&a.grant.pipeline, &b.grant.pipeline);
            if from == to {
                continue;
            }
            let explained = match (from, to) {
                // Left its share: an event of its own between the two grants.
                (Some(_), _) => removals.get(&(pool, token)).is_some_and(|t| {
                    t.iter().any(|(sent, acked)| {
                        *sent < b.granted.acked_at() && *acked > a.granted.sent
                    })
                }),
                // Joined one: some token of the pool left rotation before.
                (None, Some(_)) => first_in_pool
                    .get(pool)
                    .is_some_and(|t| *t < b.granted.acked_at()),
                (None, None) => true,
            };
            if !explained {
                out.push(violation(
                    "shares",
                    format!(
                        "{pool}/{token}: leased through {} ({}) then through {} ({}) with nothing moving it between them",
                        from.as_deref().unwrap_or("the free pool"),
                        a.grant.lease_id,
                        to.as_deref().unwrap_or("the free pool"),
                        b.grant.lease_id
                    ),
                ));
            }
        }
    }
    out
}

/// One quota of the checker's pools: its name, what a lease takes of it (`granted`), what a
/// release says was used (`reported`; None: the whole reservation), its cap and unknown
/// grants, and the final read's (used, reserved).
struct Dimension<'a> {
    name: &'static str,
    granted: fn(&Grant) -> u64,
    reported: fn(&Op) -> Option<u64>,
    cap: fn(&Rules) -> u64,
    unknown: &'a BTreeMap<&'a str, u64>,
    counted: fn(&FinalToken) -> (u64, u64),
}

/// Quota (the checker's pools use windows longer than the run; each of their two quotas is
/// checked alike: `default` counting requests, `work` counting the cost dimension `work`): what a
/// token's leases consumed can only be counted from below — a released lease what its release
/// reported, any other what it reserved (it ended at its deadline, a revocation or a freeze, all
/// of which count it whole) — and that lower bound may not exceed `limit − reserve`. The final
/// read must lie between the lower bound and the upper one (every unanswered lease request on the
/// pool granted): below it an acknowledged lease or release was lost; above it something was
/// counted that never happened.
pub(super) fn quota(
    rules: &HashMap<String, Rules>,
    h: &LeaseHistory,
    fin: &Final,
) -> Vec<Violation> {
    let requests = Dimension {
        name: "default",
        granted: |g| g.units,
        reported: |op| match op {
            Op::Release { used, .. } => Some(*used),
            _ => None,
        },
        cap: |r| r.quota_limit.saturating_sub(r.quota_reserve),
        unknown: &h.unknown_units,
        counted: |t| (t.used, t.reserved),
    };
    let work = Dimension {
        name: "work",
        granted: |g| g.cost,
        reported: |op| match op {
            Op::Release { cost_used, .. } => *cost_used,
            _ => None,
        },
        cap: |r| r.work_limit.saturating_sub(r.work_reserve),
        unknown: &h.unknown_cost,
        counted: |t| (t.work_used, t.work_reserved),
    };
    let mut out = quota_of(rules, h, fin, &requests);
    out.extend(quota_of(rules, h, fin, &work));
    out
}

fn quota_of(
    rules: &HashMap<String, Rules>,
    h: &LeaseHistory,
    fin: &Final,
    d: &Dimension,
) -> Vec<Violation> {
    let mut low: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut high: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for l in &h.leases {
        let reserved = (d.granted)(l.grant);
        // A lease may be released twice (a retry after a lost answer): one accepted release
        // settles it; otherwise an unanswered one leaves it between what it reported and its
        // reservation.
        let releases: Vec<(&Rec, u64)> = l
            .later
            .iter()
            .filter(|r| matches!(r.op, Op::Release { .. }))
            .map(|r| (*r, (d.reported)(&r.op).unwrap_or(reserved).min(reserved)))
            .collect();
        let (lo, hi) = if let Some((_, used)) = releases.iter().find(|(r, _)| r.done()) {
            (*used, *used)
        } else if let Some((_, used)) = releases.iter().find(|(r, _)| r.ambiguous()) {
            (*used, reserved)
        } else {
            (reserved, reserved)
        };
        *low.entry((l.pool, &l.grant.token_id)).or_default() += lo;
        *high.entry((l.pool, &l.grant.token_id)).or_default() += hi;
    }
    let mut out = vec![];
    for (&(pool, token), &lo) in &low {
        let Some(r) = rules.get(pool) else { continue };
        let cap = (d.cap)(r);
        let q = d.name;
        if lo > cap {
            out.push(violation(
                "quota",
                format!("{pool}/{token}: at least {lo} units of quota {q} consumed, limit − reserve is {cap}"),
            ));
        }
        let Some(t) = fin.pools.get(pool).and_then(|p| p.tokens.get(token)) else {
            continue;
        };
        let (used, reserved) = (d.counted)(t);
        let counted = used + reserved;
        let hi = high[&(pool, token)] + d.unknown.get(pool).copied().unwrap_or(0);
        if counted < lo {
            out.push(violation(
                "lost_acknowledgement",
                format!("{pool}/{token}: the vault counts {counted} units of quota {q}, the acknowledged leases and releases at least {lo}"),
            ));
        } else if counted > hi {
            out.push(violation(
                "quota",
                format!("{pool}/{token}: the vault counts {counted} units of quota {q}, the leases it granted at most {hi}"),
            ));
        }
    }
    out
}

/// TTL margin: every grant leaves the token `max(min_token_ttl_s, lease ttl)` of life at the
/// moment of the grant (lease end − ttl), and a renewed lease never outlives its token.
pub(super) fn ttl_margin(rules: &HashMap<String, Rules>, log: &[Rec]) -> Vec<Violation> {
    let mut out = vec![];
    for r in log.iter().filter(|r| r.done()) {
        let (pool, g, renew) = match &r.op {
            Op::Lease {
                pool,
                grant: Some(g),
                ..
            } => (pool, g, false),
            Op::Renew {
                pool,
                grant: Some(g),
                ..
            } => (pool, g, true),
            _ => continue,
        };
        let Some(rules) = rules.get(pool) else {
            continue;
        };
        if g.token_expires_at == 0 {
            continue;
        }
        let granted_at = g.lease_expires_at - g.ttl_ms;
        let need = if renew {
            g.ttl_ms
        } else {
            g.ttl_ms.max(rules.min_token_ttl_ms)
        };
        let left = g.token_expires_at - granted_at;
        if left < need {
            out.push(violation(
                "ttl_margin",
                format!(
                    "{pool}/{}: {} with {left} ms of token life left, needs {need} ms",
                    g.token_id,
                    if renew { "renewed" } else { "leased" },
                ),
            ));
        }
    }
    out
}

/// When a token or pool may not be granted: after a revocation (for good), a freeze (until an
/// unfreeze), an `unauthorized` report (until a refresh of the token completes) and a
/// `rate_limited` report (until its retry-after has passed). A grant counts only when it was
/// requested after the blocking answer arrived and answered before the block could have lifted.
/// The block could have lifted at any unblocking call the vault may have run after the blocking
/// one — answered after the blocking call was sent, or not answered at all — from the moment that
/// call was sent. A report may find its token already out of rotation (an earlier 401, or too
/// close to expiry) and change nothing; then the refresh that brings the token back lifts it.
/// Leases ended by a revocation or a freeze with `revoke_leases` cannot be renewed or released.
pub(super) fn revocation(log: &[Rec], h: &LeaseHistory) -> Vec<Violation> {
    let mut out = vec![];
    let grants: Vec<&LeaseLife> = h.leases.iter().collect();
    // When the first unblocking call (`unblocks`) that may have run after `b` was sent.
    let lifted = |b: &Rec, unblocks: &dyn Fn(&Op) -> bool| -> u64 {
        log.iter()
            .filter(|r| unblocks(&r.op) && (r.done() || r.ambiguous()) && r.acked_at() > b.sent)
            .map(|r| r.sent)
            .min()
            .unwrap_or(u64::MAX)
    };
    for b in log.iter().filter(|r| r.done()) {
        let after = b.acked_at();
        match &b.op {
            Op::Revoke { pool, token_id } => {
                for l in grants
                    .iter()
                    .filter(|l| l.pool == pool && &l.grant.token_id == token_id)
                {
                    if l.granted.sent > after {
                        out.push(violation(
                            "revocation",
                            format!("{pool}/{token_id}: leased ({}) after its revocation was acknowledged", l.grant.lease_id),
                        ));
                    }
                    for r in l.later.iter().filter(|r| r.done() && r.sent > after) {
                        out.push(violation(
                            "revocation",
                            format!("{pool}/{token_id}: lease {} accepted a {} after the token's revocation", l.grant.lease_id, r.op.name()),
                        ));
                    }
                }
            }
            Op::Freeze {
                pool,
                revoke_leases,
            } => {
                let until = lifted(b, &|op| matches!(op, Op::Unfreeze { pool: p } if p == pool));
                for l in grants.iter().filter(|l| l.pool == pool) {
                    if l.granted.sent > after && l.granted.acked_at() < until {
                        out.push(violation(
                            "freeze",
                            format!(
                                "{pool}: lease {} granted while the pool was frozen",
                                l.grant.lease_id
                            ),
                        ));
                    }
                    if *revoke_leases && l.granted.acked_at() < b.sent {
                        for r in l.later.iter().filter(|r| r.done() && r.sent > after) {
                            out.push(violation(
                                "freeze",
                                format!(
                                    "{pool}: lease {} accepted a {} after a freeze that ended it",
                                    l.grant.lease_id,
                                    r.op.name()
                                ),
                            ));
                        }
                    }
                }
            }
            Op::Release {
                pool,
                token_id,
                outcome,
                retry_after_ms,
                ..
            } => {
                // A report changes nothing when its token is already out of rotation (an earlier
                // 401, or too close to expiry); the token is then back at its next refresh.
                let refreshed = lifted(
                    b,
                    &|op| matches!(op, Op::RefreshDone { pool: p, token_id: t } if p == pool && t == token_id),
                );
                let until = match outcome.as_str() {
                    "unauthorized" => refreshed,
                    "rate_limited" => refreshed.min(b.sent + retry_after_ms * 1000),
                    _ => continue,
                };
                for l in grants
                    .iter()
                    .filter(|l| l.pool == pool && &l.grant.token_id == token_id)
                {
                    if l.granted.sent > after && l.granted.acked_at() < until {
                        out.push(violation(
                            if outcome == "unauthorized" { "unauthorized" } else { "cooldown" },
                            format!("{pool}/{token_id}: leased ({}) after a {outcome} report, before it could be back", l.grant.lease_id),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Nothing acknowledged is lost: deposited tokens exist, revoked tokens are revoked, a pool's
/// frozen flag is what the last acknowledged freeze or unfreeze made it (unless an unanswered one
/// came after), revoked client tokens are refused.
pub(super) fn acknowledged(log: &[Rec], fin: &Final) -> Vec<Violation> {
    let mut out = vec![];
    let lost = |what: String| violation("lost_acknowledgement", what);
    let mut frozen: HashMap<&str, Option<bool>> = HashMap::new();
    for r in log {
        match &r.op {
            Op::Deposit { pool, ids } if r.done() => {
                for id in ids {
                    if !fin
                        .pools
                        .get(pool)
                        .is_some_and(|p| p.tokens.contains_key(id))
                    {
                        out.push(lost(format!("{pool}/{id}: deposited, missing at the end")));
                    }
                }
            }
            Op::Revoke { pool, token_id } if r.done() => {
                let state = fin
                    .pools
                    .get(pool)
                    .and_then(|p| p.tokens.get(token_id))
                    .map(|t| t.state.as_str());
                if state != Some("revoked") {
                    out.push(lost(format!(
                        "{pool}/{token_id}: revoked, but {} at the end",
                        state.unwrap_or("missing")
                    )));
                }
            }
            Op::Freeze { pool, .. } | Op::Unfreeze { pool } => {
                let want = matches!(r.op, Op::Freeze { .. });
                let e = frozen.entry(pool).or_insert(None);
                if r.done() {
                    *e = Some(want);
                } else if r.ambiguous() {
                    *e = None;
                }
            }
            Op::ClientRevoke { jti } if r.done() && fin.clients_refused.get(jti) != Some(&true) => {
                out.push(lost(format!(
                    "client token {jti}: revoked, still accepted at the end"
                )));
            }
            _ => {}
        }
    }
    for (pool, want) in frozen {
        if let (Some(want), Some(p)) = (want, fin.pools.get(pool)) {
            if p.frozen != want {
                out.push(lost(format!(
                    "{pool}: frozen is {} at the end, the last acknowledged call made it {want}",
                    p.frozen
                )));
            }
        }
    }
    out
}
