//! The worker's calls over gRPC (feature `grpc`, [`Client::grpc`]): the code generated from
//! `proto/` (in `vault-wire`), the same leases and events as REST, and the vault's errors read
//! back into the same [`Error`]s.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use vault_wire::grpc::pb;

use crate::{Error, Event, Lease, LeaseAsk, Report, Result};

pub(crate) type Stub = pb::vault_client::VaultClient<Channel>;

/// A channel to `url` (`http://` or `https://`, with the web PKI's roots), connected at the
/// first call and reconnected whenever it breaks. Calls that get no answer time out like REST's.
pub(crate) fn channel(url: &str) -> Result<Stub> {
    let bad = |e: tonic::transport::Error| {
        Error::Grpc(Box::new(tonic::Status::invalid_argument(format!(
            "{url}: {e}"
        ))))
    };
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(bad)?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        // Dead connections are noticed (and replaced) between calls, not by the next call.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        ep = ep
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(bad)?;
    }
    Ok(pb::vault_client::VaultClient::new(ep.connect_lazy()))
}

/// A call's request with the client token and the caller's trace context in its metadata.
fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let mut headers = vault_wire::trace::headers();
    if let Ok(v) = format!("Bearer {token}").parse() {
        headers.insert("authorization", v);
    }
    *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
    req
}

/// The vault's error as REST would have answered it (its `ErrorInfo` carries the problem code
/// and the HTTP status); a status without one never reached the vault (no connection, a
/// balancer's refusal).
fn error_of(s: tonic::Status) -> Error {
    match vault_wire::grpc::Problem::of(&s) {
        Some(p) => {
            let retry_after_s = p.retry_after.map_or(1, |d| d.as_secs());
            crate::classify(
                p.http_status,
                p.code,
                s.message().to_string(),
                retry_after_s,
            )
        }
        None => Error::Grpc(Box::new(s)),
    }
}

fn lease_of(l: Option<pb::Lease>) -> Result<Lease> {
    l.map(Lease::from)
        .ok_or_else(|| Error::Stream("the vault's answer has no lease".into()))
}

fn report_of(r: &Report) -> pb::Report {
    let families = |m: &std::collections::BTreeMap<String, crate::Family>| {
        m.iter()
            .map(|(k, f)| {
                let q = pb::QuotaReport {
                    remaining: f.remaining,
                    reset_at_ms: f.reset_at,
                };
                (k.clone(), q)
            })
            .collect()
    };
    pb::Report {
        outcome: r.outcome.as_str().to_string(),
        used: r.used,
        retry_after_s: r.retry_after_s.map(|s| s as f64),
        remaining: r.remaining,
        reset_at_ms: r.reset_at,
        costs: r.costs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        detail: String::new(),
        quotas: families(&r.quotas),
        rate_limit: families(&r.rate_limit),
    }
}

pub(crate) async fn lease(
    stub: &Stub,
    token: &str,
    pool: &str,
    ask: &LeaseAsk<'_>,
) -> Result<Lease> {
    let req = pb::LeaseRequest {
        pool: pool.to_string(),
        worker: ask.worker.to_string(),
        costs: ask.costs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        pipeline: ask.pipeline.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let reply = stub
        .clone()
        .lease(authed(token, req))
        .await
        .map_err(error_of)?;
    lease_of(reply.into_inner().lease)
}

pub(crate) async fn renew(
    stub: &Stub,
    token: &str,
    lease: &Lease,
    ttl_s: Option<u64>,
) -> Result<Lease> {
    let req = pb::RenewRequest {
        pool: lease.pool.clone(),
        lease_id: lease.lease_id.clone(),
        ttl_s,
        units: None,
    };
    let reply = stub
        .clone()
        .renew(authed(token, req))
        .await
        .map_err(error_of)?;
    lease_of(reply.into_inner().lease)
}

fn release_request(lease: &Lease, report: &Report) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        pool: lease.pool.clone(),
        lease_id: lease.lease_id.clone(),
        report: Some(report_of(report)),
    }
}

pub(crate) async fn release(
    stub: &Stub,
    token: &str,
    lease: &Lease,
    report: &Report,
) -> Result<()> {
    let req = authed(token, release_request(lease, report));
    stub.clone().release(req).await.map_err(error_of)?;
    Ok(())
}

pub(crate) async fn rotate(
    stub: &Stub,
    token: &str,
    lease: &Lease,
    report: &Report,
) -> Result<Lease> {
    let req = authed(token, release_request(lease, report));
    let reply = stub.clone().rotate(req).await.map_err(error_of)?;
    lease_of(reply.into_inner().lease)
}

/// `Watch`: the events of `pools`, resuming after `last_event_id`.
pub(crate) async fn watch(
    stub: &Stub,
    token: &str,
    pools: &[&str],
    last_event_id: Option<&str>,
) -> Result<tonic::Streaming<pb::Event>> {
    let req = pb::WatchRequest {
        pools: pools.iter().map(|p| p.to_string()).collect(),
        last_event_id: last_event_id.unwrap_or_default().to_string(),
    };
    Ok(stub
        .clone()
        .watch(authed(token, req))
        .await
        .map_err(error_of)?
        .into_inner())
}

/// The next event of a `Watch` (`None`: the vault ended it).
pub(crate) async fn next_event(s: &mut tonic::Streaming<pb::Event>) -> Option<Result<Event>> {
    match s.message().await {
        Ok(Some(e)) => {
            let (id, e): (Option<String>, vault_wire::Event) = e.into();
            Some(Ok(Event {
                id: id.unwrap_or_default(),
                kind: e.kind.clone(),
                data: e,
            }))
        }
        Ok(None) => None,
        Err(e) => Some(Err(error_of(e))),
    }
}
