//! [`LeaseGuard`]: one lease, used through [`LeaseGuard::send`] and given back when dropped.
//!
//! `send` sends a request through the lease's bound proxy with its headers; a 401 from the target
//! rotates to another token (the vault refreshes the burned one) and sends again, a 429 reports
//! the target's `Retry-After` (the token cools down) and sends again with another token — each
//! once. What the target's rate-limit headers said goes into the next report (every header family
//! a pool's quotas can follow: [`rate_limit_families`]). In
//! the background the guard renews the lease at half its remaining time; dropped, it releases the
//! lease (on the runtime it was made on).

use std::collections::{BTreeMap, HashMap};
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
    /// What the call really cost by cost dimension (`llm_tokens`); a dimension left out counts
    /// what the lease reserved.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub costs: BTreeMap<String, u64>,
    /// What the target said of the pool's named quotas.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub quotas: BTreeMap<String, Family>,
    /// What the target's rate-limit headers said, by header family ([`rate_limit_families`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limit: BTreeMap<String, Family>,
}

/// What a target said of one of its limits: how much is left, and when it resets (unix ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Family {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<i64>,
}

impl Family {
    fn is_empty(&self) -> bool {
        self.remaining.is_none() && self.reset_at.is_none()
    }
}

/// A duration as OpenAI-style APIs write resets (`6m0s`, `1.5s`, `20ms`), or plain seconds; in
/// seconds.
pub fn duration_s(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s >= 0.0).then_some(s);
    }
    let (mut total, mut rest) = (0.0, v);
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))?;
        total += n * scale;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// What a target's answer says of its rate limits, by header family (a pool's quota follows one
/// with `sync`):
/// - `x-ratelimit`: `X-RateLimit-Remaining` / `X-RateLimit-Reset` (epoch seconds, or seconds
///   from now when small);
/// - `requests`, `tokens`: `x-ratelimit-remaining-requests` / `x-ratelimit-reset-requests` and
///   the `-tokens` pair (resets as durations: `6m0s`);
/// - `ratelimit`: the IETF draft's `RateLimit-Remaining` / `RateLimit-Reset` (seconds);
/// - `ratelimit:<policy>`: each item of the IETF `RateLimit` field, `"<policy>";r=..;t=..`.
pub fn rate_limit_families(headers: &reqwest::header::HeaderMap) -> BTreeMap<String, Family> {
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let count = |v: Option<&str>| {
        v.and_then(|v| v.parse::<f64>().ok())
            .map(|n| n.max(0.0) as u64)
    };
    let in_s = |s: f64| now_ms() + (s * 1000.0) as i64;
    let mut out = BTreeMap::new();
    let mut put = |key: String, f: Family| {
        if !f.is_empty() {
            out.insert(key, f);
        }
    };
    put(
        "x-ratelimit".into(),
        Family {
            remaining: count(text("x-ratelimit-remaining")),
            reset_at: text("x-ratelimit-reset")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| *r >= 0.0)
                // Epoch seconds when it looks like one (most APIs), else seconds from now.
                .map(|r| {
                    if r >= 1e9 {
                        (r * 1000.0) as i64
                    } else {
                        in_s(r)
                    }
                }),
        },
    );
    for kind in ["requests", "tokens"] {
        put(
            kind.into(),
            Family {
                remaining: count(text(&format!("x-ratelimit-remaining-{kind}"))),
                reset_at: text(&format!("x-ratelimit-reset-{kind}"))
                    .and_then(duration_s)
                    .map(in_s),
            },
        );
    }
    put(
        "ratelimit".into(),
        Family {
            remaining: count(text("ratelimit-remaining")),
            reset_at: count(text("ratelimit-reset")).map(|s| in_s(s as f64)),
        },
    );
    for item in text("ratelimit").unwrap_or_default().split(',') {
        let mut parts = item.split(';').map(str::trim);
        let Some(policy) = parts
            .next()
            .map(|p| p.trim_matches('"').to_ascii_lowercase())
        else {
            continue;
        };
        if policy.is_empty() || policy.contains('=') {
            continue;
        }
        let mut f = Family::default();
        for p in parts {
            match p.split_once('=') {
                Some(("r", v)) => f.remaining = count(Some(v)),
                Some(("t", v)) => f.reset_at = count(Some(v)).map(|s| in_s(s as f64)),
                _ => {}
            }
        }
        put(format!("ratelimit:{policy}"), f);
    }
    out
}

/// What the target's answers said of the token's limits.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    rate_limit: BTreeMap<String, Family>,
}

impl Seen {
    fn read(&mut self, headers: &reqwest::header::HeaderMap) {
        self.rate_limit.extend(rate_limit_families(headers));
    }

    /// The report, with `X-RateLimit-*` (or the IETF `RateLimit-*`) as the `default` quota's.
    fn report(&self, outcome: Outcome) -> Report {
        let default = self
            .rate_limit
            .get("x-ratelimit")
            .or_else(|| self.rate_limit.get("ratelimit"))
            .copied()
            .unwrap_or_default();
        Report {
            outcome,
            remaining: default.remaining,
            reset_at: default.reset_at,
            rate_limit: self.rate_limit.clone(),
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
        match &self.transport {
            #[cfg(feature = "grpc")]
            crate::Transport::Grpc(stub) => {
                crate::grpc::release(stub, &self.token, lease, report).await
            }
            crate::Transport::Rest => {
                let path = format!("/v1/pools/{}/leases/{}/release", lease.pool, lease.lease_id);
                self.post(&path, serde_json::to_value(report).unwrap_or_default())
                    .await?;
                Ok(())
            }
        }
    }

    /// Report with a full report and take another token in the same call.
    pub async fn rotate_with(&self, lease: &Lease, report: &Report) -> Result<Lease> {
        match &self.transport {
            #[cfg(feature = "grpc")]
            crate::Transport::Grpc(stub) => {
                crate::grpc::rotate(stub, &self.token, lease, report).await
            }
            crate::Transport::Rest => {
                let path = format!("/v1/pools/{}/leases/{}/rotate", lease.pool, lease.lease_id);
                let body = serde_json::to_value(report).unwrap_or_default();
                Ok(self.post(&path, body).await?.json().await?)
            }
        }
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
        let r = report_for(reqwest::StatusCode::TOO_MANY_REQUESTS, &h, &seen).unwrap();
        assert_eq!(
            (r.outcome, r.retry_after_s, r.remaining, r.reset_at),
            (
                Outcome::RateLimited,
                Some(7),
                Some(17),
                Some(1_900_000_000_000)
            )
        );
        assert_eq!(r.rate_limit["x-ratelimit"].remaining, Some(17));
        assert_eq!(
            report_for(reqwest::StatusCode::UNAUTHORIZED, &h, &seen).map(|r| r.outcome),
            Some(Outcome::Unauthorized)
        );
        assert!(report_for(reqwest::StatusCode::OK, &h, &seen).is_none());
        // Seconds from now (the IETF draft's RateLimit-Reset).
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("ratelimit-reset", "60".parse().unwrap());
        let mut seen = Seen::default();
        seen.read(&h);
        let in_a_minute = seen.report(Outcome::Ok).reset_at.unwrap() - now_ms();
        assert!((59_000..=60_000).contains(&in_a_minute), "{in_a_minute}");
    }

    #[test]
    fn every_header_family_is_read() {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "89000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("ratelimit", r#""burst";r=5;t=30, "daily";r=900;t=3600"#),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let f = rate_limit_families(&h);
        let near = |at: Option<i64>, s: i64| (at.unwrap() - now_ms() - s * 1000).abs() < 5_000;
        assert_eq!(f["requests"].remaining, Some(59));
        assert!(near(f["tokens"].reset_at, 360));
        assert_eq!(f["ratelimit:burst"].remaining, Some(5));
        assert!(near(f["ratelimit:daily"].reset_at, 3600));
        assert!(!f.contains_key("x-ratelimit"));
        assert_eq!(duration_s("1h2m"), Some(3720.0));
        assert_eq!(duration_s("20ms"), Some(0.02));
        assert_eq!(duration_s("soon"), None);
        assert_eq!(duration_s("5s and more"), None);
        assert_eq!(duration_s(""), None);
    }
}
