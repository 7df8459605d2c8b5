//! The load's operator (revoking, freezing, depositing, minting and revoking client tokens) and
//! its external login worker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::verify::Op;

use super::drive::*;
use super::vault::Vault;
use vault_core::model::{ClaimedJob, MintedToken, TokenPage};

/// Deposit `count` tokens into `pool`: a third of them expire within the run's first minute
/// (they cross the TTL margin while it lasts, even when it is interrupted early; the operator
/// deposits more as it goes), the rest in an hour.
pub(crate) async fn deposit(
    v: &Vault,
    plan: &Plan,
    rng: &mut StdRng,
    pool: &str,
    count: usize,
) -> bool {
    let lives: Vec<i64> = (0..count)
        .map(|_| {
            if rng.gen_range(0..3) == 0 {
                plan.min_token_ttl_s as i64
                    + rng.gen_range(2..=plan.duration.as_secs().min(50) as i64 + 10)
            } else {
                3600
            }
        })
        .collect();
    deposit_lives(v, pool, &lives).await
}

/// Deposit a token of each life in `lives` (seconds) into `pool`, logged.
pub(crate) async fn deposit_lives(v: &Vault, pool: &str, lives: &[i64]) -> bool {
    let now = vault_core::time::now_ms();
    let ids: Vec<String> = lives
        .iter()
        .map(|_| format!("c{}", uuid::Uuid::new_v4().simple()))
        .collect();
    let tokens: Vec<Value> = ids
        .iter()
        .zip(lives)
        .map(|(id, life_s)| {
            json!({
                "id": id,
                "secret": format!("check-secret-{}", uuid::Uuid::new_v4().simple()),
                "expires_at": vault_core::time::rfc3339(now + life_s * 1000),
            })
        })
        .collect();
    let a = v
        .post(
            &format!("/v1/pools/{pool}/tokens"),
            json!({ "tokens": tokens }),
        )
        .await;
    v.record(
        &a,
        Op::Deposit {
            pool: pool.into(),
            ids,
        },
    );
    a.status == 201
}

/// The operator: every ~100 ms one of revoke a token, freeze then unfreeze a pool, deposit,
/// or mint a client token and revoke it.
pub(super) async fn operator(
    v: Arc<Vault>,
    plan: Plan,
    until: Until,
    revoked_clients: Arc<Mutex<Vec<RevokedClient>>>,
) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5eed);
    while until.going() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..150))).await;
        let pool = plan.pools[rng.gen_range(0..plan.pools.len())].clone();
        match rng.gen_range(0..10) {
            0 | 1 => {
                // Revoke a token in rotation.
                let a = v
                    .call(
                        Method::GET,
                        &format!("/v1/pools/{pool}/tokens?state=active&limit=20"),
                        None,
                        None,
                        None,
                    )
                    .await;
                let ids: Vec<String> = a
                    .read::<TokenPage>()
                    .map(|p| p.tokens.into_iter().map(|t| t.id).collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    continue;
                }
                let id = ids[rng.gen_range(0..ids.len())].clone();
                let a = v
                    .post(
                        &format!("/v1/pools/{pool}/tokens/{id}/revoke"),
                        json!({"reason": "check"}),
                    )
                    .await;
                v.record(&a, Op::Revoke { pool, token_id: id });
            }
            2 => {
                let revoke_leases = rng.gen_bool(0.5);
                let a = v
                    .post(
                        &format!("/v1/pools/{pool}/freeze"),
                        json!({"revoke_leases": revoke_leases, "reason": "check"}),
                    )
                    .await;
                v.record(
                    &a,
                    Op::Freeze {
                        pool: pool.clone(),
                        revoke_leases,
                    },
                );
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
                // Unfreeze until it is acknowledged: a pool left frozen would starve the run.
                for _ in 0..5 {
                    let a = v
                        .call(
                            Method::POST,
                            &format!("/v1/pools/{pool}/unfreeze"),
                            None,
                            None,
                            None,
                        )
                        .await;
                    v.record(&a, Op::Unfreeze { pool: pool.clone() });
                    if a.status == 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            3 => {
                let a = v.post("/v1/clients", json!({"sub": "check-client", "scopes": ["lease"], "pools": [pool], "ttl_s": 3600}))
                    .await;
                let Some(MintedToken { token, jti, .. }) = a.read() else {
                    continue;
                };
                let a = v.post("/v1/clients/revoke", json!({"jti": jti})).await;
                v.record(&a, Op::ClientRevoke { jti: jti.clone() });
                if a.status == 200 || a.status == 204 {
                    revoked_clients.lock().unwrap().push(RevokedClient {
                        jti,
                        token,
                        pool: pool.clone(),
                        acked: Instant::now(),
                    });
                }
            }
            _ => {
                deposit(&v, &plan, &mut rng, &pool, 2).await;
            }
        }
    }
}

/// An external login worker: claims refresh jobs and completes them with a fresh secret.
pub(super) async fn login_worker(v: Arc<Vault>, plan: Plan, until: Until) {
    while until.going() {
        let mut idle = true;
        for pool in &plan.pools {
            let a = v
                .post(&format!("/v1/pools/{pool}/refresh-jobs/claim"), json!({}))
                .await;
            if a.status != 200 {
                continue;
            }
            let Some(ClaimedJob {
                job_id: job,
                token_id: token,
                ..
            }) = a.read()
            else {
                continue;
            };
            idle = false;
            let expires = vault_core::time::rfc3339(vault_core::time::now_ms() + 3_600_000);
            let a = v
                .call(
                    Method::POST,
                    &format!("/v1/pools/{pool}/refresh-jobs/{job}/complete"),
                    Some(&json!({"secret": format!("refreshed-{}", uuid::Uuid::new_v4().simple()), "expires_at": expires})),
                    None,
                    None,
                )
                .await;
            v.record(
                &a,
                Op::RefreshDone {
                    pool: pool.clone(),
                    token_id: token,
                },
            );
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
