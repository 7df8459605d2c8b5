//! The global plane's promise, checked across two regions (`vaultctl check --region-urls`): a
//! credential revoked in the home region is not granted in the other region once that region
//! could have applied it. A pool of the same name holds the same credentials (same ids and
//! secrets) in both regions; workers lease from it in the other region while an operator in the
//! home region revokes its credentials globally, one by one, and the other region's lag is
//! sampled from its `/readyz` throughout.
//!
//! Judged: a grant in the other region of a revoked credential, requested later than the
//! revoke's global time (the entry's `at`, the global primary's clock) plus the largest lag the
//! region reported during the run, is a violation (`global_revocation`): by then the region had
//! applied everything up to the revoke. At the end every revoked credential must be `revoked` in
//! both regions (`global_revocation_applied`), and a deposit of one in the other region must be
//! refused with `credential_revoked` (`global_deposit`). The bound uses the max lag, so it never
//! blames the region for its real lag (it may let a late grant pass: the lag sampled is coarse,
//! a beat a second). Clocks: the checker's and the global primary's are compared, so run it on a
//! host whose clock is synchronised with them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::vault::read;
use super::verify::Violation;
use vault_core::model::{CredentialRevoked, Health, TokenMeta};

/// Credentials the pool holds in both regions.
const CREDENTIALS: usize = 24;
/// Time between two global revocations.
const REVOKE_EVERY: Duration = Duration::from_millis(300);

/// A small JSON client for one vault URL (the checker's main client logs for the main
/// verification; these calls are judged here).
#[derive(Clone)]
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

/// What the cross-region run did, for the summary.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) revoked: usize,
    pub(crate) grants: usize,
    pub(crate) max_lag_ms: i64,
}

fn now_ms() -> i64 {
    vault_core::time::now_ms()
}

/// Grants of a revoked credential requested after its global time plus the region's largest
/// lag: by then the region had applied the revocation.
fn late_grants(
    revoked: &[(String, i64)],
    grants: &[(String, i64)],
    max_lag_ms: i64,
    pool: &str,
    region: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, at) in revoked {
        let bound = at + max_lag_ms;
        for (_, sent) in grants.iter().filter(|(g, s)| g == id && *s > bound) {
            out.push(Violation {
                invariant: "global_revocation",
                detail: format!(
                    "{pool}/{id}: granted in {region} (requested at {sent}) after its global revoke at {at} plus the region's largest lag {max_lag_ms} ms"
                ),
            });
        }
    }
    out
}

/// Drive and judge the cross-region scenario until `duration` has passed.
pub(crate) async fn run(
    home: &str,
    other: &str,
    token: &str,
    pool: &str,
    duration: Duration,
    timeout: Duration,
    interrupted: super::drive::Interrupted,
) -> anyhow::Result<(Summary, Vec<Violation>)> {
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let (a, b) = (
        Client {
            base: home.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http.clone(),
        },
        Client {
            base: other.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        },
    );
    let run = uuid::Uuid::new_v4().simple().to_string();
    let secret = |i: usize| format!("check-{run}-credential-{i:04}");
    for c in [&a, &b] {
        let (s, v) = c
            .send(
                reqwest::Method::PUT,
                &format!("/v1/pools/{pool}"),
                Some(
                    json!({"quota_limit": 1_000_000, "max_leases_per_token": 4, "lease_ttl_s": 5}),
                ),
            )
            .await;
        anyhow::ensure!(
            s == 200 || s == 201,
            "creating {pool} at {}: {s} {v}",
            c.base
        );
        let tokens: Vec<Value> = (0..CREDENTIALS)
            .map(|i| json!({"id": format!("c{i}"), "secret": secret(i)}))
            .collect();
        let (s, v) = c
            .send(
                reqwest::Method::POST,
                &format!("/v1/pools/{pool}/tokens"),
                Some(json!({ "tokens": tokens })),
            )
            .await;
        anyhow::ensure!(s == 201, "depositing into {pool} at {}: {s} {v}", c.base);
    }

    let deadline = Instant::now() + duration;
    let going = move || Instant::now() < deadline && !interrupted.is_set();
    let max_lag = Arc::new(AtomicI64::new(0));
    // (token id, unix ms the grant was requested) of every grant in the other region.
    let grants: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut tasks = Vec::new();
    {
        let (b, max_lag, going) = (b.clone(), max_lag.clone(), going.clone());
        tasks.push(tokio::spawn(async move {
            while going() {
                let (s, v) = b.send(reqwest::Method::GET, "/readyz", None).await;
                let lag = read::<Health>(&v).and_then(|h| h.global?.lag_ms);
                if let (200, Some(lag)) = (s, lag) {
                    max_lag.fetch_max(lag, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for _ in 0..4 {
        let (b, grants, pool, going) = (b.clone(), grants.clone(), pool.to_string(), going.clone());
        tasks.push(tokio::spawn(async move {
            while going() {
                let sent = now_ms();
                let (s, v) = b
                    .send(
                        reqwest::Method::POST,
                        &format!("/v1/pools/{pool}/leases"),
                        Some(json!({})),
                    )
                    .await;
                if s != 201 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if let Some(lease) = read::<vault_wire::Lease>(&v) {
                    grants.lock().unwrap().push((lease.token_id, sent));
                    b.send(
                        reqwest::Method::POST,
                        &format!("/v1/pools/{pool}/leases/{}/release", lease.lease_id),
                        Some(json!({"outcome": "ok"})),
                    )
                    .await;
                }
            }
        }));
    }
    // The operator: revokes two thirds of the credentials, one every REVOKE_EVERY, while the
    // load runs.
    let to_revoke = CREDENTIALS * 2 / 3;
    // (token id, global time of the revoke ms) of each revocation acknowledged.
    let mut revoked: Vec<(String, i64)> = Vec::new();
    let mut violations = Vec::new();
    for i in 0..to_revoke {
        tokio::time::sleep(REVOKE_EVERY).await;
        if !going() {
            break;
        }
        let id = format!("c{i}");
        let (s, v) = a
            .send(
                reqwest::Method::POST,
                "/v1/credentials/revoke",
                Some(json!({"pool": pool, "token_id": id, "reason": "vaultctl check"})),
            )
            .await;
        match (s, read::<CredentialRevoked>(&v).and_then(|c| c.global)) {
            (200, Some(g)) => revoked.push((id, g.at)),
            (200, None) => violations.push(Violation {
                invariant: "global_revocation",
                detail: format!("{}: the credential revoke was not global: {v}", a.base),
            }),
            // A lost or refused answer: not judged (it may or may not have been made).
            _ => {}
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let max_lag_ms = max_lag.load(Ordering::SeqCst);
    let grants = std::mem::take(&mut *grants.lock().unwrap());
    violations.extend(late_grants(&revoked, &grants, max_lag_ms, pool, &b.base));
    // Applied everywhere, and refused at the door: waited for with the same bound, and then
    // some (the region's last entries may still be on the way when the load ends).
    let deadline = Instant::now() + Duration::from_millis(max_lag_ms.max(0) as u64) + timeout * 4;
    for (id, _) in &revoked {
        for c in [&a, &b] {
            loop {
                let (_, v) = c
                    .send(
                        reqwest::Method::GET,
                        &format!("/v1/pools/{pool}/tokens/{id}"),
                        None,
                    )
                    .await;
                let state = read::<TokenMeta>(&v).map(|t| t.state);
                if state.as_deref() == Some("revoked") {
                    break;
                }
                if Instant::now() > deadline {
                    violations.push(Violation {
                        invariant: "global_revocation_applied",
                        detail: format!(
                            "{pool}/{id}: still {} in {}",
                            state.as_deref().unwrap_or("unknown"),
                            c.base
                        ),
                    });
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Some(i) = (0..to_revoke).find(|i| revoked.iter().any(|(id, _)| id == &format!("c{i}"))) {
        let (s, v) = b
            .send(
                reqwest::Method::POST,
                &format!("/v1/pools/{pool}/tokens"),
                Some(json!({"tokens": [{"id": format!("again{i}"), "secret": secret(i)}]})),
            )
            .await;
        let code = read::<vault_wire::Problem>(&v).map(|p| p.code);
        if s != 409 || code.as_deref() != Some("credential_revoked") {
            violations.push(Violation {
                invariant: "global_deposit",
                detail: format!(
                    "a revoked credential deposited again in {}: {s} {v}",
                    b.base
                ),
            });
        }
    }
    for c in [&a, &b] {
        c.send(
            reqwest::Method::DELETE,
            &format!("/v1/pools/{pool}?force=true"),
            None,
        )
        .await;
    }
    Ok((
        Summary {
            revoked: revoked.len(),
            grants: grants.len(),
            max_lag_ms,
        },
        violations,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_past_the_revoke_and_the_lag_is_caught_one_within_them_is_not() {
        let revoked = vec![("c1".to_string(), 10_000)];
        let grants = vec![
            ("c1".to_string(), 9_000),  // before the revoke
            ("c1".to_string(), 10_400), // within the region's lag
            ("c2".to_string(), 20_000), // another credential
        ];
        assert!(late_grants(&revoked, &grants, 500, "p", "r2").is_empty());
        let late = vec![("c1".to_string(), 10_501)];
        let v = late_grants(&revoked, &late, 500, "p", "r2");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, "global_revocation");
    }
}
