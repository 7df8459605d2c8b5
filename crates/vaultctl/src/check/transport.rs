//! How the checker's workers reach the vault: REST, or gRPC (`--transport grpc`), where each call
//! goes to the next of the gRPC URLs and its answer is read back as REST's (the status the vault
//! puts in the error's `ErrorInfo`, the lease as the same wire type), so one verifier judges both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use vault_wire::grpc::pb;

/// The transports `--transport` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    Rest,
    Grpc,
}

/// A worker's call: what REST sends to a lease route, and gRPC to the method of that name.
pub(crate) enum WorkerCall<'a> {
    Lease { pool: &'a str },
    Renew { pool: &'a str, lease_id: &'a str },
    Release { pool: &'a str, lease_id: &'a str },
    Rotate { pool: &'a str, lease_id: &'a str },
}

impl WorkerCall<'_> {
    /// Its REST route.
    pub(crate) fn path(&self) -> String {
        match self {
            WorkerCall::Lease { pool } => format!("/v1/pools/{pool}/leases"),
            WorkerCall::Renew { pool, lease_id } => {
                format!("/v1/pools/{pool}/leases/{lease_id}/renew")
            }
            WorkerCall::Release { pool, lease_id } => {
                format!("/v1/pools/{pool}/leases/{lease_id}/release")
            }
            WorkerCall::Rotate { pool, lease_id } => {
                format!("/v1/pools/{pool}/leases/{lease_id}/rotate")
            }
        }
    }
}

/// Connections opened to each gRPC URL: workers are many processes in a real fleet, each with a
/// connection of its own, and a balancer may keep one connection's calls on one replica.
const CONNECTIONS_PER_URL: usize = 4;

/// gRPC channels to the vault (replicas, or a balancer), used round robin.
pub(crate) struct GrpcWorkers {
    stubs: Vec<pb::vault_client::VaultClient<Channel>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl GrpcWorkers {
    pub(crate) fn new(urls: &[String], timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "--transport grpc needs --grpc-urls");
        let stubs = urls
            .iter()
            .flat_map(|u| std::iter::repeat_n(u, CONNECTIONS_PER_URL))
            .map(|u| {
                let ep = Endpoint::from_shared(u.clone())?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .tcp_nodelay(true);
                Ok(pb::vault_client::VaultClient::new(ep.connect_lazy()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(GrpcWorkers {
            stubs,
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// Make `call` with the REST body `body`; the answer as REST would have given it: (status,
    /// body, transport error). No answer from the vault (no `ErrorInfo` of its own) is status 0.
    pub(crate) async fn call(
        &self,
        call: &WorkerCall<'_>,
        body: &Value,
        idempotency_key: Option<&str>,
        token: &str,
    ) -> (u16, Value, String) {
        let mut stub =
            self.stubs[self.next.fetch_add(1, Ordering::Relaxed) % self.stubs.len()].clone();
        let timeout = self.timeout;
        let answer = match call {
            WorkerCall::Lease { pool } => {
                let msg = pb::LeaseRequest {
                    pool: pool.to_string(),
                    worker: text(body, "worker"),
                    units: body["units"].as_u64(),
                    costs: counts(&body["costs"]),
                    ttl_s: body["ttl_s"].as_u64(),
                    pipeline: text(body, "pipeline"),
                    idempotency_key: idempotency_key.unwrap_or_default().to_string(),
                    ..Default::default()
                };
                stub.lease(request(msg, token, timeout))
                    .await
                    .map(|r| (201, lease(r.into_inner().lease)))
            }
            WorkerCall::Renew { pool, lease_id } => {
                let msg = pb::RenewRequest {
                    pool: pool.to_string(),
                    lease_id: lease_id.to_string(),
                    ttl_s: body["ttl_s"].as_u64(),
                    units: body["units"].as_u64(),
                };
                stub.renew(request(msg, token, timeout))
                    .await
                    .map(|r| (200, lease(r.into_inner().lease)))
            }
            WorkerCall::Release { pool, lease_id } => {
                let msg = release(pool, lease_id, body);
                stub.release(request(msg, token, timeout)).await.map(|r| {
                    let r = r.into_inner();
                    let released = vault_core::model::Released {
                        lease_id: lease_id.to_string(),
                        token_id: r.token_id,
                        token_state: r.state,
                        released: true,
                    };
                    (200, serde_json::to_value(released).unwrap_or_default())
                })
            }
            WorkerCall::Rotate { pool, lease_id } => {
                let msg = release(pool, lease_id, body);
                stub.rotate(request(msg, token, timeout))
                    .await
                    .map(|r| (201, lease(r.into_inner().lease)))
            }
        };
        match answer {
            Ok((status, body)) => (status, body, String::new()),
            Err(s) => match vault_wire::grpc::Problem::of(&s) {
                Some(p) => {
                    let title = reqwest::StatusCode::from_u16(p.http_status)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("Error");
                    let problem = vault_wire::Problem::new(
                        p.http_status,
                        title,
                        &p.code,
                        s.message().to_string(),
                    );
                    let body = serde_json::to_value(problem).unwrap_or_default();
                    (p.http_status, body, String::new())
                }
                _ => (
                    0,
                    Value::Null,
                    format!("gRPC {:?}: {}", s.code(), s.message()),
                ),
            },
        }
    }
}

/// `msg` with the client token and the call's deadline.
fn request<T>(msg: T, token: &str, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn text(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap_or_default().to_string()
}

fn counts(v: &Value) -> std::collections::HashMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A lease as REST writes it.
fn lease(l: Option<pb::Lease>) -> Value {
    l.map(|l| serde_json::to_value(vault_wire::Lease::from(l)).unwrap_or_default())
        .unwrap_or_default()
}

/// A release or rotate with the report in `body`.
fn release(pool: &str, lease_id: &str, body: &Value) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        pool: pool.to_string(),
        lease_id: lease_id.to_string(),
        report: Some(pb::Report {
            outcome: text(body, "outcome"),
            used: body["used"].as_u64(),
            retry_after_s: body["retry_after_s"].as_f64(),
            costs: counts(&body["costs"]),
            ..Default::default()
        }),
    }
}
