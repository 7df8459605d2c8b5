//! [`LeaseGuard`]: one lease, used through [`LeaseGuard::send`] and given back when dropped.
//!
//! `send` sends a request through the lease's bound proxy with its headers; a 401 from the target
//! rotates to another token (the vault refreshes the burned one) and sends again, a 429 reports
//! the target's `Retry-After` (the token cools down) and sends again with another token — each
//! once. The target's `X-RateLimit-Remaining` / `X-RateLimit-Reset` go into the next report. In
//! the background the guard renews the lease at half its remaining time; dropped, it releases the
//! lease (on the runtime it was made on).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::{Client, Error, Lease, Outcome, Result};

/// A report on a call made with a lease (`release` and `rotate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    /// Units used; `None` = every unit the lease reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// The target's `Retry-After`, for `RateLimited`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// What the target said is left of the token's quota, and when it resets (unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<i64>,
}

/// What the target's answers said of the token's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seen {
    remaining: Option<u64>,
    reset_at: Option<i64>,
}

impl Seen {
    fn read(&mut self, headers: &reqwest::header::HeaderMap) {
        let num = |names: &[&str]| {
            names.iter().find_map(|n| {
                headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        };
        if let Some(r) = num(&["x-ratelimit-remaining", "ratelimit-remaining"]) {
            self.remaining = Some(r.max(0.0) as u64);
        }
        if let Some(r) = num(&["x-ratelimit-reset", "ratelimit-reset"]).filter(|r| *r >= 0.0) {
            // Epoch seconds when it looks like one (most APIs), else seconds from now.
            self.reset_at = Some(if r >= 1e9 {
                (r * 1000.0) as i64
            } else {
                now_ms() + (r * 1000.0) as i64
            });
        }
    }

    fn report(&self, outcome: Outcome) -> Report {
        Report {
            outcome,
            remaining: self.remaining,
            reset_at: self.reset_at,
            ..Default::default()
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The report for a target's answer that the guard acts on (401, 429), or `None`.
fn report_for(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    seen: &Seen,
) -> Option<Report> {
    match status.as_u16() {
        401 => Some(seen.report(Outcome::Unauthorized)),
        429 => Some(Report {
            retry_after_s: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
            ..seen.report(Outcome::RateLimited)
        }),
        _ => None,
    }
}

struct Held {
    lease: Option<Lease>,
    seen: Seen,
}

/// One lease of a pool, renewed in the background and released on drop.
pub struct LeaseGuard {
    client: Client,
    held: Arc<tokio::sync::Mutex<Held>>,
    renewer: tokio::task::JoinHandle<()>,
    /// One HTTP client per proxy the lease has been bound to.
    http: std::sync::Mutex<HashMap<Option<String>, reqwest::Client>>,
    /// How often `send` sends again after a 401 or 429 (with another token).
    pub retries: u32,
}

impl Client {
    /// Lease a token of `pool` and keep it in a [`LeaseGuard`].
    pub async fn guard(&self, pool: &str, worker: &str) -> Result<LeaseGuard> {
        let lease = self.lease(pool, worker).await?;
        let held = Arc::new(tokio::sync::Mutex::new(Held {
            lease: Some(lease),
            seen: Seen::default(),
        }));
        let renewer = tokio::spawn(renew_until_gone(self.clone(), held.clone()));
        Ok(LeaseGuard {
            client: self.clone(),
            held,
            renewer,
            http: Default::default(),
            retries: 1,
        })
    }

    /// Release with a full report (units used, the target's rate-limit figures).
    pub async fn release_with(&self, lease: &Lease, report: &Report) -> Result<()> {
        let path = format!("/v1/pools/{}/leases/{}/release", lease.pool, lease.lease_id);
        self.post(&path, serde_json::to_value(report).unwrap_or_default())
            .await?;
        Ok(())
    }

    /// Report with a full report and take another token in the same call.
    pub async fn rotate_with(&self, lease: &Lease, report: &Report) -> Result<Lease> {
        let path = format!("/v1/pools/{}/leases/{}/rotate", lease.pool, lease.lease_id);
        Ok(self
            .post(&path, serde_json::to_value(report).unwrap_or_default())
            .await?
            .json()
            .await?)
    }
}

/// Renew at half of what is left of the lease, until it is gone or given back.
async fn renew_until_gone(client: Client, held: Arc<tokio::sync::Mutex<Held>>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(lease) = held.lock().await.lease.clone() else {
            return;
        };
        let left_ms = time::OffsetDateTime::parse(
            &lease.lease_expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64 - now_ms())
        .unwrap_or(2000);
        tokio::time::sleep(Duration::from_millis((left_ms / 2).max(250) as u64)).await;
        let mut h = held.lock().await;
        // Rotated or released meanwhile: start over with what is held now.
        if h.lease.as_ref().map(|l| &l.lease_id) != Some(&lease.lease_id) {
            continue;
        }
        match client.renew(&lease, None).await {
            Ok(renewed) => {
                h.lease = Some(renewed);
                backoff = Duration::from_millis(500);
            }
            Err(Error::LeaseGone) => {
                h.lease = None;
                return;
            }
            Err(e) => {
                drop(h);
                tracing::warn!(error = %e, "lease renewal failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl LeaseGuard {
    /// The lease held now (it changes after a rotate); `LeaseGone` once it ended.
    pub async fn lease(&self) -> Result<Lease> {
        self.held.lock().await.lease.clone().ok_or(Error::LeaseGone)
    }

    fn http_for(&self, proxy: Option<&str>) -> Result<reqwest::Client> {
        let key = proxy.map(str::to_string);
        let mut m = self.http.lock().expect("http clients lock");
        if let Some(c) = m.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(20));
        b = match proxy {
            Some(p) => b.proxy(reqwest::Proxy::all(p)?),
            // No binding: the lease says nothing of a proxy, and the process's own settings do not
            // decide for it.
            None => b.no_proxy(),
        };
        let c = b.build()?;
        m.insert(key, c.clone());
        Ok(c)
    }

    /// Send the request `build` makes (with the HTTP client for the lease's bound proxy), with
    /// the lease's headers. On a 401 or 429 the token is reported and the request sent again
    /// with another one, up to [`LeaseGuard::retries`] times; that answer is the caller's.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut again = 0;
        loop {
            let lease = self.lease().await?;
            let http = self.http_for(lease.binding.proxy.as_deref())?;
            let res = build(&http)
                .header(
                    reqwest::header::AUTHORIZATION,
                    lease.headers.authorization.as_str(),
                )
                .send()
                .await?;
            let mut h = self.held.lock().await;
            h.seen.read(res.headers());
            let Some(report) = report_for(res.status(), res.headers(), &h.seen) else {
                return Ok(res);
            };
            if again >= self.retries {
                return Ok(res);
            }
            again += 1;
            match self.client.rotate_with(&lease, &report).await {
                Ok(next) => {
                    h.lease = Some(next);
                    h.seen = Seen::default();
                }
                Err(e) => {
                    // The old lease was released with the report either way.
                    h.lease = None;
                    return Err(e);
                }
            }
        }
    }

    /// Give the lease back with `outcome` and what the target said of the quota.
    pub async fn release(self, outcome: Outcome) -> Result<()> {
        self.renewer.abort();
        give_back(&self.client, &self.held, outcome).await
    }
}

/// Release what `held` still holds (nothing once released or ended) with `outcome` and what the
/// target said of the quota; a lease that ended meanwhile is no error.
async fn give_back(
    client: &Client,
    held: &tokio::sync::Mutex<Held>,
    outcome: Outcome,
) -> Result<()> {
    let mut h = held.lock().await;
    let Some(lease) = h.lease.take() else {
        return Ok(());
    };
    match client.release_with(&lease, &h.seen.report(outcome)).await {
        Ok(()) | Err(Error::LeaseGone) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        // Released with `release` already, or the lease ended: nothing to give back.
        let (client, held) = (self.client.clone(), self.held.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = give_back(&client, &held, Outcome::Ok).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers_become_the_report() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "17".parse().unwrap());
        h.insert("x-ratelimit-reset", "1900000000".parse().unwrap());
        h.insert("retry-after", "7".parse().unwrap());
        let mut seen = Seen::default();
        seen.read(&h);
        assert_eq!(seen.remaining, Some(17));
        assert_eq!(seen.reset_at, Some(1_900_000_000_000));
        let r = report_for(reqwest::StatusCode::TOO_MANY_REQUESTS, &h, &seen).unwrap();
        assert_eq!(
            (r.outcome, r.retry_after_s),
            (Outcome::RateLimited, Some(7))
        );
        assert_eq!(
            report_for(reqwest::StatusCode::UNAUTHORIZED, &h, &seen).map(|r| r.outcome),
            Some(Outcome::Unauthorized)
        );
        assert!(report_for(reqwest::StatusCode::OK, &h, &seen).is_none());
        // Seconds from now (the IETF draft's RateLimit-Reset).
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("ratelimit-reset", "60".parse().unwrap());
        seen.read(&h);
        let in_a_minute = seen.reset_at.unwrap() - now_ms();
        assert!((59_000..=60_000).contains(&in_a_minute), "{in_a_minute}");
    }
}
