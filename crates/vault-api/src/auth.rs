//! Client authentication and authorization for `/v1`.
//!
//! Every `/v1` route is listed in [`allowed_scopes`]; the middleware verifies the bearer
//! token, checks the replica's revocation deny set, then the route's scopes and the token's
//! pool list. A route missing from the table is refused (fail closed).
//!
//! Revocation: `POST /v1/clients/revoke` stores the jti in `tv:revoked` (a zset scored by when
//! the entry may be forgotten) and publishes it on `tv:revocations`. Every replica keeps an
//! in-memory deny set fed by that channel, and re-reads the whole zset whenever its
//! subscription (re)connects and every few seconds, so a revocation published while a replica
//! was disconnected is not missed.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::sync::Arc;
use vault_core::auth::{AuthError, KeyRing, Principal, Scope};

use crate::error::ApiError;
use crate::AppState;

/// Scopes that may call a `/v1` route (Admin may call everything).
pub fn allowed_scopes(method: &Method, route: &str) -> Option<&'static [Scope]> {
    use Scope::*;
    const ADMIN: &[Scope] = &[Admin];
    const LEASE: &[Scope] = &[Lease];
    const DEPOSIT: &[Scope] = &[Deposit];
    const AUDIT: &[Scope] = &[Audit];
    const ANY: &[Scope] = &[Lease, Deposit, Audit];
    let m = method.as_str();
    Some(match (m, route) {
        ("GET", "/pools") => ANY,
        ("GET", "/pools/{pool}") | ("GET", "/pools/{pool}/status") => LEASE,
        ("GET", "/pools/{pool}/rotations") => LEASE,
        ("PUT", "/pools/{pool}") | ("DELETE", "/pools/{pool}") => ADMIN,
        ("POST", "/pools/{pool}/freeze") | ("POST", "/pools/{pool}/unfreeze") => ADMIN,
        ("POST", "/pools/{pool}/rotate") | ("POST", "/pools/{pool}/rotate/cancel") => ADMIN,
        ("POST", "/pools/{pool}/tokens") => DEPOSIT,
        ("GET", "/pools/{pool}/tokens") | ("GET", "/pools/{pool}/tokens/{id}") => ADMIN,
        ("DELETE", "/pools/{pool}/tokens/{id}") => ADMIN,
        ("POST", r) if r.starts_with("/pools/{pool}/tokens/{id}/") => ADMIN,
        ("POST", r) if r.starts_with("/pools/{pool}/leases") => LEASE,
        ("GET", "/pools/{pool}/pipelines") | ("GET", "/pools/{pool}/pipelines/{name}") => LEASE,
        ("PUT", "/pools/{pool}/pipelines/{name}") => LEASE,
        ("DELETE", "/pools/{pool}/pipelines/{name}") => LEASE,
        ("POST", r) if r.starts_with("/pools/{pool}/refresh-jobs/") => DEPOSIT,
        ("POST", "/clients") | ("POST", "/clients/revoke") | ("POST", "/introspect") => ADMIN,
        ("POST", "/credentials/revoke") => ADMIN,
        ("GET", "/audit") => AUDIT,
        ("GET", "/events") => LEASE,
        _ => return None,
    })
}

/// The caller of a request whatever its transport (REST header, gRPC metadata): its
/// `authorization` value (None: absent; Err: not text) checked, with the failed-authentication
/// limiter of the peer's address.
pub fn caller(
    s: &AppState,
    peer: Option<IpAddr>,
    authorization: Option<Result<&str, AuthError>>,
) -> Result<Principal, ApiError> {
    match authorization
        .ok_or(AuthError::Missing)
        .and_then(|v| v)
        .and_then(bearer)
        .and_then(|t| authenticate(s, t))
    {
        Ok(p) => Ok(p),
        Err(e) => {
            // Every refused client token, REST or gRPC: what the auth-failure alert watches.
            metrics::counter!("tv_client_auth_failures_total", "reason" => e.kind()).increment(1);
            if let Some(ip) = peer {
                if let Some(wait_s) = s.auth_failures.blocked(ip) {
                    tracing::warn!(%ip, "too many failed authentications");
                    let mut err = ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        "too_many_auth_failures",
                        "too many failed authentications from this address; retry later",
                    );
                    err.retry_after_s = Some(wait_s);
                    return Err(err);
                }
                s.auth_failures.record(ip);
            }
            Err(ApiError::unauthorized(e))
        }
    }
}

fn bearer(v: &str) -> Result<&str, AuthError> {
    let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// Verify a client token, including revocation. A token whose signature and claims were
/// verified before is taken from the cache until it expires (an Ed25519 verification per
/// request is the most expensive part of a lease); revocation is checked every time.
pub fn authenticate(s: &AppState, token: &str) -> Result<Principal, AuthError> {
    let now_s = vault_core::time::now_ms() / 1000;
    let cached = s
        .verified
        .read()
        .expect("token cache lock")
        .get(token)
        .filter(|p| p.exp > now_s)
        .cloned();
    let p = match cached {
        Some(p) => p,
        None => {
            let p = match s.keys.verify(token) {
                Err(AuthError::UnknownKey) => {
                    let other = s.other_regions_keys.read().expect("key ring lock").clone();
                    match other {
                        Some(ring) => ring.verify(token)?,
                        None => return Err(AuthError::UnknownKey),
                    }
                }
                r => r?,
            };
            let mut cache = s.verified.write().expect("token cache lock");
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.retain(|_, p| p.exp > now_s);
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), p.clone());
            p
        }
    };
    if s.revocations.is_revoked(&p.jti) {
        return Err(AuthError::Revoked);
    }
    Ok(p)
}

/// How often a replica publishes its verification keys and re-reads the other regions'.
const GLOBAL_KEYS_EVERY: Duration = Duration::from_secs(5);

/// With the global plane: publish this replica's verification keys to the global primary and
/// keep a verify-only ring of the other regions' keys (from the region's replica), so a client
/// token minted in any region works in every region. A key id another region holds with a
/// different key is logged and never trusted (ours wins here; theirs there).
pub fn spawn_global_keys(s: AppState) {
    let Some(global) = s.store.global().cloned() else {
        return;
    };
    tokio::spawn(async move {
        let ours = s.keys.public_keys();
        let mut tick = tokio::time::interval(GLOBAL_KEYS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known: Vec<(String, String)> = Vec::new();
        loop {
            tick.tick().await;
            match global.publish_keys(&ours).await {
                Ok(clashes) if !clashes.is_empty() => {
                    tracing::error!(kids = ?clashes, "another region publishes a different key under these key ids; name keys uniquely across regions")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "verification keys not published (global primary out of reach?)")
                }
            }
            let Ok(mut theirs) = global.verification_keys().await else {
                continue;
            };
            theirs.retain(|(kid, _)| !ours.iter().any(|(k, _)| k == kid));
            theirs.sort();
            if theirs == known {
                continue;
            }
            let mut ring = KeyRing::empty(&s.keys.issuer, &s.keys.audience, s.keys.max_ttl_s);
            for (kid, x) in &theirs {
                if let Err(e) = ring.add_public_x(kid, x) {
                    tracing::warn!(error = %e, "a published verification key is unusable; skipped");
                }
            }
            tracing::info!(kids = ?ring.kids(), "verification keys of other regions");
            *s.other_regions_keys.write().expect("key ring lock") =
                (!theirs.is_empty()).then(|| Arc::new(ring));
            known = theirs;
        }
    });
}

/// Most verified tokens a replica remembers.
const VERIFIED_CACHE_MAX: usize = 10_000;

/// The `/v1` middleware (installed with `route_layer`, so the route is known).
pub async fn authorize(
    State(s): State<AppState>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().map_err(|_| AuthError::Malformed));
    let principal = caller(&s, peer, header)?;
    let route = matched.as_ref().map(|m| m.as_str()).unwrap_or("");
    let route = route.strip_prefix("/v1").unwrap_or(route);
    let scopes = allowed_scopes(req.method(), route)
        .ok_or_else(|| ApiError::forbidden("this route is not open to client tokens"))?;
    if !scopes.iter().any(|sc| principal.has(*sc)) {
        let need: Vec<_> = scopes
            .iter()
            .chain(std::iter::once(&Scope::Admin))
            .map(|s| s.as_str())
            .collect();
        return Err(ApiError::forbidden(format!(
            "this call needs scope {}",
            need.join(" or ")
        )));
    }
    if let Ok(params) = &params {
        if let Some((_, pool)) = params.iter().find(|(k, _)| *k == "pool") {
            if !principal.may_use_pool(pool) {
                return Err(ApiError::forbidden(
                    "this client token is not allowed on this pool",
                ));
            }
        }
        if route.starts_with("/pools/{pool}/pipelines/") {
            if let Some((_, name)) = params.iter().find(|(k, _)| *k == "name") {
                if !principal.may_use_pipeline(name) {
                    return Err(ApiError::forbidden(
                        "this client token is not allowed on this pipeline",
                    ));
                }
            }
        }
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Failed authentications per client address in a fixed one-minute window. Over the limit,
/// requests without a valid token get 429 before anything else; a valid token still passes,
/// so one misbehaving process cannot lock out the workers sharing its address.
pub struct AuthFailures {
    limit: u32,
    windows: std::sync::Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl AuthFailures {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Default::default(),
        }
    }

    /// Seconds until `ip` may fail again, when it is over its limit.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let w = self.windows.lock().expect("auth failure lock");
        let (start, n) = w.get(&ip)?;
        let left = FAILURE_WINDOW.saturating_sub(start.elapsed());
        (*n >= self.limit && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    fn record(&self, ip: IpAddr) {
        let mut w = self.windows.lock().expect("auth failure lock");
        if w.len() > 100_000 {
            w.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let e = w.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAILURE_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// The replica's deny set of revoked client-token ids.
#[derive(Default)]
pub struct Revocations {
    /// jti -> unix seconds after which the entry may be dropped.
    denied: RwLock<HashMap<String, i64>>,
}

impl Revocations {
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.denied.read().expect("deny set lock").contains_key(jti)
    }

    pub fn insert(&self, jti: &str, until_s: i64) {
        self.denied
            .write()
            .expect("deny set lock")
            .insert(jti.to_string(), until_s);
    }

    /// Merge the stored set (never drops an entry early: a Redis that lost data does not
    /// un-revoke a token this replica already knows about) and forget expired entries. Returns
    /// the entries this replica knows and the stored set lacks.
    fn merge(&self, entries: Vec<(String, i64)>, now_s: i64) -> Vec<(String, i64)> {
        let mut d = self.denied.write().expect("deny set lock");
        d.retain(|_, until| *until > now_s);
        let stored: std::collections::HashSet<&str> =
            entries.iter().map(|(jti, _)| jti.as_str()).collect();
        let lost: Vec<(String, i64)> = d
            .iter()
            .filter(|(jti, _)| !stored.contains(jti.as_str()))
            .map(|(jti, until)| (jti.clone(), *until))
            .collect();
        for (jti, until) in entries {
            d.insert(jti, until);
        }
        lost
    }

    /// Re-read the stored revocations; write back any the store lost (a Redis restarted without
    /// its data, or a failover to a replica that had not received them), so a replica started
    /// later refuses them too.
    async fn resync(&self, s: &AppState) {
        let lost = match s.store.revoked_clients().await {
            Ok(entries) => self.merge(entries, vault_core::time::now_ms() / 1000),
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read client revocations");
                return;
            }
        };
        if lost.is_empty() {
            return;
        }
        tracing::warn!(
            count = lost.len(),
            "Redis lacks client revocations this replica knows (data lost?); writing them back"
        );
        for (jti, until) in lost {
            let repair = vault_core::ops::Actor::process("vault-api (restoring a lost revocation)");
            if let Err(e) = s.store.revoke_client_token(&repair, &jti, until).await {
                tracing::warn!(error = %e, "cannot write a client revocation back");
                return;
            }
        }
    }

    /// The replica's one Redis subscription: client revocations and events. On every
    /// (re)connect it subscribes first, then re-reads the revocations and catches up on events,
    /// so nothing published while it was disconnected is missed; revocations are also re-read
    /// every 5 s as a backstop.
    pub fn spawn_listener(s: AppState, redis: vault_core::config::RedisArgs) {
        tokio::spawn(async move {
            let revocations = s.store.keys().revocation_channel();
            let events = s.store.keys().events();
            loop {
                // Behind Sentinel, each (re)connection goes to the primary of the moment.
                let client = match s.store.dedicated_client(&redis.redis_url).await {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::debug!(error = %e, "no Redis for the subscription yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                // Connecting and subscribing get the same budget as every other Redis call.
                let subscribed = tokio::time::timeout(redis.timeout(), async {
                    let mut ps = client.get_async_pubsub().await?;
                    ps.subscribe(&[&revocations, &events]).await?;
                    Ok::<_, redis::RedisError>(ps)
                })
                .await;
                match subscribed {
                    Ok(Ok(mut ps)) => {
                        s.revocations.resync(&s).await;
                        s.events.catch_up(&s).await;
                        s.events
                            .subscribed
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        let mut msgs = ps.on_message();
                        let mut tick = tokio::time::interval(Duration::from_secs(5));
                        loop {
                            tokio::select! {
                                m = msgs.next() => match m {
                                    Some(m) => {
                                        let text: String = m.get_payload().unwrap_or_default();
                                        let Some((head, rest)) = text.split_once(' ') else { continue };
                                        if m.get_channel_name() == revocations {
                                            s.revocations.insert(head, rest.parse().unwrap_or(i64::MAX));
                                        } else if let Ok(e) = serde_json::from_str(rest) {
                                            s.events.deliver(head.to_string(), e);
                                        }
                                    }
                                    None => break,
                                },
                                _ = tick.tick() => s.revocations.resync(&s).await,
                            }
                        }
                        s.events
                            .subscribed
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                        tracing::warn!("redis subscription lost; reconnecting");
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe yet"),
                    Err(_) => tracing::debug!("no subscription within the Redis budget; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}
