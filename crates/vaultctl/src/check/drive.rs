//! The load: workers leasing, renewing and reporting; an operator revoking, freezing, depositing
//! and revoking client tokens; an external login worker completing refresh jobs. Every request
//! goes into the log with its timing and answer; nothing here judges the answers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use vault_core::model::{PoolStatus, TokenPage};

use super::transport::WorkerCall;
use super::verify::{Final, FinalPool, FinalToken, Grant, Op};

use super::operator::{login_worker, operator};
use super::vault::Answer;
pub(crate) use super::vault::Vault;

/// What the run does, decided up front.
#[derive(Clone)]
pub(crate) struct Plan {
    pub(crate) pools: Vec<String>,
    pub(crate) workers: usize,
    pub(crate) duration: Duration,
    pub(crate) seed: u64,
    pub(crate) min_token_ttl_s: u64,
    /// The pipeline of the first pool, which half of that pool's leases go through.
    pub(crate) pipeline: Option<String>,
}

/// The checker pools' cost dimension (their second quota counts it).
pub(crate) const WORK: &str = "work";
/// What a lease is expected to cost of it when it does not say (the pools' `cost_estimates`).
pub(crate) const WORK_ESTIMATE: u64 = 2;

/// What a lease answer granted (None: the answer is not a lease).
fn grant(a: &Answer, ttl_ms: i64) -> Option<Grant> {
    let lease: vault_wire::Lease = a.read()?;
    let ms = vault_core::time::parse_rfc3339;
    Some(Grant {
        cost: lease.costs.get(WORK).copied().unwrap_or(0),
        ttl_ms,
        lease_expires_at: ms(&lease.lease_expires_at)?,
        token_expires_at: match &lease.token_expires_at {
            None => 0,
            Some(t) => ms(t)?,
        },
        lease_id: lease.lease_id,
        token_id: lease.token_id,
        units: lease.units,
        pipeline: lease.pipeline,
    })
}

/// A worker: lease, use a little, sometimes renew, report. A lease or release without an answer
/// is tried once more ([`send_retrying_once`]).
async fn worker(v: Arc<Vault>, plan: Plan, n: usize, until: Until) {
    let mut rng = StdRng::seed_from_u64(plan.seed.wrapping_add(n as u64 * 7919));
    while until.going() {
        let pool = plan.pools[rng.gen_range(0..plan.pools.len())].clone();
        let units: u64 = rng.gen_range(1..=3);
        let ttl_s: i64 = [2, 5, 10][rng.gen_range(0..3)];
        let mut body = json!({"worker": format!("check-{n}"), "units": units, "ttl_s": ttl_s});
        if let Some(p) = plan.pipeline.as_ref().filter(|_| pool == plan.pools[0]) {
            if rng.gen_bool(0.5) {
                body["pipeline"] = json!(p);
            }
        }
        // Half the leases say what they expect to cost; the others take the pool's estimate.
        let cost = if rng.gen_bool(0.5) {
            let c = rng.gen_range(1..=3);
            body["costs"] = json!({ WORK: c });
            c
        } else {
            WORK_ESTIMATE
        };
        let idem = uuid::Uuid::new_v4().to_string();
        let call = WorkerCall::Lease { pool: &pool };
        let a = send_retrying_once(&v, &mut rng, &call, &body, Some(&idem), |a| Op::Lease {
            pool: pool.clone(),
            units,
            cost,
            grant: (a.status == 201).then(|| grant(a, ttl_s * 1000)).flatten(),
        })
        .await;
        match a.status {
            201 => {}
            423 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..30))).await;
                continue;
            }
        }
        let Some(g) = grant(&a, ttl_s * 1000) else {
            continue;
        };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
        let (pool_ref, lease_id) = (pool.as_str(), g.lease_id.as_str());
        let roll = rng.gen_range(0..100);
        if roll < 3 && ttl_s == 2 {
            continue; // abandoned: it ends at its deadline
        }
        if roll < 10 {
            let renew = WorkerCall::Renew {
                pool: pool_ref,
                lease_id,
            };
            let a = v.work(&renew, &json!({"ttl_s": ttl_s}), None).await;
            let rg = (a.status == 200).then(|| grant(&a, ttl_s * 1000)).flatten();
            v.record(
                &a,
                Op::Renew {
                    pool: pool.clone(),
                    lease_id: g.lease_id.clone(),
                    token_id: g.token_id.clone(),
                    grant: rg,
                },
            );
        }
        let outcome = match rng.gen_range(0..100) {
            0..=5 => "rate_limited",
            6..=8 => "unauthorized",
            _ => "ok",
        };
        let used = rng.gen_range(0..=g.units);
        let mut report = json!({"outcome": outcome, "used": used, "retry_after_s": 1});
        // What the call cost, most of the time (never above what the lease reserved: a cost
        // above it may legitimately take a token past its quota); otherwise its reservation.
        let cost_used = rng.gen_bool(0.8).then(|| rng.gen_range(0..=g.cost));
        if let Some(c) = cost_used {
            report["costs"] = json!({ WORK: c });
        }
        let release = Op::Release {
            pool: pool.clone(),
            lease_id: g.lease_id.clone(),
            token_id: g.token_id.clone(),
            used,
            cost_used,
            outcome: outcome.into(),
            retry_after_ms: 1000,
        };
        // The 401-mid-job path, half of the time: report and take another token in one call.
        if outcome == "unauthorized" && rng.gen_bool(0.5) {
            let rotate = WorkerCall::Rotate {
                pool: pool_ref,
                lease_id,
            };
            let a = v.work(&rotate, &report, None).await;
            record_rotate(&v, &a, release, &pool, (g.units, g.cost), ttl_s * 1000);
            continue;
        }
        let call = WorkerCall::Release {
            pool: pool_ref,
            lease_id,
        };
        send_retrying_once(&v, &mut rng, &call, &report, None, |_| release.clone()).await;
    }
}

/// POST a worker's request and log it as `op(answer)`. An answer lost on the way (a replica
/// killed mid-request, a connection the balancer closed) is sent once more, as a worker would:
/// after a pause of 200-500 ms, by which the balancer has seen the dead connections go, and
/// with the same Idempotency-Key, so a retried lease never leaks a second one.
async fn send_retrying_once(
    v: &Vault,
    rng: &mut StdRng,
    call: &WorkerCall<'_>,
    body: &Value,
    idempotency_key: Option<&str>,
    op: impl Fn(&Answer) -> Op,
) -> Answer {
    let a = v.work(call, body, idempotency_key).await;
    v.record(&a, op(&a));
    if !a.lost() {
        return a;
    }
    v.retried.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(rng.gen_range(200..500))).await;
    let a = v.work(call, body, idempotency_key).await;
    v.record(&a, op(&a));
    if a.lost() {
        v.gave_up.fetch_add(1, Ordering::Relaxed);
    }
    a
}

/// A rotate is a release and a lease in one step: logged as both, at the same times. The
/// release happened when the lease did, and also when only the new lease was refused (nothing
/// eligible, pool frozen); a lease that is gone refuses both.
/// `asked`: the units and cost the new lease takes (the released one's).
fn record_rotate(v: &Vault, a: &Answer, release: Op, pool: &str, asked: (u64, u64), ttl_ms: i64) {
    let released = a.status == 201 || a.code == "pool_exhausted" || a.code == "pool_frozen";
    let as_release = Answer {
        status: if released { 200 } else { a.status },
        code: if released {
            String::new()
        } else {
            a.code.clone()
        },
        error: a.error.clone(),
        body: Value::Null,
        sent: a.sent,
        acked: a.acked,
    };
    v.record(&as_release, release);
    v.record(
        a,
        Op::Lease {
            pool: pool.into(),
            units: asked.0,
            cost: asked.1,
            grant: (a.status == 201).then(|| grant(a, ttl_ms)).flatten(),
        },
    );
}

/// A client token the operator revoked, and when the vault acknowledged that.
pub(crate) struct RevokedClient {
    pub(super) jti: String,
    pub(super) token: String,
    pub(super) pool: String,
    pub(super) acked: Instant,
}

/// How soon a client-token revocation must hold on every replica (the API's promise).
const CLIENT_REVOCATION_BOUND: Duration = Duration::from_secs(1);

/// Set at the checker's first SIGINT or SIGTERM: the load ends then, before its duration is up,
/// and the run is judged as usual. A caller that needs something to happen *during* the load
/// (a test killing a replica, an operator's failover drill) gives a generous duration and
/// interrupts the checker once it has happened.
#[derive(Clone)]
pub(crate) struct Interrupted(Arc<std::sync::atomic::AtomicBool>);

impl Interrupted {
    /// Listen from now on (an interrupt before the load begins ends it at once); a second
    /// interrupt exits at once.
    pub(crate) fn listen() -> Self {
        let flag = Interrupted(Arc::default());
        // Registered here, so an early signal is not the default (fatal) one.
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return flag;
        };
        let set = flag.0.clone();
        tokio::spawn(async move {
            for n in 0.. {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if n > 0 {
                    std::process::exit(130);
                }
                set.store(true, std::sync::atomic::Ordering::Relaxed);
                println!(
                    "interrupted: the load ends now; then the final read and the verdict \
                     (interrupt again to quit without them)"
                );
            }
        });
        flag
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// When the load ends: at its deadline, or when the checker is interrupted.
#[derive(Clone)]
pub(super) struct Until {
    deadline: Instant,
    interrupted: Interrupted,
}

impl Until {
    pub(super) fn going(&self) -> bool {
        Instant::now() < self.deadline && !self.interrupted.is_set()
    }
}

/// Run the load for `plan.duration`, or until the checker is interrupted. Returns the client
/// tokens it revoked.
pub(crate) async fn run(
    v: Arc<Vault>,
    plan: &Plan,
    interrupted: Interrupted,
) -> Vec<RevokedClient> {
    let until = Until {
        deadline: Instant::now() + plan.duration,
        interrupted,
    };
    let started = Instant::now();
    let revoked = Arc::new(Mutex::new(vec![]));
    let mut tasks = vec![];
    for n in 0..plan.workers {
        tasks.push(tokio::spawn(worker(
            v.clone(),
            plan.clone(),
            n,
            until.clone(),
        )));
    }
    tasks.push(tokio::spawn(operator(
        v.clone(),
        plan.clone(),
        until.clone(),
        revoked.clone(),
    )));
    tasks.push(tokio::spawn(login_worker(v.clone(), plan.clone(), until)));
    for t in tasks {
        let _ = t.await;
    }
    println!("load: {:.1} s", started.elapsed().as_secs_f64());
    let out = std::mem::take(&mut *revoked.lock().unwrap());
    out
}

/// Read the vault's state at the end: every token's state and quota, every pool's frozen flag;
/// and whether every URL refuses each revoked client token. Retries each read until it is
/// answered (the vault may still be recovering from what a scenario did to it).
pub(crate) async fn final_read(
    v: &Vault,
    pools: &[String],
    revoked: &[RevokedClient],
    patience: Duration,
) -> anyhow::Result<Final> {
    let deadline = Instant::now() + patience;
    async fn get<T: serde::de::DeserializeOwned>(
        v: &Vault,
        path: String,
        deadline: Instant,
    ) -> anyhow::Result<T> {
        loop {
            let a = v.call(Method::GET, &path, None, None, None).await;
            if a.status == 200 {
                return a
                    .read()
                    .with_context(|| format!("GET {path}: not the answer the vault writes"));
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "GET {path}: no answer from the vault for the final read (last status {})",
                    a.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut fin = Final::default();
    for pool in pools {
        let status: PoolStatus = get(v, format!("/v1/pools/{pool}/status"), deadline).await?;
        let mut p = FinalPool {
            frozen: status.frozen,
            ..Default::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/pools/{pool}/tokens?limit=500");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: TokenPage = get(v, path, deadline).await?;
            for t in page.tokens {
                let work = t.quotas.iter().find(|q| q.name.as_deref() == Some(WORK));
                p.tokens.insert(
                    t.id,
                    FinalToken {
                        state: t.state,
                        used: t.quota.used,
                        reserved: t.quota.reserved,
                        work_used: work.map_or(0, |q| q.used),
                        work_reserved: work.map_or(0, |q| q.reserved),
                    },
                );
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        fin.pools.insert(pool.clone(), p);
    }
    // A revoked client token must be refused by every URL once the API's bound has passed
    // since the revocation was acknowledged. The probe is a lease request the vault would
    // refuse anyway (units 0), so a token wrongly accepted changes nothing.
    for c in revoked {
        let mut refused = true;
        for url in v.urls() {
            loop {
                let a = v
                    .call_at(
                        url,
                        Method::POST,
                        &format!("/v1/pools/{}/leases", c.pool),
                        Some(&json!({"units": 0})),
                        None,
                        Some(&c.token),
                    )
                    .await;
                if a.status == 401 {
                    break;
                }
                if c.acked.elapsed() > CLIENT_REVOCATION_BOUND {
                    refused = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        fin.clients_refused.insert(c.jti.clone(), refused);
    }
    Ok(fin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Answer {
        Answer {
            sent: 10,
            acked: (status != 0).then_some(20),
            status,
            code: code.into(),
            error: String::new(),
            body: Value::Null,
        }
    }

    fn release() -> Op {
        Op::Release {
            pool: "p".into(),
            lease_id: "l".into(),
            token_id: "a".into(),
            used: 1,
            cost_used: None,
            outcome: "unauthorized".into(),
            retry_after_ms: 1000,
        }
    }

    /// A rotate refused for want of a token still released the old lease; one whose lease was
    /// gone did neither; one without an answer may have done both.
    #[test]
    fn a_rotate_is_logged_as_the_release_and_the_lease_it_was() {
        let v = Vault::new(
            vec!["http://x".into()],
            "t".into(),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        for (status, code, release_status) in [
            (503, "pool_exhausted", 200),
            (423, "pool_frozen", 200),
            (410, "lease_gone", 410),
            (0, "", 0),
        ] {
            record_rotate(&v, &answer(status, code), release(), "p", (1, 2), 5000);
            let log = v.take_log();
            assert_eq!(log.len(), 2);
            let (r, l) = (&log[0], &log[1]);
            assert!(matches!(r.op, Op::Release { .. }) && matches!(l.op, Op::Lease { .. }));
            assert_eq!((r.status, l.status), (release_status, status), "{code}");
            assert_eq!(r.ambiguous(), status == 0, "{code}");
        }
    }
}
